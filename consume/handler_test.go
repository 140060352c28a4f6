package consume_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

func TestTypedJSONHandler(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	got := make(chan order, 10)
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		if consume.DeliveryFrom(ctx) == nil {
			t.Error("DeliveryFrom(ctx) is nil inside a handler")
		}
		got <- *o
		return nil
	}))
	stop := start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "o1", Total: 42}))
	select {
	case o := <-got:
		if o != (order{ID: "o1", Total: 42}) {
			t.Fatalf("handler got %+v", o)
		}
	case <-time.After(wait):
		t.Fatal("handler not called")
	}
	eventually(t, "ack", func() bool { return stats(t, rt).Acked == 1 })
	stop()
	if n := lag(t, b, group); n != 0 {
		t.Fatalf("group lag %d after the handler succeeded, want 0", n)
	}
}

func TestProtobufHandler(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	got := make(chan string, 2)
	h, err := consume.HandlerOf(func(ctx context.Context, v *wrapperspb.StringValue) error {
		got <- v.GetValue()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	handle(t, rt, topic, group, h)
	start(t, rt)
	pb, _ := proto.Marshal(wrapperspb.String("binary"))
	publish(t, b, topic, &message.Message{Payload: pb, ContentType: "application/protobuf"})
	publish(t, b, topic, &message.Message{Payload: []byte(`"as json"`), ContentType: "application/json"})
	// Handlers run concurrently and the messages have no key: any order.
	seen := map[string]bool{}
	for range 2 {
		select {
		case v := <-got:
			seen[v] = true
		case <-time.After(wait):
			t.Fatal("handler not called")
		}
	}
	if !seen["binary"] || !seen["as json"] {
		t.Fatalf("decoded %v, want both \"binary\" (protobuf) and \"as json\" (JSON)", seen)
	}
}

func TestHandlerOfShapes(t *testing.T) {
	for _, bad := range []any{nil, 42, func(*order) error { return nil }, func(context.Context, order) error { return nil }, func(context.Context, *order) {}} {
		if _, err := consume.HandlerOf(bad); err == nil {
			t.Errorf("HandlerOf(%T) accepted", bad)
		}
	}
	h, err := consume.HandlerOf(func(context.Context, *message.Message) error { return nil })
	if err != nil || h.IsTx() {
		t.Fatalf("raw handler: %v", err)
	}
}

func TestUndecodablePayloadIsDeadLetteredOnce(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var calls atomic.Int32
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error { calls.Add(1); return nil }),
		consume.Retry(consume.Constant(10*time.Millisecond), 5))
	d := dlq(t, b, group)
	start(t, rt)
	publish(t, b, topic, &message.Message{Payload: []byte("{not json"), ContentType: "application/json", Headers: map[string]string{"x-k": "v"}})
	publish(t, b, topic, &message.Message{Payload: []byte("plain"), ContentType: "text/plain"})
	for range 2 {
		dl := brokertest.Receive(t, d, wait)
		info := consume.DeadLetterInfo(dl.Message)
		if info.Reason != "decode" || info.Attempts != "1" || !strings.Contains(info.Error, "order") {
			t.Fatalf("dead letter %+v, want reason decode after 1 attempt naming the type", info)
		}
		dl.Ack(context.Background())
	}
	if calls.Load() != 0 {
		t.Fatalf("handler called %d times for undecodable payloads", calls.Load())
	}
	brokertest.ExpectNone(t, d, 200*time.Millisecond)
	if s := stats(t, rt); s.Retried != 0 || s.DeadLettered != 2 {
		t.Fatalf("stats %+v, want 0 retried and 2 dead-lettered", s)
	}
}

func TestPanicIsRetriedWithStackLogged(t *testing.T) {
	b := openEmbedded(t)
	rt, logs := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var calls atomic.Int32
	done := make(chan struct{})
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		if calls.Add(1) == 1 {
			var s []int
			_ = s[len(s)] // index out of range
		}
		close(done)
		return nil
	}), consume.Retry(consume.Constant(10*time.Millisecond), 3))
	start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "p"}))
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("not retried after the panic")
	}
	eventually(t, "ack", func() bool { return stats(t, rt).Acked == 1 })
	l := logs.String()
	if !strings.Contains(l, "handler panicked") || !strings.Contains(l, "index out of range") || !strings.Contains(l, "goroutine") {
		t.Fatalf("panic and stack not logged:\n%s", l)
	}
	if s := stats(t, rt); s.Panics != 1 || s.Retried != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	const n = 4
	var cur, peak atomic.Int32
	release := make(chan struct{})
	var handled atomic.Int32
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		c := cur.Add(1)
		for {
			p := peak.Load()
			if c <= p || peak.CompareAndSwap(p, c) {
				break
			}
		}
		<-release
		cur.Add(-1)
		handled.Add(1)
		return nil
	}), consume.Concurrency(n))
	start(t, rt)
	for i := range 3 * n {
		publish(t, b, topic, jsonMsg(t, order{Total: i}))
	}
	eventually(t, "4 handlers in flight", func() bool { return cur.Load() == n })
	time.Sleep(100 * time.Millisecond) // would a fifth start?
	if p := peak.Load(); p != n {
		t.Fatalf("peak concurrency %d, want %d", p, n)
	}
	close(release)
	eventually(t, "all handled", func() bool { return handled.Load() == 3*n })
	if p := peak.Load(); p != n {
		t.Fatalf("peak concurrency %d, want %d", p, n)
	}
}

// TestGracefulShutdown: cancelling Run stops taking messages, lets the
// in-flight handler finish and acks it before Run returns.
func TestGracefulShutdown(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	var finished atomic.Int32
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		entered <- struct{}{}
		<-release
		finished.Add(1)
		return nil
	}), consume.Concurrency(1))
	stop := start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "a"}), jsonMsg(t, order{ID: "b"}), jsonMsg(t, order{ID: "c"}))
	<-entered
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Run returned while a handler was still running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(wait):
		t.Fatal("Run did not return after the in-flight handler finished")
	}
	if f := finished.Load(); f != 1 {
		t.Fatalf("%d handlers finished after cancel, want only the one in flight", f)
	}
	if s := stats(t, rt); s.Acked != 1 {
		t.Fatalf("acked %d, want 1 (the in-flight message)", s.Acked)
	}
	if n := lag(t, b, group); n != 2 {
		t.Fatalf("group lag %d after graceful stop, want the 2 messages not started", n)
	}
}

func TestTimeoutAbandonsStuckHandler(t *testing.T) {
	b := openEmbedded(t)
	rt, logs := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var calls atomic.Int32
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	ok := make(chan struct{})
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		if calls.Add(1) == 1 {
			<-stuck // ignores ctx: never returns during the test
			return nil
		}
		close(ok)
		return nil
	}), consume.Concurrency(1), consume.Timeout(200*time.Millisecond), consume.Retry(consume.Constant(10*time.Millisecond), 3))
	start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "slow"}))
	select {
	case <-ok:
	case <-time.After(wait):
		t.Fatal("the message was not retried after the handler timed out")
	}
	if s := stats(t, rt); s.Abandoned != 1 {
		t.Fatalf("abandoned %d, want 1", s.Abandoned)
	}
	if !strings.Contains(logs.String(), "abandoned") {
		t.Fatalf("abandonment not logged:\n%s", logs.String())
	}
}

func TestTraceParentPropagated(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var mu sync.Mutex
	var seen []string
	done := make(chan struct{}, 2)
	handle(t, rt, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		seen = append(seen, consume.TraceParent(ctx))
		mu.Unlock()
		done <- struct{}{}
		return nil
	}))
	start(t, rt)
	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	publish(t, b, topic, &message.Message{Payload: []byte("{}"), Headers: map[string]string{"traceparent": parent}})
	publish(t, b, topic, &message.Message{Payload: []byte("{}")})
	<-done
	<-done
	mu.Lock()
	defer mu.Unlock()
	var child, fresh string
	for _, s := range seen {
		if strings.HasPrefix(s, parent[:36]) {
			child = s
		} else {
			fresh = s
		}
	}
	if child == "" || child == parent || !strings.HasSuffix(child, "-01") {
		t.Fatalf("no child span of the message's trace: %v", seen)
	}
	if len(fresh) != 55 {
		t.Fatalf("no new trace for a message without traceparent: %v", seen)
	}
	m := &message.Message{Headers: map[string]string{"a": "b"}}
	shared := m.Headers
	consume.InjectTrace(consume.WithTraceParent(context.Background(), child), m)
	if m.Header("traceparent") != child || shared["traceparent"] != "" {
		t.Fatalf("InjectTrace: headers %v, caller's map %v", m.Headers, shared)
	}
}

func TestHandleRefusals(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	h := consume.Func(func(context.Context, *order) error { return nil })
	if err := rt.Handle("t", "", h); !errors.Is(err, message.ErrInvalid) {
		t.Errorf("no group: %v", err)
	}
	if err := rt.Handle("bad topic", "g", h); !errors.Is(err, message.ErrInvalid) {
		t.Errorf("bad topic: %v", err)
	}
	if err := rt.Handle("t", "g", consume.Handler{}); err == nil {
		t.Error("zero handler accepted")
	}
	if err := rt.Run(context.Background()); err == nil {
		t.Error("Run with no handlers succeeded")
	}
}
