package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// testPublish: what goes in comes out, with its metadata; limits and names
// are enforced with the shared validation errors.
func (s *suite) testPublish(t *testing.T) {
	s.run(t, "RoundTrip", s.testRoundTrip)
	s.run(t, "GeneratedID", s.testGeneratedID)
	s.run(t, "EmptyPayload", func(t *testing.T) { s.roundTripPayload(t, []byte{}) })
	s.run(t, "LargePayload", func(t *testing.T) {
		n := 900 << 10
		if limit := s.payloadLimit(); n > limit {
			n = limit
		}
		p := make([]byte, n)
		_, _ = rand.Read(p)
		s.roundTripPayload(t, p)
	})
	s.run(t, "PayloadAtLimit", func(t *testing.T) {
		b := s.open(t)
		p := make([]byte, s.payloadLimit())
		Publish(t, b, Topic(t), &message.Message{Payload: p})
	})
	s.run(t, "PayloadTooLarge", func(t *testing.T) {
		b := s.open(t)
		p := make([]byte, s.payloadLimit()+1)
		_, err := b.Publish(s.ctx(t), &broker.PublishParams{Topic: Topic(t), Messages: []*message.Message{{Payload: p}}})
		if !errors.Is(err, message.ErrTooLarge) || !errors.Is(err, message.ErrInvalid) {
			t.Fatalf("publish of %d bytes (limit %d): got %v, want an error matching message.ErrTooLarge and message.ErrInvalid", len(p), s.payloadLimit(), err)
		}
	})
	s.run(t, "BatchInOrder", s.testBatchInOrder)
	s.run(t, "ConcurrentPublishers", s.testConcurrentPublishers)
	s.run(t, "InvalidTopic", s.testInvalidTopic)
	s.run(t, "InvalidMessage", s.testInvalidMessage)
	s.run(t, "InvalidSubscribe", s.testInvalidSubscribe)
}

func (s *suite) testRoundTrip(t *testing.T) {
	b := s.open(t)
	topic := Topic(t)
	x, group := s.subscribeAny(t, b, topic)

	id := message.NewID()
	want := &message.Message{
		ID:          id,
		Key:         "customer-42",
		Headers:     map[string]string{"x-trace": "abc", "x-empty": "", "X-Mixed-Case": "Value with spaces"},
		Payload:     []byte(`{"order":1}`),
		ContentType: "application/json",
	}
	before := time.Now()
	res := Publish(t, b, topic, want.Clone())
	r := res.Results[0]
	if r.ID != id {
		t.Errorf("PublishResult ID = %q, want the caller's %q", r.ID, id)
	}
	if r.Duplicate {
		t.Error("PublishResult Duplicate = true for a new ID")
	}
	if s.caps.Durable && r.Seq == 0 {
		t.Error("PublishResult Seq = 0 on a durable backend, want > 0")
	}

	d := s.recv(t, x)
	got := d.Message
	if got.ID != id {
		t.Errorf("delivered ID = %q, want %q", got.ID, id)
	}
	if got.Topic != topic {
		t.Errorf("delivered Topic = %q, want %q", got.Topic, topic)
	}
	if got.Key != want.Key {
		t.Errorf("delivered Key = %q, want %q", got.Key, want.Key)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("delivered Payload = %q, want %q", got.Payload, want.Payload)
	}
	if got.ContentType != want.ContentType {
		t.Errorf("delivered ContentType = %q, want %q", got.ContentType, want.ContentType)
	}
	checkHeaders(t, want.Headers, got.Headers)
	if got.PublishedAt.IsZero() {
		t.Error("delivered PublishedAt is zero, want the time the message was stored")
	} else if got.PublishedAt.Before(before.Add(-2*time.Second)) || got.PublishedAt.After(time.Now().Add(2*time.Second)) {
		t.Errorf("delivered PublishedAt = %s, want about %s", got.PublishedAt, before)
	}
	if !got.DeliverAt.IsZero() || !got.ExpiresAt.IsZero() {
		t.Errorf("delivered DeliverAt = %s, ExpiresAt = %s; want both zero as published", got.DeliverAt, got.ExpiresAt)
	}

	info := d.Info
	if info.Group != group {
		t.Errorf("Info.Group = %q, want %q", info.Group, group)
	}
	if s.caps.Durable && group != "" {
		if info.Seq == 0 {
			t.Error("Info.Seq = 0 on a durable backend, want > 0")
		} else if r.Seq != 0 && info.Seq != r.Seq {
			t.Errorf("Info.Seq = %d, want the published Seq %d", info.Seq, r.Seq)
		}
	}
	if group != "" {
		if info.Attempt != 1 {
			t.Errorf("Info.Attempt = %d, want 1", info.Attempt)
		}
		if s.caps.Ack && info.Deadline.IsZero() {
			t.Error("Info.Deadline is zero for a group delivery on a backend with acks")
		}
	}
	if info.Redelivered {
		t.Error("Info.Redelivered = true on the first delivery")
	}
	s.ack(t, d)
}

// checkHeaders fails unless got has every header of want with its value.
// Extra headers are allowed only in the reserved "sb-" namespace.
func checkHeaders(t *testing.T, want, got map[string]string) {
	t.Helper()
	for k, v := range want {
		gv, ok := got[k]
		if !ok {
			t.Errorf("header %q missing on delivery (got headers %v)", k, got)
		} else if gv != v {
			t.Errorf("header %q = %q, want %q", k, gv, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && !strings.HasPrefix(k, "sb-") {
			t.Errorf("delivery has header %q that was not published (only reserved sb- headers may be added)", k)
		}
	}
}

func (s *suite) testGeneratedID(t *testing.T) {
	b := s.open(t)
	topic := Topic(t)
	x, _ := s.subscribeAny(t, b, topic)
	res := Publish(t, b, topic, msg("a"), msg("b"))
	if res.Results[0].ID == "" || res.Results[1].ID == "" {
		t.Fatalf("Publish without IDs returned empty IDs: %+v", res.Results)
	}
	if res.Results[0].ID == res.Results[1].ID {
		t.Fatalf("two messages got the same generated ID %q", res.Results[0].ID)
	}
	for i, d := range ReceiveN(t, x, 2, s.wait()) {
		want := map[string]string{"a": res.Results[0].ID, "b": res.Results[1].ID}[string(d.Message.Payload)]
		if d.Message.ID != want {
			t.Errorf("delivery %d: ID %q, want the generated %q", i, d.Message.ID, want)
		}
		s.ack(t, d)
	}
}

func (s *suite) roundTripPayload(t *testing.T, p []byte) {
	b := s.open(t)
	topic := Topic(t)
	x, _ := s.subscribeAny(t, b, topic)
	Publish(t, b, topic, &message.Message{Payload: p})
	d := s.recv(t, x)
	if !bytes.Equal(d.Message.Payload, p) {
		t.Fatalf("delivered payload of %d bytes differs from the published %d bytes", len(d.Message.Payload), len(p))
	}
	s.ack(t, d)
}

func (s *suite) testBatchInOrder(t *testing.T) {
	b := s.open(t)
	res := Publish(t, b, Topic(t), msgs("m", 5)...)
	if !s.caps.Durable {
		return
	}
	for i := 1; i < len(res.Results); i++ {
		if res.Results[i].Seq <= res.Results[i-1].Seq {
			t.Fatalf("batch results out of order: seq %d after %d (a batch is stored in order)", res.Results[i].Seq, res.Results[i-1].Seq)
		}
	}
}

func (s *suite) testConcurrentPublishers(t *testing.T) {
	const publishers, each = 8, 50
	b := s.open(t)
	topic := Topic(t)
	x, group := s.subscribeAny(t, b, topic)
	type out struct {
		res *broker.PublishResult
		err error
	}
	results := make(chan out, publishers*each)
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				ctx, cancel := context.WithTimeout(context.Background(), s.scale(30*time.Second))
				res, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{msg(fmt.Sprintf("p%d-%d", p, i))}})
				cancel()
				results <- out{res, err}
			}
		})
	}
	wg.Wait()
	t.Logf("%d concurrent publishers × %d messages: %s", publishers, each, time.Since(start))
	close(results)
	ids := map[string]bool{}
	seqs := map[uint64]bool{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("concurrent Publish: %v", r.err)
		}
		mr := r.res.Results[0]
		ids[mr.ID] = true
		if mr.Seq != 0 {
			if seqs[mr.Seq] {
				t.Errorf("two concurrent publishes got the same Seq %d", mr.Seq)
			}
			seqs[mr.Seq] = true
		}
	}
	seen := map[string]bool{}
	stop := time.Now().Add(s.scale(10 * time.Second))
	for len(seen) < len(ids) {
		if time.Now().After(stop) {
			t.Fatalf("got %d of %d messages within %s", len(seen), len(ids), s.scale(10*time.Second))
		}
		d := Receive(t, x, time.Until(stop))
		if seen[d.Message.ID] {
			t.Errorf("delivered twice: %s", describe(d))
		}
		seen[d.Message.ID] = true
		if group != "" {
			s.ack(t, d)
		}
	}
	for id := range ids {
		if !seen[id] {
			t.Errorf("published message %s was not delivered", id)
		}
	}
}

func (s *suite) testInvalidTopic(t *testing.T) {
	b := s.open(t)
	for _, topic := range []string{
		"", "has space", "a..b", ".a", "a.", "a.*", "a.>", "*", ">", "caf\u00e9", "a/b", strings.Repeat("x", message.MaxNameLen+1),
	} {
		_, err := b.Publish(s.ctx(t), &broker.PublishParams{Topic: topic, Messages: []*message.Message{msg("x")}})
		if !errors.Is(err, message.ErrInvalid) {
			t.Errorf("publish to topic %q: got %v, want an error matching message.ErrInvalid", topic, err)
		}
	}
}

func (s *suite) testInvalidMessage(t *testing.T) {
	b := s.open(t)
	topic := Topic(t)
	cases := map[string][]*message.Message{
		"empty batch":      {},
		"nil message":      {nil},
		"bad header name":  {{Payload: []byte("x"), Headers: map[string]string{"bad name": "v"}}},
		"empty header":     {{Payload: []byte("x"), Headers: map[string]string{"": "v"}}},
		"ID too long":      {{ID: strings.Repeat("i", message.DefaultLimits().MaxIDLen+1), Payload: []byte("x")}},
		"key too long":     {{Key: strings.Repeat("k", message.DefaultLimits().MaxKeyLen+1), Payload: []byte("x")}},
		"invalid UTF-8 ID": {{ID: "\xff\xfe", Payload: []byte("x")}},
	}
	if s.caps.Delay && s.caps.Expiry {
		now := time.Now()
		cases["expires before deliver-at"] = []*message.Message{{Payload: []byte("x"), DeliverAt: now.Add(time.Hour), ExpiresAt: now.Add(time.Minute)}}
	}
	for name, ms := range cases {
		_, err := b.Publish(s.ctx(t), &broker.PublishParams{Topic: topic, Messages: ms})
		if !errors.Is(err, message.ErrInvalid) {
			t.Errorf("%s: got %v, want an error matching message.ErrInvalid", name, err)
		}
	}
}

func (s *suite) testInvalidSubscribe(t *testing.T) {
	b := s.open(t)
	group := ""
	if s.caps.Groups {
		group = Group(t)
	}
	for _, topic := range []string{"has space", "a..b", "a.>.b", ""} {
		err := subscribeErr(t, s, b, &broker.SubscribeParams{Topic: topic, Group: group})
		if !errors.Is(err, message.ErrInvalid) {
			t.Errorf("subscribe to %q: got %v, want an error matching message.ErrInvalid", topic, err)
		}
	}
	if s.caps.Groups {
		for _, g := range []string{"bad group", "bad/group", strings.Repeat("g", 129)} {
			err := subscribeErr(t, s, b, &broker.SubscribeParams{Topic: Topic(t), Group: g})
			if !errors.Is(err, message.ErrInvalid) {
				t.Errorf("subscribe with group %q: got %v, want an error matching message.ErrInvalid", g, err)
			}
		}
		err := subscribeErr(t, s, b, &broker.SubscribeParams{Topic: Topic(t), Group: Group(t), AckDeadline: time.Millisecond})
		if !errors.Is(err, message.ErrInvalid) {
			t.Errorf("subscribe with a 1ms ack deadline: got %v, want an error matching message.ErrInvalid", err)
		}
	}
	if s.caps.Ephemeral {
		err := subscribeErr(t, s, b, &broker.SubscribeParams{Topic: Topic(t), MaxAttempts: 3})
		if !errors.Is(err, message.ErrInvalid) {
			t.Errorf("ephemeral subscribe with MaxAttempts: got %v, want an error matching message.ErrInvalid", err)
		}
	}
}
