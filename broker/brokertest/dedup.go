package brokertest

import (
	"testing"

	"github.com/switchboard-dev/switchboard/message"
)

// testDedup: publishing an ID already published inside the dedup window
// stores nothing and reports a duplicate with the original's sequence.
func (s *suite) testDedup(t *testing.T) {
	s.run(t, "SameID", func(t *testing.T) {
		s.need(t, "Dedup", s.caps.Dedup)
		b := s.open(t)
		topic := Topic(t)
		x, _ := s.subscribeAny(t, b, topic)
		id := message.NewID()
		r1 := Publish(t, b, topic, &message.Message{ID: id, Payload: []byte("first")}).Results[0]
		r2 := Publish(t, b, topic, &message.Message{ID: id, Payload: []byte("second")}).Results[0]
		if r1.Duplicate {
			t.Error("first publish of an ID reported Duplicate = true")
		}
		if !r2.Duplicate {
			t.Error("second publish of the same ID reported Duplicate = false")
		}
		if r2.ID != id {
			t.Errorf("duplicate result ID = %q, want %q", r2.ID, id)
		}
		if r2.Seq != r1.Seq {
			t.Errorf("duplicate result Seq = %d, want the original's %d", r2.Seq, r1.Seq)
		}
		// A batch repeating the ID is a duplicate too, and the rest of the
		// batch is stored.
		r3 := Publish(t, b, topic, &message.Message{ID: id, Payload: []byte("third")}, msg("marker")).Results
		if !r3[0].Duplicate || r3[1].Duplicate {
			t.Errorf("batch [same ID, new message]: Duplicate = %t, %t; want true, false", r3[0].Duplicate, r3[1].Duplicate)
		}
		got := map[string]int{}
		for _, d := range ReceiveN(t, x, 2, s.wait()) {
			got[string(d.Message.Payload)]++
			s.ack(t, d)
		}
		if got["first"] != 1 || got["marker"] != 1 {
			t.Errorf("deliveries %v, want first and marker once each", got)
		}
		ExpectNone(t, x, s.quiet())
	})
	s.run(t, "PerTopic", func(t *testing.T) {
		s.need(t, "Dedup", s.caps.Dedup)
		b := s.open(t)
		id := message.NewID()
		Publish(t, b, Topic(t), &message.Message{ID: id, Payload: []byte("a")})
		if r := Publish(t, b, Topic(t), &message.Message{ID: id, Payload: []byte("b")}).Results[0]; r.Duplicate {
			t.Error("the same ID on another topic was reported as a duplicate; the dedup window is per topic")
		}
	})
}
