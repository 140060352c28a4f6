package consume_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

func TestExponentialBackoff(t *testing.T) {
	p := consume.Exponential(100*time.Millisecond, time.Second)
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 40: time.Second} {
		for range 100 {
			d := p(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, d, want/2, want)
			}
		}
	}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[p(3)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("no jitter: %d distinct delays in 50 draws", len(seen))
	}
}

func TestRetryThenSucceed(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	const delay = 50 * time.Millisecond
	var mu sync.Mutex
	var attempts []int
	var times []time.Time
	done := make(chan struct{})
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, consume.DeliveryFrom(ctx).Info.Attempt)
		times = append(times, time.Now())
		if len(attempts) < 3 {
			return errors.New("flaky")
		}
		close(done)
		return nil
	}), consume.Retry(consume.Constant(delay), 5))
	start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "r"}))
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("not handled after retries")
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Fatalf("attempts %v", attempts)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < delay {
			t.Fatalf("retry %d came after %s, before the backoff of %s", i, gap, delay)
		}
	}
	eventually(t, "ack", func() bool { return stats(t, rt).Acked == 1 })
}

func TestMaxAttemptsDeadLettersWithErrorAndHeaders(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var calls atomic.Int32
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		return fmt.Errorf("payment service said no (call %d)", calls.Add(1))
	}), consume.Retry(consume.Constant(10*time.Millisecond), 3))
	d := dlq(t, b, group)
	start(t, rt)
	m := jsonMsg(t, order{ID: "poison"})
	m.Key, m.Headers = "cust-1", map[string]string{"x-origin": "test"}
	publish(t, b, topic, m)
	dl := brokertest.Receive(t, d, wait)
	info := consume.DeadLetterInfo(dl.Message)
	if info.Reason != "max-attempts" || info.Attempts != "3" || info.Error != "payment service said no (call 3)" || info.Topic != topic || info.Group != group {
		t.Fatalf("dead letter %+v", info)
	}
	if dl.Message.Header("x-origin") != "test" || dl.Message.Key != "cust-1" || string(dl.Message.Payload) != string(m.Payload) {
		t.Fatalf("dead letter lost the original message: %+v", dl.Message)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d attempts, want 3", calls.Load())
	}
	brokertest.ExpectNone(t, d, 200*time.Millisecond)
}

func TestPermanentSkipsRetries(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var calls atomic.Int32
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		calls.Add(1)
		return consume.Permanent(errors.New("unknown customer"))
	}), consume.Retry(consume.Constant(10*time.Millisecond), 5))
	d := dlq(t, b, group)
	start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "x"}))
	info := consume.DeadLetterInfo(brokertest.Receive(t, d, wait).Message)
	if info.Reason != "permanent" || info.Error != "unknown customer" || info.Attempts != "1" {
		t.Fatalf("dead letter %+v", info)
	}
	if calls.Load() != 1 {
		t.Fatalf("%d calls, want 1", calls.Load())
	}
}

func TestExpiredNeverReachesHandler(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var mu sync.Mutex
	var seen []string
	handle(t, rt, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		seen = append(seen, string(m.Payload))
		mu.Unlock()
		return nil
	}))
	publish(t, b, topic, &message.Message{Payload: []byte("old"), ExpiresAt: time.Now().Add(30 * time.Millisecond)}, &message.Message{Payload: []byte("live")})
	time.Sleep(60 * time.Millisecond)
	start(t, rt)
	eventually(t, "live message handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 1 })
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != "[live]" {
		t.Fatalf("handler saw %v", seen)
	}
}

// noNackDelay is the embedded engine declaring NackDelay=false and refusing
// a delayed nack, like a backend without delayed redelivery.
type noNackDelay struct {
	broker.Broker
	refused atomic.Int32
}

func (n *noNackDelay) Capabilities() broker.Capabilities {
	c := n.Broker.Capabilities()
	c.Name, c.NackDelay = "embedded-no-nack-delay", false
	return c
}

func (n *noNackDelay) Subscribe(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := broker.CheckSubscribe(n.Capabilities(), p); err != nil {
		return nil, err
	}
	inner, err := n.Broker.Subscribe(ctx, p)
	if err != nil {
		return nil, err
	}
	s := &noDelaySub{Subscription: inner, n: n, ch: make(chan *broker.Delivery)}
	go func() {
		defer close(s.ch)
		for d := range inner.Deliveries() {
			s.ch <- broker.NewDelivery(d.Message, d.Info, s, d)
		}
	}()
	return s, nil
}

type noDelaySub struct {
	broker.Subscription
	n  *noNackDelay
	ch chan *broker.Delivery
}

func (s *noDelaySub) Deliveries() <-chan *broker.Delivery { return s.ch }
func (s *noDelaySub) inner(d *broker.Delivery) *broker.Delivery {
	return d.Token.(*broker.Delivery)
}
func (s *noDelaySub) Ack(ctx context.Context, d *broker.Delivery) error { return s.inner(d).Ack(ctx) }
func (s *noDelaySub) Nack(ctx context.Context, d *broker.Delivery, delay time.Duration) error {
	if delay > 0 {
		s.n.refused.Add(1)
		return broker.NotSupported("embedded-no-nack-delay", "nack delay", "")
	}
	return s.inner(d).Nack(ctx, 0)
}
func (s *noDelaySub) Term(ctx context.Context, d *broker.Delivery, reason string) error {
	return s.inner(d).Term(ctx, reason)
}
func (s *noDelaySub) Extend(ctx context.Context, d *broker.Delivery, by time.Duration) error {
	return s.inner(d).Extend(ctx, by)
}

// TestEmulatedNackDelay: without NackDelay the runtime holds a failed
// message in a timer and nacks it when due; other messages keep flowing
// meanwhile, even with one worker.
func TestEmulatedNackDelay(t *testing.T) {
	nd := &noNackDelay{Broker: openEmbedded(t)}
	rt, _ := newRuntime(t, nd)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	const delay = 400 * time.Millisecond
	var mu sync.Mutex
	events := []string{}
	var failedAt, retriedAt time.Time
	done := make(chan struct{})
	handle(t, rt, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		p := string(m.Payload)
		events = append(events, p)
		if p == "slow" {
			if failedAt.IsZero() {
				failedAt = time.Now()
				return errors.New("not yet")
			}
			retriedAt = time.Now()
			close(done)
		}
		return nil
	}), consume.Concurrency(1), consume.Retry(consume.Constant(delay), 3))
	start(t, rt)
	publish(t, nd, topic, &message.Message{Payload: []byte("slow")})
	eventually(t, "first attempt", func() bool { mu.Lock(); defer mu.Unlock(); return !failedAt.IsZero() })
	for i := range 5 {
		publish(t, nd, topic, &message.Message{Payload: fmt.Appendf(nil, "m%d", i)})
	}
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("the failed message was never retried")
	}
	mu.Lock()
	defer mu.Unlock()
	if gap := retriedAt.Sub(failedAt); gap < delay {
		t.Fatalf("retried after %s, before the %s backoff", gap, delay)
	}
	if got := strings.Join(events, ","); got != "slow,m0,m1,m2,m3,m4,slow" {
		t.Fatalf("order of handling %s: the waiting retry blocked other messages", got)
	}
	if nd.refused.Load() != 0 {
		t.Fatalf("the runtime asked the backend for %d delayed nacks it does not support", nd.refused.Load())
	}
}

// noOrdering is the embedded engine declaring OrderedByKey=false.
type noOrdering struct{ broker.Broker }

func (n *noOrdering) Capabilities() broker.Capabilities {
	c := n.Broker.Capabilities()
	c.OrderedByKey = false
	return c
}
