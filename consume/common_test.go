package consume_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

// wait bounds every wait for something that should happen.
const wait = 15 * time.Second

type order struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func openEmbedded(t *testing.T) *embedded.Broker {
	t.Helper()
	b, err := embedded.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func newRuntime(t *testing.T, b broker.Broker) (*consume.Runtime, *logBuf) {
	t.Helper()
	logs := &logBuf{}
	rt := consume.New(b, &consume.Config{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return rt, logs
}

// start runs rt until the returned stop is called (or the test ends); stop
// waits for Run to return and fails the test on a Run error.
func start(t *testing.T, rt *consume.Runtime) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(wait):
				t.Errorf("Run did not return within %s of cancel", wait)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func publish(t *testing.T, b broker.Broker, topic string, msgs ...*message.Message) {
	t.Helper()
	brokertest.Publish(t, b, topic, msgs...)
}

func jsonMsg(t *testing.T, v any) *message.Message {
	t.Helper()
	p, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return &message.Message{Payload: p, ContentType: "application/json"}
}

// eventually waits up to wait for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", wait, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dlq subscribes to group's dead-letter topic from the start.
func dlq(t *testing.T, b broker.Broker, group string) broker.Subscription {
	t.Helper()
	sub, err := b.Subscribe(context.Background(), &broker.SubscribeParams{
		Topic: message.DLQTopic(group), Group: group + "-dlqwatch", Start: broker.StartPosition{Kind: broker.StartEarliest},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

func stats(t *testing.T, rt *consume.Runtime) consume.Stats {
	t.Helper()
	s := rt.Stats()
	if len(s) != 1 {
		t.Fatalf("%d registrations, want 1", len(s))
	}
	return s[0]
}

// lag returns the group's unsettled messages.
func lag(t *testing.T, b broker.Broker, group string) int64 {
	t.Helper()
	gi, err := b.(broker.GroupAdmin).DescribeGroup(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	return gi.Lag
}

// earliest makes a new group start at the oldest message, so that a test
// can publish before Run has subscribed.
var earliest = consume.Subscribe(func(p *broker.SubscribeParams) { p.Start = broker.StartPosition{Kind: broker.StartEarliest} })

// handle registers h with earliest start and fails the test on error.
func handle(t *testing.T, rt *consume.Runtime, topic, group string, h consume.Handler, opts ...consume.Option) {
	t.Helper()
	if err := rt.Handle(topic, group, h, append([]consume.Option{earliest}, opts...)...); err != nil {
		t.Fatalf("Handle(%q, %q): %v", topic, group, err)
	}
}
