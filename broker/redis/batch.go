package redis

import (
	"context"
	"sync"
	"time"
)

// request is one caller's operation waiting in a batcher. The caller waits
// on done, or has given a callback (then); the batcher sets err (and
// whatever result the operation has) before closing done or calling then,
// so every caller learns its own outcome.
type request struct {
	ctx  context.Context
	err  error
	done chan struct{}
	then func(error)
}

func newRequest(ctx context.Context) request {
	return request{ctx: ctx, done: make(chan struct{})}
}

// newAsyncRequest is a request whose outcome goes to then instead of a
// waiter; batcher.do queues it without waiting.
func newAsyncRequest(ctx context.Context, then func(error)) request {
	return request{ctx: ctx, then: then}
}

// finish reports err to the caller. It is called exactly once per request.
func (r *request) finish(err error) {
	r.err = err
	if r.then != nil {
		r.then(err)
		return
	}
	close(r.done)
}

// wait returns the request's outcome, or ctx's error when ctx ends first.
// Abandoning the wait does not abandon the operation: once a batch has
// taken the request, the batch still sends it to Redis.
func (r *request) wait() error {
	select {
	case <-r.done:
		return r.err
	case <-r.ctx.Done():
		select {
		case <-r.done:
			return r.err
		default:
			return r.ctx.Err()
		}
	}
}

// op is an operation that a batcher runs: a publish (pubReq) or an ack
// (ackReq).
type op interface{ req() *request }

// batcher coalesces the operations of concurrent callers (group commit).
// At most limit batches are on the wire at once. A caller that finds room
// and nobody waiting sends its operation itself, at once and under its own
// ctx; otherwise it queues its request and waits for its own outcome, and
// a worker takes everything queued (up to max requests) as the next batch,
// one pipeline and one round trip, as soon as there is room. So nothing is
// held back for a batch to fill: requests wait only while batches are on
// the wire, and those that arrive meanwhile form the next batch, so batches
// grow with the load.
//
// run must finish every request of its batch. Requests whose ctx ended
// before a batch took them are finished with the ctx's error and never
// sent.
type batcher struct {
	run   func(batch []op)
	max   int
	limit int

	mu      sync.Mutex
	queue   []op
	running int // batches on the wire
	closed  bool

	wake    chan struct{}
	stop    chan struct{}
	workers sync.WaitGroup // the worker goroutines
	direct  sync.WaitGroup // callers sending their own operation
}

// newBatcher starts limit workers; at most limit batches of at most max
// requests run at once with run.
func newBatcher(limit, max int, run func(batch []op)) *batcher {
	b := &batcher{run: run, max: max, limit: limit, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	for range limit {
		b.workers.Go(b.work)
	}
	return b
}

// do runs r: at once in the caller's goroutine when no batch is waiting for
// room, otherwise in a later batch. A request with a callback (then) is
// always left to a later batch, so that its caller does not wait. It
// returns false when the batcher is closed (r is not run); otherwise the
// caller of a request without callback waits with r.wait.
func (b *batcher) do(r op) bool {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return false
	case r.req().then == nil && b.running < b.limit && len(b.queue) == 0:
		b.running++
		b.direct.Add(1)
		b.mu.Unlock()
		defer b.direct.Done()
		if err := r.req().ctx.Err(); err != nil {
			r.req().finish(err)
		} else {
			b.run([]op{r})
		}
		b.ran()
		return true
	}
	b.queue = append(b.queue, r)
	b.mu.Unlock()
	b.signal()
	return true
}

func (b *batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// ran ends a batch: there is room for the next one.
func (b *batcher) ran() {
	b.mu.Lock()
	b.running--
	more := len(b.queue) > 0
	b.mu.Unlock()
	if more {
		b.signal()
	}
}

// take removes up to max queued requests as a batch when there is room for
// one, skipping (and finishing) those whose caller gave up already. It
// takes nothing once the batcher is closed.
func (b *batcher) take(buf []op) []op {
	b.mu.Lock()
	if b.closed || b.running >= b.limit {
		b.mu.Unlock()
		return buf // close fails what is queued; ran signals when there is room
	}
	n := 0
	for n < len(b.queue) && len(buf) < b.max {
		r := b.queue[n]
		n++
		if err := r.req().ctx.Err(); err != nil {
			r.req().finish(err)
			continue
		}
		buf = append(buf, r)
	}
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	if len(buf) > 0 {
		b.running++
	}
	b.mu.Unlock()
	return buf
}

func (b *batcher) work() {
	var buf []op
	for {
		select {
		case <-b.wake:
		case <-b.stop:
			return
		}
		for {
			buf = b.take(buf[:0])
			if len(buf) == 0 {
				break
			}
			b.run(buf)
			clear(buf)
			b.ran()
		}
	}
}

// close stops accepting requests, waits for the batches on the wire to
// finish and finishes the requests still queued with err (they were never
// sent).
func (b *batcher) close(err error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.workers.Wait()
	b.direct.Wait()
	b.mu.Lock()
	for _, r := range b.queue {
		r.req().finish(err)
	}
	b.queue = nil
	b.mu.Unlock()
}

// batchWorkers is how many batches of a broker may be on the wire at once.
// Fewer keep batches larger, which saves round trips, system calls and
// script calls; more let a caller's operation leave while another batch is
// on the wire. On the 2-core machines this project runs on, two cost
// 10-20% more CPU per message than one under full CPU load (for no gain
// there), and give 15-30% more throughput when the round trip, not the
// CPU, is the limit: alternating binaries at load about 1, end to end
// (publishes and acks sharing batches) went from 24-36k to 26-46k msg/s,
// and 32 concurrent publishers from 47-77k to 60-86k msg/s. Two it is.
const batchWorkers = 2

// runOps is the broker's batch: the publishes (merged per stream into
// script calls) and the acks (merged per group) of every caller waiting,
// sent in one pipeline. Each caller gets the outcome of its own commands.
func (b *Broker) runOps(batch []op) {
	var pubs pubBatch
	var acks ackBatch
	for _, o := range batch {
		switch o := o.(type) {
		case *pubReq:
			pubs.add(b, o)
		case *ackReq:
			acks.add(o)
		}
	}
	ctx, cancel := batchContext(batch)
	defer cancel()
	pipe := b.rdb.Pipeline()
	pubs.queue(ctx, pipe)
	acks.queue(ctx, pipe)
	_, _ = pipe.Exec(ctx) // each command carries its own error
	pubs.retry(ctx, b.rdb)
	pubs.finish()
	acks.finish()
}

// batchContext bounds a batch by its callers' contexts. A batch of one
// request runs under that caller's ctx. A larger one runs until the latest
// of its callers' deadlines when every caller has one (by then none is
// waiting any more), and without a bound otherwise (the client's read and
// write timeouts still apply): one caller's cancellation does not stop a
// batch that others wait for.
func batchContext(batch []op) (context.Context, context.CancelFunc) {
	if len(batch) == 1 {
		return batch[0].req().ctx, func() {}
	}
	var last time.Time
	for _, o := range batch {
		d, ok := o.req().ctx.Deadline()
		if !ok {
			return context.Background(), func() {}
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(context.Background(), last)
}
