package brokertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// testEphemeral: a subscription without a group sees live messages only,
// every ephemeral subscriber gets each message, and settling is a no-op.
func (s *suite) testEphemeral(t *testing.T) {
	s.run(t, "LiveOnly", func(t *testing.T) {
		s.need(t, "Ephemeral", s.caps.Ephemeral)
		b := s.open(t)
		topic := Topic(t)
		Publish(t, b, topic, msg("before"))
		x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic})
		ExpectNone(t, x, s.quiet())
		Publish(t, b, topic, msg("after"))
		d := s.recv(t, x)
		payloadIs(t, d, "after")
		if d.Info.Group != "" {
			t.Errorf("ephemeral delivery Info.Group = %q, want \"\"", d.Info.Group)
		}
		if !d.Info.Deadline.IsZero() {
			t.Errorf("ephemeral delivery Info.Deadline = %s, want zero", d.Info.Deadline)
		}
		ExpectNone(t, x, s.quiet())
	})
	s.run(t, "FanOut", func(t *testing.T) {
		s.need(t, "Ephemeral", s.caps.Ephemeral)
		b := s.open(t)
		topic := Topic(t)
		x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic})
		y := s.subscribe(t, b, broker.SubscribeParams{Topic: topic})
		Publish(t, b, topic, msg("hello"))
		payloadIs(t, s.recv(t, x), "hello")
		payloadIs(t, s.recv(t, y), "hello")
	})
	s.run(t, "SlowSubscriberDoesNotBlockPublish", func(t *testing.T) {
		s.need(t, "Ephemeral", s.caps.Ephemeral)
		b := s.open(t)
		topic := Topic(t)
		x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, MaxInFlight: 16})
		// Never read x while publishing far more than it can buffer.
		start := time.Now()
		for i := range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), s.wait())
			_, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: msgs(fmt.Sprintf("b%d-", i), 100)})
			cancel()
			if err != nil {
				t.Fatalf("publish batch %d with a slow ephemeral subscriber: %v (a slow subscriber must not block publishers)", i, err)
			}
		}
		t.Logf("2000 messages published in %s past a subscriber that reads nothing", time.Since(start))
		// The subscriber still works: it gets what it buffered, then live
		// messages again.
		drained := 0
	drain:
		for {
			select {
			case <-x.Deliveries():
				drained++
			case <-time.After(s.quiet()):
				break drain
			}
		}
		t.Logf("the slow subscriber had %d messages buffered", drained)
		Publish(t, b, topic, msg("live"))
		payloadIs(t, s.recv(t, x), "live")
	})
	s.run(t, "SettleIsNoop", func(t *testing.T) {
		s.need(t, "Ephemeral", s.caps.Ephemeral)
		b := s.open(t)
		topic := Topic(t)
		x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic})
		Publish(t, b, topic, msg("a"), msg("b"), msg("c"), msg("d"))
		ds := ReceiveN(t, x, 4, s.wait())
		ctx := context.Background()
		if err := ds[0].Ack(ctx); err != nil {
			t.Errorf("Ack of an ephemeral delivery: %v, want nil", err)
		}
		if err := ds[1].Nack(ctx, 0); err != nil {
			t.Errorf("Nack of an ephemeral delivery: %v, want nil", err)
		}
		if err := ds[2].Term(ctx, "x"); err != nil {
			t.Errorf("Term of an ephemeral delivery: %v, want nil", err)
		}
		if err := ds[3].Extend(ctx, time.Second); err != nil {
			t.Errorf("Extend of an ephemeral delivery: %v, want nil", err)
		}
		// Nack and Term do not bring anything back.
		ExpectNone(t, x, s.quiet())
	})
}
