package brokertest

import (
	"errors"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// testLifecycle: a closed broker refuses work with ErrClosed and ends its
// subscriptions; a durable backend restarted cleanly loses nothing, and
// redelivers nothing that was acked.
func (s *suite) testLifecycle(t *testing.T) {
	s.run(t, "ClosedBroker", s.testClosedBroker)
	s.run(t, "RestartWithoutLoss", s.testRestart)
	s.run(t, "RestartKeepsDedup", s.testRestartDedup)
	s.run(t, "RestartKeepsDelayed", s.testRestartDelayed)
}

func (s *suite) testClosedBroker(t *testing.T) {
	b := s.open(t)
	topic := Topic(t)
	x, _ := s.subscribeAny(t, b, topic)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
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
			t.Fatalf("subscription's Deliveries channel still open %s after the broker was closed", s.wait())
		}
	}
	_, err := b.Broker.Publish(s.ctx(t), &broker.PublishParams{Topic: topic, Messages: []*message.Message{msg("too late")}})
	if !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close: got %v, want broker.ErrClosed", err)
	}
	p := &broker.SubscribeParams{Topic: topic}
	if s.caps.Groups {
		p.Group = Group(t)
	}
	if err := subscribeErr(t, s, b.Broker, p); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close: got %v, want broker.ErrClosed", err)
	}
}

func (s *suite) needRestart(t *testing.T) {
	t.Helper()
	if s.h.Reopen == nil {
		t.Skip("skipped: Harness.Reopen is nil, so restarts cannot be tested")
	}
	s.need(t, "Durable", s.caps.Durable)
}

func (s *suite) testRestart(t *testing.T) {
	s.needRestart(t)
	s.needAck(t)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	p := broker.SubscribeParams{Topic: topic, Group: group, MaxAttempts: 5, Backoff: constBackoff(10 * time.Millisecond)}
	x := s.subscribe(t, b, p)
	const n = 20
	res := Publish(t, b, topic, msgs("m", n)...)
	var maxSeq uint64
	for _, r := range res.Results {
		maxSeq = max(maxSeq, r.Seq)
	}
	acked := map[string]bool{}
	for _, d := range ReceiveN(t, x, n/2, s.wait()) {
		s.ack(t, d)
		acked[d.Message.ID] = true
	}

	b = s.reopen(t, b)
	y := s.subscribe(t, b, p)
	seen := map[string]bool{}
	for _, d := range ReceiveN(t, y, n/2, s.wait()) {
		id := d.Message.ID
		if acked[id] {
			t.Errorf("message acked before a clean restart was delivered again: %s", describe(d))
		} else if seen[id] {
			t.Errorf("message delivered twice after the restart: %s", describe(d))
		}
		seen[id] = true
		s.ack(t, d)
	}
	for _, r := range res.Results {
		if !acked[r.ID] && !seen[r.ID] {
			t.Errorf("message %s lost across the restart", r.ID)
		}
	}
	ExpectNone(t, y, s.quiet())

	// The restarted backend takes new messages, after the old ones.
	r := Publish(t, b, topic, msg("after restart")).Results[0]
	if maxSeq != 0 && r.Seq <= maxSeq {
		t.Errorf("first Seq after the restart = %d, want > %d (sequence numbers are never reused)", r.Seq, maxSeq)
	}
	d := s.recv(t, y)
	payloadIs(t, d, "after restart")
	s.ack(t, d)
}

func (s *suite) testRestartDedup(t *testing.T) {
	s.needRestart(t)
	s.need(t, "Dedup", s.caps.Dedup)
	b := s.open(t)
	topic := Topic(t)
	id := message.NewID()
	r1 := Publish(t, b, topic, &message.Message{ID: id, Payload: []byte("once")}).Results[0]
	b = s.reopen(t, b)
	r2 := Publish(t, b, topic, &message.Message{ID: id, Payload: []byte("once")}).Results[0]
	if !r2.Duplicate {
		t.Error("the same ID published again after a restart was not reported as a duplicate; the dedup window must survive a restart")
	} else if r2.Seq != r1.Seq {
		t.Errorf("duplicate after restart: Seq %d, want the original's %d", r2.Seq, r1.Seq)
	}
}

func (s *suite) testRestartDelayed(t *testing.T) {
	s.needRestart(t)
	s.need(t, "Delay", s.caps.Delay)
	s.need(t, "Groups", s.caps.Groups)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	p := broker.SubscribeParams{Topic: topic, Group: group}
	s.subscribe(t, b, p) // create the group
	at := time.Now().Add(s.scale(400 * time.Millisecond))
	Publish(t, b, topic, &message.Message{Payload: []byte("delayed"), DeliverAt: at})
	b = s.reopen(t, b)
	x := s.subscribe(t, b, p)
	d := s.recv(t, x)
	if now := time.Now(); now.Before(at) {
		t.Errorf("delayed message delivered %s before its DeliverAt after a restart", at.Sub(now))
	}
	payloadIs(t, d, "delayed")
	s.ack(t, d)
}
