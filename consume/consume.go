package consume

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// Config configures a Runtime. Every field has a default.
type Config struct {
	// Logger receives the runtime's logs: retries (Warn), dead letters,
	// panics with their stack, inbox failures (Error). Defaults to
	// slog.Default().
	Logger *slog.Logger
	// SettleTimeout bounds one Ack, Nack, Term or Extend call that the
	// runtime waits for. Defaults to 10 seconds. Acks sent without waiting
	// (see "Acknowledgements" in the package doc) are bounded by the
	// backend's own timeouts instead.
	SettleTimeout time.Duration
	// SubscribeTimeout bounds subscribing when Run starts. Defaults to 30
	// seconds.
	SubscribeTimeout time.Duration
	// SweepInterval is how often inboxes that implement Sweeper delete
	// expired entries while Run runs. Defaults to 1 minute.
	SweepInterval time.Duration
}

// WithDefaults returns a copy of c (nil allowed) with every unset field set
// to its default.
func (c *Config) WithDefaults() *Config {
	out := &Config{}
	if c != nil {
		*out = *c
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.SettleTimeout <= 0 {
		out.SettleTimeout = 10 * time.Second
	}
	if out.SubscribeTimeout <= 0 {
		out.SubscribeTimeout = 30 * time.Second
	}
	if out.SweepInterval <= 0 {
		out.SweepInterval = time.Minute
	}
	return out
}

// Runtime runs handlers on a backend. Register handlers with Handle, then
// call Run once. It is safe for concurrent use.
type Runtime struct {
	b    broker.Broker
	caps broker.Capabilities
	cfg  *Config
	log  *slog.Logger

	mu      sync.Mutex
	regs    []*registration
	running bool
}

// New returns a Runtime for b. cfg may be nil (all defaults).
func New(b broker.Broker, cfg *Config) *Runtime {
	cfg = cfg.WithDefaults()
	return &Runtime{b: b, caps: b.Capabilities(), cfg: cfg, log: cfg.Logger.With("component", "switchboard-consume")}
}

// Handle registers h for the messages of topic (a name or a pattern) in
// consumer group group. It only records the registration and checks it:
// an option the backend cannot honour fails here with an error wrapping
// broker.ErrNotSupported. Handlers start with Run.
func (r *Runtime) Handle(topic, group string, h Handler, opts ...Option) error {
	if !h.valid() {
		return errors.New("consume: zero Handler; build it with Func, TxFunc, Raw or HandlerOf")
	}
	c := handlerConfig{sub: broker.SubscribeParams{Topic: topic, Group: group}}
	for _, o := range opts {
		o.apply(&c)
	}
	if group == "" {
		return fmt.Errorf("consume: handler for %q: %w: a handler needs a consumer group (retries, dead letters and idempotency are per group)", topic, message.ErrInvalid)
	}
	if !r.caps.Groups || !r.caps.Ack {
		return fmt.Errorf("consume: handler for %q: %w", topic, broker.NotSupported(r.caps.Name, "handlers with retries (durable groups with per-message ack)", "use a durable backend"))
	}
	if c.concurrency == 0 {
		c.concurrency = DefaultConcurrency
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = c.sub.MaxAttempts
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.backoff == nil && c.sub.Backoff != nil {
		c.backoff = BackoffPolicy(c.sub.Backoff)
	}
	if c.backoff == nil {
		c.backoff = DefaultBackoff
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.inboxTTL == 0 {
		c.inboxTTL = DefaultInboxTTL
	}
	if c.staleKeys == 0 {
		c.staleKeys = DefaultStaleKeys
	}
	if c.versionTTL == 0 {
		c.versionTTL = DefaultVersionTTL
	}
	if c.name == "" {
		c.name = topic + "/" + group
	}
	switch {
	case c.concurrency < 0, c.timeout < 0, c.inboxTTL < 0, c.staleKeys < 0, c.versionTTL < 0:
		return fmt.Errorf("consume: handler %s: %w: concurrency, timeout, inbox TTL, stale keys and version TTL must not be negative", c.name, message.ErrInvalid)
	case c.versionsSet && c.versions == nil:
		return fmt.Errorf("consume: handler %s: %w: VersionsIn with a nil store; use DropStale() for versions in memory", c.name, message.ErrInvalid)
	case c.sub.OrderedByKey && !r.caps.OrderedByKey && !r.caps.Extend:
		return fmt.Errorf("consume: handler %s: %w", c.name, broker.NotSupported(r.caps.Name, "per-key ordering",
			"the runtime emulates it only on backends that can extend a delivery (messages waiting behind their key would pass their ack deadline); use a backend with ordering (embedded, Kafka by key, SQS FIFO)"))
	case h.IsTx() && c.inbox == nil:
		return fmt.Errorf("consume: handler %s: %w: a transactional handler needs Idempotent(inbox) with an SQL inbox (consume/inbox/sqlinbox)", c.name, message.ErrInvalid)
	}
	var txi TxInbox
	var txv TxVersionStore
	if h.IsTx() {
		var ok bool
		if txi, ok = c.inbox.(TxInbox); !ok {
			return fmt.Errorf("consume: handler %s: %w: inbox %T cannot write inside a transaction; use consume/inbox/sqlinbox", c.name, message.ErrInvalid, c.inbox)
		}
		if txv, ok = c.versions.(TxVersionStore); ok {
			if x, ok := c.inbox.(interface{ DB() *sql.DB }); ok && x.DB() != txv.DB() {
				return fmt.Errorf("consume: handler %s: %w: the version store %T and the inbox use different databases, so the version could not commit with the handler's transaction; create both on the same *sql.DB", c.name, message.ErrInvalid, c.versions)
			}
		}
	}
	// The runtime decides retries and dead letters itself. The backend's own
	// limit is kept above it as a safety net for redeliveries the runtime
	// never sees (a crash while handling, an inbox outage), so that a
	// message that kills the process still ends up dead-lettered.
	if c.maxAttempts < 0 {
		c.sub.MaxAttempts = -1
	} else {
		c.sub.MaxAttempts = c.maxAttempts + 20
	}
	// Without native ordering the runtime orders keys itself (order.go);
	// the backend is asked for plain delivery.
	emulateOrder := c.sub.OrderedByKey && !r.caps.OrderedByKey
	if emulateOrder {
		c.sub.OrderedByKey = false
	}
	emulate := !r.caps.NackDelay
	if emulate {
		// Retries wait in the runtime's timer; the backend redelivers at once.
		c.sub.Backoff = func(int) time.Duration { return 0 }
	} else {
		c.sub.Backoff = c.backoff
	}
	if c.sub.AckDeadline == 0 {
		c.sub.AckDeadline = c.timeout + 5*time.Second
		if emulate && !r.caps.Extend {
			c.sub.AckDeadline += c.backoff(1 << 20)
		}
	}
	switch {
	case c.sub.MaxInFlight != 0:
	case emulateOrder:
		// Messages waiting behind their key count as in flight.
		c.sub.MaxInFlight = max(DefaultOrderWindow, 4*c.concurrency)
	case !emulate:
		c.sub.MaxInFlight = 2 * c.concurrency
	}
	if err := broker.CheckSubscribe(r.caps, &c.sub); err != nil {
		return fmt.Errorf("consume: handler %s: %w", c.name, err)
	}
	reg := &registration{
		rt: r, cfg: c, h: h, txInbox: txi, txVers: txv, emulate: emulate,
		log:      r.log.With("handler", c.name, "topic", topic, "group", group),
		ackSlots: make(chan struct{}, maxPendingAcks),
	}
	if c.dropStale {
		reg.vers = c.versions
		if reg.vers == nil {
			reg.vers, reg.versLocal = newMemVersions(c.staleKeys), true
		}
	}
	if emulate {
		reg.holds = newHoldQueue(reg)
	}
	if emulateOrder {
		reg.order = newOrderer(reg)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return fmt.Errorf("consume: handler %s: Handle after Run; register every handler before calling Run", c.name)
	}
	r.regs = append(r.regs, reg)
	return nil
}

// Run subscribes every registered handler and handles messages until ctx is
// cancelled, then stops gracefully: it stops taking new messages, lets the
// handlers in flight finish (each bounded by its Timeout), settles them,
// releases messages waiting for a retry back to the backend, closes the
// subscriptions and returns nil. Messages received but not started are
// released for redelivery; nothing in flight is lost.
//
// Handlers run with a context that is not cancelled by ctx (only by their
// Timeout), so that in-flight work can finish. Run returns an error when a
// subscription fails or ends on its own; the other handlers are stopped
// gracefully first. Run may be called once.
func (r *Runtime) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return errors.New("consume: Run called twice")
	}
	r.running = true
	regs := append([]*registration(nil), r.regs...)
	r.mu.Unlock()
	if len(regs) == 0 {
		return errors.New("consume: Run with no handlers; register them with Handle first")
	}
	subCtx, cancel := context.WithTimeout(ctx, r.cfg.SubscribeTimeout)
	for i, reg := range regs {
		sub, err := r.b.Subscribe(subCtx, &reg.cfg.sub)
		if err != nil {
			cancel()
			for _, prev := range regs[:i] {
				prev.sub.Close()
			}
			return fmt.Errorf("consume: subscribe handler %s: %w", reg.cfg.name, err)
		}
		reg.sub = sub
	}
	cancel()

	stop := make(chan struct{})
	failed := make(chan error, len(regs))
	var wg sync.WaitGroup
	for _, reg := range regs {
		reg.start(&wg, stop, failed)
	}
	var sweepWG sync.WaitGroup
	sweepWG.Go(func() { r.sweep(stop, regs) })

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-failed:
	}
	close(stop)
	wg.Wait()
	sweepWG.Wait()
	var errs []error
	for _, reg := range regs {
		reg.acking.Wait() // the acks under way finish before the subscription closes
		if reg.holds != nil {
			reg.holds.flush()
		}
		if err := reg.sub.Close(); err != nil && !errors.Is(err, broker.ErrClosed) {
			errs = append(errs, fmt.Errorf("consume: close subscription of handler %s: %w", reg.cfg.name, err))
		}
	}
	r.log.Debug("runtime stopped", "handlers", len(regs))
	return errors.Join(append([]error{runErr}, errs...)...)
}

// sweep deletes expired inbox entries and version records periodically.
func (r *Runtime) sweep(stop <-chan struct{}, regs []*registration) {
	seen := map[Sweeper]bool{}
	var sweepers []Sweeper
	for _, reg := range regs {
		for _, store := range []any{reg.cfg.inbox, reg.cfg.versions} {
			if s, ok := store.(Sweeper); ok && !seen[s] {
				seen[s] = true
				sweepers = append(sweepers, s)
			}
		}
	}
	if len(sweepers) == 0 {
		return
	}
	t := time.NewTicker(r.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			for _, s := range sweepers {
				ctx, cancel := context.WithTimeout(context.Background(), r.cfg.SweepInterval)
				if n, err := s.Sweep(ctx); err != nil {
					r.log.Warn("sweep of expired entries failed", "store", fmt.Sprintf("%T", s), "err", err)
				} else if n > 0 {
					r.log.Debug("sweep of expired entries", "store", fmt.Sprintf("%T", s), "deleted", n)
				}
				cancel()
			}
		}
	}
}

// registration is one Handle call at run time.
type registration struct {
	rt      *Runtime
	cfg     handlerConfig
	h       Handler
	txInbox TxInbox
	emulate bool // retries wait in holds instead of a delayed nack
	log     *slog.Logger
	sub     broker.Subscription
	holds   *holdQueue
	order   *orderer // per-key ordering emulated in the runtime
	stats   counters

	// DropStale: vers is the VersionStore (nil without DropStale); versLocal
	// when it is the in-memory one; txVers when a TxFunc records the version
	// in its own transaction.
	vers      VersionStore
	versLocal bool
	txVers    TxVersionStore

	// Asynchronous acks (see ackAsync): acking counts those not answered
	// yet, ackSlots bounds them.
	acking   sync.WaitGroup
	ackSlots chan struct{}

	// Set by start.
	wg       *sync.WaitGroup
	stop     <-chan struct{}
	failedCh chan<- error
}

func (g *registration) start(wg *sync.WaitGroup, stop <-chan struct{}, failed chan<- error) {
	g.wg, g.stop, g.failedCh = wg, stop, failed
	if g.holds != nil {
		wg.Go(func() { g.holds.run(stop) })
	}
	if g.order != nil {
		wg.Go(func() { g.order.admit(stop) })
		wg.Go(func() { g.order.keep(stop) })
	}
	for range g.cfg.concurrency {
		wg.Add(1)
		go g.work(g.newWorker())
	}
}

func errSubscriptionEnded(g *registration) error {
	return fmt.Errorf("consume: subscription of handler %s ended: %v", g.cfg.name, g.sub.Err())
}

// outcome of the inbox step and handler call of one delivery.
type outcome int

const (
	ran          outcome = iota // the handler ran; err is its result
	duplicate                   // the inbox had the ID: skip and ack
	busy                        // a concurrent delivery holds the claim
	inboxDown                   // the inbox failed: leave for retry
	stale                       // DropStale: not above the recorded version; skip and ack
	versionsDown                // the version store failed: leave for retry
	gone                        // abandoned by the watchdog meanwhile
)

// process runs one delivery through the pipeline on the worker's goroutine:
// expiry, staleness, inbox, handler, then settlement. It returns false when
// the watchdog abandoned the call: the delivery is settled and the worker
// retired.
func (w *worker) process(d *broker.Delivery) bool {
	g := w.g
	m := d.Message
	now := time.Now()
	w.st.received.Add(1)
	if m.Expired(now) {
		g.stats.expired.Add(1)
		g.deadLetter(d, reasonExpired, nil)
		return true
	}
	ver, hasVer := uint64(0), false
	if g.vers != nil {
		ver, hasVer = versionOf(m)
	}
	ctx := newHandlerCtx(g.handlerDelivery(d), now.Add(g.cfg.timeout))
	w.arm(d, ctx, now)
	out, tx, op, err := w.attempt(ctx, d, ver, hasVer)
	late, alive := w.disarm()
	if !alive {
		return false
	}
	defer ctx.cancel(context.Canceled)
	switch out {
	case duplicate:
		g.stats.duplicates.Add(1)
		w.ack(d)
		return true
	case busy:
		// A concurrent delivery of the same ID is being handled; look
		// again once it should be done.
		g.stats.busy.Add(1)
		g.retry(d, g.cfg.backoff(1))
		return true
	case inboxDown:
		g.storeFailed(d, &g.stats.inboxErrors, "inbox", op, err)
		return true
	case stale:
		g.stats.stale.Add(1)
		g.log.Debug("stale message dropped", "id", m.ID, "key", m.Key, "version", ver)
		w.ack(d)
		return true
	case versionsDown:
		g.storeFailed(d, &g.stats.versionErrors, "version store", op, err)
		return true
	}
	if late && (err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		err = &TimeoutError{Timeout: g.cfg.timeout}
	}
	// The version is recorded after success: in the handler's transaction
	// already (txVers), else right after the commit, or before the inbox
	// mark (a copy redelivered after a crash between the two is then
	// dropped as stale rather than handled again).
	record := hasVer && err == nil && g.txVers == nil
	switch {
	case tx != nil:
		if err != nil {
			_ = tx.Rollback()
		} else if cerr := tx.Commit(); cerr != nil {
			err = fmt.Errorf("commit of the handler's transaction: %w", cerr)
		} else if record {
			g.recordVersion(ctx, m, ver)
		}
	case g.cfg.inbox != nil:
		if err == nil {
			if record {
				g.recordVersion(ctx, m, ver)
			}
			if merr := g.cfg.inbox.Mark(context.WithoutCancel(ctx), g.cfg.sub.Group, m.ID, g.cfg.inboxTTL); merr != nil {
				// The handler's effect happened: acking is right. Without the
				// mark a later copy of this ID would run again.
				g.stats.inboxErrors.Add(1)
				g.log.Error("inbox mark failed after the handler succeeded; a later copy of this message may be handled again", "id", m.ID, "err", merr)
			}
		} else if rerr := g.cfg.inbox.Release(context.WithoutCancel(ctx), g.cfg.sub.Group, m.ID); rerr != nil {
			g.log.Warn("inbox release failed; the retry waits for the claim to expire", "id", m.ID, "err", rerr)
		}
	case record:
		g.recordVersion(ctx, m, ver)
	}
	w.st.observe(time.Since(now))
	if err != nil {
		g.failed(d, err)
		return true
	}
	w.ack(d)
	return true
}

// storeFailed leaves the message for a retry: the inbox or version store
// could not tell whether it was handled or stale, so it must not be acked.
// counter counts the failure.
func (g *registration) storeFailed(d *broker.Delivery, counter *atomic.Int64, store, op string, err error) {
	counter.Add(1)
	attempt := g.attemptOf(d)
	g.log.Error(store+" unavailable; message not handled and left for retry (no loss)", "op", op, "id", d.Message.ID, "attempt", attempt, "err", err)
	g.retry(d, min(g.cfg.backoff(attempt), 5*time.Second))
}

// TimeoutError is the error of a handler that did not return within its
// Timeout.
type TimeoutError struct {
	Timeout   time.Duration
	Abandoned bool // the handler still had not returned and was left running
}

func (e *TimeoutError) Error() string {
	if e.Abandoned {
		return fmt.Sprintf("handler did not return within its timeout of %s and ignored cancellation; abandoned", e.Timeout)
	}
	return fmt.Sprintf("handler did not finish within its timeout of %s", e.Timeout)
}

// failed decides what a handler error means: dead letter or retry.
func (g *registration) failed(d *broker.Delivery, err error) {
	var de *DecodeError
	var pe *PanicError
	attempt := g.attemptOf(d)
	if errors.As(err, &pe) {
		g.stats.panics.Add(1)
		g.log.Error("handler panicked; the message will be retried", "id", d.Message.ID, "attempt", attempt, "panic", fmtAny(pe.Value), "stack", string(pe.Stack))
	}
	switch {
	case errors.As(err, &de):
		g.deadLetter(d, reasonDecode, err)
	case IsPermanent(err):
		g.deadLetter(d, reasonPermanent, err)
	case g.cfg.maxAttempts > 0 && attempt >= g.cfg.maxAttempts:
		g.deadLetter(d, reasonMaxAttempts, err)
	default:
		delay := g.cfg.backoff(attempt)
		g.stats.retried.Add(1)
		if pe == nil {
			g.log.Warn("handler failed; retrying", "id", d.Message.ID, "attempt", attempt, "max_attempts", g.cfg.maxAttempts, "delay", delay, "err", err)
		}
		g.retry(d, delay)
	}
}

// retry hands d back for another attempt after delay: a delayed nack where
// the backend has one, otherwise the runtime holds d in a timer (without a
// worker) and nacks it when due. A keyed message of a registration whose
// ordering the runtime emulates is retried in the runtime instead (see
// orderer), so that later messages of its key cannot overtake it.
func (g *registration) retry(d *broker.Delivery, delay time.Duration) {
	if g.order != nil && g.order.retry(d, delay) {
		return
	}
	if g.emulate && delay > 0 {
		g.holds.add(d, delay)
		return
	}
	ctx := newSettleCtx(g.rt.cfg.SettleTimeout)
	defer ctx.cancel(context.Canceled)
	if err := d.Nack(ctx, delay); err != nil {
		g.log.Warn("nack failed; the message comes back after its ack deadline", "id", d.Message.ID, "err", err)
	}
}

// MaxErrorText bounds the error text kept on a dead letter.
const MaxErrorText = 1024

// deadLetter terms d with reason. The error text, when there is one, is
// appended to the reason as "reason: text", which is where backends that
// keep only a reason (the broker.Delivery.Term contract) store it;
// DeadLetterInfo splits it again.
func (g *registration) deadLetter(d *broker.Delivery, reason dlReason, cause error) {
	g.stats.deadLettered.Add(1)
	g.stats.deadLetteredBy[reason].Add(1)
	full := reason.String()
	attempt := g.attemptOf(d)
	if cause != nil {
		text := cause.Error()
		if len(text) > MaxErrorText {
			text = text[:MaxErrorText-3] + "..."
		}
		full += ": " + text
		if attempt != d.Info.Attempt {
			// The backend counted deliveries, not the retries made in the
			// runtime for ordering: say how many attempts there were.
			full += fmt.Sprintf(" (attempt %d, retried in the runtime to keep its key's order)", attempt)
		}
	}
	g.log.Error("message dead-lettered", "id", d.Message.ID, "attempt", attempt, "reason", reason.String(), "err", cause, "dlq", message.DLQTopic(g.cfg.sub.Group))
	ctx := newSettleCtx(g.rt.cfg.SettleTimeout)
	defer ctx.cancel(context.Canceled)
	if err := d.Term(ctx, full); err != nil {
		g.log.Warn("term failed; the message comes back after its ack deadline", "id", d.Message.ID, "err", err)
	}
}

func (g *registration) ackWith(ctx context.Context, d *broker.Delivery, st *hot) {
	g.acked(d, st, d.Ack(ctx))
}

// acked counts the outcome err of d's ack.
func (g *registration) acked(d *broker.Delivery, st *hot, err error) {
	if err != nil {
		g.stats.ackErrors.Add(1)
		g.log.Warn("ack failed; the message may be delivered again", "id", d.Message.ID, "err", err)
		return
	}
	st.acked.Add(1)
}

// maxPendingAcks bounds a registration's asynchronous acks not answered
// yet; a worker that would exceed it waits for a slot.
const maxPendingAcks = 256

// ackAsync starts d's ack and returns without waiting for the server, on a
// backend whose acks take a round trip (broker.Delivery.AcksAsync): the
// worker takes its next message while the ack travels, and the acks of all
// workers share round trips. Nothing is weaker than waiting: the handler
// has returned either way, a failed ack is counted and logged the same,
// and the message then comes back, as at-least-once delivery allows. Run
// waits for the acks under way before it closes the subscription. The
// backend bounds each ack with its own timeouts (SettleTimeout applies to
// waited settlements).
func (g *registration) ackAsync(d *broker.Delivery, st *hot) {
	g.ackSlots <- struct{}{}
	g.acking.Add(1)
	d.AckAsync(context.Background(), func(err error) {
		g.acked(d, st, err)
		<-g.ackSlots
		g.acking.Done()
	})
}
