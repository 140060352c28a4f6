package consume

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// runCtx is the context of one handler call or of settlements: a deadline,
// the delivery and its trace span as values, and cancellation, in one small
// allocation. It replaces context.WithTimeout + two context.WithValue per
// message: no timer is started for it and its Done channel is only made
// when someone asks for it.
//
// A handler's runCtx is cancelled by its worker's watchdog (one timer per
// worker) when the deadline passes, and with context.Canceled when the
// handler returned. A settlement's runCtx (settle > 0) gets its deadline
// (now + settle) when first used and starts a timer only when Done is
// called, which a backend that never looks at ctx (the embedded engine)
// never does; a worker reuses a settlement ctx nobody looked at.
//
// It implements the AfterFunc method that package context looks for, so a
// context derived from it (context.WithTimeout in a handler, a database/sql
// transaction) is cancelled with it without a goroutine per derivation.
type runCtx struct {
	d      *broker.Delivery // nil for settlements
	settle time.Duration    // > 0: a settlement ctx
	used   atomic.Bool      // settlement: a method was called

	done atomic.Pointer[chan struct{}]

	mu       sync.Mutex
	deadline time.Time
	err      error
	x        *ctxExtra // rarely needed state
}

type ctxExtra struct {
	timer  *time.Timer // settlement: the deadline timer, once Done was called
	afters []*afterEntry
	tp     string // the handler's traceparent, made on first use
}

type afterEntry struct{ f func() }

// closedChan is returned by Done of a context cancelled before anyone asked.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func newHandlerCtx(d *broker.Delivery, deadline time.Time) *runCtx {
	return &runCtx{d: d, deadline: deadline}
}

func newSettleCtx(timeout time.Duration) *runCtx {
	return &runCtx{settle: timeout}
}

func (c *runCtx) extra() *ctxExtra {
	if c.x == nil {
		c.x = &ctxExtra{}
	}
	return c.x
}

// use marks a settlement ctx used and fixes its deadline. Caller holds mu.
func (c *runCtx) use() {
	if c.settle > 0 {
		c.used.Store(true)
		if c.deadline.IsZero() {
			c.deadline = time.Now().Add(c.settle)
		}
	}
}

// reusable reports whether a settlement ctx was never looked at, so that
// it can serve the next settlement.
func (c *runCtx) reusable() bool { return !c.used.Load() }

func (c *runCtx) Deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.use()
	return c.deadline, true
}

func (c *runCtx) Done() <-chan struct{} {
	if p := c.done.Load(); p != nil {
		return *p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.doneLocked()
}

// doneLocked makes the Done channel (and a settlement's timer) unless made.
func (c *runCtx) doneLocked() <-chan struct{} {
	c.use()
	if p := c.done.Load(); p != nil { // made meanwhile, or cancelled
		return *p
	}
	var wait time.Duration
	if c.settle > 0 {
		if wait = time.Until(c.deadline); wait <= 0 {
			c.cancelLocked(context.DeadlineExceeded)
			return closedChan
		}
	}
	ch := make(chan struct{})
	c.done.Store(&ch)
	if c.settle > 0 {
		c.extra().timer = time.AfterFunc(wait, func() { c.cancel(context.DeadlineExceeded) })
	}
	return ch
}

func (c *runCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.use()
	if c.err == nil && c.settle > 0 && !time.Now().Before(c.deadline) {
		c.cancelLocked(context.DeadlineExceeded)
	}
	return c.err
}

func (c *runCtx) Value(key any) any {
	switch key.(type) {
	case deliveryKey:
		if c.d != nil {
			return c.d
		}
	case traceKey:
		if c.d != nil {
			return c.traceParent()
		}
	default:
		if c.settle > 0 {
			c.used.Store(true)
		}
	}
	return nil
}

func (c *runCtx) String() string {
	if c.d == nil {
		return "consume.settleContext"
	}
	return "consume.handlerContext"
}

// traceParent returns the handler's span, a child of the message's
// traceparent, made once per handler call when first asked for.
func (c *runCtx) traceParent() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	x := c.extra()
	if x.tp == "" {
		x.tp = childTraceParent(c.d.Message.Header(HeaderTraceParent))
	}
	return x.tp
}

// cancel cancels c with err unless it is cancelled already.
func (c *runCtx) cancel(err error) {
	c.mu.Lock()
	c.cancelLocked(err)
	c.mu.Unlock()
}

func (c *runCtx) cancelLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if p := c.done.Load(); p != nil {
		close(*p)
	} else {
		c.done.Store(&closedChan)
	}
	if x := c.x; x != nil {
		if x.timer != nil {
			x.timer.Stop()
		}
		for _, a := range x.afters {
			go a.f()
		}
		x.afters = nil
	}
}

// AfterFunc arranges for f to run in its own goroutine once c is cancelled
// (package context uses it to cancel derived contexts). stop unregisters f
// and reports whether it did so before f was started.
func (c *runCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.doneLocked() // a settlement's deadline timer must run
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	e := &afterEntry{f: f}
	x := c.extra()
	x.afters = append(x.afters, e)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, a := range c.x.afters {
			if a == e {
				c.x.afters = append(c.x.afters[:i], c.x.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}
