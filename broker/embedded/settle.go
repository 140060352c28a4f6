package embedded

import (
	"container/heap"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// lookup checks that d may still be settled by sub and returns its pend.
// Caller holds g.mu.
func (g *group) lookup(sub *subscription, d *broker.Delivery) (*pend, error) {
	if sub.closed {
		return nil, fmt.Errorf("settle message %s: subscription of group %q is %w; its deliveries were released for redelivery", d.Message.ID, g.name, broker.ErrClosed)
	}
	tk, ok := d.Token.(token)
	if !ok {
		return nil, fmt.Errorf("settle message %s: delivery does not belong to this embedded broker", d.Message.ID)
	}
	p := tk.p
	if p.state == stDone || p.state == stDLQ {
		return nil, fmt.Errorf("message %s (seq %d) in group %q: %w", d.Message.ID, p.seq, g.name, broker.ErrAlreadySettled)
	}
	if p.dlv != tk.dlv || p.state != stInflight || p.sub != sub {
		return nil, fmt.Errorf("message %s (seq %d) in group %q, attempt %d: %w (now attempt %d)", d.Message.ID, p.seq, g.name, d.Info.Attempt, broker.ErrDeliveryExpired, p.attempt)
	}
	return p, nil
}

// Ack implements broker.Acker.
func (s *subscription) Ack(_ context.Context, d *broker.Delivery) error {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	p, err := g.lookup(s, d)
	if err != nil {
		return err
	}
	g.finish(p)
	g.b.metrics.Acked.Add(1)
	return nil
}

// Nack implements broker.Acker: redeliver after delay (0: the group's
// backoff), or dead-letter when the attempts are used up.
func (s *subscription) Nack(ctx context.Context, d *broker.Delivery, delay time.Duration) error {
	g := s.g
	g.mu.Lock()
	p, err := g.lookup(s, d)
	if err != nil {
		g.mu.Unlock()
		return err
	}
	g.b.metrics.Nacked.Add(1)
	s.inflight--
	p.sub = nil
	if g.exhausted(p) {
		p.state, p.gen, p.lastErr = stDLQ, p.gen+1, "max-attempts"
		g.mu.Unlock()
		g.signal()
		return g.deadLetter(p)
	}
	if delay <= 0 {
		delay = g.backoff(p.attempt)
	}
	p.state, p.gen = stWaiting, p.gen+1
	p.when = time.Now().Add(delay)
	heap.Push(&g.timers, timerItem{when: p.when, p: p, gen: p.gen})
	g.mu.Unlock()
	g.signal()
	return nil
}

// Term implements broker.Acker: dead-letter now.
func (s *subscription) Term(_ context.Context, d *broker.Delivery, reason string) error {
	g := s.g
	g.mu.Lock()
	p, err := g.lookup(s, d)
	if err != nil {
		g.mu.Unlock()
		return err
	}
	s.inflight--
	p.sub = nil
	if reason == "" {
		reason = "term"
	}
	p.state, p.gen, p.lastErr = stDLQ, p.gen+1, reason
	g.mu.Unlock()
	g.signal()
	return g.deadLetter(p)
}

// Extend implements broker.Acker.
func (s *subscription) Extend(_ context.Context, d *broker.Delivery, by time.Duration) error {
	if by <= 0 {
		return fmt.Errorf("extend message %s: %w: duration %s must be positive", d.Message.ID, message.ErrInvalid, by)
	}
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	p, err := g.lookup(s, d)
	if err != nil {
		return err
	}
	p.gen++
	p.when = time.Now().Add(by)
	heap.Push(&g.timers, timerItem{when: p.when, p: p, gen: p.gen})
	g.signal() // a shorter deadline must re-arm the group's timer now
	return nil
}

// deadLetter stores p on the group's dead-letter topic and then finishes it.
// p must be in stDLQ. If the dead-letter write fails the message is kept and
// retried later: it is never dropped.
func (g *group) deadLetter(p *pend) error {
	if p.c == nil { // a request: nothing to keep
		g.mu.Lock()
		g.finish(p)
		g.mu.Unlock()
		return nil
	}
	g.mu.Lock()
	reason, attempts := p.lastErr, p.attempt
	g.mu.Unlock()
	dm := p.msg.Clone()
	dm.DeliverAt, dm.ExpiresAt = time.Time{}, time.Time{}
	dm.SetHeader(message.HeaderDLQReason, reason)
	dm.SetHeader(message.HeaderDLQAttempts, strconv.Itoa(attempts))
	dm.SetHeader(message.HeaderDLQTopic, p.msg.Topic)
	dm.SetHeader(message.HeaderDLQSeq, strconv.FormatUint(p.seq, 10))
	dm.SetHeader(message.HeaderDLQGroup, g.name)
	delete(dm.Headers, message.HeaderReplayFor)
	err := g.b.appendInternal(context.Background(), message.DLQTopic(g.name), []*message.Message{dm})
	g.mu.Lock()
	defer g.mu.Unlock()
	if p.state != stDLQ {
		return nil // reset or deleted meanwhile
	}
	if err != nil {
		g.b.log.Error("dead-letter write failed; the message stays in the group and is retried", "group", g.name, "topic", p.msg.Topic, "seq", p.seq, "err", err)
		p.state, p.gen = stWaiting, p.gen+1
		p.when = time.Now().Add(time.Second)
		heap.Push(&g.timers, timerItem{when: p.when, p: p, gen: p.gen})
		g.signal()
		return fmt.Errorf("dead-letter message %s of group %q: %w", p.msg.ID, g.name, err)
	}
	g.b.metrics.DeadLettered.Add(1)
	g.finish(p)
	return nil
}

// appendInternal appends broker-made messages (dead letters, replays,
// promotions) without dedup and without the '$' topic check.
func (b *Broker) appendInternal(ctx context.Context, topic string, msgs []*message.Message) error {
	t, err := b.topic(topic, true)
	if err != nil {
		return err
	}
	return t.append(ctx, &appendReq{msgs: msgs, internal: true})
}
