package sqsface

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// Deliveries wait in the face's buffer until a ReceiveMessage takes them;
// only then does the visibility timeout start (Delivery.Extend). While they
// wait, the janitor keeps them alive with short extensions (holdDeadline),
// so that a waiting delivery never expires into a redelivery, and the
// extension at receive time never shortens a deadline by more than the
// hold (the engine's timer wakes for a shorter deadline only at the old
// one).
const (
	holdDeadline = 3 * time.Second
	holdRenew    = 2 * time.Second // renew holds that end sooner than this
	janitorTick  = 500 * time.Millisecond
)

// consumer is a queue's open subscription and the deliveries it handed
// over that no client has received yet. Guarded by queue.mu.
type consumer struct {
	sub     broker.Subscription
	buf     []*broker.Delivery
	notify  chan struct{} // closed when buf grows
	waiters int
	lastUse time.Time
}

// held is a delivery received by a client, found by its receipt handle.
type held struct {
	d        *broker.Delivery
	deadline time.Time
}

type attempt struct {
	at   time.Time
	msgs []msgOut
}

// subscribe opens the consumer if it is released. Caller holds q.mu.
func (q *queue) subscribe() (*consumer, error) {
	if q.cons != nil {
		return q.cons, nil
	}
	if q.f.closed.Load() {
		return nil, broker.ErrClosed
	}
	sub, err := q.f.b.Subscribe(q.f.ctx, &broker.SubscribeParams{
		Topic:        q.topic,
		Group:        q.topic,
		Start:        broker.StartPosition{Kind: broker.StartEarliest},
		MaxAttempts:  -1, // redrive is the face's: it counts receives, not hand-overs
		AckDeadline:  holdDeadline,
		Backoff:      func(int) time.Duration { return 0 }, // visible again at once
		OrderedByKey: q.fifo,
		MaxInFlight:  q.f.cfg.MaxInFlight,
	})
	if err != nil {
		return nil, err
	}
	c := &consumer{sub: sub, notify: make(chan struct{}), lastUse: time.Now()}
	q.cons = c
	q.f.wg.Add(1)
	go q.pump(c)
	return c, nil
}

// pump moves deliveries from the subscription into the buffer.
func (q *queue) pump(c *consumer) {
	defer q.f.wg.Done()
	for d := range c.sub.Deliveries() {
		q.mu.Lock()
		if q.cons != c {
			q.mu.Unlock()
			continue // released meanwhile: the engine takes it back
		}
		c.buf = append(c.buf, d)
		close(c.notify)
		c.notify = make(chan struct{})
		q.mu.Unlock()
	}
}

// release closes the subscription; buffered deliveries go back to the group
// unseen, which the engine counts as an attempt: phantom remembers it.
func (q *queue) release() {
	q.mu.Lock()
	c := q.cons
	if c == nil {
		q.mu.Unlock()
		return
	}
	q.cons = nil
	for _, d := range c.buf {
		q.phantom[d.Info.Seq]++
	}
	c.buf = nil
	close(c.notify)
	q.mu.Unlock()
	_ = c.sub.Close()
}

// take removes up to n deliveries from the buffer, waiting up to wait for
// the first one.
func (q *queue) take(ctx context.Context, n int, wait time.Duration) ([]*broker.Delivery, error) {
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	for {
		q.mu.Lock()
		if q.deleted {
			q.mu.Unlock()
			return nil, errQueueGone
		}
		c, err := q.subscribe()
		if err != nil {
			q.mu.Unlock()
			return nil, err
		}
		c.lastUse = time.Now()
		if len(c.buf) > 0 {
			k := min(n, len(c.buf))
			out := append([]*broker.Delivery(nil), c.buf[:k]...)
			// Advance instead of shifting the rest down (the buffer can
			// hold MaxInFlight deliveries); pump's append reallocates.
			clear(c.buf[:k])
			c.buf = c.buf[k:]
			q.mu.Unlock()
			return out, nil
		}
		if timer == nil {
			q.mu.Unlock()
			return nil, nil
		}
		ch := c.notify
		c.waiters++
		q.mu.Unlock()
		select {
		case <-ch:
		case <-timer:
			timer = nil
		case <-ctx.Done():
			timer = nil
		case <-q.f.ctx.Done():
			timer = nil
		}
		q.mu.Lock()
		c.waiters--
		q.mu.Unlock()
	}
}

var errQueueGone = errors.New("queue deleted")

// recvInfo counts the receives of one message by clients of this process.
type recvInfo struct {
	base  int // receives before this process saw it (engine attempts, approximate)
	n     int // receives by this process
	first time.Time
}

// received records a receive of d and returns its receive count and first
// receive time.
func (q *queue) received(d *broker.Delivery, now time.Time) (int, time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ri := q.recv[d.Info.Seq]
	if ri == nil {
		ri = &recvInfo{base: max(d.Info.Attempt-1-q.phantom[d.Info.Seq], 0), first: now}
		q.recv[d.Info.Seq] = ri
	}
	ri.n++
	return ri.base + ri.n, ri.first
}

// unseen records that the engine took d back before any client received it
// (its hold expired), so that the attempt is not counted as a receive.
func (q *queue) unseen(d *broker.Delivery, err error) {
	q.mu.Lock()
	q.unseenLocked(d, err)
	q.mu.Unlock()
}

func (q *queue) unseenLocked(d *broker.Delivery, err error) {
	if errors.Is(err, broker.ErrDeliveryExpired) {
		q.phantom[d.Info.Seq]++
	}
}

// peekCount is the receive count d would get.
func (q *queue) peekCount(d *broker.Delivery) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if ri := q.recv[d.Info.Seq]; ri != nil {
		return ri.base + ri.n + 1
	}
	return max(d.Info.Attempt-q.phantom[d.Info.Seq], 1)
}

func (q *queue) forget(seq uint64) {
	q.mu.Lock()
	delete(q.phantom, seq)
	delete(q.recv, seq)
	q.mu.Unlock()
}

// admit decides what happens to a delivery a client is about to receive:
// it is dropped when older than the retention period, moved to the
// dead-letter queue when received more than maxReceiveCount times, or made
// invisible for vis and given a receipt handle.
func (q *queue) admit(ctx context.Context, d *broker.Delivery, vis time.Duration) (handle string, count int, first time.Time, ok bool) {
	q.mu.Lock()
	a := q.attrs
	q.mu.Unlock()
	if a.retention > 0 && time.Since(sentAt(d.Message)) > a.retention {
		if d.Ack(ctx) == nil {
			q.forget(d.Info.Seq)
		}
		return "", 0, first, false
	}
	if rp := a.redrive; rp != nil && q.peekCount(d) > rp.maxReceiveCount {
		q.moveToDLQ(ctx, d, rp)
		return "", 0, first, false
	}
	if vis == 0 {
		if d.Nack(ctx, 0) != nil {
			return "", 0, first, false
		}
		count, first = q.received(d, time.Now())
		return q.newHandle(), count, first, true // valid form, refers to nothing
	}
	if err := d.Extend(ctx, vis); err != nil {
		// Settled meanwhile (purge), or its hold expired before a client
		// saw it: the engine counted an attempt that was no receive.
		q.unseen(d, err)
		return "", 0, first, false
	}
	count, first = q.received(d, time.Now())
	h := q.newHandle()
	q.mu.Lock()
	q.handles[h] = &held{d: d, deadline: time.Now().Add(vis)}
	if c := q.cons; c != nil {
		c.lastUse = time.Now()
	}
	q.mu.Unlock()
	return h, count, first, true
}

// moveToDLQ stores a copy of d on the dead-letter queue's topic, then acks
// it here. A failure leaves the message in this queue, visible again soon.
func (q *queue) moveToDLQ(ctx context.Context, d *broker.Delivery, rp *redrivePolicy) {
	q.f.mu.Lock()
	dlq := q.f.queues[rp.target]
	q.f.mu.Unlock()
	if dlq == nil {
		q.f.log.Warn("sqsface: dead-letter queue does not exist; message stays", "queue", q.name, "dlq", rp.target)
		_ = d.Nack(ctx, time.Second)
		return
	}
	m := d.Message.Clone()
	m.Topic, m.DeliverAt, m.ExpiresAt, m.PublishedAt = "", time.Time{}, time.Time{}, time.Time{}
	m.SetHeader(hdrSent, strconv.FormatInt(sentAt(d.Message).UnixMilli(), 10))
	m.SetHeader(hdrDLQSource, q.arn())
	_, err := q.f.b.Publish(ctx, &broker.PublishParams{Topic: dlq.topic, Messages: []*message.Message{m}})
	if err != nil {
		q.f.log.Warn("sqsface: moving a message to the dead-letter queue failed; it stays", "queue", q.name, "dlq", rp.target, "err", err)
		_ = d.Nack(ctx, time.Second)
		return
	}
	if d.Ack(ctx) == nil {
		q.forget(d.Info.Seq)
	}
}

var handleEnc = base64.RawURLEncoding

// newHandle makes a receipt handle: "SB1" + queue name + random, so that a
// handle names the queue it came from.
func (q *queue) newHandle() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return q.handlePrefix + handleEnc.EncodeToString(b[:])
}

// checkHandle reports whether h is a well-formed handle of this queue.
func (q *queue) checkHandle(h string) bool {
	tag, rest, _ := strings.Cut(h, ".")
	name, random, ok := strings.Cut(rest, ".")
	if !ok || tag != "SB1" || strings.Contains(random, ".") {
		return false
	}
	if len(h)-len(random) != len(q.handlePrefix) || h[:len(q.handlePrefix)] != q.handlePrefix {
		// Not the encoding newHandle writes; another encoding of the
		// same name (non-zero padding bits) is well formed too.
		n, err := handleEnc.DecodeString(name)
		if err != nil || string(n) != q.name {
			return false
		}
	}
	r, err := handleEnc.DecodeString(random)
	return err == nil && len(r) == 18
}

// deleteMessage acks the delivery behind h. A handle that is well formed
// but no longer current (expired visibility, already deleted) succeeds
// without effect, as on AWS.
func (q *queue) deleteMessage(ctx context.Context, h string) *apiError {
	if !q.checkHandle(h) {
		return errReceiptHandleInvalid(h)
	}
	q.mu.Lock()
	hd := q.handles[h]
	delete(q.handles, h)
	q.mu.Unlock()
	if hd == nil {
		return nil
	}
	err := hd.d.Ack(ctx)
	switch {
	case err == nil:
		q.forget(hd.d.Info.Seq)
	case errors.Is(err, broker.ErrDeliveryExpired), errors.Is(err, broker.ErrAlreadySettled), errors.Is(err, broker.ErrClosed):
	default:
		return errInternal(err)
	}
	return nil
}

// changeVisibility makes the message behind h visible again after vis
// (0: at once).
func (q *queue) changeVisibility(ctx context.Context, h string, vis int) *apiError {
	if !q.checkHandle(h) {
		return errReceiptHandleInvalid(h)
	}
	if vis < 0 || vis > maxVisibility {
		return errInvalidParameterValue("Value %d for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200.", vis)
	}
	notInFlight := errInvalidParameterValue("Value %s for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change.", h)
	q.mu.Lock()
	hd := q.handles[h]
	if hd == nil || !hd.deadline.After(time.Now()) {
		q.mu.Unlock()
		return notInFlight
	}
	q.mu.Unlock()
	// A later deadline is an Extend. An earlier one is a Nack with that
	// delay: the engine would notice a shortened deadline only at the old
	// one. The message is then released, so this handle no longer deletes it.
	newDeadline := time.Now().Add(time.Duration(vis) * time.Second)
	shorten := vis == 0 || newDeadline.Before(hd.deadline)
	if shorten {
		q.mu.Lock()
		delete(q.handles, h)
		q.mu.Unlock()
	}
	var err error
	if shorten {
		err = hd.d.Nack(ctx, time.Duration(vis)*time.Second)
	} else {
		err = hd.d.Extend(ctx, time.Duration(vis)*time.Second)
	}
	if err != nil {
		q.mu.Lock()
		delete(q.handles, h)
		q.mu.Unlock()
		return notInFlight
	}
	if !shorten {
		q.mu.Lock()
		hd.deadline = newDeadline
		q.mu.Unlock()
	}
	return nil
}

// purge drops everything the queue holds (Switchboard: ResetGroup to the
// end of the topic).
func (q *queue) purge(ctx context.Context) error {
	q.release()
	q.mu.Lock()
	q.handles, q.phantom, q.recv, q.delayed = map[string]*held{}, map[uint64]int{}, map[uint64]*recvInfo{}, nil
	q.mu.Unlock()
	err := q.f.groups.ResetGroup(ctx, q.topic, broker.StartPosition{Kind: broker.StartLatest})
	if errors.Is(err, broker.ErrGroupNotFound) {
		return nil
	}
	return err
}

// sweep forgets expired receipt handles and releases an idle subscription.
func (q *queue) sweep(now time.Time) {
	q.mu.Lock()
	for h, hd := range q.handles {
		if !hd.deadline.After(now) {
			delete(q.handles, h)
		}
	}
	for id, a := range q.attempt {
		if now.Sub(a.at) > 5*time.Minute {
			delete(q.attempt, id)
		}
	}
	c := q.cons
	if c != nil {
		keep := c.buf[:0]
		for _, d := range c.buf {
			if d.Info.Deadline.Before(now.Add(holdRenew)) {
				if err := d.Extend(context.Background(), holdDeadline); err != nil {
					q.unseenLocked(d, err)
					continue // expired or settled: the engine has it back
				}
				d.Info.Deadline = now.Add(holdDeadline)
			}
			keep = append(keep, d)
		}
		clear(c.buf[len(keep):])
		c.buf = keep
	}
	idle := c != nil && c.waiters == 0 && len(q.handles) == 0 && now.Sub(c.lastUse) > q.f.cfg.IdleRelease
	q.mu.Unlock()
	if idle {
		q.release()
	}
}

func (f *Face) janitor() {
	defer f.wg.Done()
	t := time.NewTicker(janitorTick)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case now := <-t.C:
			f.mu.Lock()
			qs := make([]*queue, 0, len(f.queues))
			for _, q := range f.queues {
				qs = append(qs, q)
			}
			f.mu.Unlock()
			for _, q := range qs {
				q.sweep(now)
			}
		}
	}
}
