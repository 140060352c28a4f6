package consume

import (
	"context"
	"database/sql"
	"runtime/debug"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// A worker is one of a registration's Concurrency goroutines. It takes a
// delivery and runs the whole pipeline, handler included, on its own
// goroutine: no goroutine or channel per message.
//
// Its watchdog is one timer (see arm). When the handler's
// deadline passes the timer cancels the handler's ctx and re-arms itself
// for a grace period; a handler that returns within the grace counts as a
// timeout. A handler still running after the grace is abandoned: the
// watchdog settles the delivery as a failed attempt (retried or
// dead-lettered), starts a new worker in its place (the registration keeps
// its concurrency) and retires this one, whose goroutine exits as soon as
// the stuck handler returns, without touching the delivery again. The only
// goroutine left behind is the one running the stuck handler.
type worker struct {
	g     *registration
	timer *time.Timer // the watchdog (fires w.alarm)

	mu      sync.Mutex
	phase   workerPhase
	due     time.Time // the current deadline (of the call, then of the grace)
	pending bool      // the timer has a fire pending
	job     job       // the message in progress

	settle *runCtx // a settlement ctx nobody looked at, for the next ack
	st     *hot    // this worker's share of the registration's counters
}

type workerPhase int

const (
	idle      workerPhase = iota
	running               // before the deadline
	grace                 // deadline passed, ctx cancelled, not returned yet
	abandoned             // the watchdog settled the delivery; the worker is retired
)

// job is what the watchdog needs to settle an abandoned delivery.
type job struct {
	d       *broker.Delivery
	ctx     *runCtx
	start   time.Time
	tx      *sql.Tx // TxFunc: the transaction the handler writes in
	claimed bool    // the inbox claim is held
}

func (g *registration) newWorker() *worker {
	w := &worker{g: g, st: g.stats.newShard()}
	w.timer = time.AfterFunc(time.Hour, w.alarm)
	w.timer.Stop()
	return w
}

// quit ends w's loop: it stops w's timer and gives back its slot.
func (g *registration) quit(w *worker) {
	w.timer.Stop()
	g.wg.Done()
}

// work runs w until stop is closed or the subscription ends. The
// registration's WaitGroup counts slots, not goroutines: a worker that is
// abandoned hands its slot (and its wg.Done) to its replacement.
func (g *registration) work(w *worker) {
	if g.order != nil {
		g.order.work(w)
		return
	}
	for {
		select {
		case <-g.stop:
			g.quit(w)
			return
		default:
		}
		select {
		case <-g.stop:
			g.quit(w)
			return
		case d, ok := <-g.sub.Deliveries():
			if !ok {
				select {
				case <-g.stop:
				default:
					// Every worker sees the end; Run takes one report.
					select {
					case g.failedCh <- errSubscriptionEnded(g):
					case <-g.stop:
					}
				}
				g.wg.Done()
				return
			}
			if !w.process(d) {
				return // abandoned: the replacement owns the slot
			}
		}
	}
}

// arm starts the watchdog for the delivery now in progress. The timer is
// not reset per message: it keeps its pending fire when there is one, and
// alarm re-arms it for the current deadline, so that a worker handling
// messages faster than its timeout touches the timer about once per
// timeout.
func (w *worker) arm(d *broker.Delivery, ctx *runCtx, start time.Time) {
	timeout := w.g.cfg.timeout
	w.mu.Lock()
	w.job = job{d: d, ctx: ctx, start: start}
	w.phase = running
	w.due = start.Add(timeout)
	if !w.pending {
		w.pending = true
		w.timer.Reset(timeout)
	}
	w.mu.Unlock()
}

// hold records inbox state the watchdog must undo if it abandons the call.
// It returns false when the call was abandoned already: the caller then
// undoes it itself and must not run the handler.
func (w *worker) hold(tx *sql.Tx, claimed bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase == abandoned {
		return false
	}
	w.job.tx, w.job.claimed = tx, claimed
	return true
}

// disarm stops the watchdog after the call. late reports that the deadline
// passed meanwhile; alive is false when the watchdog abandoned the call (the
// delivery is settled and this worker is retired).
func (w *worker) disarm() (late, alive bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.phase {
	case abandoned:
		return false, false
	case grace:
		late = true
	}
	w.phase = idle
	w.job = job{}
	return late, true
}

// alarm is the watchdog timer's function.
func (w *worker) alarm() {
	w.mu.Lock()
	w.pending = false
	now := time.Now()
	switch {
	case w.phase == idle || w.phase == abandoned:
		// Dormant until the next arm.
		w.mu.Unlock()
		return
	case now.Before(w.due):
		// A fire for an earlier message: wait for the current deadline.
		w.pending = true
		w.timer.Reset(w.due.Sub(now))
		w.mu.Unlock()
		return
	case w.phase == running:
		w.phase = grace
		g := w.g.graceAfterTimeout()
		w.due = now.Add(g)
		w.pending = true
		w.timer.Reset(g)
		ctx := w.job.ctx
		w.mu.Unlock()
		ctx.cancel(context.DeadlineExceeded)
		return
	}
	w.phase = abandoned
	j := w.job
	w.mu.Unlock()
	w.g.abandon(j)
}

// graceAfterTimeout is how long a handler whose ctx was cancelled may take
// to return before it is abandoned.
func (g *registration) graceAfterTimeout() time.Duration {
	return min(time.Second, g.cfg.timeout/10+10*time.Millisecond)
}

// abandon settles the delivery of a handler that ignored its deadline and
// puts a new worker in the stuck one's place.
func (g *registration) abandon(j job) {
	g.stats.abandoned.Add(1)
	m := j.d.Message
	g.log.Error("handler did not return within its timeout and ignored cancellation; abandoned, a new worker takes its place",
		"id", m.ID, "attempt", j.d.Info.Attempt, "timeout", g.cfg.timeout)
	if j.tx != nil {
		// The tx's context is cancelled, so database/sql rolls it back
		// too; Rollback may wait for a statement the handler is stuck in.
		go func() { _ = j.tx.Rollback() }()
	}
	if j.claimed {
		ctx := newSettleCtx(g.rt.cfg.SettleTimeout)
		if err := g.cfg.inbox.Release(ctx, g.cfg.sub.Group, m.ID); err != nil {
			g.log.Warn("inbox release failed; the retry waits for the claim to expire", "id", m.ID, "err", err)
		}
		ctx.cancel(context.Canceled)
	}
	g.stats.observe(time.Since(j.start))
	g.failed(j.d, &TimeoutError{Timeout: g.cfg.timeout, Abandoned: true})
	if g.order != nil {
		g.order.afterAbandon(j.d)
	}
	go g.work(g.newWorker())
}

// ack acks d: without waiting where the backend's ack takes a round trip
// (see ackAsync), otherwise with a settlement ctx the worker reuses while
// backends ignore it (no allocation per ack on the embedded engine).
func (w *worker) ack(d *broker.Delivery) {
	if d.AcksAsync() {
		w.g.ackAsync(d, w.st)
		return
	}
	ctx := w.settle
	if ctx == nil {
		ctx = newSettleCtx(w.g.rt.cfg.SettleTimeout)
	}
	w.settle = nil
	w.g.ackWith(ctx, d, w.st)
	if ctx.reusable() {
		w.settle = ctx
	} else {
		ctx.cancel(context.Canceled)
	}
}

// attempt checks the version (DropStale), takes the inbox claim (or begins
// the inbox transaction, recording the version in it with a TxVersionStore)
// and runs the handler, under the watchdog.
func (w *worker) attempt(ctx *runCtx, d *broker.Delivery, ver uint64, hasVer bool) (out outcome, tx *sql.Tx, op string, err error) {
	g := w.g
	m := d.Message
	inTx := hasVer && g.txVers != nil
	if hasVer && !inTx {
		cur, ok, err := g.vers.Version(ctx, g.cfg.sub.Group, m.Key)
		if err != nil {
			return versionsDown, nil, "version", err
		}
		if ok && ver <= cur {
			return stale, nil, "", nil
		}
	}
	switch {
	case g.txInbox != nil:
		tx, handled, err := g.txInbox.BeginMark(ctx, g.cfg.sub.Group, m.ID, g.cfg.inboxTTL)
		if err != nil {
			return inboxDown, nil, "begin", err
		}
		if handled {
			return duplicate, nil, "", nil
		}
		if inTx {
			recorded, err := g.txVers.RecordTx(ctx, tx, g.cfg.sub.Group, m.Key, ver, g.cfg.versionTTL)
			if err != nil || !recorded {
				_ = tx.Rollback()
				if err != nil {
					return versionsDown, nil, "record", err
				}
				return stale, nil, "", nil
			}
		}
		if !w.hold(tx, false) {
			_ = tx.Rollback()
			return gone, nil, "", nil
		}
		return ran, tx, "", g.invoke(ctx, tx, d)
	case g.cfg.inbox != nil:
		st, err := g.cfg.inbox.Claim(ctx, g.cfg.sub.Group, m.ID, g.cfg.timeout+5*time.Second)
		if err != nil {
			return inboxDown, nil, "claim", err
		}
		switch st {
		case Handled:
			return duplicate, nil, "", nil
		case Busy:
			return busy, nil, "", nil
		}
		if !w.hold(nil, true) {
			if err := g.cfg.inbox.Release(context.WithoutCancel(ctx), g.cfg.sub.Group, m.ID); err != nil {
				g.log.Warn("inbox release failed; the retry waits for the claim to expire", "id", m.ID, "err", err)
			}
			return gone, nil, "", nil
		}
	}
	return ran, nil, "", g.invoke(ctx, nil, d)
}

// invoke runs the handler on the calling goroutine; a panic becomes a
// *PanicError.
func (g *registration) invoke(ctx context.Context, tx *sql.Tx, d *broker.Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	if tx != nil {
		return g.h.tx(ctx, tx, d.Message)
	}
	return g.h.plain(ctx, d.Message)
}
