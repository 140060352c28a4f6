package brokertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// testSettlement: a delivery is settled once; later settlements fail with
// ErrAlreadySettled; settling after the subscription closed fails with
// ErrClosed; AckAsync keeps Ack's guarantee.
func (s *suite) testSettlement(t *testing.T) {
	ops := []struct {
		name string
		do   func(ctx context.Context, d *broker.Delivery) error
	}{
		{"Ack", func(ctx context.Context, d *broker.Delivery) error { return d.Ack(ctx) }},
		{"AckAsync", ackAsync},
		{"Nack", func(ctx context.Context, d *broker.Delivery) error { return d.Nack(ctx, 0) }},
		{"Term", func(ctx context.Context, d *broker.Delivery) error { return d.Term(ctx, "test") }},
		{"Extend", func(ctx context.Context, d *broker.Delivery) error { return d.Extend(ctx, time.Second) }},
	}
	// Term and Extend are only exercised where the backend declares them.
	supported := ops[:0:0]
	for _, op := range ops {
		if op.name == "Term" && !s.caps.DeadLetter || op.name == "Extend" && !s.caps.Extend {
			continue
		}
		supported = append(supported, op)
	}
	settling := supported[:0:0]
	for _, op := range supported {
		if op.name != "Extend" {
			settling = append(settling, op)
		}
	}
	s.run(t, "Twice", func(t *testing.T) {
		s.needAck(t)
		b := s.open(t)
		topic := Topic(t)
		x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t), MaxAttempts: 5, Backoff: constBackoff(time.Hour)})
		Publish(t, b, topic, msgs("m", len(settling))...)
		ds := ReceiveN(t, x, len(settling), s.wait())
		ctx := s.ctx(t)
		for i, first := range settling {
			d := ds[i]
			if err := bounded(s.wait(), first.name, func() error { return first.do(ctx, d) }); err != nil {
				t.Fatalf("%s of %s: %v", first.name, describe(d), err)
			}
			if !d.Settled() {
				t.Errorf("Settled() = false after %s", first.name)
			}
			for _, then := range supported {
				if err := bounded(s.wait(), then.name, func() error { return then.do(ctx, d) }); !errors.Is(err, broker.ErrAlreadySettled) {
					t.Errorf("%s after %s: got %v, want broker.ErrAlreadySettled", then.name, first.name, err)
				}
			}
		}
	})
	s.run(t, "AfterClose", func(t *testing.T) {
		s.needAck(t)
		b := s.open(t)
		topic, group := Topic(t), Group(t)
		p := broker.SubscribeParams{Topic: topic, Group: group, MaxAttempts: 5, Backoff: constBackoff(10 * time.Millisecond)}
		x := s.subscribe(t, b, p)
		Publish(t, b, topic, msgs("m", len(supported))...)
		ds := ReceiveN(t, x, len(supported), s.wait())
		if err := x.Close(); err != nil {
			t.Fatalf("Close of the subscription: %v", err)
		}
		ctx := s.ctx(t)
		for i, op := range supported {
			if err := bounded(s.wait(), op.name, func() error { return op.do(ctx, ds[i]) }); !errors.Is(err, broker.ErrClosed) {
				t.Errorf("%s after the subscription was closed: got %v, want broker.ErrClosed", op.name, err)
			}
		}
		// None of the failed settlements took effect: all of them come back.
		y := s.subscribe(t, b, p)
		seen := map[string]bool{}
		for _, d := range ReceiveN(t, y, len(supported), s.wait()) {
			seen[d.Message.ID] = true
			s.ack(t, d)
		}
		for _, d := range ds {
			if !seen[d.Message.ID] {
				t.Errorf("message %s not redelivered after its settlement failed with the subscription closed", d.Message.ID)
			}
		}
	})
	s.run(t, "AckAsync", s.testAckAsync)
}

// testAckAsync: AckAsync reports each ack's outcome exactly once, with the
// guarantee of Ack (acked messages are not delivered again, to this
// subscription or to the next one of the group), and reports a second
// settlement as ErrAlreadySettled.
func (s *suite) testAckAsync(t *testing.T) {
	s.needAck(t)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	const n = 40
	p := broker.SubscribeParams{Topic: topic, Group: group, MaxAttempts: 5, MaxInFlight: n, AckDeadline: s.scale(time.Second), Backoff: constBackoff(10 * time.Millisecond)}
	x := s.subscribe(t, b, p)
	Publish(t, b, topic, msgs("m", n)...)
	ds := ReceiveN(t, x, n, s.wait())
	outcomes := make(chan error, 2*n)
	ctx := s.ctx(t)
	// Four goroutines ack at once, as the consumer runtime's workers do.
	const ackers = 4
	var wg sync.WaitGroup
	for k := range ackers {
		wg.Go(func() {
			for i := k; i < n; i += ackers {
				d := ds[i]
				if err := bounded(s.wait(), "AckAsync", func() error {
					d.AckAsync(ctx, func(err error) { outcomes <- err })
					return nil
				}); err != nil {
					t.Error(err)
					return
				}
				if !d.Settled() {
					t.Errorf("Settled() = false once AckAsync of %s returned", describe(d))
				}
			}
		})
	}
	wg.Wait()
	timeout := time.After(s.wait())
	for i := range n {
		select {
		case err := <-outcomes:
			if err != nil {
				t.Errorf("AckAsync outcome %d: %v", i, err)
			}
		case <-timeout:
			t.Fatalf("%d of %d AckAsync outcomes within %s", i, n, s.wait())
		}
	}
	ds[0].AckAsync(ctx, func(err error) { outcomes <- err })
	select {
	case err := <-outcomes:
		if !errors.Is(err, broker.ErrAlreadySettled) {
			t.Errorf("AckAsync after AckAsync: got %v, want broker.ErrAlreadySettled", err)
		}
	case <-time.After(s.wait()):
		t.Fatal("no outcome for the second AckAsync")
	}
	// Past the deadline, nothing comes back, here or to the group's next
	// subscription.
	ExpectNone(t, x, p.AckDeadline+s.quiet())
	if err := x.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	y := s.subscribe(t, b, p)
	ExpectNone(t, y, s.quiet())
	select {
	case err := <-outcomes:
		t.Errorf("an AckAsync outcome reported twice: %v", err)
	default:
	}
}

// ackAsync is AckAsync waiting for its outcome.
func ackAsync(ctx context.Context, d *broker.Delivery) error {
	out := make(chan error, 1)
	d.AckAsync(ctx, func(err error) { out <- err })
	select {
	case err := <-out:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no AckAsync outcome: %w", ctx.Err())
	}
}
