package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// Settlement batching. Every Ack, Nack, Term and Extend of a delivery goes
// through the Broker's settler, which coalesces those of many goroutines
// into Settle calls:
//
//   - with fewer than maxSettleCalls calls in flight, a settlement is sent at
//     once, by the goroutine that settles, with whatever else is queued: a
//     lone Ack costs one round trip and waits for no timer;
//   - otherwise it is queued, and the queue is sent (up to maxSettleBatch per
//     call, or the hub's max_batch if lower) as soon as a call in flight
//     returns.
//
// So the batch size adapts to the load: one settlement per call when idle,
// hundreds when many goroutines settle at once. Each settlement returns when
// its own result is back, with its own error (ErrAlreadySettled,
// ErrDeliveryExpired, ...). An asynchronous ack (Delivery.AckAsync) joins
// the same queue without waiting; a batch it starts is sent from a
// goroutine of its own, and its result goes to its callback.
const (
	maxSettleCalls = 2
	maxSettleBatch = 1000
	// settleTimeout bounds one Settle call; a caller's own context may end
	// its wait sooner.
	settleTimeout = 30 * time.Second
)

type settleItem struct {
	ctx  context.Context
	s    *v1.Settlement
	done chan error  // buffered: the sender never blocks
	then func(error) // instead of done: an asynchronous settlement's callback
}

// finish answers it with err.
func (it *settleItem) finish(err error) {
	if it.then != nil {
		it.then(err)
		return
	}
	it.done <- err
}

type settler struct {
	b        *Broker
	mu       sync.Mutex
	queue    []*settleItem
	inFlight int
	maxBatch int // per call: the hub's limit, at most maxSettleBatch
	// legacy is set when the hub has no Settle (an older hub): settlements
	// then use the single-delivery calls.
	legacy atomic.Bool
}

var itemPool = sync.Pool{New: func() any { return &settleItem{done: make(chan error, 1)} }}

// settle sends s and waits for its result.
func (st *settler) settle(ctx context.Context, s *v1.Settlement) error {
	if st.legacy.Load() {
		return st.single(ctx, s)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	it := itemPool.Get().(*settleItem)
	it.ctx, it.s = ctx, s
	if batch := st.enqueue(it); batch != nil {
		st.send(batch)
		st.next()
	}
	select {
	case err := <-it.done:
		it.ctx, it.s = nil, nil
		itemPool.Put(it)
		return err
	case <-ctx.Done():
		// The item stays with the settler, which still answers into its
		// buffered channel; it is not reused.
		return ctx.Err()
	}
}

// settleAsync sends s without waiting: then receives its result, from the
// goroutine that sends the batch it joins.
func (st *settler) settleAsync(ctx context.Context, s *v1.Settlement, then func(error)) {
	if st.legacy.Load() {
		go func() { then(st.single(ctx, s)) }()
		return
	}
	if err := ctx.Err(); err != nil {
		then(err)
		return
	}
	if batch := st.enqueue(&settleItem{ctx: ctx, s: s, then: then}); batch != nil {
		go func() {
			st.send(batch)
			st.next()
		}()
	}
}

// enqueue queues it and, when fewer than maxSettleCalls calls are in
// flight, takes a call slot and returns the batch the caller must send
// (then call next).
func (st *settler) enqueue(it *settleItem) []*settleItem {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.queue = append(st.queue, it)
	if st.inFlight >= maxSettleCalls {
		return nil
	}
	st.inFlight++
	return st.takeLocked()
}

// takeLocked removes up to maxSettleBatch items from the queue. Caller holds
// st.mu.
func (st *settler) takeLocked() []*settleItem {
	n := min(len(st.queue), max(st.maxBatch, 1))
	batch := make([]*settleItem, n)
	copy(batch, st.queue)
	rest := copy(st.queue, st.queue[n:])
	clear(st.queue[rest:])
	st.queue = st.queue[:rest]
	return batch
}

// next sends what was queued while a call was in flight, on a goroutine of
// its own (the caller's settlement is done), or frees the call slot.
func (st *settler) next() {
	st.mu.Lock()
	if len(st.queue) == 0 {
		st.inFlight--
		st.mu.Unlock()
		return
	}
	batch := st.takeLocked()
	st.mu.Unlock()
	go func() {
		for batch != nil {
			st.send(batch)
			st.mu.Lock()
			if len(st.queue) == 0 {
				st.inFlight--
				batch = nil
			} else {
				batch = st.takeLocked()
			}
			st.mu.Unlock()
		}
	}()
}

// send makes one Settle call for batch and answers every item.
func (st *settler) send(batch []*settleItem) {
	req := &v1.SettleRequest{Settlements: make([]*v1.Settlement, 0, len(batch))}
	live := batch[:0]
	for _, it := range batch {
		if err := it.ctx.Err(); err != nil {
			it.finish(err) // given up before it was sent: not settled
			continue
		}
		req.Settlements = append(req.Settlements, it.s)
		live = append(live, it)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	resp, err := st.b.rpc.Settle(ctx, connect.NewRequest(req))
	cancel()
	if err != nil && connect.CodeOf(err) == connect.CodeUnimplemented && !errors.Is(err, context.Canceled) {
		// An older hub: settle one by one from now on.
		st.legacy.Store(true)
		for _, it := range live {
			go func() { it.finish(st.single(it.ctx, it.s)) }()
		}
		return
	}
	if err != nil {
		err = apiconv.FromConnect(err)
		for _, it := range live {
			it.finish(err)
		}
		return
	}
	results := resp.Msg.GetResults()
	if len(results) != len(live) {
		err := fmt.Errorf("hub %s answered %d settle results for %d settlements; is the hub the same version as this client?", st.b.base, len(results), len(live))
		for _, it := range live {
			it.finish(err)
		}
		return
	}
	for i, it := range live {
		r := results[i]
		if r.GetCode() == 0 {
			it.finish(nil)
			continue
		}
		it.finish(apiconv.Remote(connect.Code(r.GetCode()), r.GetReason(), r.GetMessage()))
	}
}

// single settles s with the single-delivery call of its op.
func (st *settler) single(ctx context.Context, s *v1.Settlement) error {
	rpc := st.b.rpc
	var err error
	switch s.GetOp() {
	case v1.Settlement_ACK:
		_, err = rpc.Ack(ctx, connect.NewRequest(&v1.AckRequest{Token: s.GetToken()}))
	case v1.Settlement_NACK:
		_, err = rpc.Nack(ctx, connect.NewRequest(&v1.NackRequest{Token: s.GetToken(), Delay: s.GetDelay()}))
	case v1.Settlement_TERM:
		_, err = rpc.Term(ctx, connect.NewRequest(&v1.TermRequest{Token: s.GetToken(), Reason: s.GetReason()}))
	case v1.Settlement_EXTEND:
		_, err = rpc.Extend(ctx, connect.NewRequest(&v1.ExtendRequest{Token: s.GetToken(), By: s.GetBy()}))
	default:
		return fmt.Errorf("settle: unknown op %v", s.GetOp())
	}
	return apiconv.FromConnect(err)
}
