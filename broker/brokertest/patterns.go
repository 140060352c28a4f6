package brokertest

import (
	"context"
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
)

// testPatterns: a group on "p.*" gets p.a and p.b but not p.a.b; a group on
// "p.>" gets all three; deliveries name the concrete topic.
func (s *suite) testPatterns(t *testing.T) {
	s.run(t, "Group", func(t *testing.T) {
		s.need(t, "Patterns", s.caps.Patterns)
		s.need(t, "Groups", s.caps.Groups)
		s.patterns(t, func(t *testing.T, b broker.Broker, pattern string) *sub {
			return s.subscribe(t, b, broker.SubscribeParams{Topic: pattern, Group: Group(t)})
		})
	})
	s.run(t, "Ephemeral", func(t *testing.T) {
		s.need(t, "Patterns", s.caps.Patterns)
		s.need(t, "Ephemeral", s.caps.Ephemeral)
		s.patterns(t, func(t *testing.T, b broker.Broker, pattern string) *sub {
			return s.subscribe(t, b, broker.SubscribeParams{Topic: pattern})
		})
	})
}

func (s *suite) patterns(t *testing.T, b0 func(t *testing.T, b broker.Broker, pattern string) *sub) {
	b := s.open(t)
	prefix := Topic(t)
	star := b0(t, b, prefix+".*")
	tail := b0(t, b, prefix+".>")
	// Neither pattern matches the prefix itself.
	Publish(t, b, prefix, msg("prefix"))
	Publish(t, b, prefix+".a", msg("a"))
	Publish(t, b, prefix+".b", msg("b"))
	Publish(t, b, prefix+".a.b", msg("a.b"))
	check := func(x *sub, pattern string, want map[string]string) {
		t.Helper()
		got := map[string]string{}
		for _, d := range ReceiveN(t, x, len(want), s.wait()) {
			got[string(d.Message.Payload)] = d.Message.Topic
			if err := bounded(s.wait(), "Ack", func() error { return d.Ack(context.Background()) }); err != nil {
				t.Errorf("Ack of %s: %v", describe(d), err)
			}
		}
		for p, topic := range want {
			if gt, ok := got[p]; !ok {
				t.Errorf("pattern %q did not get the message published to %q (got %v)", pattern, topic, got)
			} else if gt != topic {
				t.Errorf("pattern %q: delivery of %q names topic %q, want the concrete topic %q", pattern, p, gt, topic)
			}
		}
		ExpectNone(t, x, s.quiet())
	}
	check(star, prefix+".*", map[string]string{"a": prefix + ".a", "b": prefix + ".b"})
	check(tail, prefix+".>", map[string]string{"a": prefix + ".a", "b": prefix + ".b", "a.b": prefix + ".a.b"})
}
