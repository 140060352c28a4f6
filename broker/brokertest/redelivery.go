package brokertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// testRedelivery: nack = retry after backoff; no ack before the deadline →
// redelivered; extend = more time; closing a subscription releases its
// unsettled deliveries to the group.
func (s *suite) testRedelivery(t *testing.T) {
	s.run(t, "Nack", s.testNack)
	s.run(t, "NackDelay", s.testNackDelay)
	s.run(t, "AckDeadline", s.testAckDeadline)
	s.run(t, "StaleAckAfterDeadline", s.testStaleAck)
	s.run(t, "SlowConsumer", s.testSlowConsumer)
	s.run(t, "Extend", s.testExtend)
	s.run(t, "CloseReleasesUnacked", s.testCloseReleases)
}

func (s *suite) needAck(t *testing.T) {
	t.Helper()
	s.need(t, "Groups", s.caps.Groups)
	s.need(t, "Ack", s.caps.Ack)
}

// checkRedelivery fails unless d2 is the redelivery of d1 with attempt n.
func checkRedelivery(t *testing.T, d1, d2 *broker.Delivery, attempt int) {
	t.Helper()
	if d2.Message.ID != d1.Message.ID {
		t.Fatalf("expected the redelivery of %s, got %s", describe(d1), describe(d2))
	}
	if d2.Info.Attempt != attempt {
		t.Errorf("redelivery Info.Attempt = %d, want %d", d2.Info.Attempt, attempt)
	}
	if !d2.Info.Redelivered {
		t.Error("redelivery Info.Redelivered = false, want true")
	}
	if d1.Info.Seq != 0 && d2.Info.Seq != d1.Info.Seq {
		t.Errorf("redelivery Info.Seq = %d, want %d", d2.Info.Seq, d1.Info.Seq)
	}
}

func (s *suite) testNack(t *testing.T) {
	s.needAck(t)
	b := s.open(t)
	topic := Topic(t)
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t), MaxAttempts: 5, Backoff: constBackoff(20 * time.Millisecond)})
	Publish(t, b, topic, msg("retry me"))
	d1 := s.recv(t, x)
	s.nackAfter(t, d1, 20*time.Millisecond)
	d2 := s.recv(t, x)
	checkRedelivery(t, d1, d2, 2)
	payloadIs(t, d2, "retry me")
	s.ack(t, d2)
	ExpectNone(t, x, s.quiet())
}

func (s *suite) testNackDelay(t *testing.T) {
	s.needAck(t)
	s.need(t, "NackDelay", s.caps.NackDelay)
	b := s.open(t)
	topic := Topic(t)
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t), MaxAttempts: 5, Backoff: constBackoff(10 * time.Millisecond)})
	Publish(t, b, topic, msg("later"))
	d1 := s.recv(t, x)
	delay := s.scale(500 * time.Millisecond)
	nacked := time.Now()
	s.nack(t, d1, delay)
	ExpectNone(t, x, delay-s.scale(100*time.Millisecond))
	d2 := s.recv(t, x)
	if since := time.Since(nacked); since < delay {
		t.Errorf("redelivered %s after a nack with delay %s", since, delay)
	}
	checkRedelivery(t, d1, d2, 2)
	s.ack(t, d2)
}

func (s *suite) testAckDeadline(t *testing.T) {
	s.needAck(t)
	b := s.open(t)
	topic := Topic(t)
	deadline := s.scale(200 * time.Millisecond)
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t), MaxAttempts: 5, AckDeadline: deadline, Backoff: constBackoff(10 * time.Millisecond)})
	Publish(t, b, topic, msg("forgotten"))
	got := time.Now()
	d1 := s.recv(t, x)
	if dl := d1.Info.Deadline; !dl.IsZero() && (dl.Before(got) || dl.After(got.Add(deadline+s.scale(time.Second)))) {
		t.Errorf("Info.Deadline = %s, want about now+%s (%s)", dl, deadline, got.Add(deadline))
	}
	d2 := s.recv(t, x) // not settled: comes back after the deadline
	// The backend starts the clock when it hands the message out, which for
	// a remote backend is before Publish returns here: allow a quarter.
	if since := time.Since(got); since < deadline-deadline/4 {
		t.Errorf("redelivered %s after delivery, before the %s ack deadline", since, deadline)
	}
	checkRedelivery(t, d1, d2, 2)
	s.ack(t, d2)
	ExpectNone(t, x, s.quiet())
}

func (s *suite) testStaleAck(t *testing.T) {
	s.needAck(t)
	b := s.open(t)
	topic := Topic(t)
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t), MaxAttempts: 5, AckDeadline: s.scale(100 * time.Millisecond), Backoff: constBackoff(10 * time.Millisecond)})
	Publish(t, b, topic, msg("late"))
	d1 := s.recv(t, x)
	d2 := s.recv(t, x)
	checkRedelivery(t, d1, d2, 2)
	// The first delivery's settlement no longer applies.
	if err := bounded(s.wait(), "Ack", func() error { return d1.Ack(context.Background()) }); !errors.Is(err, broker.ErrDeliveryExpired) {
		t.Errorf("Ack of a delivery whose deadline passed and that was redelivered: got %v, want broker.ErrDeliveryExpired", err)
	}
	s.ack(t, d2)
	ExpectNone(t, x, s.quiet())
}

// testSlowConsumer: a consumer that neither reads nor settles for several
// ack deadlines gets redeliveries queued, and its late settlement fails
// promptly with ErrDeliveryExpired instead of blocking the group.
func (s *suite) testSlowConsumer(t *testing.T) {
	s.needAck(t)
	b := s.open(t)
	topic := Topic(t)
	deadline := s.scale(50 * time.Millisecond)
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t), MaxInFlight: 1, MaxAttempts: 100,
		AckDeadline: deadline, Backoff: constBackoff(time.Millisecond)})
	Publish(t, b, topic, msg("slow"))
	d0 := s.recv(t, x)
	time.Sleep(6 * deadline) // busy: the Deliveries channel is not read meanwhile

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.wait())
		defer cancel()
		done <- d0.Ack(ctx)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, broker.ErrDeliveryExpired) {
			t.Errorf("late Ack after several missed deadlines: got %v, want broker.ErrDeliveryExpired", err)
		}
	case <-time.After(s.wait()):
		go func() { // unblock the backend so that cleanup can finish
			for range x.Deliveries() {
			}
		}()
		t.Fatalf("late Ack blocked for %s while the consumer was not reading its Deliveries channel; "+
			"settlement must not wait for a consumer to make room (MaxInFlight 1, AckDeadline %s)", s.wait(), deadline)
	}
	// The newest delivery can still be acked; stale ones fail as expired.
	stop := time.Now().Add(s.wait())
	for {
		if time.Now().After(stop) {
			t.Fatalf("no delivery of the slow message could be acked within %s", s.wait())
		}
		d := Receive(t, x, time.Until(stop))
		if d.Message.ID != d0.Message.ID {
			t.Fatalf("unexpected delivery %s", describe(d))
		}
		err := bounded(s.wait(), "Ack", func() error { return d.Ack(context.Background()) })
		if err == nil {
			break
		}
		if !errors.Is(err, broker.ErrDeliveryExpired) {
			t.Fatalf("Ack of %s: got %v, want nil or broker.ErrDeliveryExpired", describe(d), err)
		}
	}
}

func (s *suite) testExtend(t *testing.T) {
	s.needAck(t)
	s.need(t, "Extend", s.caps.Extend)
	b := s.open(t)
	topic := Topic(t)
	deadline := s.scale(300 * time.Millisecond)
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t), MaxAttempts: 5, AckDeadline: deadline, Backoff: constBackoff(10 * time.Millisecond)})
	Publish(t, b, topic, msg("slow work"))
	d := s.recv(t, x)
	// Work for three deadlines, extending every half deadline.
	for range 6 {
		ctx, cancel := context.WithTimeout(context.Background(), s.wait())
		err := bounded(s.wait(), "Extend", func() error { return d.Extend(ctx, deadline) })
		cancel()
		if err != nil {
			t.Fatalf("Extend of %s: %v", describe(d), err)
		}
		ExpectNone(t, x, deadline/2)
	}
	s.ack(t, d)
	ExpectNone(t, x, deadline+s.quiet())
}

func (s *suite) testCloseReleases(t *testing.T) {
	s.needAck(t)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	p := broker.SubscribeParams{Topic: topic, Group: group, MaxAttempts: 5, Backoff: constBackoff(10 * time.Millisecond)}
	x := s.subscribe(t, b, p)
	const n = 20
	res := Publish(t, b, topic, msgs("m", n)...)
	ds := ReceiveN(t, x, 10, s.wait())
	acked := map[string]bool{}
	held := map[string]bool{}
	for i, d := range ds {
		if i < 5 {
			s.ack(t, d)
			acked[d.Message.ID] = true
		} else {
			held[d.Message.ID] = true
		}
	}
	if err := x.Close(); err != nil {
		t.Fatalf("Close of the subscription: %v", err)
	}
	if err := x.Err(); err != nil {
		t.Errorf("Err after a plain Close = %v, want nil", err)
	}
	// The deliveries channel must end.
	timer := time.NewTimer(s.wait())
	defer timer.Stop()
drain:
	for {
		select {
		case _, ok := <-x.Deliveries():
			if !ok {
				break drain
			}
		case <-timer.C:
			t.Fatalf("Deliveries channel not closed %s after Close", s.wait())
		}
	}

	// A new consumer of the group gets the held ones (redelivered) and the
	// rest, and none of the acked ones; the default ack deadline is far
	// away, so this is the release on Close, not a missed deadline.
	y := s.subscribe(t, b, p)
	seen := map[string]bool{}
	for _, d := range ReceiveN(t, y, n-5, s.wait()) {
		id := d.Message.ID
		switch {
		case acked[id]:
			t.Errorf("acked message delivered again after Close: %s", describe(d))
		case seen[id]:
			t.Errorf("message delivered twice to the new consumer: %s", describe(d))
		case held[id] && !d.Info.Redelivered:
			t.Errorf("unacked message released by Close came back with Redelivered = false: %s", describe(d))
		}
		seen[id] = true
		s.ack(t, d)
	}
	for _, r := range res.Results {
		if !acked[r.ID] && !seen[r.ID] {
			t.Errorf("message %s lost: neither acked before Close nor delivered after", r.ID)
		}
	}
	ExpectNone(t, y, s.quiet())
}
