package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/internal/testenv"
	"github.com/switchboard-dev/switchboard/message"
)

// These tests drive the batcher and one batch (runOps) directly, so that
// what shares a batch is certain rather than up to timing.

func openInternal(t *testing.T) (*Broker, string) {
	t.Helper()
	u := testenv.NeedServer(t, "Redis", "SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := Open(ctx, u)
	if err != nil {
		t.Fatalf("Open(%s): %v", u, err)
	}
	topic := "sbtest.batch." + strings.ReplaceAll(message.NewID(), "-", "")
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := b.rdb.Keys(ctx, "sb:*"+topic+"*").Result()
		b.rdb.Del(ctx, append(keys, topic)...)
		_ = b.Close()
	})
	return b, topic
}

func newPub(b *Broker, topic string, ids ...string) *pubReq {
	r := &pubReq{request: newRequest(context.Background()), key: b.key(topic)}
	for _, id := range ids {
		r.msgs = append(r.msgs, &message.Message{ID: id, Topic: topic, Payload: []byte("p-" + id)})
		r.dedup = append(r.dedup, "sb:dedup:"+topic+":"+id)
	}
	return r
}

func result(t *testing.T, r *pubReq) []broker.MessageResult {
	t.Helper()
	select {
	case <-r.done:
	default:
		t.Fatal("request not finished by its batch")
	}
	if r.err != nil {
		t.Fatalf("request failed: %v", r.err)
	}
	return r.res
}

// One batch: each caller gets its own results, a caller's messages keep
// their order, and an ID published twice in the same batch is stored once
// (the second is a duplicate of the first, with its sequence).
func TestBatchPublishes(t *testing.T) {
	b, topic := openInternal(t)
	r1 := newPub(b, topic, "a")
	r2 := newPub(b, topic, "b", "c")
	r3 := newPub(b, topic, "a")
	b.runOps([]op{r1, r2, r3})
	a, bc, dup := result(t, r1), result(t, r2), result(t, r3)
	if a[0].Duplicate || a[0].Seq == 0 {
		t.Fatalf("first a: %+v", a[0])
	}
	if bc[0].Seq <= a[0].Seq || bc[1].Seq <= bc[0].Seq || bc[0].ID != "b" || bc[1].ID != "c" {
		t.Fatalf("b, c out of order: a %+v, b c %+v", a[0], bc)
	}
	if !dup[0].Duplicate || dup[0].Seq != a[0].Seq {
		t.Fatalf("second a: %+v, want a duplicate of seq %d", dup[0], a[0].Seq)
	}
	if n := b.rdb.XLen(context.Background(), topic).Val(); n != 3 {
		t.Fatalf("stream has %d entries, want 3", n)
	}
}

// A message that fails in the script fails its caller only.
func TestBatchIsolatesFailures(t *testing.T) {
	b, topic := openInternal(t)
	ctx := context.Background()
	// A dedup key of the wrong type makes the script's GET fail.
	if err := b.rdb.HSet(ctx, "sb:dedup:"+topic+":bad", "x", "y").Err(); err != nil {
		t.Fatal(err)
	}
	bad := newPub(b, topic, "bad")
	good := newPub(b, topic, "good")
	b.runOps([]op{bad, good})
	if bad.err == nil || !strings.Contains(bad.err.Error(), "WRONGTYPE") {
		t.Fatalf("bad: err %v, want WRONGTYPE", bad.err)
	}
	if res := result(t, good); res[0].Duplicate || res[0].Seq == 0 {
		t.Fatalf("good: %+v", res[0])
	}
	if n := b.rdb.XLen(ctx, topic).Val(); n != 1 {
		t.Fatalf("stream has %d entries, want 1", n)
	}
}

// A server that lost its scripts (restart, SCRIPT FLUSH) gets the publish
// script again; the batch still succeeds.
func TestBatchReloadsScript(t *testing.T) {
	b, topic := openInternal(t)
	if err := b.rdb.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	r := newPub(b, topic, "x")
	b.runOps([]op{r})
	if res := result(t, r); res[0].Seq == 0 {
		t.Fatalf("%+v", res[0])
	}
}

// Acks of a group share one XACK; those with a due time also lose it.
func TestBatchAcks(t *testing.T) {
	b, topic := openInternal(t)
	ctx := context.Background()
	const group = "g"
	dueKey := "sb:due:" + topic + ":" + group
	if err := b.rdb.XGroupCreateMkStream(ctx, topic, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		ids = append(ids, b.rdb.XAdd(ctx, &goredis.XAddArgs{Stream: topic, Values: []any{"n", i}}).Val())
	}
	if err := b.rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{topic, ">"}}).Err(); err != nil {
		t.Fatal(err)
	}
	b.rdb.HSet(ctx, dueKey, ids[1], 0)
	var batch []op
	for i, id := range ids {
		batch = append(batch, &ackReq{request: newRequest(ctx), key: topic, group: group, dueKey: dueKey, id: id, due: i == 1})
	}
	batch = append(batch, newPub(b, topic, "mixed"))
	b.runOps(batch)
	for _, o := range batch {
		if err := o.req().wait(); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.rdb.XPending(ctx, topic, group).Val().Count; n != 0 {
		t.Fatalf("%d entries still pending", n)
	}
	if b.rdb.HExists(ctx, dueKey, ids[1]).Val() {
		t.Fatal("due time left behind")
	}
}

// Many concurrent publishers, each ID published by several of them: every
// ID is stored once, and every duplicate reports the original's sequence.
func TestConcurrentDuplicates(t *testing.T) {
	b, topic := openInternal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const ids, copies = 200, 4
	var mu sync.Mutex
	seqs := map[string][]broker.MessageResult{}
	var wg sync.WaitGroup
	for c := range copies {
		for i := range ids {
			wg.Go(func() {
				id := fmt.Sprintf("m%d", (i+c*7)%ids)
				res, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{ID: id, Payload: []byte(id)}}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seqs[id] = append(seqs[id], res.Results[0])
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if n := b.rdb.XLen(ctx, topic).Val(); n != ids {
		t.Fatalf("stream has %d entries, want %d", n, ids)
	}
	for id, rs := range seqs {
		stored := 0
		for _, r := range rs {
			if !r.Duplicate {
				stored++
			}
			if r.Seq != rs[0].Seq {
				t.Errorf("%s: sequences %+v differ", id, rs)
			}
		}
		if stored != 1 || len(rs) != copies {
			t.Errorf("%s: %d results, %d stored: %+v", id, len(rs), stored, rs)
		}
	}
}

type testOp struct{ request }

func (o *testOp) req() *request { return &o.request }

// blockingBatcher runs batches that each wait for a value on release after
// signalling running; ran lists what was run.
func blockingBatcher() (bt *batcher, running, release chan struct{}, ran func() []op) {
	var mu sync.Mutex
	var all []op
	running, release = make(chan struct{}, 10), make(chan struct{})
	bt = newBatcher(1, 100, func(batch []op) {
		mu.Lock()
		all = append(all, batch...)
		mu.Unlock()
		running <- struct{}{}
		<-release
		for _, o := range batch {
			o.req().finish(nil)
		}
	})
	return bt, running, release, func() []op { mu.Lock(); defer mu.Unlock(); return all }
}

// A lone caller runs its operation itself; one that comes while it runs is
// queued, and a worker sends it once the first is answered.
func TestBatcherDirectThenQueued(t *testing.T) {
	bt, running, release, ran := blockingBatcher()
	defer bt.close(errors.New("closed"))
	first := &testOp{newRequest(context.Background())}
	firstDone := make(chan struct{})
	go func() { bt.do(first); close(firstDone) }()
	<-running
	second := &testOp{newRequest(context.Background())}
	bt.do(second) // queued: returns at once
	select {
	case <-second.done:
		t.Fatal("second ran while the first was on the wire")
	case <-time.After(20 * time.Millisecond):
	}
	release <- struct{}{}
	<-firstDone // do returned after its own operation was answered
	if err := first.wait(); err != nil {
		t.Fatal(err)
	}
	<-running
	release <- struct{}{}
	if err := second.wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(ran()); n != 2 {
		t.Fatalf("%d requests run, want 2", n)
	}
}

// Close lets the batch on the wire finish, fails what is still queued with
// the given error, and refuses new requests.
func TestBatcherClose(t *testing.T) {
	bt, running, release, ran := blockingBatcher()
	first := &testOp{newRequest(context.Background())}
	go bt.do(first) // runs at once, in this goroutine
	<-running
	queued := &testOp{newRequest(context.Background())}
	bt.do(queued)
	closed := errors.New("closed")
	done := make(chan struct{})
	go func() { bt.close(closed); close(done) }()
	select {
	case <-done:
		t.Fatal("close did not wait for the batch on the wire")
	case <-time.After(50 * time.Millisecond):
	}
	release <- struct{}{}
	<-done
	if err := first.wait(); err != nil {
		t.Fatalf("batch on the wire: %v", err)
	}
	if err := queued.wait(); err != closed {
		t.Fatalf("queued: %v, want %v", err, closed)
	}
	if n := len(ran()); n != 1 {
		t.Fatalf("%d requests run, want only the first", n)
	}
	if bt.do(&testOp{newRequest(context.Background())}) {
		t.Fatal("submit after close accepted")
	}
}

// A request whose caller gave up before a batch took it is never run.
func TestBatcherSkipsAbandoned(t *testing.T) {
	bt, running, release, ran := blockingBatcher()
	defer bt.close(errors.New("closed"))
	first := &testOp{newRequest(context.Background())}
	go bt.do(first) // runs at once, in this goroutine
	<-running
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	skipped := &testOp{newRequest(gone)}
	bt.do(skipped)
	release <- struct{}{}
	<-skipped.done
	if !errors.Is(skipped.err, context.Canceled) {
		t.Fatalf("abandoned: %v", skipped.err)
	}
	if n := len(ran()); n != 1 {
		t.Fatalf("%d requests run, want only the first", n)
	}
}
