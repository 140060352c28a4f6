package consume_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

// noOrderingNoExtend is the embedded engine declaring neither OrderedByKey
// nor Extend.
type noOrderingNoExtend struct{ broker.Broker }

func (n *noOrderingNoExtend) Capabilities() broker.Capabilities {
	c := n.Broker.Capabilities()
	c.OrderedByKey, c.Extend = false, false
	return c
}

// TestOrderedByKeyKeepsWaitingMessages: with an ack deadline of 1 s, a1
// fails three times 700 ms apart while a2, a3 wait behind it; the runtime
// must keep every held delivery alive (extend), so that nothing is
// redelivered: each message reaches the handler once per attempt, and no
// ack fails.
func TestOrderedByKeyKeepsWaitingMessages(t *testing.T) {
	for _, bk := range orderBackends() {
		t.Run(bk.name, func(t *testing.T) {
			b := bk.open(t)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			var mu sync.Mutex
			var log []string
			fails := 0
			rt, _ := prepareOrdered(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
				mu.Lock()
				defer mu.Unlock()
				p := string(m.Payload)
				if p == "a1" && fails < 3 {
					fails++
					log = append(log, "a1-fail")
					return errors.New("a1 not yet")
				}
				log = append(log, p)
				return nil
			}), consume.Concurrency(4), consume.Timeout(300*time.Millisecond),
				consume.Retry(consume.Constant(700*time.Millisecond), 5),
				consume.Subscribe(func(p *broker.SubscribeParams) { p.AckDeadline = time.Second }))
			var msgs []*message.Message
			for _, p := range []string{"a1", "a2", "b1", "a3"} {
				msgs = append(msgs, &message.Message{Key: p[:1], Payload: []byte(p)})
			}
			publish(t, b, topic, msgs...)
			start(t, rt)
			within(t, slowWait, "all handled", func() bool { return stats(t, rt).Acked == 4 })
			// Give a redelivery of a message that was not kept alive the
			// time to show up (the backends redeliver after the deadline).
			time.Sleep(1500 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			if got := strings.Join(log, ","); strings.Replace(got, "b1,", "", 1) != "a1-fail,a1-fail,a1-fail,a1,a2,a3" {
				t.Fatalf("handled %s, want a1 three times failed, then a1, a2, a3 once each (b1 anywhere)", got)
			}
			s := stats(t, rt)
			if s.Received != 7 || s.AckErrors != 0 || s.DeadLettered != 0 {
				t.Fatalf("stats %+v: want 7 deliveries handled (4 of a1), no ack error", s)
			}
		})
	}
}

// TestOrderedByKeyStopReleases: messages waiting behind their key, or for
// a retry, when the runtime stops are given back to the backend; a new
// runtime on the group handles them all.
func TestOrderedByKeyStopReleases(t *testing.T) {
	for _, bk := range orderBackends() {
		if bk.name == "embedded" {
			continue // native: retries are delayed nacks, not held by the runtime
		}
		t.Run(bk.name, func(t *testing.T) {
			b := bk.open(t)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			var mu sync.Mutex
			var first []string
			rt1, _ := prepareOrdered(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
				mu.Lock()
				defer mu.Unlock()
				first = append(first, string(m.Payload))
				if m.Key == "a" {
					return errors.New("a fails in the first runtime")
				}
				return nil
			}), consume.Retry(consume.Constant(time.Minute), 5))
			var msgs []*message.Message
			for _, p := range []string{"a1", "a2", "b1", "a3", "a4"} {
				msgs = append(msgs, &message.Message{Key: p[:1], Payload: []byte(p)})
			}
			publish(t, b, topic, msgs...)
			stop := start(t, rt1)
			within(t, slowWait, "a1 failed, b1 handled, a2..a4 waiting", func() bool {
				s := stats(t, rt1)
				return s.Acked == 1 && s.Retried == 1 && s.Waiting == 4
			})
			stop()
			mu.Lock()
			if got := strings.Join(first, ","); got != "a1,b1" && got != "b1,a1" {
				t.Errorf("first runtime handled %s, want a1 (failed) and b1", got)
			}
			mu.Unlock()

			var second []string
			rt2, _ := prepareOrdered(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
				mu.Lock()
				defer mu.Unlock()
				second = append(second, string(m.Payload))
				return nil
			}))
			start(t, rt2)
			within(t, slowWait, "the released messages handled", func() bool { return stats(t, rt2).Acked >= 4 })
			mu.Lock()
			defer mu.Unlock()
			got := slices.Clone(second)
			slices.Sort(got)
			if strings.Join(got, ",") != "a1,a2,a3,a4" {
				t.Fatalf("second runtime handled %v, want a1..a4 once each", second)
			}
			t.Logf("after the restart the backend redelivered in the order %v", second)
		})
	}
}

// TestOrderedByKeyDeadLetterEmulated: after its last attempt (retried in
// the runtime) a message is dead-lettered with the number of attempts in
// its error text, and the next message of its key proceeds.
func TestOrderedByKeyDeadLetterEmulated(t *testing.T) {
	b := &noOrdering{openEmbedded(t)}
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var mu sync.Mutex
	var log []string
	var attempts []int
	rt, _ := prepareOrdered(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if string(m.Payload) == "a1" {
			attempts = append(attempts, consume.DeliveryFrom(ctx).Info.Attempt)
			return errors.New("a1 is broken")
		}
		log = append(log, string(m.Payload))
		return nil
	}), consume.Retry(consume.Constant(20*time.Millisecond), 3))
	dl := dlq(t, b, group)
	publish(t, b, topic, &message.Message{Key: "a", Payload: []byte("a1")}, &message.Message{Key: "a", Payload: []byte("a2")})
	start(t, rt)
	d := brokertest.Receive(t, dl, wait)
	info := consume.DeadLetterInfo(d.Message)
	if info.Reason != "max-attempts" || !strings.Contains(info.Error, "a1 is broken") || !strings.Contains(info.Error, "attempt 3") {
		t.Fatalf("dead letter %+v", info)
	}
	eventually(t, "a2 handled", func() bool { return stats(t, rt).Acked == 1 })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(attempts, []int{1, 2, 3}) || !slices.Equal(log, []string{"a2"}) {
		t.Fatalf("a1 attempts %v, handled %v", attempts, log)
	}
}

// TestOrderedByKeyUnkeyedNotOrdered: with emulated ordering, messages
// without a key are not held back by each other: a failed one goes back to
// the backend and the next ones are handled meanwhile, even with one
// worker.
func TestOrderedByKeyUnkeyedNotOrdered(t *testing.T) {
	b := &noOrdering{openEmbedded(t)}
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var mu sync.Mutex
	var log []string
	failed := false
	rt, _ := prepareOrdered(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		p := string(m.Payload)
		if p == "u1" && !failed {
			failed = true
			log = append(log, "u1-fail")
			return errors.New("not yet")
		}
		log = append(log, p)
		return nil
	}), consume.Concurrency(1), consume.Retry(consume.Constant(300*time.Millisecond), 3))
	publish(t, b, topic, &message.Message{Payload: []byte("u1")}, &message.Message{Payload: []byte("u2")}, &message.Message{Payload: []byte("u3")})
	start(t, rt)
	eventually(t, "all handled", func() bool { return stats(t, rt).Acked == 3 })
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(log, ","); got != "u1-fail,u2,u3,u1" {
		t.Fatalf("handled %s: unkeyed messages were ordered", got)
	}
}

// TestOrderedByKeyWindow: what the runtime holds is bounded by MaxInFlight.
// With a window of 4 and a1 stuck in its handler, a2..a4 wait behind it and
// nothing more is taken (not even b1, which is the documented cost of a key
// with more waiting messages than the window); once a1 returns, all are
// handled in order.
func TestOrderedByKeyWindow(t *testing.T) {
	b := &noOrdering{openEmbedded(t)}
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	release := make(chan struct{})
	var mu sync.Mutex
	var log []string
	rt, _ := prepareOrdered(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		if string(m.Payload) == "a1" {
			<-release
		}
		mu.Lock()
		defer mu.Unlock()
		log = append(log, string(m.Payload))
		return nil
	}), consume.Concurrency(2), consume.Subscribe(func(p *broker.SubscribeParams) { p.MaxInFlight = 4 }))
	var msgs []*message.Message
	for _, p := range []string{"a1", "a2", "a3", "a4", "a5", "a6", "b1"} {
		msgs = append(msgs, &message.Message{Key: p[:1], Payload: []byte(p)})
	}
	publish(t, b, topic, msgs...)
	start(t, rt)
	eventually(t, "the window full", func() bool { return stats(t, rt).Waiting == 3 })
	for range 20 {
		if s := stats(t, rt); s.Waiting > 3 || s.Received > 1 {
			close(release)
			t.Fatalf("with a window of 4 and a1 in its handler: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	eventually(t, "all handled", func() bool { return stats(t, rt).Acked == 7 })
	mu.Lock()
	defer mu.Unlock()
	// b1 comes in once a slot is free again, anywhere after a1.
	as := slices.DeleteFunc(slices.Clone(log), func(p string) bool { return p == "b1" })
	if strings.Join(as, ",") != "a1,a2,a3,a4,a5,a6" || len(log) != 7 || log[0] != "a1" {
		t.Fatalf("handled %v", log)
	}
}
