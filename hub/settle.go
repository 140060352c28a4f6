package hub

import (
	"context"
	"sync"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// settleParallel bounds the dead-lettering settlements (TERM, and NACK on
// the last attempt: each may append to a dead-letter topic and wait for its
// fsync) that one Settle call runs at once, so that they share group commits.
const settleParallel = 64

// Settle applies a batch of settlements (see the .proto for the contract).
// Each settlement is checked like the single-delivery call (the token must
// belong to a subscription of the caller's bearer token) and fails on its
// own; the response holds one result per settlement. Memory is bounded by
// the request size limit and by max_batch settlements per call.
func (sv *service) Settle(ctx context.Context, req *connect.Request[v1.SettleRequest]) (*connect.Response[v1.SettleResponse], error) {
	items := req.Msg.GetSettlements()
	if len(items) == 0 {
		return nil, invalid("settlements is empty: send at least one, e.g. {\"settlements\": [{\"token\": \"…\", \"op\": \"ACK\"}]}")
	}
	if len(items) > sv.s.cfg.MaxBatch {
		return nil, invalid("%d settlements exceed the hub's limit of %d per call; split them", len(items), sv.s.cfg.MaxBatch)
	}
	owner := ownerName(ctx)
	results := make([]v1.SettleResult, len(items))
	resp := &v1.SettleResponse{Results: make([]*v1.SettleResult, len(items))}
	fail := func(i int, err error) {
		code, reason, msg := apiconv.Parts(err)
		results[i].Code, results[i].Reason, results[i].Message = int32(code), reason, msg
	}
	var counts [5]int // by op, when applied
	var mu sync.Mutex // guards counts and results written by the slow path
	var wg sync.WaitGroup
	var sem chan struct{}
	for i, it := range items {
		resp.Results[i] = &results[i]
		op := it.GetOp()
		var err error
		switch op {
		case v1.Settlement_ACK:
			var d *broker.Delivery
			if d, err = sv.deliveryOf(owner, it.GetToken(), true); err == nil {
				err = d.Ack(ctx)
			}
		case v1.Settlement_EXTEND:
			by := apiconv.Dur(it.GetBy())
			if by <= 0 {
				err = invalid("settlement %d: by is required for EXTEND and must be positive, e.g. \"by\": \"30s\"", i)
				break
			}
			var d *broker.Delivery
			if d, err = sv.deliveryOf(owner, it.GetToken(), false); err == nil {
				if err = d.Extend(ctx, by); err == nil {
					sv.s.tokens.extended(it.GetToken(), time.Now().Add(by))
				}
			}
		case v1.Settlement_NACK, v1.Settlement_TERM:
			delay := apiconv.Dur(it.GetDelay())
			if op == v1.Settlement_NACK && delay < 0 {
				err = invalid("settlement %d: delay %s must not be negative", i, delay)
				break
			}
			// The token is taken now, in order (a later settlement of the
			// same token fails as it would one call later); the broker call
			// may write a dead letter, so it runs beside the others.
			var d *broker.Delivery
			if d, err = sv.deliveryOf(owner, it.GetToken(), true); err != nil {
				break
			}
			if sem == nil {
				sem = make(chan struct{}, settleParallel)
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				var err error
				if op == v1.Settlement_NACK {
					err = d.Nack(ctx, delay)
				} else {
					err = d.Term(ctx, it.GetReason())
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					fail(i, err)
					return
				}
				counts[op]++
			})
			continue
		default:
			err = invalid("settlement %d: op is required: ACK, NACK, TERM or EXTEND", i)
		}
		mu.Lock()
		if err != nil {
			fail(i, err)
		} else {
			counts[op]++
		}
		mu.Unlock()
	}
	wg.Wait()
	for op, n := range counts {
		if n > 0 {
			sv.s.metrics.settled.WithLabelValues(settleOpNames[op]).Add(float64(n))
		}
	}
	return connect.NewResponse(resp), nil
}

// settleOpNames are the metric labels of the ops, indexed by v1.Settlement_Op.
var settleOpNames = [...]string{"", "ack", "nack", "term", "extend"}
