package consume

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// holdQueue emulates delayed redelivery on backends without
// Capabilities.NackDelay: a failed delivery stays unsettled in a timer heap
// (no worker waits for it), its deadline is extended while it waits where
// the backend can extend, and it is nacked without delay when due, so the
// backend hands it out again at once. Other messages keep flowing: only the
// subscription's in-flight allowance is used while a message waits.
type holdQueue struct {
	g    *registration
	mu   sync.Mutex
	h    holdHeap
	wake chan struct{}
}

type held struct {
	d        *broker.Delivery
	due      time.Time
	extendAt time.Time // zero when the backend cannot extend
}

func (x *held) next() time.Time {
	if !x.extendAt.IsZero() && x.extendAt.Before(x.due) {
		return x.extendAt
	}
	return x.due
}

type holdHeap []*held

func (h holdHeap) Len() int           { return len(h) }
func (h holdHeap) Less(i, j int) bool { return h[i].next().Before(h[j].next()) }
func (h holdHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *holdHeap) Push(x any)        { *h = append(*h, x.(*held)) }
func (h *holdHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newHoldQueue(g *registration) *holdQueue {
	return &holdQueue{g: g, wake: make(chan struct{}, 1)}
}

func (q *holdQueue) extendEvery() time.Duration { return q.g.cfg.sub.AckDeadline / 2 }

func (q *holdQueue) add(d *broker.Delivery, delay time.Duration) {
	now := time.Now()
	x := &held{d: d, due: now.Add(delay)}
	if q.g.rt.caps.Extend {
		x.extendAt = now.Add(q.extendEvery())
	}
	q.mu.Lock()
	heap.Push(&q.h, x)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run nacks held deliveries when due until stop is closed.
func (q *holdQueue) run(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		var wait time.Duration = time.Hour
		now := time.Now()
		var due []*held
		for q.h.Len() > 0 && !q.h[0].next().After(now) {
			due = append(due, heap.Pop(&q.h).(*held))
		}
		if q.h.Len() > 0 {
			wait = q.h[0].next().Sub(now)
		}
		q.mu.Unlock()
		for _, x := range due {
			if !x.due.After(now) {
				q.nack(x.d)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), q.g.rt.cfg.SettleTimeout)
			err := x.d.Extend(ctx, q.g.cfg.sub.AckDeadline)
			cancel()
			if err != nil {
				q.g.log.Warn("extend of a message waiting for its retry failed; the backend redelivers it after its deadline", "id", x.d.Message.ID, "err", err)
				continue
			}
			x.extendAt = now.Add(q.extendEvery())
			q.mu.Lock()
			heap.Push(&q.h, x)
			q.mu.Unlock()
		}
		if len(due) > 0 {
			continue
		}
		timer.Reset(wait)
		select {
		case <-stop:
			return
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// flush nacks every held delivery now (graceful stop): the backend
// redelivers them, to this process after a restart or to another consumer.
func (q *holdQueue) flush() {
	q.mu.Lock()
	all := q.h
	q.h = nil
	q.mu.Unlock()
	for _, x := range all {
		q.nack(x.d)
	}
}

func (q *holdQueue) nack(d *broker.Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), q.g.rt.cfg.SettleTimeout)
	defer cancel()
	if err := d.Nack(ctx, 0); err != nil {
		q.g.log.Warn("nack of a message due for retry failed; it comes back after its ack deadline", "id", d.Message.ID, "err", err)
	}
}

// len returns the number of held deliveries.
func (q *holdQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.h.Len()
}
