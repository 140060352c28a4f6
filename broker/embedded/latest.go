package embedded

import (
	"context"
	"fmt"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// Latest returns the retained message of topic with the highest sequence
// whose Key is key (a compacted view of the topic), as delivered, in a copy
// the caller may keep; (nil, nil) when none is retained. Messages waiting in
// the delay schedule are not in the topic yet and are not seen. It reads the
// segments newest first and stops at the first segment holding the key, so
// it keeps no per-key index in memory; a key last written long ago costs a
// scan back to it. Cancelling ctx stops the scan.
func (b *Broker) Latest(ctx context.Context, topic, key string) (*message.Message, error) {
	if err := message.ValidateTopic(topic); err != nil {
		return nil, err
	}
	b.mu.RLock()
	t, ok := b.topics[topic]
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return nil, b.closedErr()
	}
	if !ok {
		return nil, fmt.Errorf("topic %q: %w", topic, broker.ErrTopicNotFound)
	}
	t.mu.RLock()
	segs := append([]*segment(nil), t.segs...)
	t.mu.RUnlock()
	for i := len(segs) - 1; i >= 0; i-- {
		s := segs[i]
		last := s.last.Load()
		if last < s.base {
			continue // empty
		}
		r := &reader{t: t, seg: s, next: s.base}
		var found *message.Message
		for {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rec, ok, err := r.read()
			if err != nil {
				return nil, err
			}
			if !ok || rec.seq > last {
				break
			}
			if rec.msg.Key == key {
				m := rec.msg
				found = &m
			}
			if rec.seq == last {
				break
			}
		}
		if found != nil {
			return found, nil
		}
	}
	return nil, nil
}
