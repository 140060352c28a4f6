package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// subscribeLive reads new entries of a stream with XREAD (ephemeral), and
// requests from Pub/Sub.
func (b *Broker) subscribeLive(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	key := b.key(p.Topic)
	last := "0-0"
	xs, err := b.rdb.XRevRangeN(ctx, key, "+", "-", 1).Result()
	if err != nil {
		return nil, b.opErr(ctx, "subscribe to "+p.Topic, err)
	}
	if len(xs) == 1 {
		last = xs[0].ID
	}
	ps, err := b.listen(ctx, p.Topic, false)
	if err != nil {
		return nil, err
	}
	s := brokerutil.NewSub(func() { _ = ps.Close() })
	if err := b.subs.Track(s, b.caps.Name); err != nil {
		_ = ps.Close()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.Run(func() error {
		defer b.subs.Untrack(s)
		go func() { <-s.Done(); cancel() }()
		pumped := make(chan struct{})
		go func() { b.pumpPubSub(s, ps, p.Topic, ""); close(pumped) }()
		defer func() { <-pumped }()
		failures := 0
		for lctx.Err() == nil {
			res, err := b.rdb.XRead(lctx, &goredis.XReadArgs{Streams: []string{key, last}, Count: 256, Block: b.cfg.block}).Result()
			if err != nil {
				if errors.Is(err, goredis.Nil) {
					continue
				}
				if lctx.Err() != nil || errors.Is(err, goredis.ErrClosed) {
					return nil
				}
				failures++
				sleep(lctx, brokerutil.ReconnectBackoff(failures))
				continue
			}
			failures = 0
			for _, st := range res {
				for _, x := range st.Messages {
					last = x.ID
					m, _ := entryMessage(p.Topic, x)
					if m.Expired(time.Now()) {
						continue
					}
					if !s.Send(broker.NewDelivery(m, message.Info{Attempt: 1}, ephemeralAcker{b: b}, nil)) {
						return nil
					}
				}
			}
		}
		return nil
	})
	return s, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// groupSub is one consumer of a stream's consumer group.
type groupSub struct {
	*brokerutil.Sub
	b        *Broker
	topic    string
	key      string
	group    string
	consumer string
	dueKey   string
	set      brokerutil.Settings
	sem      chan struct{}

	mu       sync.Mutex
	inflight map[string]*flight // entry ID -> state
}

// flight is the state of one delivery (broker.Delivery.Token).
type flight struct {
	id       string
	deadline time.Time // guarded by groupSub.mu
	due      bool      // a due time was written to the due hash; guarded by groupSub.mu
	// superseded: the entry was claimed again (its deadline passed) and
	// handed out anew; this delivery's settlement no longer applies.
	superseded bool // guarded by groupSub.mu
}

func (b *Broker) startID(ctx context.Context, key string, st broker.StartPosition) (string, error) {
	switch st.Kind {
	case broker.StartEarliest:
		return "0", nil
	case broker.StartTime:
		ms := st.Time.UnixMilli()
		if ms <= 0 {
			return "0", nil
		}
		return before(uint64(ms), 0), nil
	case broker.StartSeq:
		return before(st.Seq>>16, st.Seq&0xffff), nil
	}
	return "$", nil
}

func (b *Broker) subscribeGroup(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	set := brokerutil.SettingsOf(p)
	key := b.key(p.Topic)
	start, err := b.startID(ctx, key, p.Start)
	if err != nil {
		return nil, err
	}
	if err := b.rdb.XGroupCreateMkStream(ctx, key, p.Group, start).Err(); err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return nil, b.opErr(ctx, fmt.Sprintf("create group %s on %s", p.Group, p.Topic), err)
	}
	ps, err := b.listen(ctx, p.Topic, false)
	if err != nil {
		return nil, err
	}
	g := &groupSub{
		b: b, topic: p.Topic, key: key, group: p.Group,
		consumer: "sb-" + message.NewID(),
		dueKey:   b.cfg.prefix + "sb:due:" + p.Topic + ":" + p.Group,
		set:      set,
		sem:      make(chan struct{}, set.MaxInFlight),
		inflight: map[string]*flight{},
	}
	g.Sub = brokerutil.NewSub(func() { _ = ps.Close(); g.release() })
	if err := b.subs.Track(g.Sub, b.caps.Name); err != nil {
		_ = ps.Close()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	g.Run(func() error {
		defer b.subs.Untrack(g.Sub)
		go func() { <-g.Done(); cancel() }()
		pumped := make(chan struct{})
		go func() { b.pumpPubSub(g.Sub, ps, p.Topic, p.Group); close(pumped) }()
		defer func() { <-pumped }()
		return g.loop(lctx)
	})
	return g, nil
}

// reclaimEvery is how often a subscription looks for due pending entries.
func (g *groupSub) reclaimEvery() time.Duration {
	return min(max(g.set.AckDeadline/4, 10*time.Millisecond), 250*time.Millisecond)
}

// readBatch is the most entries one read takes (XREADGROUP COUNT).
const readBatch = 256

// loop reads the group's entries (due reclaims and new ones) and hands
// them out in the order read. Reading overlaps handing out: a reader
// goroutine takes slots, reads, and queues each batch; this goroutine, the
// only one that sends deliveries, hands the queued entries out one by one.
// Every entry read holds a slot until it is settled (or not handed out), so
// entries read and unsettled never exceed MaxInFlight.
func (g *groupSub) loop(ctx context.Context) error {
	batches := make(chan []goredis.XMessage, 4)
	idle := make(chan struct{}, 1)
	var queued atomic.Int64 // entries read and not yet handed out
	var readErr error
	go func() {
		defer close(batches)
		readErr = g.read(ctx, batches, idle, &queued)
	}()
	for xs := range batches {
		for _, x := range xs {
			// After Close, handle marks the entry due now (Send fails),
			// so that another consumer of the group takes it at once.
			if !g.handle(ctx, x) {
				<-g.sem
			}
			if queued.Add(-1) == 0 {
				select {
				case idle <- struct{}{}:
				default:
				}
			}
		}
	}
	return readErr
}

// read is loop's reader: it queues batches of entries on batches until ctx
// ends or the group is gone.
func (g *groupSub) read(ctx context.Context, batches chan<- []goredis.XMessage, idle chan struct{}, queued *atomic.Int64) error {
	failures := 0
	nextReclaim := time.Now()
	for ctx.Err() == nil {
		free := g.slots(ctx, idle, queued)
		if free == 0 {
			return nil
		}
		var xs []goredis.XMessage
		var err error
		if time.Now().After(nextReclaim) {
			xs, err = g.reclaim(ctx, free)
			nextReclaim = time.Now().Add(g.reclaimEvery())
		}
		if err == nil && len(xs) == 0 {
			var res []goredis.XStream
			res, err = g.b.rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{
				Group: g.group, Consumer: g.consumer, Streams: []string{g.key, ">"},
				Count: int64(free), Block: min(g.b.cfg.block, g.reclaimEvery()),
			}).Result()
			if errors.Is(err, goredis.Nil) {
				err = nil
			}
			for _, st := range res {
				xs = append(xs, st.Messages...)
			}
		}
		if err != nil {
			for range free {
				<-g.sem
			}
			if ctx.Err() != nil || errors.Is(err, goredis.ErrClosed) {
				return nil
			}
			if strings.Contains(err.Error(), "NOGROUP") {
				return fmt.Errorf("%s: group %s on %s was deleted: %w", g.b.caps.Name, g.group, g.topic, broker.ErrGroupNotFound)
			}
			failures++
			sleep(ctx, brokerutil.ReconnectBackoff(failures))
			continue
		}
		failures = 0
		for range free - len(xs) {
			<-g.sem
		}
		if len(xs) > 0 {
			queued.Add(int64(len(xs)))
			batches <- xs // the dispatcher drains batches until it is closed
		}
	}
	return nil
}

// slots takes free slots for the next read: at least one (0 when ctx ends
// first), and up to half the window (at most readBatch). It waits for more
// than one only while loop still has entries to hand out, so reads are
// large under load and immediate when the consumers are waiting.
func (g *groupSub) slots(ctx context.Context, idle chan struct{}, queued *atomic.Int64) int {
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	target := max(1, min(cap(g.sem)/2, readBatch))
	n := 1
	for n < target {
		select {
		case g.sem <- struct{}{}:
			n++
			continue
		default:
		}
		select {
		case <-idle: // a stale signal; the count below is current
		default:
		}
		if queued.Load() == 0 {
			break
		}
		select {
		case g.sem <- struct{}{}:
			n++
		case <-idle:
			return n
		case <-ctx.Done():
			return n // the read fails at once and frees them
		}
	}
	return n
}

// reclaim claims up to n pending entries of the group that are due: their
// due time (nack, Extend, release) has come, or their last delivery missed
// its deadline and waited out the backoff.
func (g *groupSub) reclaim(ctx context.Context, n int) ([]goredis.XMessage, error) {
	pend, err := g.b.rdb.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: g.key, Group: g.group, Start: "-", End: "+", Count: 1000}).Result()
	if err != nil || len(pend) == 0 {
		return nil, err
	}
	ids := make([]string, len(pend))
	for i, pe := range pend {
		ids[i] = pe.ID
	}
	dues, err := g.b.rdb.HMGet(ctx, g.dueKey, ids...).Result()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var claim []string
	var minIdle time.Duration = -1
	for i, pe := range pend {
		if len(claim) >= n {
			break
		}
		if s, ok := dues[i].(string); ok {
			due, _ := strconv.ParseInt(s, 10, 64)
			if now.UnixMilli() < due {
				continue
			}
		} else if pe.Idle < g.set.AckDeadline+g.set.Backoff(int(pe.RetryCount)) {
			continue
		}
		claim = append(claim, pe.ID)
		if minIdle < 0 || pe.Idle < minIdle {
			minIdle = pe.Idle
		}
	}
	if len(claim) == 0 {
		return nil, nil
	}
	// MinIdle makes the claim atomic against another consumer claiming the
	// same entries meanwhile (a claim resets the idle time).
	xs, err := g.b.rdb.XClaim(ctx, &goredis.XClaimArgs{Stream: g.key, Group: g.group, Consumer: g.consumer, MinIdle: max(minIdle-5*time.Millisecond, 0), Messages: claim}).Result()
	if err != nil {
		return nil, err
	}
	got := make([]string, 0, len(xs))
	for _, x := range xs {
		got = append(got, x.ID)
	}
	if len(got) > 0 {
		g.b.rdb.HDel(ctx, g.dueKey, got...)
	}
	// Claimed entries carry no delivery count: look it up.
	for i := range xs {
		xs[i].Values["\x00redelivered"] = "1"
	}
	return xs, nil
}

// dueMs is t as a due time in the due hash: Unix milliseconds rounded up,
// so that the reclaimer, which compares whole milliseconds, never takes an
// entry before t.
func dueMs(t time.Time) int64 {
	return t.Add(time.Millisecond - 1).UnixMilli()
}

// attempts returns the delivery count of entry id.
func (g *groupSub) attempts(ctx context.Context, id string) int {
	pe, err := g.b.rdb.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: g.key, Group: g.group, Start: id, End: id, Count: 1}).Result()
	if err != nil || len(pe) == 0 {
		return 2
	}
	return int(pe[0].RetryCount)
}

func (g *groupSub) handle(ctx context.Context, x goredis.XMessage) bool {
	redelivered := false
	if _, ok := x.Values["\x00redelivered"]; ok {
		delete(x.Values, "\x00redelivered")
		redelivered = true
	}
	if len(x.Values) == 0 {
		// The entry was trimmed while pending: nothing to deliver.
		g.b.rdb.XAck(ctx, g.key, g.group, x.ID)
		return false
	}
	m, seq := entryMessage(g.topic, x)
	attempt := 1
	if redelivered {
		attempt = g.attempts(ctx, x.ID)
	}
	info := message.Info{Group: g.group, Seq: seq, Attempt: attempt, Redelivered: attempt > 1, Deadline: time.Now().Add(g.set.AckDeadline)}
	f := &flight{id: x.ID, deadline: info.Deadline}
	d := broker.NewDelivery(m, info, g, f)
	switch {
	case m.Header(message.HeaderReplayFor) != "" && m.Header(message.HeaderReplayFor) != g.group:
		g.b.rdb.XAck(ctx, g.key, g.group, x.ID)
		return false
	case m.Expired(time.Now()):
		_ = g.deadLetter(ctx, d, brokerutil.ReasonExpired)
		return false
	case g.set.MaxAttempts > 0 && attempt > g.set.MaxAttempts:
		d.Info.Attempt = g.set.MaxAttempts
		_ = g.deadLetter(ctx, d, brokerutil.ReasonMaxAttempts)
		return false
	}
	g.mu.Lock()
	if old, ok := g.inflight[x.ID]; ok {
		old.superseded = true
		<-g.sem // the old delivery's slot
	}
	g.inflight[x.ID] = f
	g.mu.Unlock()
	if !g.Send(d) {
		g.mu.Lock()
		delete(g.inflight, x.ID)
		g.mu.Unlock()
		g.b.rdb.HSet(context.Background(), g.dueKey, x.ID, 0) // due now
		return false
	}
	return true
}

// forget drops f from the in-flight set and frees its slot. It returns a
// copy of f as it was then, and whether f was still in flight.
func (g *groupSub) forget(f *flight) (flight, bool) {
	g.mu.Lock()
	cur, ok := g.inflight[f.id]
	ok = ok && cur == f
	if ok {
		delete(g.inflight, f.id)
	}
	st := *f
	g.mu.Unlock()
	if ok {
		<-g.sem
	}
	return st, ok
}

// release makes every unsettled delivery due now, for another consumer.
func (g *groupSub) release() {
	g.mu.Lock()
	var ids []any
	for id := range g.inflight {
		ids = append(ids, id, 0)
		delete(g.inflight, id)
		<-g.sem
	}
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if len(ids) > 0 {
		g.b.rdb.HSet(ctx, g.dueKey, ids...)
	}
	// A consumer with nothing pending can go; one with pending entries
	// stays so that they are not lost (XGROUP DELCONSUMER drops them).
	if pe, err := g.b.rdb.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: g.key, Group: g.group, Start: "-", End: "+", Count: 1, Consumer: g.consumer}).Result(); err == nil && len(pe) == 0 {
		g.b.rdb.XGroupDelConsumer(ctx, g.key, g.group, g.consumer)
	}
}

// settle ends delivery d for op: it returns its flight as it was, or why
// it can no longer be settled.
func (g *groupSub) settle(d *broker.Delivery, op string) (flight, error) {
	f, ok := g.forget(d.Token.(*flight))
	switch {
	case f.superseded:
		return f, fmt.Errorf("%s of message %s (attempt %d): %w", op, d.Message.ID, d.Info.Attempt, broker.ErrDeliveryExpired)
	case !ok:
		return f, fmt.Errorf("%s of message %s: %w (the subscription was closed and the message released)", op, d.Message.ID, broker.ErrClosed)
	case time.Now().After(f.deadline):
		return f, fmt.Errorf("%s of message %s (attempt %d, deadline %s): %w", op, d.Message.ID, d.Info.Attempt, f.deadline.Format(time.RFC3339Nano), broker.ErrDeliveryExpired)
	}
	return f, nil
}

// Ack implements broker.Acker with XACK (and HDEL of the entry's due time
// when a nack or Extend wrote one). Concurrent acks share one XACK per
// group; Ack returns only when the server has answered for this entry, so
// its error is this entry's.
func (g *groupSub) Ack(ctx context.Context, d *broker.Delivery) error {
	f, err := g.settle(d, "ack")
	if err != nil {
		return err
	}
	if err := g.b.xack(ctx, g.key, g.group, g.dueKey, f.id, f.due); err != nil {
		return g.b.opErr(ctx, "ack of "+d.Message.ID, err)
	}
	return nil
}

// AckAsync implements broker.AsyncAcker: Ack whose outcome goes to done.
// The ack joins the next batch; done runs on the batcher's goroutine.
func (g *groupSub) AckAsync(ctx context.Context, d *broker.Delivery, done func(error)) {
	f, err := g.settle(d, "ack")
	if err != nil {
		done(err)
		return
	}
	g.b.xackAsync(ctx, g.key, g.group, g.dueKey, f.id, f.due, func(err error) {
		if err != nil {
			err = g.b.opErr(ctx, "ack of "+d.Message.ID, err)
		}
		done(err)
	})
}

// Nack implements broker.Acker: the entry stays pending with a due time
// (now + delay or backoff); a consumer of the group claims it then.
func (g *groupSub) Nack(ctx context.Context, d *broker.Delivery, delay time.Duration) error {
	f, err := g.settle(d, "nack")
	if err != nil {
		return err
	}
	if g.set.Exhausted(d.Info.Attempt) {
		return g.deadLetter(ctx, d, brokerutil.ReasonMaxAttempts)
	}
	due := dueMs(time.Now().Add(g.set.Delay(d.Info.Attempt, delay)))
	if err := g.b.rdb.HSet(ctx, g.dueKey, f.id, due).Err(); err != nil {
		return g.b.opErr(ctx, "nack of "+d.Message.ID, err)
	}
	return nil
}

// Term implements broker.Acker: dead letter, then XACK.
func (g *groupSub) Term(ctx context.Context, d *broker.Delivery, reason string) error {
	if _, err := g.settle(d, "term"); err != nil {
		return err
	}
	return g.deadLetter(ctx, d, reason)
}

// Extend implements broker.Acker: the entry's due time moves to now+by.
func (g *groupSub) Extend(ctx context.Context, d *broker.Delivery, by time.Duration) error {
	f := d.Token.(*flight)
	g.mu.Lock()
	cur, ok := g.inflight[f.id]
	ok = ok && cur == f
	expired := ok && time.Now().After(f.deadline)
	if ok && !expired {
		f.deadline = time.Now().Add(by)
		f.due = true
	}
	g.mu.Unlock()
	switch {
	case !ok:
		return fmt.Errorf("extend of message %s: %w", d.Message.ID, broker.ErrClosed)
	case expired:
		return fmt.Errorf("extend of message %s: %w", d.Message.ID, broker.ErrDeliveryExpired)
	}
	// Due after the new deadline plus the backoff, like a missed deadline.
	due := dueMs(time.Now().Add(by + g.set.Backoff(d.Info.Attempt)))
	if err := g.b.rdb.HSet(ctx, g.dueKey, f.id, due).Err(); err != nil {
		return g.b.opErr(ctx, "extend of "+d.Message.ID, err)
	}
	return nil
}

// deadLetter XADDs the message to "$dlq.<group>" (deduplicated on group and
// entry ID), then XACKs the original.
func (g *groupSub) deadLetter(ctx context.Context, d *broker.Delivery, reason string) error {
	f := d.Token.(*flight)
	dl := brokerutil.DeadLetter(d.Message, d.Info, reason)
	dedup := "sb:dedup:" + dl.Topic + ":" + g.topic + ":" + f.id
	if _, err := g.b.xadd(ctx, dl.Topic, []*message.Message{dl}, func(*message.Message) string { return dedup }, nil); err != nil {
		return err
	}
	if err := g.b.xack(ctx, g.key, g.group, g.dueKey, f.id, true); err != nil {
		return g.b.opErr(ctx, "term of "+d.Message.ID, err)
	}
	return nil
}
