package embedded

import (
	"container/heap"
	"math/rand/v2"
	"time"

	"sync"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// groupSettings are a group's delivery rules. They are persisted; a new
// subscription's non-zero settings replace them.
type groupSettings struct {
	Pattern     string        `json:"pattern"`
	MaxAttempts int           `json:"max_attempts"`
	AckDeadline time.Duration `json:"ack_deadline"`
	Ordered     bool          `json:"ordered"`
}

type pstate uint8

const (
	stReady    pstate = iota // waiting for a consumer
	stInflight               // handed to a consumer, deadline running
	stWaiting                // nacked, waiting for its backoff
	stBlocked                // ordered: behind another message of its key
	stDLQ                    // being dead-lettered
	stDone
)

// pend is a message a group has read from a topic and not yet finished.
type pend struct {
	c       *cursor // nil for a request (not stored)
	seq     uint64
	msg     *message.Message
	attempt int // deliveries made so far
	state   pstate
	when    time.Time // deadline (inflight) or not-before (waiting)
	gen     uint64    // bumps on every state change; stale timers are ignored
	dlv     uint64    // delivery number, checked on settlement
	sub     *subscription
	lastErr string
	redeliv bool
}

// cursor is a group's position in one topic.
type cursor struct {
	t       *topic
	r       *reader
	pending map[uint64]*pend
	// After a restart, sequences below recoverUntil are done unless listed
	// in recoverPending (seq → attempts already made).
	recoverUntil   uint64
	recoverPending map[uint64]int
}

// floor is the lowest sequence the group has not finished in this topic.
func (c *cursor) floor() uint64 {
	f := c.r.next
	for seq := range c.pending {
		if seq < f {
			f = seq
		}
	}
	for seq := range c.recoverPending {
		if seq < f {
			f = seq
		}
	}
	return f
}

type timerItem struct {
	when time.Time
	p    *pend
	gen  uint64
}

type timerHeap []timerItem

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when.Before(h[j].when) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerItem)) }
func (h *timerHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

type keyState struct {
	holder *pend
	queue  []*pend
}

// group is a durable consumer group: cursors per followed topic, the messages
// in hand, and the consumers attached.
type group struct {
	b       *Broker
	name    string
	pattern string

	mu        sync.Mutex
	settings  groupSettings
	backoff   func(int) time.Duration
	cursors   map[string]*cursor
	order     []string // cursor names, for round-robin reading
	rr        int
	consumers []*subscription
	crr       int
	ready     []*pend
	timers    timerHeap
	keys      map[string]*keyState
	held      int // pends not done (read and unfinished)
	dirty     bool
	stopped   bool

	wake chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

func newGroup(b *Broker, name string, s groupSettings) *group {
	g := &group{
		b: b, name: name, pattern: s.Pattern, settings: s,
		cursors: map[string]*cursor{},
		keys:    map[string]*keyState{},
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	g.backoff = defaultBackoff
	return g
}

// defaultBackoff is exponential from 1 s to 1 min with ±20 % jitter.
func defaultBackoff(attempt int) time.Duration {
	d := time.Second << min(max(attempt-1, 0), 6)
	d = min(d, time.Minute)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (g *group) start() {
	g.wg.Add(1)
	go g.run()
}

func (g *group) follows(topic string) bool { return message.Match(g.pattern, topic) }

func (g *group) signal() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// attach adds a cursor for t at start (no-op when there is one). Caller may
// hold b.mu; attach takes g.mu.
func (g *group) attach(t *topic, start broker.StartPosition) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.attachLocked(t, start)
}

func (g *group) attachLocked(t *topic, start broker.StartPosition) *cursor {
	if c, ok := g.cursors[t.name]; ok {
		return c
	}
	var from uint64
	switch start.Kind {
	case broker.StartEarliest:
		from = t.firstSeq()
	case broker.StartTime:
		from = t.seqAtTime(start.Time)
	case broker.StartSeq:
		from = max(start.Seq, t.firstSeq())
	default:
		from = t.committed.Load() + 1
	}
	c := &cursor{t: t, r: newReader(t, from), pending: map[uint64]*pend{}}
	g.cursors[t.name] = c
	g.order = append(g.order, t.name)
	g.dirty = true
	g.signal()
	return c
}

func (g *group) run() {
	defer g.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-g.wake:
		case <-timer.C:
		case <-g.done:
			return
		}
		g.mu.Lock()
		dl := g.step(time.Now())
		next := time.Duration(time.Hour)
		if len(g.timers) > 0 {
			next = max(time.Until(g.timers[0].when), time.Millisecond)
		}
		if len(g.ready) > 0 && g.channelsFull() {
			// Consumers' buffers hold deliveries whose deadline passed;
			// reading them does not wake us, so look again soon.
			next = min(next, 5*time.Millisecond)
		}
		g.mu.Unlock()
		for _, p := range dl {
			go g.deadLetter(p)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// step fires due timers, reads from the log while consumers have room and
// hands out ready messages. It returns pends to dead-letter (outside the
// lock).
func (g *group) step(now time.Time) []*pend {
	var dl []*pend
	for len(g.timers) > 0 && !g.timers[0].when.After(now) {
		it := heap.Pop(&g.timers).(timerItem)
		p := it.p
		if p.gen != it.gen {
			continue
		}
		switch p.state {
		case stInflight: // missed deadline
			g.b.metrics.DeadlineExpired.Add(1)
			if p.c == nil { // an unanswered request is not redelivered
				g.finish(p)
				continue
			}
			p.sub.inflight--
			p.sub = nil
			p.lastErr = "ack deadline exceeded"
			if g.exhausted(p) {
				p.state, p.gen = stDLQ, p.gen+1
				p.lastErr = "max-attempts"
				dl = append(dl, p)
			} else {
				g.makeReady(p)
			}
		case stWaiting:
			g.makeReady(p)
		}
	}
	if len(g.consumers) == 0 {
		return dl
	}
	dl = append(dl, g.fill(now)...)
	g.dispatch(now)
	return dl
}

func (g *group) exhausted(p *pend) bool {
	return g.settings.MaxAttempts > 0 && p.attempt >= g.settings.MaxAttempts
}

func (g *group) makeReady(p *pend) {
	p.state, p.gen = stReady, p.gen+1
	g.ready = append(g.ready, p)
}

// channelsFull reports whether some consumer has in-flight room but a full
// channel.
func (g *group) channelsFull() bool {
	for _, s := range g.consumers {
		if s.inflight < s.max && len(s.ch) == cap(s.ch) {
			return true
		}
	}
	return false
}

func (g *group) capacity() int {
	n := 0
	for _, s := range g.consumers {
		n += min(s.max-s.inflight, cap(s.ch)-len(s.ch))
	}
	return n
}

// fill reads records until there is enough ready work for the consumers'
// free capacity, or the group holds its maximum.
func (g *group) fill(now time.Time) []*pend {
	var dl []*pend
	want := g.capacity()
	idle := 0
	for len(g.ready) < want && g.held < g.b.opts.groupMaxQueued && idle < len(g.order) {
		name := g.order[g.rr%len(g.order)]
		g.rr++
		c := g.cursors[name]
		rec, ok, err := c.r.read()
		if err != nil {
			g.b.log.Error("group cannot read topic", "group", g.name, "topic", name, "err", err)
			idle++
			continue
		}
		if !ok {
			idle++
			continue
		}
		idle = 0
		p := g.admit(c, rec, now)
		if p != nil && p.state == stDLQ {
			dl = append(dl, p)
		}
	}
	return dl
}

// admit turns a record into a pend (or skips it) and queues it.
func (g *group) admit(c *cursor, rec record, now time.Time) *pend {
	attempt, redeliv := 0, false
	if rec.seq < c.recoverUntil {
		a, ok := c.recoverPending[rec.seq]
		if !ok {
			return nil // finished before the restart
		}
		delete(c.recoverPending, rec.seq)
		attempt, redeliv = a, a > 0
	}
	if c.recoverUntil != 0 && rec.seq+1 >= c.recoverUntil {
		c.recoverUntil, c.recoverPending = 0, nil
	}
	m := &rec.msg
	if f := m.Header(message.HeaderReplayFor); f != "" && f != g.name {
		g.dirty = true
		return nil // a dead letter replayed for another group
	}
	p := &pend{c: c, seq: rec.seq, msg: m, attempt: attempt, redeliv: redeliv}
	c.pending[rec.seq] = p
	g.held++
	g.dirty = true
	if m.Expired(now) {
		g.b.metrics.Expired.Add(1)
		p.state, p.lastErr = stDLQ, "expired"
		return p
	}
	if g.settings.Ordered && m.Key != "" {
		ks := g.keys[m.Key]
		if ks == nil {
			ks = &keyState{}
			g.keys[m.Key] = ks
		}
		if ks.holder != nil {
			p.state = stBlocked
			ks.queue = append(ks.queue, p)
			return p
		}
		ks.holder = p
	}
	g.makeReady(p)
	return p
}

// dispatch hands ready messages to consumers with room, round-robin.
func (g *group) dispatch(now time.Time) {
	for len(g.ready) > 0 {
		var sub *subscription
		for i := 0; i < len(g.consumers); i++ {
			s := g.consumers[(g.crr+i)%len(g.consumers)]
			// The channel may still hold deliveries whose deadline passed
			// (counted out of inflight): check both so that this send
			// never blocks while holding g.mu.
			if s.inflight < s.max && len(s.ch) < cap(s.ch) {
				sub = s
				g.crr = (g.crr + i + 1) % len(g.consumers)
				break
			}
		}
		if sub == nil {
			return
		}
		p := g.ready[0]
		g.ready[0] = nil
		g.ready = g.ready[1:]
		if p.state != stReady {
			continue
		}
		if p.c != nil && p.msg.Expired(now) { // expired while waiting
			g.b.metrics.Expired.Add(1)
			p.state, p.gen, p.lastErr = stDLQ, p.gen+1, "expired"
			go g.deadLetter(p)
			continue
		}
		p.attempt++
		p.dlv++
		p.state, p.gen = stInflight, p.gen+1
		p.when = now.Add(g.settings.AckDeadline)
		p.sub = sub
		sub.inflight++
		heap.Push(&g.timers, timerItem{when: p.when, p: p, gen: p.gen})
		info := message.Info{Group: g.name, Seq: p.seq, Attempt: p.attempt, Redelivered: p.attempt > 1 || p.redeliv, Deadline: p.when}
		sub.ch <- broker.NewDelivery(p.msg, info, sub, token{p: p, dlv: p.dlv})
		g.b.metrics.Delivered.Add(1)
		if p.attempt > 1 || p.redeliv {
			g.b.metrics.Redelivered.Add(1)
		}
	}
}

type token struct {
	p   *pend
	dlv uint64
}

// finish marks p done and lets the next message of its key go.
func (g *group) finish(p *pend) {
	if p.state == stInflight && p.sub != nil {
		p.sub.inflight--
	}
	p.state, p.gen, p.sub = stDone, p.gen+1, nil
	if p.c == nil {
		return // a request: nothing stored
	}
	delete(p.c.pending, p.seq)
	g.held--
	g.dirty = true
	if g.settings.Ordered && p.msg.Key != "" {
		if ks := g.keys[p.msg.Key]; ks != nil && ks.holder == p {
			if len(ks.queue) > 0 {
				next := ks.queue[0]
				ks.queue[0] = nil
				ks.queue = ks.queue[1:]
				ks.holder = next
				g.makeReady(next)
			} else {
				delete(g.keys, p.msg.Key)
			}
		}
	}
	g.signal()
}

// shutdown stops the group's goroutine and closes its subscriptions.
func (g *group) shutdown() {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	g.stopped = true
	subs := append([]*subscription(nil), g.consumers...)
	g.mu.Unlock()
	for _, s := range subs {
		s.closeWith(nil)
	}
	close(g.done)
	g.wg.Wait()
}
