package brokertest

import (
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// testDelay: a message with DeliverAt is not delivered before that time, is
// delivered after it, and does not hold back messages published after it.
func (s *suite) testDelay(t *testing.T) {
	s.run(t, "DeliverAt", func(t *testing.T) {
		s.need(t, "Delay", s.caps.Delay)
		s.need(t, "Groups", s.caps.Groups)
		b := s.open(t)
		topic := Topic(t)
		x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t)})
		at := time.Now().Add(s.scale(500 * time.Millisecond))
		Publish(t, b, topic, &message.Message{Payload: []byte("later"), DeliverAt: at})
		Publish(t, b, topic, msg("now"))
		d := s.recv(t, x)
		if string(d.Message.Payload) == "later" {
			t.Fatalf("delayed message delivered %s before its DeliverAt", time.Until(at))
		}
		payloadIs(t, d, "now")
		s.ack(t, d)
		d = s.recv(t, x)
		if now := time.Now(); now.Before(at) {
			t.Fatalf("delayed message delivered %s before its DeliverAt", at.Sub(now))
		}
		payloadIs(t, d, "later")
		if diff := d.Message.DeliverAt.Sub(at); diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("delivered DeliverAt = %s, want %s", d.Message.DeliverAt, at)
		}
		if late := time.Since(at); late > s.scale(2*time.Second) {
			t.Errorf("delayed message delivered %s after its DeliverAt", late)
		}
		s.ack(t, d)
	})
}

// testExpiry: an expired message is never handed to a handler; it is
// dead-lettered with reason "expired" where the backend has dead letters.
func (s *suite) testExpiry(t *testing.T) {
	s.run(t, "NeverDeliveredLate", func(t *testing.T) {
		s.need(t, "Expiry", s.caps.Expiry)
		s.need(t, "Groups", s.caps.Groups)
		b := s.open(t)
		topic, group := Topic(t), Group(t)
		var dlq *sub
		if s.caps.DeadLetter {
			dlq = s.dlqWatcher(t, b, group)
		}
		p := broker.SubscribeParams{Topic: topic, Group: group, Start: broker.StartPosition{Kind: broker.StartEarliest}}
		if !s.caps.StartPositions {
			// Create the group at latest now, come back to it later.
			p.Start = broker.StartPosition{}
			if err := s.subscribe(t, b, p).Close(); err != nil {
				t.Fatalf("Close of the subscription: %v", err)
			}
		}
		expires := time.Now().Add(50 * time.Millisecond)
		Publish(t, b, topic, &message.Message{Payload: []byte("stale"), Headers: map[string]string{"x-origin": "brokertest"}, ExpiresAt: expires})
		Publish(t, b, topic, msg("fresh"))
		time.Sleep(time.Until(expires.Add(150 * time.Millisecond)))
		x := s.subscribe(t, b, p)
		d := s.recv(t, x)
		payloadIs(t, d, "fresh")
		s.ack(t, d)
		ExpectNone(t, x, s.quiet())
		if dlq != nil {
			dl := s.recv(t, dlq)
			payloadIs(t, dl, "stale")
			if got := dl.Message.Header(message.HeaderDLQReason); got != "expired" {
				t.Errorf("dead letter of an expired message: reason %q, want \"expired\"", got)
			}
			if got := dl.Message.Header(message.HeaderDLQGroup); got != group {
				t.Errorf("dead letter of an expired message: group header %q, want %q", got, group)
			}
			if got := dl.Message.Header("x-origin"); got != "brokertest" {
				t.Errorf("dead letter of an expired message lost header x-origin (got %q)", got)
			}
			s.ack(t, dl)
		}
	})
	s.run(t, "ExpiresBeforeRedelivery", func(t *testing.T) {
		s.need(t, "Expiry", s.caps.Expiry)
		s.needAck(t)
		b := s.open(t)
		topic, group := Topic(t), Group(t)
		var dlq *sub
		if s.caps.DeadLetter {
			dlq = s.dlqWatcher(t, b, group)
		}
		retry := s.scale(400 * time.Millisecond)
		x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: group, MaxAttempts: 5, Backoff: constBackoff(retry)})
		expires := time.Now().Add(s.scale(200 * time.Millisecond))
		Publish(t, b, topic, &message.Message{Payload: []byte("short-lived"), ExpiresAt: expires})
		d := s.recv(t, x)
		if time.Now().After(expires) {
			t.Skip("skipped: the first delivery came after the expiry time; the machine is too slow for this timing (raise Harness.Slow)")
		}
		s.nackAfter(t, d, retry) // due again after it expired
		ExpectNone(t, x, retry+s.quiet())
		if dlq != nil {
			dl := s.recv(t, dlq)
			payloadIs(t, dl, "short-lived")
			if got := dl.Message.Header(message.HeaderDLQReason); got != "expired" {
				t.Errorf("dead letter of a message that expired while waiting for redelivery: reason %q, want \"expired\"", got)
			}
			s.ack(t, dl)
		}
	})
}
