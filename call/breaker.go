package call

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// ErrCircuitOpen is wrapped by the Unavailable error of a call refused by
// an open breaker.
var ErrCircuitOpen = errors.New("circuit breaker open")

// BreakerState is the state of a target's circuit breaker. Its numeric
// value is the value of the switchboard_call_client_breaker_state gauge.
type BreakerState int

const (
	BreakerClosed   BreakerState = iota // calls flow; failures are counted
	BreakerOpen                         // calls fail fast with Unavailable
	BreakerHalfOpen                     // one probe call decides
)

// String returns "closed", "open" or "half-open": the from and to label
// values of switchboard_call_client_breaker_transitions_total.
func (s BreakerState) String() string {
	if s < BreakerClosed || s > BreakerHalfOpen {
		return fmt.Sprintf("BreakerState(%d)", int(s))
	}
	return [...]string{"closed", "open", "half-open"}[s]
}

// target is the breaker and the counters of one peer ("host:port").
// Every field is guarded by mu.
type target struct {
	addr     string
	mu       sync.Mutex
	state    BreakerState
	failures int
	openedAt time.Time
	probing  bool

	// Counters read by the collector (metrics.go).
	transitions     [3][3]uint64 // [from][to]
	rejected        uint64       // calls failed fast by the breaker
	attempts        uint64       // attempts handed to the transport
	retries         map[connect.Code]uint64
	budgetExhausted uint64
	hedges          uint64 // hedged attempts sent (Hedge)
	hedgeWins       uint64 // hedged attempts whose answer was used
}

func (ci *ClientInterceptor) target(addr string) *target {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	t, ok := ci.targets[addr]
	if !ok {
		t = &target{addr: addr, retries: map[connect.Code]uint64{}}
		ci.targets[addr] = t
	}
	return t
}

// BreakerState returns the state of target's breaker ("host:port", as
// connect reports the peer). An open breaker whose OpenFor has passed is
// reported half-open: the next call is its probe.
func (ci *ClientInterceptor) BreakerState(target string) BreakerState {
	t := ci.target(target)
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.effectiveState(ci)
}

// effectiveState is the state a call would meet now. Called with t.mu held.
func (t *target) effectiveState(ci *ClientInterceptor) BreakerState {
	if t.state == BreakerOpen && ci.cfg.Now().Sub(t.openedAt) >= ci.cfg.OpenFor {
		return BreakerHalfOpen
	}
	return t.state
}

// set moves the breaker to s. Called with t.mu held.
func (t *target) set(ci *ClientInterceptor, s BreakerState) {
	if t.state == s {
		return
	}
	from := t.state
	t.state = s
	t.transitions[from][s]++
	if ci.cfg.OnStateChange != nil {
		ci.cfg.OnStateChange(t.addr, from, s)
	}
}

// allow admits one attempt, or returns the Unavailable error of an open
// breaker.
func (t *target) allow(ci *ClientInterceptor) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case BreakerOpen:
		if waited := ci.cfg.Now().Sub(t.openedAt); waited < ci.cfg.OpenFor {
			t.rejected++
			return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w for %s after %d failures; failing fast, next probe in %s",
				ErrCircuitOpen, t.addr, t.failures, ci.cfg.OpenFor-waited))
		}
		t.set(ci, BreakerHalfOpen)
		t.probing = true
	case BreakerHalfOpen:
		if t.probing {
			t.rejected++
			return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w for %s: a probe call is in flight", ErrCircuitOpen, t.addr))
		}
		t.probing = true
	}
	t.attempts++
	return nil
}

// breakerFailure reports whether err says the target is unhealthy (as
// opposed to the call being wrong).
func breakerFailure(err error) bool {
	if err == nil || errors.Is(err, ErrCircuitOpen) || isTooLarge(err) {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeResourceExhausted, connect.CodeDeadlineExceeded,
		connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
		return true
	}
	return false
}

// record counts the outcome of an admitted attempt.
func (t *target) record(ci *ClientInterceptor, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fail := breakerFailure(err)
	if t.state == BreakerHalfOpen {
		t.probing = false
		if fail {
			t.openedAt = ci.cfg.Now()
			t.set(ci, BreakerOpen)
		} else {
			t.failures = 0
			t.set(ci, BreakerClosed)
		}
		return
	}
	if !fail {
		t.failures = 0
		return
	}
	t.failures++
	if t.failures >= ci.cfg.FailureThreshold && t.state == BreakerClosed {
		t.openedAt = ci.cfg.Now()
		t.set(ci, BreakerOpen)
	}
}

// count adds to one of t's counters.
func (t *target) count(f func(t *target)) {
	t.mu.Lock()
	f(t)
	t.mu.Unlock()
}
