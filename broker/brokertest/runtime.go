package brokertest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/consume/inbox/boltinbox"
	"github.com/switchboard-dev/switchboard/message"
)

// RunRuntime runs the consumer-runtime section of the conformance suite:
// the delivery contract as handlers see it through package consume (retry
// timing and caps, dead-letter content, decode failures, inbox
// exactly-once, ordering under retries, stale drops, graceful stop, outbox
// order through a relay) on the backend h opens. Like Run, clauses are
// parallel subtests gated by the backend's capabilities; what the backend lacks (a delayed nack) the
// runtime emulates, so those clauses run everywhere.
func RunRuntime(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("brokertest: Harness.Open is nil")
	}
	if h.Slow <= 0 {
		h.Slow = 1
	}
	b := h.Open(t)
	caps := b.Capabilities()
	if err := b.Close(); err != nil {
		t.Errorf("brokertest: Close of the probe broker: %v", err)
	}
	s := &suite{h: h, caps: caps}
	if !caps.Groups || !caps.Ack {
		t.Skipf("skipped: backend %q has no durable groups with ack; the runtime needs them", caps.Name)
	}
	for _, c := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"RetryTiming", s.rtRetryTiming},
		{"DeadLetterContent", s.rtDeadLetter},
		{"DecodeFailure", s.rtDecode},
		{"InboxExactlyOnce", s.rtInbox},
		{"OrderingUnderRetries", s.rtOrdering},
		{"StaleDrop", s.rtStale},
		{"GracefulStop", s.rtGraceful},
		{"AcksBeforeStop", s.rtAcksBeforeStop},
		{"OutboxOrder", s.rtOutboxOrder},
	} {
		s.run(t, c.name, c.fn)
	}
}

// rtRun starts a runtime with the given registration and returns a stop
// function (also run at cleanup) and the runtime.
func (s *suite) rtRun(t *testing.T, b broker.Broker, topic, group string, h consume.Handler, opts ...consume.Option) (*consume.Runtime, func()) {
	t.Helper()
	rt := consume.New(b, nil)
	start := consume.Subscribe(func(p *broker.SubscribeParams) {
		if s.caps.StartPositions {
			p.Start = broker.StartPosition{Kind: broker.StartEarliest}
		}
	})
	if err := rt.Handle(topic, group, h, append([]consume.Option{start}, opts...)...); err != nil {
		t.Fatalf("Handle(%q, %q): %v", topic, group, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(2 * s.wait()):
				t.Errorf("Run did not return within %s of cancel", 2*s.wait())
			}
		})
	}
	t.Cleanup(stop)
	if !s.caps.StartPositions {
		// A group starting at latest must exist before the test publishes.
		time.Sleep(s.scale(200 * time.Millisecond))
	}
	return rt, stop
}

func (s *suite) eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(s.wait())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", s.wait(), what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func rtStats(rt *consume.Runtime) consume.Stats { return rt.Stats()[0] }

func (s *suite) rtRetryTiming(t *testing.T) {
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	delay := s.scale(150 * time.Millisecond)
	var mu sync.Mutex
	var at []time.Time
	var attempts []int
	s.rtRun(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		at = append(at, time.Now())
		attempts = append(attempts, consume.DeliveryFrom(ctx).Info.Attempt)
		return errors.New("always failing")
	}), consume.Retry(consume.Constant(delay), 3), consume.Concurrency(2))
	Publish(t, b, topic, msg("retry me"))
	s.eventually(t, "3 attempts", func() bool { mu.Lock(); defer mu.Unlock(); return len(at) >= 3 })
	time.Sleep(s.quiet() + delay)
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 3 {
		t.Fatalf("%d attempts (%v), want exactly 3 (the cap)", len(at), attempts)
	}
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Errorf("attempt numbers %v, want [1 2 3]", attempts)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < delay {
			t.Errorf("retry %d after %s, before the backoff of %s", i, gap, delay)
		}
	}
}

func (s *suite) rtDeadLetter(t *testing.T) {
	s.need(t, "DeadLetter", s.caps.DeadLetter)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	dlq := s.dlqWatcher(t, b, group)
	s.rtRun(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		return fmt.Errorf("downstream refused %s", m.Payload)
	}), consume.Retry(consume.Constant(s.scale(20*time.Millisecond)), 2))
	Publish(t, b, topic, dlqMessage("poison"))
	dl := s.recv(t, dlq)
	info := consume.DeadLetterInfo(dl.Message)
	if info.Reason != "max-attempts" || info.Error != "downstream refused poison" || info.Attempts != "2" || info.Topic != topic || info.Group != group {
		t.Errorf("dead letter %+v, want max-attempts after 2 attempts with the error text", info)
	}
	if dl.Message.Header("x-origin") != "brokertest" || dl.Message.Key != "k1" || string(dl.Message.Payload) != "poison" {
		t.Errorf("dead letter lost the original message: %s headers %v", describe(dl), dl.Message.Headers)
	}
	s.ack(t, dl)
}

func (s *suite) rtDecode(t *testing.T) {
	s.need(t, "DeadLetter", s.caps.DeadLetter)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	dlq := s.dlqWatcher(t, b, group)
	var calls atomic.Int32
	s.rtRun(t, b, topic, group, consume.Func(func(ctx context.Context, v *struct{ N int }) error {
		calls.Add(1)
		return nil
	}), consume.Retry(consume.Constant(s.scale(20*time.Millisecond)), 5))
	Publish(t, b, topic, &message.Message{Payload: []byte("{broken"), ContentType: "application/json"})
	info := consume.DeadLetterInfo(s.recv(t, dlq).Message)
	if info.Reason != "decode" || info.Attempts != "1" {
		t.Errorf("dead letter %+v, want reason decode after 1 attempt", info)
	}
	if calls.Load() != 0 {
		t.Errorf("handler called %d times for an undecodable payload", calls.Load())
	}
}

func (s *suite) rtInbox(t *testing.T) {
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	inbox, err := boltinbox.Open(filepath.Join(t.TempDir(), "inbox.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inbox.Close() })
	var effects atomic.Int32
	rt, _ := s.rtRun(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		effects.Add(1)
		time.Sleep(10 * time.Millisecond)
		return nil
	}), consume.Idempotent(inbox, time.Hour), consume.Concurrency(8), consume.Retry(consume.Constant(s.scale(20*time.Millisecond)), 5))
	copies := make([]*message.Message, 20)
	for i := range copies {
		copies[i] = &message.Message{ID: "same-id", Payload: []byte("x")}
	}
	res := Publish(t, b, topic, copies...)
	stored := 0
	for _, r := range res.Results {
		if !r.Duplicate {
			stored++
		}
	}
	if s.caps.Dedup {
		s.eventually(t, "every stored copy acked", func() bool { return rtStats(rt).Acked == int64(stored) })
	} else {
		// Without Dedup a backend may still drop copies of one ID without
		// saying so (SQS FIFO queues): wait until the acks stop growing.
		s.eventually(t, "a stored copy acked", func() bool { return rtStats(rt).Acked >= 1 })
		for prev := int64(-1); ; {
			n := rtStats(rt).Acked
			if n == prev {
				break
			}
			prev = n
			time.Sleep(s.quiet())
		}
		if n := rtStats(rt).Acked; n > int64(stored) {
			t.Errorf("%d acks for %d stored copies", n, stored)
		}
	}
	if n := effects.Load(); n != 1 {
		t.Errorf("side effect happened %d times for %d stored copies of one ID, want 1", n, stored)
	}
}

func (s *suite) rtOrdering(t *testing.T) {
	// Native, or emulated by the runtime (which needs Extend).
	s.need(t, "OrderedByKey or Extend", s.caps.OrderedByKey || s.caps.Extend)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	var mu sync.Mutex
	var log []string
	fails := 0
	rt, _ := s.rtRun(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		p := string(m.Payload)
		if p == "a1" && fails < 2 {
			fails++
			return errors.New("a1 fails twice")
		}
		log = append(log, p)
		return nil
	}), consume.OrderedByKey(), consume.Concurrency(4), consume.Retry(consume.Constant(s.scale(300*time.Millisecond)), 5))
	var ms []*message.Message
	for _, p := range []string{"a1", "b1", "a2", "b2", "b3", "a3"} {
		ms = append(ms, &message.Message{Key: p[:1], Payload: []byte(p)})
	}
	Publish(t, b, topic, ms...)
	s.eventually(t, "all acked", func() bool { return rtStats(rt).Acked == 6 })
	mu.Lock()
	defer mu.Unlock()
	i := func(p string) int { return slices.Index(log, p) }
	if !(i("a1") < i("a2") && i("a2") < i("a3")) {
		t.Errorf("key a out of order under retries: %v", log)
	}
	if i("b3") > i("a1") {
		t.Errorf("key b held back by key a's retries: %v", log)
	}
}

func (s *suite) rtStale(t *testing.T) {
	// Native, or emulated by the runtime (which needs Extend).
	s.need(t, "OrderedByKey or Extend", s.caps.OrderedByKey || s.caps.Extend)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	var mu sync.Mutex
	var got []string
	rt, _ := s.rtRun(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		got = append(got, string(m.Payload))
		mu.Unlock()
		return nil
	}), consume.OrderedByKey(), consume.DropStale())
	var ms []*message.Message
	for _, v := range []string{"1", "3", "2", "4"} {
		ms = append(ms, &message.Message{Key: "k", Payload: []byte("v" + v), Headers: map[string]string{message.HeaderVersion: v}})
	}
	Publish(t, b, topic, ms...)
	s.eventually(t, "all acked", func() bool { return rtStats(rt).Acked == 4 })
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, ",") != "v1,v3,v4" {
		t.Errorf("handled %v, want v1,v3,v4 (v2 is older than v3)", got)
	}
}

func (s *suite) rtGraceful(t *testing.T) {
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	var finished atomic.Int32
	rt, stop := s.rtRun(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		entered <- struct{}{}
		<-release
		finished.Add(1)
		return nil
	}), consume.Concurrency(1))
	Publish(t, b, topic, msg("in flight"))
	select {
	case <-entered:
	case <-time.After(s.wait()):
		t.Fatal("handler not called")
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Run returned before the in-flight handler finished")
	case <-time.After(s.quiet()):
	}
	close(release)
	<-stopped
	if st := rtStats(rt); finished.Load() != 1 || st.Acked != 1 {
		t.Errorf("after a graceful stop: %d finished, %d acked; want 1 and 1", finished.Load(), st.Acked)
	}
	// The acked message is not delivered to the group again.
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: group})
	ExpectNone(t, x, s.quiet())
}

// rtAcksBeforeStop: Run returns only once the acks of every handled
// message are answered, even when they are sent without waiting
// (broker.Delivery.AckAsync), so none of them comes back to the group.
func (s *suite) rtAcksBeforeStop(t *testing.T) {
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	const n = 300
	var handled atomic.Int32
	all := make(chan struct{})
	rt, stop := s.rtRun(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		if handled.Add(1) == n {
			close(all)
		}
		return nil
	}), consume.Concurrency(8))
	Publish(t, b, topic, msgs("m", n)...)
	select {
	case <-all:
	case <-time.After(s.wait()):
		t.Fatalf("%d of %d messages handled within %s", handled.Load(), n, s.wait())
	}
	stop() // at once: the last acks are still on their way
	if st := rtStats(rt); st.Acked != n || st.AckErrors != 0 {
		t.Errorf("after Run returned: %d acked, %d ack errors; want %d and 0", st.Acked, st.AckErrors, n)
	}
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: group})
	ExpectNone(t, x, s.quiet())
}
