package brokertest

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// testDeadLetter: after MaxAttempts, or at once on Term, a message goes to
// the group's dead-letter topic "$dlq.<group>" with reason, attempts and
// original headers; dead letters can be replayed to that group only.
func (s *suite) testDeadLetter(t *testing.T) {
	s.run(t, "MaxAttempts", s.testDLQMaxAttempts)
	s.run(t, "Term", s.testDLQTerm)
	s.run(t, "Replay", s.testDLQReplay)
}

func (s *suite) needDLQ(t *testing.T) {
	t.Helper()
	s.needAck(t)
	s.need(t, "DeadLetter", s.caps.DeadLetter)
}

// dlqMessage is a message with a header and key, to check they are kept.
func dlqMessage(payload string) *message.Message {
	return &message.Message{
		Key:         "k1",
		Payload:     []byte(payload),
		ContentType: "text/plain",
		Headers:     map[string]string{"x-origin": "brokertest"},
	}
}

// checkDeadLetter checks dead letter dl of orig (as delivered to group).
func (s *suite) checkDeadLetter(t *testing.T, dl *broker.Delivery, orig *broker.Delivery, reason string, attempts int) {
	t.Helper()
	m := dl.Message
	if want := message.DLQTopic(orig.Info.Group); m.Topic != want {
		t.Errorf("dead letter Topic = %q, want %q", m.Topic, want)
	}
	if !bytes.Equal(m.Payload, orig.Message.Payload) {
		t.Errorf("dead letter Payload = %q, want the original %q", short(m.Payload), short(orig.Message.Payload))
	}
	if m.Key != orig.Message.Key {
		t.Errorf("dead letter Key = %q, want the original %q", m.Key, orig.Message.Key)
	}
	if m.ContentType != orig.Message.ContentType {
		t.Errorf("dead letter ContentType = %q, want the original %q", m.ContentType, orig.Message.ContentType)
	}
	for k, v := range orig.Message.Headers {
		if got, ok := m.Headers[k]; !ok || got != v {
			t.Errorf("dead letter header %q = %q (present %t), want the original %q", k, got, ok, v)
		}
	}
	want := map[string]string{
		message.HeaderDLQReason: reason,
		message.HeaderDLQTopic:  orig.Message.Topic,
		message.HeaderDLQGroup:  orig.Info.Group,
	}
	if attempts > 0 {
		want[message.HeaderDLQAttempts] = strconv.Itoa(attempts)
	}
	if orig.Info.Seq != 0 {
		want[message.HeaderDLQSeq] = strconv.FormatUint(orig.Info.Seq, 10)
	}
	for k, v := range want {
		if got := m.Header(k); got != v {
			t.Errorf("dead letter header %s = %q, want %q (headers %v)", k, got, v, m.Headers)
		}
	}
}

func (s *suite) testDLQMaxAttempts(t *testing.T) {
	s.needDLQ(t)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	dlq := s.dlqWatcher(t, b, group)
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: group, MaxAttempts: 2, Backoff: constBackoff(10 * time.Millisecond)})
	Publish(t, b, topic, dlqMessage("poison"))
	d1 := s.recv(t, x)
	s.nackAfter(t, d1, 10*time.Millisecond)
	d2 := s.recv(t, x)
	checkRedelivery(t, d1, d2, 2)
	s.nackAfter(t, d2, 10*time.Millisecond)
	dl := s.recv(t, dlq)
	s.checkDeadLetter(t, dl, d1, "max-attempts", 2)
	s.ack(t, dl)
	ExpectNone(t, x, s.quiet())
}

func (s *suite) testDLQTerm(t *testing.T) {
	s.needDLQ(t)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	dlq := s.dlqWatcher(t, b, group)
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: group, MaxAttempts: 5, Backoff: constBackoff(10 * time.Millisecond)})
	Publish(t, b, topic, dlqMessage("bad input"))
	d := s.recv(t, x)
	ctx, cancel := context.WithTimeout(context.Background(), s.wait())
	defer cancel()
	if err := bounded(s.wait(), "Term", func() error { return d.Term(ctx, "bad") }); err != nil {
		t.Fatalf("Term of %s: %v", describe(d), err)
	}
	dl := s.recv(t, dlq)
	s.checkDeadLetter(t, dl, d, "bad", 1)
	s.ack(t, dl)
	ExpectNone(t, x, s.quiet())
}

func (s *suite) testDLQReplay(t *testing.T) {
	s.needDLQ(t)
	if !s.dlqAdmin {
		t.Skipf("skipped: backend %q does not implement broker.DeadLetterAdmin", s.caps.Name)
	}
	b := s.open(t)
	admin := b.Broker.(broker.DeadLetterAdmin)
	topic, group, other := Topic(t), Group(t), Group(t)+"-other"
	dlq := s.dlqWatcher(t, b, group)
	p := broker.SubscribeParams{Topic: topic, Group: group, MaxAttempts: 5, Backoff: constBackoff(10 * time.Millisecond)}
	x := s.subscribe(t, b, p)
	y := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: other})
	Publish(t, b, topic, dlqMessage("replay me"))

	d := s.recv(t, x)
	ctx := s.ctx(t)
	if err := bounded(s.wait(), "Term", func() error { return d.Term(ctx, "later") }); err != nil {
		t.Fatalf("Term of %s: %v", describe(d), err)
	}
	s.ack(t, s.recv(t, y)) // the other group handles it normally
	s.ack(t, s.recv(t, dlq))

	n, err := admin.ReplayDeadLetters(ctx, group, 0)
	if err != nil {
		t.Fatalf("ReplayDeadLetters(%q): %v", group, err)
	}
	if n != 1 {
		t.Errorf("ReplayDeadLetters(%q) = %d, want 1", group, n)
	}
	r := s.recv(t, x)
	payloadIs(t, r, "replay me")
	if r.Message.Topic != topic {
		t.Errorf("replayed message Topic = %q, want the original %q", r.Message.Topic, topic)
	}
	if got := r.Message.Header("x-origin"); got != "brokertest" {
		t.Errorf("replayed message lost its original header x-origin (got %q)", got)
	}
	s.ack(t, r)
	ExpectNone(t, y, s.quiet())
	ExpectNone(t, x, s.quiet())

	// Nothing is left to replay.
	if n, err := admin.ReplayDeadLetters(ctx, group, 0); err != nil || n != 0 {
		t.Errorf("second ReplayDeadLetters(%q) = %d, %v; want 0, nil (replay removes the dead letters)", group, n, err)
	}
}
