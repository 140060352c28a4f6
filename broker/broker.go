package broker

import (
	"context"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

// Broker is what every backend implements. All methods are safe for
// concurrent use.
type Broker interface {
	// Publish stores the messages of one topic. It returns only when every
	// message is durable as the backend defines it (embedded: fsynced unless
	// its durability is relaxed). On error nothing that was not reported in
	// the result was acknowledged; with Capabilities.AtomicBatch a failed
	// batch stored nothing. Cancelling ctx abandons the wait, not
	// necessarily the write.
	Publish(ctx context.Context, p *PublishParams) (*PublishResult, error)

	// Subscribe attaches a consumer. With a Group it joins (creating if
	// needed) a durable consumer group; without one it receives live
	// messages only. ctx bounds the setup, not the subscription's life.
	Subscribe(ctx context.Context, p *SubscribeParams) (Subscription, error)

	// Capabilities reports what the backend does natively.
	Capabilities() Capabilities

	// Close releases the backend. Subscriptions are closed; unacknowledged
	// deliveries will be redelivered to the group later. Publishes in
	// progress either complete or fail; none is acknowledged and lost.
	Close() error
}

// PublishParams are the arguments of Broker.Publish.
type PublishParams struct {
	// Topic all messages go to.
	Topic string
	// Messages to store, in order. IDs must be set (the root package and
	// PrepareMessages set missing ones).
	Messages []*message.Message
}

// PublishResult reports, in input order, what happened to each message.
type PublishResult struct {
	Results []MessageResult
}

// MessageResult is the outcome for one published message.
type MessageResult struct {
	// ID of the message (generated when the caller gave none).
	ID string
	// Seq is the sequence number (offset) the message got, or the original's
	// for a duplicate. Zero where the backend has none.
	Seq uint64
	// Duplicate is true when the ID was already published inside the dedup
	// window: the message was not stored again.
	Duplicate bool
}

// StartKind says where a new group starts reading.
type StartKind int

// Start positions of a new group. An existing group keeps its position.
const (
	StartLatest   StartKind = iota // only messages published after the group is created
	StartEarliest                  // everything still retained
	StartTime                      // the first message published at or after Start.Time
	StartSeq                       // the message with sequence Start.Seq (and after)
)

// StartPosition is where a new group starts.
type StartPosition struct {
	Kind StartKind
	Time time.Time
	Seq  uint64
}

// SubscribeParams are the arguments of Broker.Subscribe.
type SubscribeParams struct {
	// Topic is a topic name or, where Capabilities.Patterns, a pattern.
	Topic string
	// Group is the durable consumer group; "" subscribes ephemerally.
	Group string
	// Start applies when the group is created by this call.
	Start StartPosition
	// MaxAttempts before a message is dead-lettered; 0 means the backend
	// default (embedded: 5). Negative means unlimited.
	MaxAttempts int
	// AckDeadline is how long a delivery may stay unsettled before it is
	// redelivered; 0 means the backend default (embedded: 30 s).
	AckDeadline time.Duration
	// Backoff gives the redelivery delay after a nack without an explicit
	// delay, or a missed deadline; nil means the backend default
	// (exponential from 1 s to 1 min with jitter).
	Backoff func(attempt int) time.Duration
	// OrderedByKey delivers at most one message per key at a time, in
	// sequence order; different keys proceed in parallel.
	OrderedByKey bool
	// MaxInFlight bounds deliveries handed to this subscription and not yet
	// settled; 0 means the backend default (embedded: 256).
	MaxInFlight int
}

// Subscription is one consumer's attachment to a topic.
type Subscription interface {
	// Deliveries yields messages until the subscription is closed, then is
	// closed itself. Each must be settled (Ack, Nack, Term) on a durable
	// subscription; ephemeral deliveries need no settlement.
	Deliveries() <-chan *Delivery
	// Close detaches the consumer. Its unsettled deliveries are released for
	// redelivery to the group. Settling them afterwards returns ErrClosed.
	Close() error
	// Err reports why the subscription ended (nil after a plain Close).
	Err() error
}

// AsyncPublisher is implemented by backends that let one caller keep many
// publishes in flight. PublishAsync validates p and queues it; it returns an
// error only when p is refused (nothing is stored then). Otherwise done is
// called exactly once, from another goroutine, when the messages are durable
// (with the same result Publish would return) or failed; done must not block.
// PublishAsync blocks only while the backend's queue is full (backpressure)
// or until ctx is cancelled.
type AsyncPublisher interface {
	PublishAsync(ctx context.Context, p *PublishParams, done func(*PublishResult, error)) error
}

// Requester is implemented by backends with request/reply
// (Capabilities.Request).
type Requester interface {
	// Request publishes req to topic and waits up to timeout for one reply.
	// With nobody subscribed to the topic it fails at once with
	// ErrNoResponders; with no reply in time it fails with ErrTimeout.
	Request(ctx context.Context, topic string, req *message.Message, timeout time.Duration) (*message.Message, error)
}

// Replier is implemented by deliveries' acknowledgers of backends that support
// request/reply.
type Replier interface {
	Reply(ctx context.Context, req *message.Message, resp *message.Message) error
}
