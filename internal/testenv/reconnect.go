package testenv

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/message"
)

// CheckReconnect opens a backend through a proxy to serverURL's host, cuts
// every connection after a first message went through, and checks that the
// backend reconnects: a publish succeeds again (retried while it reports
// the outage) and the group subscription made before the cut receives it.
func CheckReconnect(t *testing.T, serverURL string, open func(t *testing.T, url string) broker.Broker) {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxy(t, u.Host)
	b := open(t, p.URL(t, serverURL))
	t.Cleanup(func() { _ = b.Close() })
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: group, AckDeadline: 2 * time.Second, Backoff: func(int) time.Duration { return 50 * time.Millisecond }})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	brokertest.Publish(t, b, topic, &message.Message{Payload: []byte("before")})
	d := brokertest.Receive(t, sub, 5*time.Second)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack: %v", err)
	}

	p.Cut()
	stop := time.Now().Add(30 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := b.Publish(pctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{Payload: []byte("after")}}})
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(stop) {
			t.Fatalf("publish still failing 30s after the connection was cut: %v", err)
		}
		t.Logf("publish during the outage: %v", err)
		time.Sleep(100 * time.Millisecond)
	}
	for {
		d := brokertest.Receive(t, sub, time.Until(stop))
		if string(d.Message.Payload) == "after" {
			_ = d.Ack(context.Background())
			return
		}
		_ = d.Ack(context.Background()) // a redelivery of "before" is allowed
	}
}
