package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// Harness tells the suite how to get a backend.
type Harness struct {
	// Open returns a backend ready to use. It may be called many times; the
	// suite uses a fresh random topic and group names per test, so one
	// shared server is fine. The suite closes what it opens (t.Cleanup).
	Open func(t *testing.T) broker.Broker
	// Reopen, when not nil, closes b and opens the same backend again with
	// the same data (restart). Restart tests are skipped when nil.
	Reopen func(t *testing.T, b broker.Broker) broker.Broker
	// Slow scales every timeout for slow backends (1 = default; 0 is
	// taken as 1).
	Slow float64
}

// Run runs the conformance suite against the backend h opens. Every area and
// every clause is a parallel subtest, so Run returns before they finish:
// release shared resources with t.Cleanup, not defer.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("brokertest: Harness.Open is nil")
	}
	if h.Slow <= 0 {
		h.Slow = 1
	}
	b := h.Open(t)
	if b == nil {
		t.Fatal("brokertest: Harness.Open returned a nil broker")
	}
	caps := b.Capabilities()
	_, isRequester := b.(broker.Requester)
	_, isDLQAdmin := b.(broker.DeadLetterAdmin)
	if err := b.Close(); err != nil {
		t.Errorf("brokertest: Close of the probe broker: %v", err)
	}
	t.Logf("brokertest: backend %q, capabilities %+v", caps.Name, caps)

	s := &suite{h: h, caps: caps, requester: isRequester, dlqAdmin: isDLQAdmin}
	areas := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"Capabilities", s.testCapabilities},
		{"Publish", s.testPublish},
		{"Groups", s.testGroups},
		{"StartPositions", s.testStartPositions},
		{"Patterns", s.testPatterns},
		{"Ephemeral", s.testEphemeral},
		{"Redelivery", s.testRedelivery},
		{"Settlement", s.testSettlement},
		{"DeadLetter", s.testDeadLetter},
		{"Delay", s.testDelay},
		{"Expiry", s.testExpiry},
		{"Dedup", s.testDedup},
		{"Ordering", s.testOrdering},
		{"Request", s.testRequest},
		{"AtomicBatch", s.testAtomicBatch},
		{"Lifecycle", s.testLifecycle},
	}
	for _, a := range areas {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			a.fn(t)
		})
	}
}

// suite carries the harness and what the backend declared.
type suite struct {
	h         Harness
	caps      broker.Capabilities
	requester bool // the backend implements broker.Requester
	dlqAdmin  bool // the backend implements broker.DeadLetterAdmin
}

// run starts a parallel clause subtest.
func (s *suite) run(t *testing.T, name string, fn func(t *testing.T)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		fn(t)
	})
}

// need skips the test, naming the missing capability, unless have.
func (s *suite) need(t *testing.T, capability string, have bool) {
	t.Helper()
	if !have {
		t.Skipf("skipped: backend %q does not declare Capabilities.%s", s.caps.Name, capability)
	}
}

// scale multiplies d by the harness's Slow factor.
func (s *suite) scale(d time.Duration) time.Duration { return time.Duration(float64(d) * s.h.Slow) }

// wait is how long the suite waits for something that should happen.
func (s *suite) wait() time.Duration { return s.scale(5 * time.Second) }

// quiet is how long the suite watches for something that must not happen.
func (s *suite) quiet() time.Duration { return s.scale(300 * time.Millisecond) }

// ctx returns a context bounded by the suite's wait, cancelled at cleanup.
func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), s.wait())
	t.Cleanup(cancel)
	return ctx
}

// errStuck marks a backend call that did not return in time.
var errStuck = errors.New("the backend call did not return")

// bounded runs fn and waits for it at most d, so that a stuck backend fails
// the test instead of hanging it. A stuck fn is left running.
func bounded(d time.Duration, what string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		return fmt.Errorf("%s did not return within %s: %w", what, d, errStuck)
	}
}

// backend wraps an opened broker so the suite closes it exactly once, and
// never waits forever for it.
type backend struct {
	broker.Broker
	wait   time.Duration
	closed atomic.Bool
}

// Close closes the broker the first time and returns nil afterwards.
func (b *backend) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	return bounded(2*b.wait, "Broker.Close", b.Broker.Close)
}

func (s *suite) open(t *testing.T) *backend {
	t.Helper()
	raw := s.h.Open(t)
	if raw == nil {
		t.Fatal("brokertest: Harness.Open returned a nil broker")
	}
	b := &backend{Broker: raw, wait: s.wait()}
	t.Cleanup(func() {
		if err := b.Close(); err != nil && !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Close of the broker: %v", err)
		}
	})
	return b
}

// reopen restarts b through Harness.Reopen and returns the new broker.
func (s *suite) reopen(t *testing.T, b *backend) *backend {
	t.Helper()
	if !b.closed.CompareAndSwap(false, true) {
		t.Fatal("brokertest: reopen of a broker the suite already closed")
	}
	raw := s.h.Reopen(t, b.Broker)
	if raw == nil {
		t.Fatal("brokertest: Harness.Reopen returned a nil broker")
	}
	nb := &backend{Broker: raw, wait: s.wait()}
	t.Cleanup(func() {
		if err := nb.Close(); err != nil && !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Close of the reopened broker: %v", err)
		}
	})
	return nb
}

// sub wraps a subscription so that closing it twice is harmless and a stuck
// Close fails the test instead of hanging it.
type sub struct {
	broker.Subscription
	wait time.Duration
	once sync.Once
	err  error
}

// Close closes the subscription the first time and returns that result
// afterwards.
func (x *sub) Close() error {
	x.once.Do(func() { x.err = bounded(2*x.wait, "Subscription.Close", x.Subscription.Close) })
	return x.err
}

// subscribe subscribes or fails the test; the subscription is closed at
// cleanup.
func (s *suite) subscribe(t *testing.T, b broker.Broker, p broker.SubscribeParams) *sub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.wait())
	defer cancel()
	var raw broker.Subscription
	err := bounded(2*s.wait(), "Subscribe", func() (err error) {
		raw, err = b.Subscribe(ctx, &p)
		return err
	})
	if err != nil {
		t.Fatalf("Subscribe(topic %q, group %q): %v", p.Topic, p.Group, err)
	}
	x := &sub{Subscription: raw, wait: s.wait()}
	t.Cleanup(func() {
		if err := x.Close(); errors.Is(err, errStuck) {
			t.Errorf("cleanup: %v", err)
		}
	})
	return x
}

// subscribeAny subscribes to topic with a new group where the backend has
// groups, ephemerally otherwise. It returns the group ("" when ephemeral).
func (s *suite) subscribeAny(t *testing.T, b broker.Broker, topic string) (*sub, string) {
	t.Helper()
	if s.caps.Groups {
		g := Group(t)
		return s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: g}), g
	}
	if !s.caps.Ephemeral {
		t.Skipf("skipped: backend %q declares neither Capabilities.Groups nor Capabilities.Ephemeral", s.caps.Name)
	}
	return s.subscribe(t, b, broker.SubscribeParams{Topic: topic}), ""
}

// dlqWatcher subscribes a new group to the dead-letter topic of group,
// starting at the earliest message where the backend can.
func (s *suite) dlqWatcher(t *testing.T, b broker.Broker, group string) *sub {
	t.Helper()
	p := broker.SubscribeParams{Topic: message.DLQTopic(group), Group: Group(t) + "-dlq"}
	if s.caps.StartPositions {
		p.Start = broker.StartPosition{Kind: broker.StartEarliest}
	}
	return s.subscribe(t, b, p)
}

// recv waits the suite's default time for one delivery.
func (s *suite) recv(t *testing.T, x broker.Subscription) *broker.Delivery {
	t.Helper()
	return Receive(t, x, s.wait())
}

// ack acks d or fails the test.
func (s *suite) ack(t *testing.T, d *broker.Delivery) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.wait())
	defer cancel()
	if err := bounded(2*s.wait(), "Ack", func() error { return d.Ack(ctx) }); err != nil {
		t.Fatalf("Ack of %s: %v", describe(d), err)
	}
}

// nack nacks d with delay or fails the test.
func (s *suite) nack(t *testing.T, d *broker.Delivery, delay time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.wait())
	defer cancel()
	if err := bounded(2*s.wait(), "Nack", func() error { return d.Nack(ctx, delay) }); err != nil {
		t.Fatalf("Nack(%s) of %s: %v", delay, describe(d), err)
	}
}

// nackAfter nacks d so that it comes back after about delay: with an
// explicit delay where the backend declares NackDelay, otherwise with
// delay 0 (the subscription's Backoff must then return delay).
func (s *suite) nackAfter(t *testing.T, d *broker.Delivery, delay time.Duration) {
	t.Helper()
	if !s.caps.NackDelay {
		delay = 0
	}
	s.nack(t, d, delay)
}

// constBackoff returns a Backoff that always waits d.
func constBackoff(d time.Duration) func(int) time.Duration {
	return func(int) time.Duration { return d }
}

// Topic returns a new, unique topic name for the test:
// "sbtest.<test name>.<random>".
func Topic(t testing.TB) string {
	t.Helper()
	return "sbtest." + sanitize(t.Name()) + "." + random()
}

// Group returns a new, unique consumer group name for the test:
// "sbtest-<test name>-<random>".
func Group(t testing.TB) string {
	t.Helper()
	return "sbtest-" + sanitize(t.Name()) + "-" + random()
}

// sanitize keeps the last 60 characters of a test name that are allowed in
// one topic segment, replacing the others with '_'.
func sanitize(name string) string {
	var sb strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
			sb.WriteByte(c)
		case c == '/':
			sb.WriteByte('-')
		default:
			sb.WriteByte('_')
		}
	}
	s := sb.String()
	if len(s) > 60 {
		s = s[len(s)-60:]
	}
	if s == "" {
		s = "test"
	}
	return s
}

func random() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Receive waits up to timeout for one delivery on sub and fails the test
// when none comes or the subscription ends.
func Receive(t testing.TB, sub broker.Subscription, timeout time.Duration) *broker.Delivery {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case d, ok := <-sub.Deliveries():
		if !ok {
			t.Fatalf("subscription ended while waiting for a delivery (Err: %v)", sub.Err())
		}
		if d == nil {
			t.Fatal("subscription delivered a nil *broker.Delivery")
		}
		return d
	case <-timer.C:
		t.Fatalf("no delivery within %s", timeout)
	}
	return nil
}

// ReceiveN waits up to timeout in all for n deliveries on sub and fails the
// test when fewer come.
func ReceiveN(t testing.TB, sub broker.Subscription, n int, timeout time.Duration) []*broker.Delivery {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	out := make([]*broker.Delivery, 0, n)
	for len(out) < n {
		select {
		case d, ok := <-sub.Deliveries():
			if !ok {
				t.Fatalf("subscription ended after %d of %d deliveries (Err: %v)", len(out), n, sub.Err())
			}
			if d == nil {
				t.Fatal("subscription delivered a nil *broker.Delivery")
			}
			out = append(out, d)
		case <-timer.C:
			t.Fatalf("got %d of %d deliveries within %s", len(out), n, timeout)
		}
	}
	return out
}

// ExpectNone fails the test if sub delivers anything within d, or ends.
func ExpectNone(t testing.TB, sub broker.Subscription, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case got, ok := <-sub.Deliveries():
		if !ok {
			t.Fatalf("subscription ended while expecting no delivery (Err: %v)", sub.Err())
		}
		t.Fatalf("unexpected delivery within %s: %s payload %q", d, describe(got), short(got.Message.Payload))
	case <-timer.C:
	}
}

// Publish publishes msgs to topic in one call and fails the test on error.
func Publish(t testing.TB, b broker.Broker, topic string, msgs ...*message.Message) *broker.PublishResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var res *broker.PublishResult
	err := bounded(40*time.Second, "Publish", func() (err error) {
		res, err = b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: msgs})
		return err
	})
	if err != nil {
		t.Fatalf("Publish of %d message(s) to %q: %v", len(msgs), topic, err)
	}
	if res == nil || len(res.Results) != len(msgs) {
		n := -1
		if res != nil {
			n = len(res.Results)
		}
		t.Fatalf("Publish of %d message(s) to %q returned %d results", len(msgs), topic, n)
	}
	return res
}

// msg returns a message with payload p.
func msg(p string) *message.Message { return &message.Message{Payload: []byte(p)} }

// msgs returns n messages with payloads prefix0 .. prefix<n-1>.
func msgs(prefix string, n int) []*message.Message {
	out := make([]*message.Message, n)
	for i := range out {
		out[i] = msg(fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func describe(d *broker.Delivery) string {
	if d == nil || d.Message == nil {
		return "<nil delivery>"
	}
	return fmt.Sprintf("message %s (topic %q, key %q, group %q, seq %d, attempt %d, redelivered %t)",
		d.Message.ID, d.Message.Topic, d.Message.Key, d.Info.Group, d.Info.Seq, d.Info.Attempt, d.Info.Redelivered)
}

func short(p []byte) string {
	if len(p) > 40 {
		return string(p[:37]) + "..."
	}
	return string(p)
}

// payloadIs fails the test unless d carries payload want.
func payloadIs(t *testing.T, d *broker.Delivery, want string) {
	t.Helper()
	if !bytes.Equal(d.Message.Payload, []byte(want)) {
		t.Fatalf("got payload %q (%s), want %q", short(d.Message.Payload), describe(d), want)
	}
}

// payloadLimit is the payload limit the backend enforces by default.
func (s *suite) payloadLimit() int {
	limit := message.DefaultLimits().MaxPayload
	if s.caps.MaxPayload > 0 && s.caps.MaxPayload < limit {
		limit = s.caps.MaxPayload
	}
	return limit
}
