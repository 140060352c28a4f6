package consume

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// DefaultOrderWindow is how many messages a registration with OrderedByKey
// holds at most where the runtime emulates the ordering (the backend lacks
// Capabilities.OrderedByKey), unless MaxInFlight is set through Subscribe:
// the messages being handled, those waiting for a worker, those waiting
// behind an earlier message of their key and those waiting for a retry all
// count. It is raised to 4 × Concurrency when that is larger. The
// subscription's MaxInFlight is set to the same value.
const DefaultOrderWindow = 256

// orderer emulates per-key ordering for one registration on a backend
// without it. It sits between the subscription and the workers:
//
//   - admit reads deliveries while fewer than window are held. A keyed
//     message whose key has nothing in progress is handed to the workers
//     (ready); otherwise it waits behind its key, unsettled.
//   - A worker that failed a keyed message does not nack it: retry records
//     the intent and after puts the entry in a timer heap; keep hands it to
//     the workers again when its backoff is over. Later messages of the key
//     keep waiting meanwhile, so none can overtake it.
//   - When a keyed message is settled (acked, dead-lettered), after hands
//     the next waiting message of its key to the workers.
//   - keep extends the deliveries the runtime holds without a worker
//     (waiting for a worker, behind their key, or for a retry) when their
//     deadline nears, and a worker extends a delivery before running its
//     handler when what is left of the deadline would not cover the
//     handler's timeout.
//
// Unkeyed messages (and requests, which are not stored) go straight to the
// workers and are retried the usual way. Every held delivery takes one of
// window slots, so memory stays bounded and the backend's MaxInFlight (set
// to window) is respected. Within one runtime a key has at most one message
// in a handler, in arrival order; across processes sharing the group there
// is no ordering (that needs the backend's).
type orderer struct {
	g     *registration
	slots chan struct{} // one token per held entry (the window)
	ready chan *entry   // entries a worker may take; never more than the window
	wake  chan struct{} // tells keep that a retry was scheduled

	ackDeadline time.Duration // the subscription's
	renew       time.Duration // keep extends an idle entry with less than this left
	need        time.Duration // a worker extends first with less than this left
	tick        time.Duration // how often keep looks for entries to extend

	mu      sync.Mutex
	keys    map[string]*keyQueue
	entries map[*broker.Delivery]*entry
	retries retryHeap
	waiting int // entries behind their key or waiting for a retry
}

// keyQueue is a key's held entries in arrival order; q[0] is the one in
// progress (ready, in a handler, or waiting for a retry).
type keyQueue struct{ q []*entry }

// entry is one held delivery.
type entry struct {
	d   *broker.Delivery
	key string // "" when not ordered

	// Guarded by orderer.mu.
	tries    int           // failed attempts retried in the runtime
	retrying bool          // retry was called for the current attempt
	delay    time.Duration // its backoff
	due      time.Time     // when a scheduled retry runs

	// mu is held while the delivery is extended and while a worker takes
	// the entry, so that the delivery is never extended while a worker
	// settles it.
	mu       sync.Mutex
	running  bool      // a worker has it
	done     bool      // settled (or handed elsewhere) and forgotten
	lost     bool      // an extend found it expired or released: not extended again
	deadline time.Time // when the backend takes it back, as far as we know
}

func newOrderer(g *registration) *orderer {
	w := g.cfg.sub.MaxInFlight
	dl := g.cfg.sub.AckDeadline
	need := g.cfg.timeout + g.graceAfterTimeout() + min(time.Second, dl/10)
	if need >= dl {
		// The deadline cannot cover a whole handler call anyway (an
		// AckDeadline set below the Timeout); keep it as fresh as keep does.
		need = dl / 2
	}
	return &orderer{
		g:           g,
		slots:       make(chan struct{}, w),
		ready:       make(chan *entry, w),
		wake:        make(chan struct{}, 1),
		ackDeadline: dl,
		renew:       dl / 2,
		need:        need,
		tick:        min(max(dl/8, 5*time.Millisecond), time.Second),
		keys:        map[string]*keyQueue{},
		entries:     map[*broker.Delivery]*entry{},
	}
}

// orderKey is the key d is ordered by; "" for no ordering.
func orderKey(d *broker.Delivery) string {
	if d.Message.Header(message.HeaderReplyTo) != "" {
		return "" // a request: not stored, nothing to order
	}
	return d.Message.Key
}

// admit reads deliveries while a slot is free, until stop is closed or the
// subscription ends.
func (o *orderer) admit(stop <-chan struct{}) {
	g := o.g
	in := g.sub.Deliveries()
	for {
		select {
		case o.slots <- struct{}{}:
		case <-stop:
			return
		}
		select {
		case d, ok := <-in:
			if !ok {
				select {
				case <-stop:
				default:
					select {
					case g.failedCh <- errSubscriptionEnded(g):
					case <-stop:
					}
				}
				return
			}
			o.add(d)
		case <-stop:
			return
		}
	}
}

// add holds d: ready when its key is free, else behind its key.
func (o *orderer) add(d *broker.Delivery) {
	e := &entry{d: d, key: orderKey(d), deadline: d.Info.Deadline}
	if e.deadline.IsZero() {
		e.deadline = time.Now().Add(o.ackDeadline * 3 / 4)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.entries[d] = e
	if e.key == "" {
		o.ready <- e
		return
	}
	kq := o.keys[e.key]
	if kq == nil {
		kq = &keyQueue{}
		o.keys[e.key] = kq
	}
	kq.q = append(kq.q, e)
	if len(kq.q) == 1 {
		o.ready <- e
	} else {
		o.waiting++
	}
}

// work is a worker's loop on an ordered registration: it takes entries
// from ready instead of the subscription.
func (o *orderer) work(w *worker) {
	g := o.g
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
		case e := <-o.ready:
			o.take(e)
			if !w.process(e.d) {
				return // abandoned: abandon called after, the replacement owns the slot
			}
			o.after(e)
		}
	}
}

// take marks e as being handled, first extending its delivery when what is
// left of its deadline would not cover the handler call.
func (o *orderer) take(e *entry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.running = true
	if !e.lost && time.Until(e.deadline) < o.need {
		o.extend(e)
	}
}

// retry takes over the retry of d when it is an ordered message: it is
// retried in the runtime after delay rather than nacked, so that no later
// message of its key can overtake it. It reports false for other messages.
func (o *orderer) retry(d *broker.Delivery, delay time.Duration) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.entries[d]
	if e == nil || e.key == "" {
		return false
	}
	e.retrying, e.delay = true, delay
	return true
}

// tries returns the failed attempts of d retried in the runtime.
func (o *orderer) tries(d *broker.Delivery) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.entries[d]; e != nil {
		return e.tries
	}
	return 0
}

// afterAbandon is after for the delivery of an abandoned handler.
func (o *orderer) afterAbandon(d *broker.Delivery) {
	o.mu.Lock()
	e := o.entries[d]
	o.mu.Unlock()
	if e != nil {
		o.after(e)
	}
}

// after runs when the worker (or the watchdog) is done with e: a retry is
// scheduled, or e is forgotten and the next message of its key made ready.
func (o *orderer) after(e *entry) {
	o.mu.Lock()
	retrying := e.retrying
	if retrying {
		e.retrying = false
		e.tries++
	} else {
		o.forgetLocked(e)
	}
	o.mu.Unlock()

	e.mu.Lock()
	if retrying && !e.lost && time.Until(e.deadline) < o.renew {
		o.extend(e)
	}
	e.running, e.done = false, !retrying
	e.mu.Unlock()

	if !retrying {
		<-o.slots
		return
	}
	o.mu.Lock()
	e.due = time.Now().Add(e.delay)
	heap.Push(&o.retries, e)
	o.waiting++
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// forgetLocked drops a finished entry and makes the next message of its
// key ready.
func (o *orderer) forgetLocked(e *entry) {
	delete(o.entries, e.d)
	if e.key == "" {
		return
	}
	kq := o.keys[e.key]
	if kq == nil || len(kq.q) == 0 || kq.q[0] != e {
		// Only a key's head is ever handed to a worker, so this cannot
		// happen; never hand out a second message of the key.
		o.g.log.Error("consume: ordering state inconsistent; please report", "id", e.d.Message.ID, "key", e.key)
		return
	}
	kq.q[0] = nil
	kq.q = kq.q[1:]
	if len(kq.q) == 0 {
		delete(o.keys, e.key)
		return
	}
	o.waiting--
	o.ready <- kq.q[0]
}

// keep hands out retries when due and extends idle deliveries, until stop
// is closed.
func (o *orderer) keep(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	nextSweep := time.Now().Add(o.tick)
	var batch []*entry
	for {
		now := time.Now()
		o.mu.Lock()
		for o.retries.Len() > 0 && !o.retries[0].due.After(now) {
			e := heap.Pop(&o.retries).(*entry)
			o.waiting--
			o.ready <- e
		}
		sweep := !now.Before(nextSweep)
		if sweep {
			for _, e := range o.entries {
				batch = append(batch, e)
			}
		}
		wait := nextSweep.Sub(now)
		if o.retries.Len() > 0 {
			wait = min(wait, o.retries[0].due.Sub(now))
		}
		o.mu.Unlock()
		if sweep {
			o.renewIdle(batch, stop)
			clear(batch)
			batch = batch[:0]
			nextSweep = time.Now().Add(o.tick)
			continue
		}
		timer.Reset(wait)
		select {
		case <-stop:
			return
		case <-o.wake:
		case <-timer.C:
		}
	}
}

// renewIdle extends the deliveries of batch that no worker has and whose
// deadline is near.
func (o *orderer) renewIdle(batch []*entry, stop <-chan struct{}) {
	for _, e := range batch {
		select {
		case <-stop:
			return
		default:
		}
		e.mu.Lock()
		if !e.running && !e.done && !e.lost && time.Until(e.deadline) < o.renew {
			o.extend(e)
		}
		e.mu.Unlock()
	}
}

// extend pushes e's deadline to now + the ack deadline. The caller holds
// e.mu. A delivery the backend no longer holds for us (expired, released)
// is marked lost: the backend redelivers it, and this copy is still
// handled in its turn (at least once).
func (o *orderer) extend(e *entry) {
	g := o.g
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), g.rt.cfg.SettleTimeout)
	err := e.d.Extend(ctx, o.ackDeadline)
	cancel()
	if err == nil {
		e.deadline = start.Add(o.ackDeadline)
		return
	}
	if errors.Is(err, broker.ErrDeliveryExpired) || errors.Is(err, broker.ErrClosed) || errors.Is(err, broker.ErrAlreadySettled) {
		e.lost = true
		g.log.Warn("a message held for its key's order could not be kept (its deadline passed or the subscription released it); the backend delivers it again, possibly after later messages of its key",
			"id", e.d.Message.ID, "key", e.key, "err", err)
		return
	}
	g.log.Warn("extend of a message held for its key's order failed; trying again", "id", e.d.Message.ID, "key", e.key, "err", err)
}

// waitingCount returns the entries behind their key or waiting for a retry.
func (o *orderer) waitingCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.waiting
}

// handlerDelivery is the delivery a handler sees for d: d itself, or, for
// a message retried in the runtime, a copy whose Info.Attempt counts those
// retries (its settlement methods do nothing; the runtime settles d).
func (g *registration) handlerDelivery(d *broker.Delivery) *broker.Delivery {
	if g.order == nil {
		return d
	}
	n := g.order.tries(d)
	if n == 0 {
		return d
	}
	info := d.Info
	info.Attempt += n
	info.Redelivered = true
	return broker.NewDelivery(d.Message, info, nil, d.Token)
}

// attemptOf is the attempt d is at: the backend's delivery count plus the
// retries made in the runtime.
func (g *registration) attemptOf(d *broker.Delivery) int {
	if g.order == nil {
		return d.Info.Attempt
	}
	return d.Info.Attempt + g.order.tries(d)
}

// retryHeap orders scheduled retries by due time.
type retryHeap []*entry

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(*entry)) }
func (h *retryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}
