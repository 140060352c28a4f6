package brokertest

import (
	"errors"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// testCapabilities checks that the declared capabilities are consistent and
// that every capability the backend does not declare is refused with
// ErrNotSupported, never silently downgraded.
func (s *suite) testCapabilities(t *testing.T) {
	s.run(t, "Declared", func(t *testing.T) {
		c := s.caps
		if c.Name == "" {
			t.Error("Capabilities.Name is empty; name the backend (e.g. \"embedded\")")
		}
		if !c.Groups && !c.Ephemeral {
			t.Error("neither Groups nor Ephemeral: there is no way to subscribe")
		}
		if c.Request && !s.requester {
			t.Error("Capabilities.Request is declared but the backend does not implement broker.Requester")
		}
		if c.MaxPayload < 0 {
			t.Errorf("Capabilities.MaxPayload is %d, want >= 0", c.MaxPayload)
		}
		for _, dep := range []struct {
			name     string
			has, req bool
			reqName  string
		}{
			{"Ack", c.Ack, c.Groups, "Groups"},
			{"NackDelay", c.NackDelay, c.Ack, "Ack"},
			{"Extend", c.Extend, c.Ack, "Ack"},
			{"DeadLetter", c.DeadLetter, c.Groups, "Groups"},
			{"OrderedByKey", c.OrderedByKey, c.Groups, "Groups"},
			{"StartPositions", c.StartPositions, c.Groups, "Groups"},
		} {
			if dep.has && !dep.req {
				t.Errorf("Capabilities.%s is declared without Capabilities.%s", dep.name, dep.reqName)
			}
		}
	})

	// One refusal subtest per capability the backend lacks.
	refusals := []struct {
		name string
		has  bool
		do   func(t *testing.T, b broker.Broker) error
	}{
		{"Delay", s.caps.Delay, func(t *testing.T, b broker.Broker) error {
			m := msg("delayed")
			m.DeliverAt = time.Now().Add(time.Hour)
			_, err := b.Publish(s.ctx(t), &broker.PublishParams{Topic: Topic(t), Messages: []*message.Message{m}})
			return err
		}},
		{"Expiry", s.caps.Expiry, func(t *testing.T, b broker.Broker) error {
			m := msg("expiring")
			m.ExpiresAt = time.Now().Add(time.Hour)
			_, err := b.Publish(s.ctx(t), &broker.PublishParams{Topic: Topic(t), Messages: []*message.Message{m}})
			return err
		}},
		{"Patterns", s.caps.Patterns, func(t *testing.T, b broker.Broker) error {
			p := &broker.SubscribeParams{Topic: Topic(t) + ".*"}
			if s.caps.Groups {
				p.Group = Group(t)
			}
			return subscribeErr(t, s, b, p)
		}},
		{"Groups", s.caps.Groups, func(t *testing.T, b broker.Broker) error {
			return subscribeErr(t, s, b, &broker.SubscribeParams{Topic: Topic(t), Group: Group(t)})
		}},
		{"Ephemeral", s.caps.Ephemeral, func(t *testing.T, b broker.Broker) error {
			return subscribeErr(t, s, b, &broker.SubscribeParams{Topic: Topic(t)})
		}},
		{"OrderedByKey", s.caps.OrderedByKey || !s.caps.Groups, func(t *testing.T, b broker.Broker) error {
			return subscribeErr(t, s, b, &broker.SubscribeParams{Topic: Topic(t), Group: Group(t), OrderedByKey: true})
		}},
		{"StartPositions", s.caps.StartPositions || !s.caps.Groups, func(t *testing.T, b broker.Broker) error {
			return subscribeErr(t, s, b, &broker.SubscribeParams{Topic: Topic(t), Group: Group(t), Start: broker.StartPosition{Kind: broker.StartEarliest}})
		}},
		{"Request", s.caps.Request || !s.requester, func(t *testing.T, b broker.Broker) error {
			r := b.(*backend).Broker.(broker.Requester)
			_, err := r.Request(s.ctx(t), Topic(t), msg("ping"), time.Second)
			return err
		}},
	}
	missing := 0
	for _, r := range refusals {
		if r.has {
			continue
		}
		missing++
		s.run(t, "Refuses"+r.name, func(t *testing.T) {
			b := s.open(t)
			err := r.do(t, b)
			if !errors.Is(err, broker.ErrNotSupported) {
				t.Fatalf("Capabilities.%s is not declared, so the backend must refuse it with an error matching broker.ErrNotSupported; got %v", r.name, err)
			}
		})
	}
	if missing == 0 {
		t.Logf("backend %q declares every optional capability; no refusal to check", s.caps.Name)
	}
}

// subscribeErr subscribes and returns the error; a subscription that
// succeeds is closed at cleanup.
func subscribeErr(t *testing.T, s *suite, b broker.Broker, p *broker.SubscribeParams) error {
	t.Helper()
	x, err := b.Subscribe(s.ctx(t), p)
	if err == nil {
		t.Cleanup(func() { _ = x.Close() })
	}
	return err
}
