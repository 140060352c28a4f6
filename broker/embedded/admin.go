package embedded

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

var (
	_ broker.TopicAdmin      = (*Broker)(nil)
	_ broker.GroupAdmin      = (*Broker)(nil)
	_ broker.DeadLetterAdmin = (*Broker)(nil)
)

// CreateTopic creates a topic with its retention. Creating an existing topic
// with the same configuration succeeds; with another one it fails with
// broker.ErrAlreadyExists.
func (b *Broker) CreateTopic(_ context.Context, cfg broker.TopicConfig) error {
	if err := message.ValidateTopic(cfg.Name); err != nil {
		return err
	}
	t, err := b.createTopic(cfg, true)
	if err != nil && t != nil {
		t.mu.RLock()
		same := t.cfg.Retention == cfg.Retention
		t.mu.RUnlock()
		if same {
			return nil
		}
	}
	return err
}

// DeleteTopic removes a topic and its files. Groups that follow it lose
// their position in it.
func (b *Broker) DeleteTopic(_ context.Context, name string) error {
	b.mu.Lock()
	t, ok := b.topics[name]
	if !ok {
		b.mu.Unlock()
		return fmt.Errorf("topic %q: %w", name, broker.ErrTopicNotFound)
	}
	delete(b.topics, name)
	groups := slices.Collect(maps.Values(b.groups))
	b.mu.Unlock()
	for _, g := range groups {
		g.mu.Lock()
		if c, ok := g.cursors[name]; ok {
			for _, p := range c.pending {
				p.state, p.gen = stDone, p.gen+1
				g.held--
			}
			delete(g.cursors, name)
			g.order = slices.DeleteFunc(g.order, func(s string) bool { return s == name })
			g.dirty = true
		}
		g.mu.Unlock()
	}
	t.close()
	if err := b.meta.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTopics).Delete([]byte(name)) }); err != nil {
		return fmt.Errorf("%w: delete topic %q: %v", errStorage, name, err)
	}
	if err := os.RemoveAll(t.dir); err != nil {
		return fmt.Errorf("%w: remove topic %q files: %v", errStorage, name, err)
	}
	return nil
}

// ListTopics describes every topic, sorted by name.
func (b *Broker) ListTopics(ctx context.Context) ([]broker.TopicInfo, error) {
	b.mu.RLock()
	names := slices.Sorted(maps.Keys(b.topics))
	b.mu.RUnlock()
	out := make([]broker.TopicInfo, 0, len(names))
	for _, n := range names {
		ti, err := b.DescribeTopic(ctx, n)
		if err == nil {
			out = append(out, ti)
		}
	}
	return out, nil
}

// DescribeTopic reports a topic's configuration, sequence range and size.
func (b *Broker) DescribeTopic(_ context.Context, name string) (broker.TopicInfo, error) {
	b.mu.RLock()
	t, ok := b.topics[name]
	var groups []string
	for gn, g := range b.groups {
		if g.follows(name) {
			groups = append(groups, gn)
		}
	}
	b.mu.RUnlock()
	if !ok {
		return broker.TopicInfo{}, fmt.Errorf("topic %q: %w", name, broker.ErrTopicNotFound)
	}
	slices.Sort(groups)
	t.mu.RLock()
	cfg := t.cfg
	t.mu.RUnlock()
	first, last := t.firstSeq(), t.committed.Load()
	ti := broker.TopicInfo{Config: cfg, LastSeq: last, Bytes: t.bytes.Load(), Groups: groups}
	if last >= first {
		ti.FirstSeq = first
		ti.Messages = int64(last - first + 1)
	}
	return ti, nil
}

// CreateGroup creates a group on topic (or pattern) at start without
// attaching a consumer.
func (b *Broker) CreateGroup(_ context.Context, topic, group string, start broker.StartPosition) error {
	p := &broker.SubscribeParams{Topic: topic, Group: group, Start: start}
	if err := broker.CheckSubscribe(b.Capabilities(), p); err != nil {
		return err
	}
	_, err := b.openGroup(topic, group, start)
	return err
}

func (b *Broker) group(name string) (*group, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	g, ok := b.groups[name]
	if !ok {
		return nil, fmt.Errorf("group %q: %w", name, broker.ErrGroupNotFound)
	}
	return g, nil
}

// DescribeGroup reports a group's consumers, cursors, lag and dead letters.
func (b *Broker) DescribeGroup(_ context.Context, name string) (broker.GroupInfo, error) {
	g, err := b.group(name)
	if err != nil {
		return broker.GroupInfo{}, err
	}
	g.mu.Lock()
	gi := broker.GroupInfo{Name: name, Topic: g.pattern, Consumers: len(g.consumers), Cursors: map[string]uint64{}}
	for tn, c := range g.cursors {
		gi.Cursors[tn] = c.r.next
		last := c.t.committed.Load()
		if last >= c.r.next {
			gi.Lag += int64(last - c.r.next + 1)
		}
		for _, p := range c.pending {
			if p.state == stInflight {
				gi.InFlight++
			}
		}
		gi.Lag += int64(len(c.pending) + len(c.recoverPending))
	}
	g.mu.Unlock()
	gi.DeadLetters = int64(b.deadLetterCount(name))
	return gi, nil
}

// ListGroups describes every group, sorted by name.
func (b *Broker) ListGroups(ctx context.Context) ([]broker.GroupInfo, error) {
	b.mu.RLock()
	names := slices.Sorted(maps.Keys(b.groups))
	b.mu.RUnlock()
	out := make([]broker.GroupInfo, 0, len(names))
	for _, n := range names {
		if gi, err := b.DescribeGroup(ctx, n); err == nil {
			out = append(out, gi)
		}
	}
	return out, nil
}

// DeleteGroup closes the group's subscriptions and forgets it.
func (b *Broker) DeleteGroup(_ context.Context, name string) error {
	b.mu.Lock()
	g, ok := b.groups[name]
	delete(b.groups, name)
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("group %q: %w", name, broker.ErrGroupNotFound)
	}
	g.shutdown()
	err := b.meta.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketGroups).Delete([]byte(name)) })
	if err != nil {
		return fmt.Errorf("%w: delete group %q: %v", errStorage, name, err)
	}
	return nil
}

// ResetGroup moves every cursor of the group to start; messages in hand are
// dropped and delivered again from the new position.
func (b *Broker) ResetGroup(_ context.Context, name string, start broker.StartPosition) error {
	g, err := b.group(name)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	cursors := make([]*cursor, 0, len(g.cursors))
	for _, c := range g.cursors {
		for _, p := range c.pending {
			if p.state == stInflight && p.sub != nil {
				p.sub.inflight--
			}
			p.state, p.gen, p.sub = stDone, p.gen+1, nil
		}
		cursors = append(cursors, c)
	}
	g.cursors, g.order, g.ready, g.keys, g.held = map[string]*cursor{}, nil, nil, map[string]*keyState{}, 0
	for _, c := range cursors {
		g.attachLocked(c.t, start)
	}
	return nil
}

func (b *Broker) dlqFloor(group string) uint64 {
	var f uint64
	_ = b.meta.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketDLQFloors).Get([]byte(group)); len(v) == 8 {
			f = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return f
}

func (b *Broker) setDLQFloor(group string, f uint64) error {
	return b.meta.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDLQFloors).Put([]byte(group), binary.BigEndian.AppendUint64(nil, f))
	})
}

func (b *Broker) deadLetterCount(group string) uint64 {
	b.mu.RLock()
	t, ok := b.topics[message.DLQTopic(group)]
	b.mu.RUnlock()
	if !ok {
		return 0
	}
	from := max(b.dlqFloor(group), t.firstSeq())
	last := t.committed.Load()
	if last < from {
		return 0
	}
	return last - from + 1
}

// ReplayDeadLetters republishes up to max (0: all) of the group's dead letters
// to their original topics, marked so that only this group processes them,
// and moves the group's dead-letter floor past them.
func (b *Broker) ReplayDeadLetters(ctx context.Context, group string, max int) (int, error) {
	return b.drainDeadLetters(ctx, group, max, true)
}

// PurgeDeadLetters forgets the group's dead letters.
func (b *Broker) PurgeDeadLetters(ctx context.Context, group string) (int, error) {
	return b.drainDeadLetters(ctx, group, 0, false)
}

// ListDeadLetters returns up to max (0: 100) dead letters of the group that
// were neither replayed nor purged, oldest first.
func (b *Broker) ListDeadLetters(_ context.Context, group string, max int) ([]*message.Message, error) {
	if max <= 0 {
		max = 100
	}
	b.mu.RLock()
	t, ok := b.topics[message.DLQTopic(group)]
	b.mu.RUnlock()
	if !ok {
		return nil, nil
	}
	r := newReader(t, maxU(b.dlqFloor(group), t.firstSeq()))
	var out []*message.Message
	for len(out) < max {
		rec, ok, err := r.read()
		if err != nil {
			return out, err
		}
		if !ok {
			break
		}
		m := rec.msg
		out = append(out, &m)
	}
	return out, nil
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func (b *Broker) drainDeadLetters(ctx context.Context, group string, max int, replay bool) (int, error) {
	b.mu.RLock()
	t, ok := b.topics[message.DLQTopic(group)]
	b.mu.RUnlock()
	if !ok {
		return 0, nil
	}
	r := newReader(t, maxU(b.dlqFloor(group), t.firstSeq()))
	n := 0
	for max == 0 || n < max {
		rec, ok, err := r.read()
		if err != nil {
			return n, err
		}
		if !ok {
			break
		}
		if replay {
			m := rec.msg
			orig := m.Header(message.HeaderDLQTopic)
			if orig == "" || strings.HasPrefix(orig, "$") {
				continue
			}
			for k := range m.Headers {
				if strings.HasPrefix(k, "sb-dlq-") {
					delete(m.Headers, k)
				}
			}
			m.SetHeader(message.HeaderReplayFor, group)
			if err := b.appendInternal(ctx, orig, []*message.Message{&m}); err != nil {
				return n, fmt.Errorf("replay dead letter %s to %q: %w", m.ID, orig, err)
			}
		}
		n++
		if err := b.setDLQFloor(group, rec.seq+1); err != nil {
			return n, fmt.Errorf("%w: save dead-letter position: %v", errStorage, err)
		}
	}
	return n, nil
}
