package call

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// ClientConfig configures [NewClientInterceptor]. Every zero field takes
// the default named on it.
type ClientConfig struct {
	// DefaultTimeout is the deadline of a call whose ctx has none (the
	// fail-fast rule: no call waits forever). Default 5 s.
	DefaultTimeout time.Duration
	// MaxAttempts bounds attempts of one retryable call. Default 3.
	MaxAttempts int
	// BaseBackoff and MaxBackoff shape the exponential backoff with full
	// jitter: attempt n waits a random time in [0, min(Max, Base·2^n)).
	// Defaults 50 ms and 2 s.
	BaseBackoff, MaxBackoff time.Duration
	// RetryBudget is the share of calls that may be retried (tokens earned
	// per call; one retry spends one token, at most 10 saved). Default 0.1.
	RetryBudget float64
	// FailureThreshold consecutive failures (Unavailable, ResourceExhausted,
	// DeadlineExceeded, Internal, Unknown, DataLoss) open a target's
	// breaker. Default 5.
	FailureThreshold int
	// OpenFor is how long an open breaker fails calls fast before letting
	// one probe through (half-open). Default 5 s.
	OpenFor time.Duration
	// OnStateChange, when set, is called on every breaker transition (for
	// metrics and logs). It must not block.
	OnStateChange func(target string, from, to BreakerState)
	// Now and Rand are for tests (defaults time.Now and math/rand/v2).
	Now  func() time.Time
	Rand func() float64
}

func (c *ClientConfig) withDefaults() ClientConfig {
	var out ClientConfig
	if c != nil {
		out = *c
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&out.DefaultTimeout, 5*time.Second)
	def(&out.BaseBackoff, 50*time.Millisecond)
	def(&out.MaxBackoff, 2*time.Second)
	def(&out.OpenFor, 5*time.Second)
	if out.MaxAttempts <= 0 {
		out.MaxAttempts = 3
	}
	if out.RetryBudget <= 0 {
		out.RetryBudget = 0.1
	}
	if out.FailureThreshold <= 0 {
		out.FailureThreshold = 5
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	if out.Rand == nil {
		out.Rand = rand.Float64
	}
	return out
}

// ClientInterceptor is the resilient client policy set for connect clients:
// a default deadline, retries only for calls that are safe to repeat, a
// retry budget and a circuit breaker per target (hedging is [Hedge]). Pass it
// to connect.WithInterceptors. It is safe for concurrent use.
//
// A call is retried only when its method is marked idempotency_level
// NO_SIDE_EFFECTS or IDEMPOTENT (connect.WithIdempotency, set by the
// generated code), or it carries an idempotency key (an Idempotency-Key
// header, or a non-empty idempotency_key field in the request); and only
// on Unavailable or ResourceExhausted. Streams get the deadline and the
// breaker check only.
type ClientInterceptor struct {
	cfg      ClientConfig
	mu       sync.Mutex
	breakers map[string]*breaker
	tokens   float64
}

// NewClientInterceptor returns the policy set; cfg may be nil (defaults).
func NewClientInterceptor(cfg *ClientConfig) *ClientInterceptor {
	return &ClientInterceptor{cfg: cfg.withDefaults(), breakers: map[string]*breaker{}, tokens: 10}
}

// ErrCircuitOpen is wrapped by the Unavailable error of a call refused by
// an open breaker.
var ErrCircuitOpen = errors.New("circuit breaker open")

// WrapUnary implements connect.Interceptor.
func (ci *ClientInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, ci.cfg.DefaultTimeout)
			defer cancel()
		}
		target := req.Peer().Addr
		b := ci.breaker(target)
		retryable := safeToRetry(req)
		ci.earn()
		for attempt := 1; ; attempt++ {
			if err := b.allow(ci, target); err != nil {
				return nil, err
			}
			res, err := next(ctx, req)
			b.record(ci, target, err)
			if err == nil {
				return res, nil
			}
			code := connect.CodeOf(err)
			if !retryable || attempt >= ci.cfg.MaxAttempts || (code != connect.CodeUnavailable && code != connect.CodeResourceExhausted) || !ci.spend() {
				return nil, err
			}
			if !ci.sleep(ctx, attempt) {
				return nil, err
			}
		}
	}
}

// WrapStreamingClient implements connect.Interceptor: a default deadline
// is not applied to streams (they may be long-lived); an open breaker
// fails them fast.
func (ci *ClientInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		return next(ctx, spec)
	}
}

// WrapStreamingHandler implements connect.Interceptor (no-op).
func (ci *ClientInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// safeToRetry reports whether repeating req cannot do harm twice.
func safeToRetry(req connect.AnyRequest) bool {
	switch req.Spec().IdempotencyLevel {
	case connect.IdempotencyNoSideEffects, connect.IdempotencyIdempotent:
		return true
	}
	if req.Header().Get("Idempotency-Key") != "" {
		return true
	}
	if m, ok := req.Any().(proto.Message); ok {
		r := m.ProtoReflect()
		if fd := r.Descriptor().Fields().ByName("idempotency_key"); fd != nil && r.Has(fd) {
			return true
		}
	}
	return false
}

func (ci *ClientInterceptor) earn() {
	ci.mu.Lock()
	ci.tokens = min(ci.tokens+ci.cfg.RetryBudget, 10)
	ci.mu.Unlock()
}

func (ci *ClientInterceptor) spend() bool {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	if ci.tokens < 1 {
		return false
	}
	ci.tokens--
	return true
}

// sleep waits the jittered backoff of attempt; false if ctx ends first or
// the wait would outlast the deadline.
func (ci *ClientInterceptor) sleep(ctx context.Context, attempt int) bool {
	ceil := ci.cfg.BaseBackoff << min(attempt-1, 20)
	ceil = min(ceil, ci.cfg.MaxBackoff)
	d := time.Duration(ci.cfg.Rand() * float64(ceil))
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Hedge calls fn, and again with a copy of req if the first attempt has
// not answered after delay; the first success wins and the other attempt
// is cancelled. Use it only for NO_SIDE_EFFECTS methods (reads): both
// attempts may reach the server. (connect writes a request's headers while
// sending it, so hedging needs a copy per attempt and cannot be an
// interceptor.)
//
//	res, err := call.Hedge(ctx, 50*time.Millisecond, client.GetCharge, req)
func Hedge[Req, Res any](ctx context.Context, delay time.Duration, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), req *connect.Request[Req]) (*connect.Response[Res], error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		res *connect.Response[Res]
		err error
	}
	results := make(chan result, 2)
	launch := func(r *connect.Request[Req]) {
		go func() {
			res, err := fn(ctx, r)
			results <- result{res, err}
		}()
	}
	second := connect.NewRequest(req.Msg)
	for k, v := range req.Header() {
		second.Header()[k] = append([]string(nil), v...)
	}
	launch(req)
	t := time.NewTimer(delay)
	defer t.Stop()
	hedge, inflight := t.C, 1
	for {
		select {
		case <-hedge:
			hedge = nil
			launch(second)
			inflight++
		case r := <-results:
			inflight--
			if r.err == nil || inflight == 0 {
				// A success wins; a failure answers once nothing else is
				// in flight.
				return r.res, r.err
			}
		}
	}
}

// BreakerState is the state of a target's circuit breaker.
type BreakerState int

const (
	BreakerClosed   BreakerState = iota // calls flow; failures are counted
	BreakerOpen                         // calls fail fast with Unavailable
	BreakerHalfOpen                     // one probe call decides
)

func (s BreakerState) String() string {
	return [...]string{"closed", "open", "half-open"}[s]
}

type breaker struct {
	mu       sync.Mutex
	state    BreakerState
	failures int
	openedAt time.Time
	probing  bool
}

func (ci *ClientInterceptor) breaker(target string) *breaker {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	b, ok := ci.breakers[target]
	if !ok {
		b = &breaker{}
		ci.breakers[target] = b
	}
	return b
}

// BreakerState returns the state of target's breaker ("host:port", as
// connect reports the peer).
func (ci *ClientInterceptor) BreakerState(target string) BreakerState {
	b := ci.breaker(target)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerOpen && ci.cfg.Now().Sub(b.openedAt) >= ci.cfg.OpenFor {
		return BreakerHalfOpen
	}
	return b.state
}

func (b *breaker) set(ci *ClientInterceptor, target string, s BreakerState) {
	if b.state == s {
		return
	}
	from := b.state
	b.state = s
	if ci.cfg.OnStateChange != nil {
		ci.cfg.OnStateChange(target, from, s)
	}
}

func (b *breaker) allow(ci *ClientInterceptor, target string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case BreakerOpen:
		if ci.cfg.Now().Sub(b.openedAt) < ci.cfg.OpenFor {
			return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w for %s after %d failures; failing fast, next probe in %s",
				ErrCircuitOpen, target, b.failures, ci.cfg.OpenFor-ci.cfg.Now().Sub(b.openedAt)))
		}
		b.set(ci, target, BreakerHalfOpen)
		b.probing = true
		return nil
	case BreakerHalfOpen:
		if b.probing {
			return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w for %s: a probe call is in flight", ErrCircuitOpen, target))
		}
		b.probing = true
	}
	return nil
}

func (b *breaker) record(ci *ClientInterceptor, target string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fail := false
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeResourceExhausted, connect.CodeDeadlineExceeded,
		connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
		fail = err != nil && !errors.Is(err, ErrCircuitOpen)
	}
	if b.state == BreakerHalfOpen {
		b.probing = false
		if fail {
			b.openedAt = ci.cfg.Now()
			b.set(ci, target, BreakerOpen)
		} else {
			b.failures = 0
			b.set(ci, target, BreakerClosed)
		}
		return
	}
	if !fail {
		b.failures = 0
		return
	}
	b.failures++
	if b.failures >= ci.cfg.FailureThreshold && b.state == BreakerClosed {
		b.openedAt = ci.cfg.Now()
		b.set(ci, target, BreakerOpen)
	}
}
