package consume

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// LatestReader is implemented by backends that can return the newest
// retained message of a topic with a given key (a compacted view of the
// topic): Latest returns the retained message of topic with the highest
// sequence whose Key is key and that is deliverable now (DeliverAt not in
// the future), as delivered (Topic and PublishedAt set), in a copy the
// caller may keep. It returns (nil, nil) when the topic retains no such
// message, an error wrapping broker.ErrTopicNotFound when the topic does
// not exist, and one wrapping broker.ErrClosed after Close.
type LatestReader interface {
	Latest(ctx context.Context, topic, key string) (*message.Message, error)
}

// ErrNoValue is returned by Latest when the topic keeps no current message
// for the key: none was published, retention removed it, or the newest one
// expired.
var ErrNoValue = errors.New("no current value for the key")

// Latest returns the newest value published to topic with key and its age
// (time since it was published), where backend b can keep it (it implements
// LatestReader, as the embedded engine does); elsewhere the error wraps
// broker.ErrNotSupported. What it sees is bounded by the topic's retention.
// When the newest message for key has expired (message.ExpiresAt) the key
// has no current value: the error wraps ErrNoValue, as when there is no
// message at all — an older value is never returned in place of a newer
// one.
func Latest(ctx context.Context, b broker.Broker, topic, key string) (*message.Message, time.Duration, error) {
	if key == "" {
		return nil, 0, fmt.Errorf("consume: latest of topic %q: %w: empty key", topic, message.ErrInvalid)
	}
	lr, ok := b.(LatestReader)
	if !ok {
		return nil, 0, fmt.Errorf("consume: latest of topic %q: %w", topic, broker.NotSupported(b.Capabilities().Name, "latest value per key", "use the embedded engine, or keep the view in a handler"))
	}
	m, err := lr.Latest(ctx, topic, key)
	if err != nil {
		return nil, 0, fmt.Errorf("consume: latest of key %q in topic %q: %w", key, topic, err)
	}
	now := time.Now()
	if m == nil || m.Expired(now) {
		return nil, 0, fmt.Errorf("consume: latest of key %q in topic %q: %w", key, topic, ErrNoValue)
	}
	age := time.Duration(0)
	if !m.PublishedAt.IsZero() {
		age = max(now.Sub(m.PublishedAt), 0)
	}
	return m, age, nil
}

// Latest is Latest on the runtime's backend.
func (r *Runtime) Latest(ctx context.Context, topic, key string) (*message.Message, time.Duration, error) {
	return Latest(ctx, r.b, topic, key)
}
