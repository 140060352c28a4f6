package call

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
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
	// ConnectTimeout, when positive, bounds how long one attempt may wait
	// for a connection (dial, TLS, HTTP/2 setup). An attempt
	// that gets none in time is abandoned with DeadlineExceeded before
	// anything was sent, and is retried like any failure before sending.
	// Default 0: an attempt may wait for the call's whole deadline (and
	// the transport's own dial timeout still applies).
	ConnectTimeout time.Duration
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
	// logs; metrics are [ClientInterceptor.Collector]). It is called with
	// the target's lock held and must not block or call the interceptor.
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
// to connect.WithInterceptors. It is safe for concurrent use, and
// observable with [ClientInterceptor.Collector].
//
// A unary call is retried only when its method is marked idempotency_level
// NO_SIDE_EFFECTS or IDEMPOTENT (connect.WithIdempotency, set by the
// generated code), or it carries an idempotency key (an Idempotency-Key
// header, or a non-empty idempotency_key field in the request); and only
// on Unavailable, ResourceExhausted, or DeadlineExceeded when the request
// provably was not sent. "Not sent" means net/http's Transport (as
// reported through net/http/httptrace) never handed the request a
// connection — the dial or the wait for a connection did not complete —
// or the error is a dial error; a DeadlineExceeded after a connection was
// obtained (a server that is slow, that answered deadline_exceeded, or a
// response header timeout) is never retried. Transports that report no
// httptrace events (in-process, topic) therefore never retry
// DeadlineExceeded. Streams pass through unchanged.
type ClientInterceptor struct {
	cfg     ClientConfig
	mu      sync.Mutex
	targets map[string]*target
	tokens  float64
}

// NewClientInterceptor returns the policy set; cfg may be nil (defaults).
func NewClientInterceptor(cfg *ClientConfig) *ClientInterceptor {
	return &ClientInterceptor{cfg: cfg.withDefaults(), targets: map[string]*target{}, tokens: maxTokens}
}

// maxTokens is the most retry tokens the budget saves.
const maxTokens = 10

// WrapUnary implements connect.Interceptor.
func (ci *ClientInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, ci.cfg.DefaultTimeout)
			defer cancel()
		}
		t := ci.target(req.Peer().Addr)
		hedge, _ := ctx.Value(hedgeKey{}).(*hedgeMark)
		retryable := safeToRetry(req)
		ci.earn()
		for attempt := 1; ; attempt++ {
			if err := t.allow(ci); err != nil {
				return nil, err
			}
			if hedge != nil && attempt == 1 {
				t.count(func(t *target) { t.hedges++ })
				hedge.won = func() { t.count(func(t *target) { t.hedgeWins++ }) }
			}
			res, notSent, err := ci.try(ctx, next, req, t.addr)
			t.record(ci, err)
			if err == nil {
				return res, nil
			}
			if !retryable || attempt >= ci.cfg.MaxAttempts || !retryableError(err, notSent) || ctx.Err() != nil {
				return nil, err
			}
			if !ci.spend() {
				t.count(func(t *target) { t.budgetExhausted++ })
				return nil, err
			}
			if !ci.sleep(ctx, attempt) {
				return nil, err
			}
			code := connect.CodeOf(err)
			t.count(func(t *target) { t.retries[code]++ })
		}
	}
}

// retryableError reports whether a failed attempt of a call that is safe
// to repeat may be repeated.
func retryableError(err error, notSent bool) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeResourceExhausted:
		return !errors.Is(err, ErrCircuitOpen) && !isTooLarge(err)
	case connect.CodeDeadlineExceeded:
		return notSent
	}
	return false
}

// sendTrace follows one attempt through net/http's Transport.
type sendTrace struct {
	getConn atomic.Bool // the Transport started looking for a connection
	gotConn atomic.Bool // the request got a connection: it may have been written
	trace   httptrace.ClientTrace
}

func newSendTrace() any {
	st := &sendTrace{}
	st.trace.GetConn = func(string) { st.getConn.Store(true) }
	st.trace.GotConn = func(httptrace.GotConnInfo) { st.gotConn.Store(true) }
	return st
}

// sendTraces keeps sendTraces with their hooks between attempts: an
// attempt would otherwise allocate the trace, its hooks and their state.
var sendTraces = sync.Pool{New: newSendTrace}

// try makes one attempt. notSent reports that the request provably did not
// leave the client: the Transport looked for a connection and never got
// one, or the error is a dial error. GotConn is called by the Transport in
// the goroutine of RoundTrip before it writes anything, and a unary
// connect call returns only after RoundTrip has, so the flags are final
// when next returns (and the trace is no longer used: it can serve another
// attempt, unless a ConnectTimeout timer may still read it, or the
// caller's own ClientTrace was composed into it).
func (ci *ClientInterceptor) try(ctx context.Context, next connect.UnaryFunc, req connect.AnyRequest, addr string) (res connect.AnyResponse, notSent bool, err error) {
	var st *sendTrace
	reuse := httptrace.ContextClientTrace(ctx) == nil
	if reuse {
		st = sendTraces.Get().(*sendTrace)
		st.getConn.Store(false)
		st.gotConn.Store(false)
	} else {
		st = newSendTrace().(*sendTrace)
	}
	actx := httptrace.WithClientTrace(ctx, &st.trace)
	var connectTimedOut atomic.Bool
	if d := ci.cfg.ConnectTimeout; d > 0 {
		var cancel context.CancelCauseFunc
		actx, cancel = context.WithCancelCause(actx)
		timer := time.AfterFunc(d, func() {
			if !st.gotConn.Load() {
				connectTimedOut.Store(true)
				cancel(errNoConnection)
			}
		})
		defer func() {
			if !timer.Stop() {
				reuse = false // the timer's func has run or is running
			}
			cancel(nil)
			if reuse {
				sendTraces.Put(st)
			}
		}()
	} else if reuse {
		defer sendTraces.Put(st)
	}
	res, err = next(actx, req)
	if err == nil {
		return res, false, nil
	}
	notSent = !st.gotConn.Load() && (st.getConn.Load() || isDialError(err))
	if connectTimedOut.Load() && ctx.Err() == nil {
		// The attempt was abandoned by ConnectTimeout, not by the caller:
		// connect reports the cancellation as Canceled.
		if notSent {
			err = fmt.Errorf("no connection to %s within %s (ConnectTimeout): %w", addr, ci.cfg.ConnectTimeout, errNoConnection)
		} else { // the connection came as the timer fired
			err = fmt.Errorf("ConnectTimeout (%s) ran out as %s was connected; the request may have been sent: %w", ci.cfg.ConnectTimeout, addr, err)
		}
		err = connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return nil, notSent, err
}

// errNoConnection is the cause of an attempt abandoned by ConnectTimeout.
var errNoConnection = errors.New("call: the request was not sent")

// isDialError reports a failure to open a connection (nothing was sent).
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
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
	ci.tokens = min(ci.tokens+ci.cfg.RetryBudget, maxTokens)
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
// interceptor.) A [ClientInterceptor] of fn's client counts the hedged
// attempt and, when its answer is the one returned, the win
// (switchboard_call_client_hedges_total, _hedge_wins_total).
//
//	res, err := call.Hedge(ctx, 50*time.Millisecond, client.GetCharge, req)
func Hedge[Req, Res any](ctx context.Context, delay time.Duration, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), req *connect.Request[Req]) (*connect.Response[Res], error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		res    *connect.Response[Res]
		err    error
		hedged bool
	}
	results := make(chan result, 2)
	launch := func(ctx context.Context, r *connect.Request[Req], hedged bool) {
		go func() {
			res, err := fn(ctx, r)
			results <- result{res, err, hedged}
		}()
	}
	second := connect.NewRequest(req.Msg)
	for k, v := range req.Header() {
		second.Header()[k] = append([]string(nil), v...)
	}
	mark := &hedgeMark{}
	launch(ctx, req, false)
	t := time.NewTimer(delay)
	defer t.Stop()
	hedge, inflight := t.C, 1
	for {
		select {
		case <-hedge:
			hedge = nil
			launch(context.WithValue(ctx, hedgeKey{}, mark), second, true)
			inflight++
		case r := <-results:
			inflight--
			if r.err == nil || inflight == 0 {
				// A success wins; a failure answers once nothing else is
				// in flight.
				if r.hedged && r.err == nil && mark.won != nil {
					mark.won() // set by the attempt's goroutine before it sent r
				}
				return r.res, r.err
			}
		}
	}
}

// hedgeKey marks the ctx of a hedged attempt with its *hedgeMark.
type hedgeKey struct{}

// hedgeMark lets a ClientInterceptor count a hedge's win.
type hedgeMark struct{ won func() }
