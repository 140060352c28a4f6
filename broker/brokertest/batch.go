package brokertest

import (
	"errors"
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// testAtomicBatch: a batch with one invalid message fails and stores nothing.
func (s *suite) testAtomicBatch(t *testing.T) {
	s.run(t, "AllOrNothing", func(t *testing.T) {
		s.need(t, "AtomicBatch", s.caps.AtomicBatch)
		b := s.open(t)
		topic := Topic(t)
		x, _ := s.subscribeAny(t, b, topic)
		batch := msgs("m", 10)
		batch[5].Payload = make([]byte, s.payloadLimit()+1)
		res, err := b.Publish(s.ctx(t), &broker.PublishParams{Topic: topic, Messages: batch})
		if !errors.Is(err, message.ErrTooLarge) {
			t.Fatalf("batch with an oversized message: got %v (result %+v), want an error matching message.ErrTooLarge", err, res)
		}
		if res != nil && len(res.Results) > 0 {
			t.Errorf("failed atomic batch reported results %+v", res.Results)
		}
		Publish(t, b, topic, msg("marker"))
		d := s.recv(t, x)
		payloadIs(t, d, "marker") // nothing of the batch before it
		s.ack(t, d)
		ExpectNone(t, x, s.quiet())
	})
}
