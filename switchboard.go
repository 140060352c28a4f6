package switchboard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	_ "github.com/switchboard-dev/switchboard/broker/embedded" // the default backend
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

// Msg is a message to publish (and, on delivery, the message received).
type Msg = message.Message

// Delivery is one message handed to one consumer; settle it with Ack, Nack,
// Term, or keep it longer with Extend.
type Delivery = broker.Delivery

// Errors callers can tell apart with errors.Is.
var (
	ErrNotSupported    = broker.ErrNotSupported
	ErrClosed          = broker.ErrClosed
	ErrTopicNotFound   = broker.ErrTopicNotFound
	ErrGroupNotFound   = broker.ErrGroupNotFound
	ErrAlreadySettled  = broker.ErrAlreadySettled
	ErrDeliveryExpired = broker.ErrDeliveryExpired
	ErrNoResponders    = broker.ErrNoResponders
	ErrTimeout         = broker.ErrTimeout
	ErrStorage         = broker.ErrStorage
	ErrLocked          = broker.ErrLocked
	ErrInvalid         = message.ErrInvalid
	ErrTooLarge        = message.ErrTooLarge
)

// Client is the user-facing handle on a backend. It is safe for concurrent
// use.
type Client struct {
	b broker.Broker

	rtMu sync.Mutex
	rt   *consume.Runtime // created by the first Handle (handle.go)
}

// Open opens the backend named by url (see the package doc for schemes). ctx
// bounds connecting only.
func Open(ctx context.Context, url string) (*Client, error) {
	b, err := broker.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	return &Client{b: b}, nil
}

// New wraps an already opened backend, bypassing the URL registry.
func New(b broker.Broker) *Client { return &Client{b: b} }

// Broker returns the underlying backend, for its optional interfaces
// (broker.TopicAdmin, broker.GroupAdmin, broker.DeadLetterAdmin).
func (c *Client) Broker() broker.Broker { return c.b }

// Capabilities reports what the backend does natively.
func (c *Client) Capabilities() broker.Capabilities { return c.b.Capabilities() }

// Close closes the backend and every subscription made through it.
func (c *Client) Close() error { return c.b.Close() }

// PublishResult tells what happened to a published message.
type PublishResult = broker.MessageResult

// Publish stores m on topic and returns once it is durable. m.ID may be empty
// (a UUIDv7 is generated). With an ID already seen on this topic inside the
// dedup window, nothing is stored and the result has Duplicate set. Inside
// a handler (or with consume.WithTraceParent) the W3C traceparent of ctx is
// added to m's headers unless m has one.
func (c *Client) Publish(ctx context.Context, topic string, m Msg) (PublishResult, error) {
	consume.InjectTrace(ctx, &m)
	res, err := c.b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{&m}})
	if err != nil {
		return PublishResult{}, fmt.Errorf("publish to %q: %w", topic, err)
	}
	return res.Results[0], nil
}

// PublishAsync queues m for topic and returns without waiting; done is
// called exactly once, from another goroutine, when m is durable (the same
// result Publish returns) or failed. One caller can thus keep many publishes
// in flight, which the embedded engine stores with one fsync per group. done
// must not block. An error returned here means m was refused and done will
// not be called. Backends without native async publishing run Publish in a
// goroutine.
func (c *Client) PublishAsync(ctx context.Context, topic string, m Msg, done func(PublishResult, error)) error {
	p := &broker.PublishParams{Topic: topic, Messages: []*message.Message{&m}}
	cb := func(res *broker.PublishResult, err error) {
		if err != nil {
			done(PublishResult{}, fmt.Errorf("publish to %q: %w", topic, err))
			return
		}
		done(res.Results[0], nil)
	}
	if ap, ok := c.b.(broker.AsyncPublisher); ok {
		if err := ap.PublishAsync(ctx, p, cb); err != nil {
			return fmt.Errorf("publish to %q: %w", topic, err)
		}
		return nil
	}
	go func() { cb(c.b.Publish(ctx, p)) }()
	return nil
}

// PublishBatch stores msgs on topic, in order. On a backend with atomic
// batches (the embedded engine) either all are stored or none.
func (c *Client) PublishBatch(ctx context.Context, topic string, msgs []Msg) ([]PublishResult, error) {
	ptrs := make([]*message.Message, len(msgs))
	for i := range msgs {
		ptrs[i] = &msgs[i]
		consume.InjectTrace(ctx, ptrs[i])
	}
	res, err := c.b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: ptrs})
	if err != nil {
		return nil, fmt.Errorf("publish batch of %d to %q: %w", len(msgs), topic, err)
	}
	return res.Results, nil
}

// Subscribe attaches a consumer to topic (a name, or a pattern with '*' and
// '>') in group. An empty group subscribes ephemerally: live messages only,
// nothing kept, no settlement needed. ctx bounds the setup only; the
// subscription lives until Close.
func (c *Client) Subscribe(ctx context.Context, topic, group string, opts ...SubscribeOption) (broker.Subscription, error) {
	p := &broker.SubscribeParams{Topic: topic, Group: group}
	for _, o := range opts {
		o.applyToSubscribe(p)
	}
	sub, err := c.b.Subscribe(ctx, p)
	if err != nil {
		if group == "" {
			return nil, fmt.Errorf("subscribe to %q: %w", topic, err)
		}
		return nil, fmt.Errorf("subscribe group %q to %q: %w", group, topic, err)
	}
	return sub, nil
}

// Request publishes req to topic and waits up to timeout for a reply (a
// responder calls Delivery.Reply). The timeout is required. With nobody
// subscribed it fails at once with ErrNoResponders (fail fast), otherwise
// with ErrTimeout when no reply comes in time.
func (c *Client) Request(ctx context.Context, topic string, req Msg, timeout time.Duration) (*Msg, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("request to %q: %w: a timeout is required (fail fast instead of waiting forever)", topic, ErrInvalid)
	}
	r, ok := c.b.(broker.Requester)
	if !ok {
		return nil, fmt.Errorf("request to %q: %w", topic, broker.NotSupported(c.b.Capabilities().Name, "request/reply", ""))
	}
	resp, err := r.Request(ctx, topic, &req, timeout)
	if err != nil {
		return nil, fmt.Errorf("request to %q: %w", topic, err)
	}
	return resp, nil
}
