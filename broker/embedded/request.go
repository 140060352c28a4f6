package embedded

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

const replyPrefix = "_reply."

// replyTable routes replies to waiting requesters.
type replyTable struct {
	mu      sync.Mutex
	waiters map[string]chan *message.Message
}

func newReplyTable() *replyTable { return &replyTable{waiters: map[string]chan *message.Message{}} }

var _ broker.Requester = (*Broker)(nil)

// Request implements broker.Requester. Requests are not stored: they go to the
// live subscribers of topic (every ephemeral subscriber, and one consumer of
// each group with consumers). With none it fails at once with
// broker.ErrNoResponders.
func (b *Broker) Request(ctx context.Context, topic string, req *message.Message, timeout time.Duration) (*message.Message, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("%w: request needs a positive timeout", message.ErrInvalid)
	}
	if err := message.ValidateTopic(topic); err != nil {
		return nil, err
	}
	if err := b.opts.limits.Validate(req); err != nil {
		return nil, err
	}
	m := req.Clone()
	if m.ID == "" {
		m.ID = message.NewID()
	}
	m.Topic = topic
	m.PublishedAt = time.Now()
	id := replyPrefix + message.NewID()
	m.SetHeader(message.HeaderReplyTo, id)
	ch := make(chan *message.Message, 1)
	b.replies.mu.Lock()
	b.replies.waiters[id] = ch
	b.replies.mu.Unlock()
	defer func() {
		b.replies.mu.Lock()
		delete(b.replies.waiters, id)
		b.replies.mu.Unlock()
	}()

	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return nil, b.closedErr()
	}
	var eph []*ephemeralSub
	for s := range b.ephemeral {
		if message.Match(s.pattern, topic) {
			eph = append(eph, s)
		}
	}
	var groups []*group
	for _, g := range b.groups {
		if g.follows(topic) {
			groups = append(groups, g)
		}
	}
	b.mu.RUnlock()
	n := 0
	for _, s := range eph {
		s.offer(m, 0)
		n++
	}
	for _, g := range groups {
		if g.offerRequest(m) {
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: no subscriber is listening on %q", broker.ErrNoResponders, topic)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case resp := <-ch:
		if e := resp.Header(message.HeaderError); e != "" {
			return resp, fmt.Errorf("responder error: %s", e)
		}
		return resp, nil
	case <-timer.C:
		return nil, fmt.Errorf("%w: no reply within %s", broker.ErrTimeout, timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// offerRequest hands a request to one consumer of the group with room.
func (g *group) offerRequest(m *message.Message) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.consumers) == 0 {
		return false
	}
	p := &pend{msg: m, state: stReady}
	g.ready = append([]*pend{p}, g.ready...)
	g.dispatch(time.Now())
	return true
}

func (b *Broker) reply(_ context.Context, req, resp *message.Message) error {
	id := req.Header(message.HeaderReplyTo)
	if !strings.HasPrefix(id, replyPrefix) {
		return fmt.Errorf("reply to message %s: %w: not a request of this broker", req.ID, message.ErrInvalid)
	}
	if err := b.opts.limits.Validate(resp); err != nil {
		return err
	}
	b.replies.mu.Lock()
	ch := b.replies.waiters[id]
	b.replies.mu.Unlock()
	if ch == nil {
		return fmt.Errorf("reply to message %s: %w: the requester is gone (timed out or cancelled)", req.ID, broker.ErrTimeout)
	}
	r := resp.Clone()
	if r.ID == "" {
		r.ID = message.NewID()
	}
	r.PublishedAt = time.Now()
	select {
	case ch <- r:
		return nil
	default:
		return fmt.Errorf("reply to message %s: %w: already answered", req.ID, broker.ErrAlreadySettled)
	}
}
