package consume_test

import (
	"context"
	"database/sql"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/consume/inbox/sqlinbox"
	"github.com/switchboard-dev/switchboard/message"
)

// A handler that never returns is abandoned: its delivery is retried, a new
// worker takes its place (the registration keeps its concurrency), and once
// the stuck handler does return its goroutine exits without settling
// anything: nothing is leaked beyond the stuck handler itself.
func TestWatchdogReplacesStuckWorker(t *testing.T) {
	b := openEmbedded(t)
	rt, logs := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	release := make(chan struct{})
	var once sync.Once
	unstick := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unstick)
	var stuckCalls atomic.Int32
	var returnedStuck atomic.Int32
	handled := make(chan string, 100)
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		if o.ID == "stuck" && consume.DeliveryFrom(ctx).Info.Attempt <= 3 {
			stuckCalls.Add(1)
			<-release // ignores ctx
			returnedStuck.Add(1)
			return nil
		}
		handled <- o.ID
		return nil
	}), consume.Concurrency(1), consume.Timeout(100*time.Millisecond), consume.Retry(consume.Constant(time.Millisecond), 10))
	stop := start(t, rt)

	// Warm up, then take the goroutine baseline with one worker idle.
	publish(t, b, topic, jsonMsg(t, order{ID: "warm"}))
	if id := <-handled; id != "warm" {
		t.Fatalf("handled %q", id)
	}
	eventually(t, "warm-up ack", func() bool { return stats(t, rt).Acked == 1 })
	baseline := runtime.NumGoroutine()

	// Three attempts get stuck one after another; each time the worker is
	// replaced and the fourth attempt succeeds. Other messages keep flowing
	// with concurrency 1, so the replacement is really working.
	publish(t, b, topic, jsonMsg(t, order{ID: "stuck"}))
	for i := range 5 {
		publish(t, b, topic, jsonMsg(t, order{ID: "next-" + string(rune('a'+i))}))
	}
	got := map[string]bool{}
	deadline := time.After(wait)
	for len(got) < 6 {
		select {
		case id := <-handled:
			got[id] = true
		case <-deadline:
			t.Fatalf("handled only %v; logs:\n%s", got, logs.String())
		}
	}
	s := stats(t, rt)
	if s.Abandoned != 3 || stuckCalls.Load() != 3 {
		t.Fatalf("abandoned %d, stuck calls %d, want 3 and 3", s.Abandoned, stuckCalls.Load())
	}
	eventually(t, "acks", func() bool { return stats(t, rt).Acked == 7 })
	// Three goroutines are stuck in the handler; nothing else was added.
	if n := runtime.NumGoroutine(); n > baseline+3+2 {
		t.Fatalf("%d goroutines with 3 stuck handlers, baseline %d", n, baseline)
	}
	unstick()
	eventually(t, "stuck handlers to return", func() bool { return returnedStuck.Load() == 3 })
	eventually(t, "retired workers to exit", func() bool { return runtime.NumGoroutine() <= baseline+1 })
	time.Sleep(50 * time.Millisecond)
	s = stats(t, rt)
	if s.Acked != 7 || s.AckErrors != 0 {
		t.Fatalf("after the stuck handlers returned: acked %d, ack errors %d; want 7 and 0 (a retired worker must not settle)", s.Acked, s.AckErrors)
	}
	stop()
	if n := lag(t, b, group); n != 0 {
		t.Fatalf("lag %d, want 0", n)
	}
}

// A graceful stop does not wait for a stuck handler beyond its timeout and
// grace.
func TestGracefulStopWithStuckHandler(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	entered := make(chan struct{}, 1)
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		entered <- struct{}{}
		<-release
		return nil
	}), consume.Concurrency(2), consume.Timeout(200*time.Millisecond))
	stop := start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "x"}))
	<-entered
	t0 := time.Now()
	stop()
	if el := time.Since(t0); el > 2*time.Second {
		t.Fatalf("Run took %s to return with a stuck handler (timeout 200ms)", el)
	}
	if s := stats(t, rt); s.Abandoned != 1 {
		t.Fatalf("abandoned %d, want 1", s.Abandoned)
	}
	// The abandoned attempt was handed back, not lost.
	if n := lag(t, b, group); n != 1 {
		t.Fatalf("lag %d, want 1", n)
	}
}

// The handler's ctx: a deadline, cancelled at the timeout with
// DeadlineExceeded (derived contexts too), cancelled when the handler
// returned; a handler that returns within the grace counts as a timeout
// without being abandoned.
func TestHandlerContext(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	type seen struct {
		deadline      time.Duration
		hasDeadline   bool
		err, childErr error
		attempt       int
	}
	results := make(chan seen, 4)
	var kept atomic.Pointer[context.Context]
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		var s seen
		dl, ok := ctx.Deadline()
		s.deadline, s.hasDeadline = time.Until(dl), ok
		s.attempt = consume.DeliveryFrom(ctx).Info.Attempt
		if s.attempt == 1 {
			child, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			select {
			case <-child.Done():
			case <-time.After(wait):
			}
			s.err, s.childErr = ctx.Err(), child.Err()
			results <- s
			return nil // returned within the grace: still a timeout
		}
		if ctx.Err() != nil {
			s.err = ctx.Err()
		}
		kept.Store(&ctx)
		results <- s
		return nil
	}), consume.Timeout(300*time.Millisecond), consume.Retry(consume.Constant(time.Millisecond), 5))
	start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "c"}))
	first := <-results
	if !first.hasDeadline || first.deadline <= 0 || first.deadline > 300*time.Millisecond {
		t.Errorf("deadline %v (set %v), want within the 300ms timeout", first.deadline, first.hasDeadline)
	}
	if !errors.Is(first.err, context.DeadlineExceeded) || !errors.Is(first.childErr, context.DeadlineExceeded) {
		t.Errorf("at the timeout: ctx.Err %v, derived ctx.Err %v; want DeadlineExceeded", first.err, first.childErr)
	}
	second := <-results
	if second.attempt != 2 || second.err != nil {
		t.Errorf("second call: attempt %d, ctx.Err %v; want attempt 2 (timeout retried) and a live ctx", second.attempt, second.err)
	}
	eventually(t, "ack", func() bool { return stats(t, rt).Acked == 1 })
	ctx := *kept.Load()
	select {
	case <-ctx.Done():
	case <-time.After(wait):
		t.Fatal("the handler's ctx was not cancelled after it returned")
	}
	if s := stats(t, rt); s.Abandoned != 0 || s.Retried != 1 {
		t.Errorf("abandoned %d, retried %d; want 0 and 1", s.Abandoned, s.Retried)
	}
}

// A transactional handler that is abandoned has its transaction rolled
// back and never committed, even when it returns nil later.
func TestWatchdogTxHandler(t *testing.T) {
	db := sqliteDB(t)
	x := sqlStore(t, db, sqlinbox.SQLite)
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	if _, err := db.Exec(`CREATE TABLE effects (id TEXT)`); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var once sync.Once
	unstick := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unstick)
	returned := make(chan struct{}, 1)
	done := make(chan struct{}, 1)
	handle(t, rt, topic, group, consume.TxFunc(func(ctx context.Context, tx *sql.Tx, o *order) error {
		if consume.DeliveryFrom(ctx).Info.Attempt == 1 {
			<-release
			returned <- struct{}{}
			return nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO effects VALUES (?)`, o.ID); err != nil {
			return err
		}
		done <- struct{}{}
		return nil
	}), consume.Idempotent(x, time.Hour), consume.Concurrency(1), consume.Timeout(150*time.Millisecond),
		consume.Retry(consume.Constant(time.Millisecond), 5))
	start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "tx"}))
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("the retry did not run")
	}
	eventually(t, "ack", func() bool { return stats(t, rt).Acked == 1 })
	unstick()
	<-returned
	time.Sleep(50 * time.Millisecond)
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM effects`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d effects, want 1", n)
	}
	if s := stats(t, rt); s.Abandoned != 1 || s.Acked != 1 {
		t.Fatalf("abandoned %d, acked %d; want 1 and 1", s.Abandoned, s.Acked)
	}
}

// HandlerOf calls functions of every accepted shape directly.
func TestHandlerOfCalls(t *testing.T) {
	type big struct {
		A, B, C string
		N       [8]int64
	}
	var got big
	h, err := consume.HandlerOf(func(ctx context.Context, v *big) error {
		if consume.DeliveryFrom(ctx) != nil {
			return errors.New("unexpected delivery")
		}
		got = *v
		return errors.New("returned")
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &message.Message{Payload: []byte(`{"A":"a","B":"b","C":"c","N":[1,2,3,4,5,6,7,8]}`)}
	if err := consume.CallHandler(context.Background(), h, m); err == nil || err.Error() != "returned" {
		t.Fatalf("error %v", err)
	}
	if got.A != "a" || got.C != "c" || got.N[7] != 8 {
		t.Fatalf("got %+v", got)
	}
	type named func(context.Context, *message.Message) error
	var raw *message.Message
	h, err = consume.HandlerOf(named(func(_ context.Context, m *message.Message) error { raw = m; return nil }))
	if err != nil {
		t.Fatal(err)
	}
	if err := consume.CallHandler(context.Background(), h, m); err != nil || raw != m {
		t.Fatalf("raw: %v, %p vs %p", err, raw, m)
	}
	if err := consume.CallHandler(context.Background(), h, &message.Message{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}
