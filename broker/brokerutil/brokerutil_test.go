package brokerutil_test

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	in := &message.Message{ID: "id", Key: "k", ContentType: "text/plain", ExpiresAt: now.Add(time.Hour), DeliverAt: now,
		Headers: map[string]string{"x-a": "1", "X-Mixed": "", "sb-version": "3"}}
	fields := map[string]string{}
	brokerutil.Encode(in, now, func(k, v string) { fields[k] = v })
	out := &message.Message{}
	for k, v := range fields {
		brokerutil.Decode(out, k, v)
	}
	if out.ID != in.ID || out.Key != in.Key || out.ContentType != in.ContentType || !out.ExpiresAt.Equal(in.ExpiresAt) || !out.DeliverAt.Equal(in.DeliverAt) || !out.PublishedAt.Equal(now) {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
	if len(out.Headers) != len(in.Headers) {
		t.Errorf("headers: got %v, want %v", out.Headers, in.Headers)
	}
	for k, v := range in.Headers {
		if out.Headers[k] != v {
			t.Errorf("header %s = %q, want %q", k, out.Headers[k], v)
		}
	}
}

func TestDeadLetter(t *testing.T) {
	m := &message.Message{ID: "id", Topic: "orders.placed", Key: "k", Payload: []byte("p"), Headers: map[string]string{"x": "1"}, ExpiresAt: time.Now()}
	dl := brokerutil.DeadLetter(m, message.Info{Group: "email", Seq: 7, Attempt: 3}, "")
	want := map[string]string{
		message.HeaderDLQReason: "term", message.HeaderDLQAttempts: "3", message.HeaderDLQTopic: "orders.placed",
		message.HeaderDLQGroup: "email", message.HeaderDLQSeq: "7", "x": "1",
	}
	for k, v := range want {
		if dl.Header(k) != v {
			t.Errorf("header %s = %q, want %q", k, dl.Header(k), v)
		}
	}
	if dl.Topic != "$dlq.email" || !dl.ExpiresAt.IsZero() || dl.ID != "id" || m.Headers[message.HeaderDLQReason] != "" {
		t.Errorf("dead letter %+v (original %+v)", dl, m)
	}
}

func TestSettings(t *testing.T) {
	s := brokerutil.SettingsOf(&broker.SubscribeParams{})
	if s.MaxAttempts != 5 || s.AckDeadline != 30*time.Second || s.MaxInFlight != 256 || s.Backoff == nil {
		t.Errorf("defaults: %+v", s)
	}
	if !s.Exhausted(5) || s.Exhausted(4) {
		t.Error("Exhausted")
	}
	if d := s.Delay(1, 0); d < 800*time.Millisecond || d > 1200*time.Millisecond {
		t.Errorf("first backoff %s, want about 1s", d)
	}
	if d := brokerutil.DefaultBackoff(20); d > 72*time.Second || d < 48*time.Second {
		t.Errorf("backoff cap %s, want about 1m", d)
	}
	if s := brokerutil.SettingsOf(&broker.SubscribeParams{MaxAttempts: -1}); s.Exhausted(1000) {
		t.Error("unlimited attempts exhausted")
	}
}

func TestQuery(t *testing.T) {
	u, _ := url.Parse("x://h?a=1s&b=2&c=true&d=x")
	q := brokerutil.NewQuery("x", u)
	if q.Duration("a", 0) != time.Second || q.Int("b", 0) != 2 || !q.Bool("c", false) {
		t.Error("parsed values")
	}
	if err := q.Err(); !errors.Is(err, broker.ErrBadURL) {
		t.Errorf("unknown parameter d: %v", err)
	}
}
