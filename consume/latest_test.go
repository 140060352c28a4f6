package consume_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

// latestBroker is a backend with a LatestReader: the newest message per
// key, kept from its own publishes (as an engine with a key index would).
type latestBroker struct {
	broker.Broker
	mu     sync.Mutex
	newest map[string]*message.Message // topic + "\x00" + key
}

func (l *latestBroker) Latest(_ context.Context, topic, key string) (*message.Message, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.newest[topic+"\x00"+key]
	if m == nil {
		return nil, nil
	}
	return m.Clone(), nil
}

func (l *latestBroker) put(m *message.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.newest[m.Topic+"\x00"+m.Key] = m
}

func TestLatest(t *testing.T) {
	b := openEmbedded(t)
	ctx := context.Background()
	// A backend without LatestReader (the embedded engine, hidden behind
	// the bare interface) is refused; the engine itself answers.
	if _, _, err := consume.Latest(ctx, struct{ broker.Broker }{b}, "stock", "sku-1"); !errors.Is(err, broker.ErrNotSupported) {
		t.Fatalf("backend without a LatestReader: %v, want ErrNotSupported", err)
	}
	if _, _, err := consume.Latest(ctx, b, "stock", "sku-1"); !errors.Is(err, broker.ErrTopicNotFound) {
		t.Fatalf("embedded, unknown topic: %v, want ErrTopicNotFound", err)
	}
	lb := &latestBroker{Broker: b, newest: map[string]*message.Message{}}
	rt := consume.New(lb, nil)
	if _, _, err := rt.Latest(ctx, "stock", "sku-1"); !errors.Is(err, consume.ErrNoValue) {
		t.Fatalf("no value: %v, want ErrNoValue", err)
	}
	if _, _, err := rt.Latest(ctx, "stock", ""); !errors.Is(err, message.ErrInvalid) {
		t.Fatalf("empty key: %v, want ErrInvalid", err)
	}
	lb.put(&message.Message{Topic: "stock", Key: "sku-1", Payload: []byte("3"), PublishedAt: time.Now().Add(-2 * time.Second)})
	m, age, err := rt.Latest(ctx, "stock", "sku-1")
	if err != nil || string(m.Payload) != "3" || age < 2*time.Second || age > time.Minute {
		t.Fatalf("Latest: %v, age %s, err %v", m, age, err)
	}
	lb.put(&message.Message{Topic: "stock", Key: "sku-1", Payload: []byte("0"), PublishedAt: time.Now(), ExpiresAt: time.Now().Add(-time.Millisecond)})
	if _, _, err := rt.Latest(ctx, "stock", "sku-1"); !errors.Is(err, consume.ErrNoValue) {
		t.Fatalf("newest expired: %v, want ErrNoValue (never an older value)", err)
	}
}
