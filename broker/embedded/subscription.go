package embedded

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// subscription is one consumer attached to a group.
type subscription struct {
	g        *group
	ch       chan *broker.Delivery
	max      int
	inflight int // guarded by g.mu
	closed   bool
	err      error
}

var _ broker.Acker = (*subscription)(nil)

func (s *subscription) Deliveries() <-chan *broker.Delivery { return s.ch }

func (s *subscription) Err() error {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	return s.err
}

// Close detaches the consumer and releases its unsettled deliveries (those
// received and those still buffered) for redelivery to the group.
func (s *subscription) Close() error {
	s.closeWith(nil)
	return nil
}

func (s *subscription) closeWith(err error) {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.closed {
		return
	}
	s.closed, s.err = true, err
	for i, c := range g.consumers {
		if c == s {
			g.consumers = append(g.consumers[:i], g.consumers[i+1:]...)
			break
		}
	}
	// Release in sequence order so that redelivery keeps publish order.
	var rel []*pend
	for _, c := range g.cursors {
		for _, p := range c.pending {
			if p.state == stInflight && p.sub == s {
				rel = append(rel, p)
			}
		}
	}
	sortPends(rel)
	for _, p := range rel {
		p.sub = nil
		p.state, p.gen = stReady, p.gen+1
	}
	g.ready = append(rel, g.ready...)
	s.inflight = 0
	close(s.ch)
	g.signal()
}

// Reply implements broker.Replier.
func (s *subscription) Reply(ctx context.Context, req, resp *message.Message) error {
	return s.g.b.reply(ctx, req, resp)
}

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := broker.CheckSubscribe(b.Capabilities(), p); err != nil {
		return nil, err
	}
	if p.Group == "" {
		return b.subscribeEphemeral(p)
	}
	g, err := b.openGroup(p.Topic, p.Group, p.Start)
	if err != nil {
		return nil, err
	}
	maxIF := p.MaxInFlight
	if maxIF == 0 {
		maxIF = b.opts.maxInFlight
	}
	s := &subscription{g: g, ch: make(chan *broker.Delivery, maxIF), max: maxIF}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return nil, b.closedErr()
	}
	if p.MaxAttempts != 0 {
		g.settings.MaxAttempts = p.MaxAttempts
	}
	if p.AckDeadline != 0 {
		g.settings.AckDeadline = p.AckDeadline
	}
	if p.Backoff != nil {
		g.backoff = p.Backoff
	}
	if p.OrderedByKey && !g.settings.Ordered {
		if len(g.keys) > 0 || g.held > 0 {
			return nil, fmt.Errorf("group %q: %w: per-key ordering cannot be turned on while the group holds unfinished messages; let it drain or use a new group", p.Group, broker.ErrAlreadyExists)
		}
		g.settings.Ordered = true
	}
	g.dirty = true
	g.consumers = append(g.consumers, s)
	g.signal()
	return s, nil
}

// openGroup returns the group, creating it (and attaching it to existing
// matching topics at start) when it does not exist.
func (b *Broker) openGroup(pattern, name string, start broker.StartPosition) (*group, error) {
	if !message.IsPattern(pattern) {
		if _, err := b.topic(pattern, b.opts.autoCreate); err != nil {
			return nil, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, b.closedErr()
	}
	if g, ok := b.groups[name]; ok {
		if g.pattern != pattern {
			return nil, fmt.Errorf("group %q follows %q, not %q: %w; use another group name", name, g.pattern, pattern, broker.ErrAlreadyExists)
		}
		return g, nil
	}
	g := newGroup(b, name, groupSettings{Pattern: pattern, MaxAttempts: b.opts.maxAttempts, AckDeadline: b.opts.ackDeadline})
	for tn, t := range b.topics {
		if message.Match(pattern, tn) {
			g.attach(t, start)
		}
	}
	b.groups[name] = g
	g.start()
	return g, nil
}

func sortPends(ps []*pend) {
	for i := 1; i < len(ps); i++ { // small slices: insertion sort by (topic, seq)
		for j := i; j > 0 && less(ps[j], ps[j-1]); j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

func less(a, b *pend) bool {
	if a.c != b.c && a.c != nil && b.c != nil {
		return a.c.t.name < b.c.t.name
	}
	return a.seq < b.seq
}

// ephemeralSub receives live messages of matching topics; nothing is kept.
// When its buffer is full, new messages are dropped for it (counted), the way
// Redis Pub/Sub treats a slow subscriber, so a slow reader never slows
// publishers.
type ephemeralSub struct {
	b       *Broker
	pattern string
	mu      sync.Mutex
	ch      chan *broker.Delivery
	closed  bool
}

const ephemeralBuffer = 1024

func (b *Broker) subscribeEphemeral(p *broker.SubscribeParams) (broker.Subscription, error) {
	n := p.MaxInFlight
	if n == 0 {
		n = ephemeralBuffer
	}
	s := &ephemeralSub{b: b, pattern: p.Topic, ch: make(chan *broker.Delivery, n)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, b.closedErr()
	}
	b.ephemeral[s] = struct{}{}
	return s, nil
}

func (s *ephemeralSub) offer(m *message.Message, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	d := broker.NewDelivery(m.Clone(), message.Info{Seq: seq, Attempt: 1}, ephemeralAcker{s.b}, nil)
	select {
	case s.ch <- d:
	default:
		s.b.metrics.EphemeralDropped.Add(1)
	}
}

func (s *ephemeralSub) Deliveries() <-chan *broker.Delivery { return s.ch }
func (s *ephemeralSub) Err() error                          { return nil }

func (s *ephemeralSub) Close() error {
	s.b.mu.Lock()
	delete(s.b.ephemeral, s)
	s.b.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
	return nil
}

// ephemeralAcker settles nothing (there is nothing to redeliver) but can
// answer requests.
type ephemeralAcker struct{ b *Broker }

func (ephemeralAcker) Ack(context.Context, *broker.Delivery) error                 { return nil }
func (ephemeralAcker) Nack(context.Context, *broker.Delivery, time.Duration) error { return nil }
func (ephemeralAcker) Term(context.Context, *broker.Delivery, string) error        { return nil }
func (ephemeralAcker) Extend(context.Context, *broker.Delivery, time.Duration) error {
	return nil
}
func (a ephemeralAcker) Reply(ctx context.Context, req, resp *message.Message) error {
	return a.b.reply(ctx, req, resp)
}
