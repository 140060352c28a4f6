package brokertest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// testRequest: request/reply returns the responder's reply; with nobody
// subscribed it fails fast with ErrNoResponders; with no reply in time it
// fails with ErrTimeout.
func (s *suite) testRequest(t *testing.T) {
	s.run(t, "Reply", func(t *testing.T) {
		s.run(t, "Ephemeral", func(t *testing.T) {
			s.need(t, "Ephemeral", s.caps.Ephemeral)
			s.testReply(t, false)
		})
		s.run(t, "Group", func(t *testing.T) {
			s.need(t, "Groups", s.caps.Groups)
			s.testReply(t, true)
		})
	})
	s.run(t, "NoResponders", func(t *testing.T) {
		r, _ := s.needRequest(t)
		topic := Topic(t)
		start := time.Now()
		resp, err := s.request(s.ctx(t), r, topic, msg("anyone?"), s.wait())
		elapsed := time.Since(start)
		if !errors.Is(err, broker.ErrNoResponders) {
			t.Fatalf("Request with nobody subscribed: got %v (reply %v), want broker.ErrNoResponders", err, resp)
		}
		if limit := s.scale(time.Second); elapsed > limit {
			t.Errorf("Request with nobody subscribed took %s, want a fast failure (< %s), not a timeout", elapsed, limit)
		}
	})
	s.run(t, "Timeout", func(t *testing.T) {
		r, b := s.needRequest(t)
		topic := Topic(t)
		silent, _ := s.subscribeAny(t, b, topic)
		_ = silent // receives the request and never replies
		timeout := s.scale(300 * time.Millisecond)
		start := time.Now()
		resp, err := s.request(s.ctx(t), r, topic, msg("hello?"), timeout)
		elapsed := time.Since(start)
		if !errors.Is(err, broker.ErrTimeout) {
			t.Fatalf("Request to a responder that never replies: got %v (reply %v), want broker.ErrTimeout", err, resp)
		}
		if elapsed < timeout-10*time.Millisecond || elapsed > timeout+s.scale(2*time.Second) {
			t.Errorf("Request timed out after %s, want about %s", elapsed, timeout)
		}
	})
	s.run(t, "ContextCancel", func(t *testing.T) {
		r, b := s.needRequest(t)
		topic := Topic(t)
		s.subscribeAny(t, b, topic)
		ctx, cancel := context.WithTimeout(context.Background(), s.scale(200*time.Millisecond))
		defer cancel()
		start := time.Now()
		_, err := s.request(ctx, r, topic, msg("hello?"), s.wait())
		if err == nil {
			t.Fatal("Request with a cancelled context succeeded without a reply")
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, broker.ErrTimeout) {
			t.Errorf("Request whose context expired: got %v, want an error matching context.DeadlineExceeded or broker.ErrTimeout", err)
		}
		if elapsed := time.Since(start); elapsed > s.scale(2*time.Second) {
			t.Errorf("Request returned %s after its context expired at 200ms", elapsed)
		}
	})
}

// request calls r.Request, failing rather than hanging if it never returns.
func (s *suite) request(ctx context.Context, r broker.Requester, topic string, req *message.Message, timeout time.Duration) (resp *message.Message, err error) {
	err = bounded(timeout+s.wait(), "Request", func() (err error) {
		resp, err = r.Request(ctx, topic, req, timeout)
		return err
	})
	return resp, err
}

func (s *suite) needRequest(t *testing.T) (broker.Requester, *backend) {
	t.Helper()
	s.need(t, "Request", s.caps.Request)
	if !s.requester {
		t.Fatalf("Capabilities.Request is declared but the backend does not implement broker.Requester")
	}
	b := s.open(t)
	return b.Broker.(broker.Requester), b
}

func (s *suite) testReply(t *testing.T, group bool) {
	r, b := s.needRequest(t)
	topic := Topic(t)
	p := broker.SubscribeParams{Topic: topic}
	if group {
		p.Group = Group(t)
	}
	x := s.subscribe(t, b, p)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case d, ok := <-x.Deliveries():
				if !ok {
					return
				}
				if d.Message.Header(message.HeaderReplyTo) == "" {
					t.Errorf("request delivered without the %s header: %v", message.HeaderReplyTo, d.Message.Headers)
				}
				resp := &message.Message{
					Payload:     append([]byte("re: "), d.Message.Payload...),
					ContentType: "text/plain",
					Headers:     map[string]string{"x-echo": d.Message.Header("x-req")},
				}
				// Reply, then settle, with a context of their own: the test
				// stops the responder as soon as the last reply arrives,
				// which must not cancel an ack still on the wire.
				sctx := context.Background()
				if err := bounded(s.wait(), "Reply", func() error { return d.Reply(sctx, resp) }); err != nil {
					t.Errorf("Reply to %s: %v", describe(d), err)
				}
				if err := bounded(s.wait(), "Ack", func() error { return d.Ack(sctx) }); err != nil {
					t.Errorf("Ack of %s: %v", describe(d), err)
				}
			}
		}
	})
	defer func() { cancel(); wg.Wait() }()

	for i := range 3 {
		req := &message.Message{Payload: []byte("ping"), Headers: map[string]string{"x-req": "r" + string(rune('0'+i))}}
		resp, err := s.request(s.ctx(t), r, topic, req, s.wait())
		if err != nil {
			t.Fatalf("Request %d: %v", i, err)
		}
		if string(resp.Payload) != "re: ping" {
			t.Errorf("reply payload %q, want %q", resp.Payload, "re: ping")
		}
		if got, want := resp.Header("x-echo"), req.Headers["x-req"]; got != want {
			t.Errorf("reply header x-echo = %q, want %q (request headers reach the responder, reply headers the caller)", got, want)
		}
		if resp.ContentType != "text/plain" {
			t.Errorf("reply ContentType = %q, want text/plain", resp.ContentType)
		}
	}
}
