package switchboard

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/consume"
)

// HandlerOption configures Handle and HandleTx. The consume options below
// and every SubscribeOption (FromEarliest, AckDeadline, MaxInFlight,
// MaxAttempts, OrderedByKey, ...) are HandlerOptions.
type HandlerOption interface {
	consumeOption() consume.Option
}

type handlerOption struct{ o consume.Option }

func (h handlerOption) consumeOption() consume.Option { return h.o }

// consumeOption lets every SubscribeOption configure a handler's
// subscription.
func (f subscribeOptionFunc) consumeOption() consume.Option {
	return consume.Subscribe(func(p *broker.SubscribeParams) { f(p) })
}

// BackoffPolicy gives the delay before the next attempt after a failed one.
type BackoffPolicy = consume.BackoffPolicy

// Exponential waits base after the first failure, doubling up to limit,
// with jitter. See consume.Exponential.
func Exponential(base, limit time.Duration) BackoffPolicy { return consume.Exponential(base, limit) }

// Permanent marks a handler error that must not be retried: the message is
// dead-lettered at once.
func Permanent(err error) error { return consume.Permanent(err) }

// Concurrency sets how many messages a handler handles at once (default 8).
func Concurrency(n int) HandlerOption { return handlerOption{consume.Concurrency(n)} }

// Retry sets the retry policy and the attempts before a message is
// dead-lettered (default: exponential 1 s..1 min, 5 attempts).
func Retry(policy BackoffPolicy, maxAttempts int) HandlerOption {
	return handlerOption{consume.Retry(policy, maxAttempts)}
}

// Timeout bounds one handler call (default 30 s).
func Timeout(d time.Duration) HandlerOption { return handlerOption{consume.Timeout(d)} }

// Idempotent skips message IDs the group already handled, remembered in
// inbox for 24 hours (consume/inbox/boltinbox, redisinbox, sqlinbox). Use
// consume.Idempotent for another TTL.
func Idempotent(inbox consume.Inbox) HandlerOption {
	return handlerOption{consume.Idempotent(inbox, 0)}
}

// DropStale skips messages whose version header is not above the last one
// handled for their key. Without options the versions live in this
// process's memory; consume.VersionsIn(store, ttl) keeps them in a store
// that survives restarts and is shared by the group's processes. See
// consume.DropStale.
func DropStale(opts ...consume.StaleOption) HandlerOption {
	return handlerOption{consume.DropStale(opts...)}
}

// WithOption adapts any consume.Option (consume.Name, consume.StaleKeys,
// consume.Idempotent with a TTL, ...).
func WithOption(o consume.Option) HandlerOption { return handlerOption{o} }

// Runtime returns the consumer runtime behind Handle and Run, created with
// default settings on first use.
func (c *Client) Runtime() *consume.Runtime {
	c.rtMu.Lock()
	defer c.rtMu.Unlock()
	if c.rt == nil {
		c.rt = consume.New(c.b, nil)
	}
	return c.rt
}

// Handle registers handler for topic (a name or pattern) in consumer group
// group; Run starts it. handler is a func(context.Context, *T) error: each
// payload is decoded into a new T by its content type (JSON; protobuf when
// *T is a proto.Message). It may also be a func(context.Context, *Msg) error
// (undecoded) or a consume.Handler.
//
// Guarantees: a handler error retries the message after the backoff; after
// the last attempt, on a Permanent error, or on a payload that does not
// decode ("decode"), the message goes to the group's dead-letter topic with
// the reason and error text. A panic is a failed attempt (the stack is
// logged). Options the backend cannot honour fail here with ErrNotSupported.
func (c *Client) Handle(topic, group string, handler any, opts ...HandlerOption) error {
	h, err := consume.HandlerOf(handler)
	if err != nil {
		return err
	}
	if h.IsTx() {
		return fmt.Errorf("switchboard: handler for %q takes a *sql.Tx; register it with HandleTx", topic)
	}
	return c.Runtime().Handle(topic, group, h, convert(opts)...)
}

// HandleTx registers a transactional handler, a
// func(context.Context, *sql.Tx, *T) error: for each message a transaction
// is begun on inbox's database, the inbox row for (group, message ID) is
// inserted in it, the handler writes through the same tx, and both commit
// together: a redelivered or re-published message is skipped, so the
// handler's effect happens exactly once. The handler must not commit or roll
// back the tx.
func (c *Client) HandleTx(topic, group string, inbox consume.TxInbox, handler any, opts ...HandlerOption) error {
	h, err := consume.HandlerOf(handler)
	if err != nil {
		return err
	}
	if !h.IsTx() {
		return fmt.Errorf("switchboard: HandleTx for %q needs a func(context.Context, *sql.Tx, *T) error", topic)
	}
	all := append([]consume.Option{consume.Idempotent(inbox, 0)}, convert(opts)...)
	return c.Runtime().Handle(topic, group, h, all...)
}

// Run runs the registered handlers until ctx is cancelled, then stops
// gracefully: no new messages are taken, in-flight handlers finish and their
// messages are settled, then Run returns nil. See consume.Runtime.Run.
func (c *Client) Run(ctx context.Context) error { return c.Runtime().Run(ctx) }

func convert(opts []HandlerOption) []consume.Option {
	out := make([]consume.Option, 0, len(opts)+1)
	for _, o := range opts {
		if o != nil {
			out = append(out, o.consumeOption())
		}
	}
	return out
}

// ErrNoValue is returned by Latest when the topic keeps no current message
// for the key.
var ErrNoValue = consume.ErrNoValue

// Latest returns the newest message published to topic with key and its
// age (time since it was published): a compacted view of the topic, for
// "what is the current stock of item K" reads. It is bounded by the topic's
// retention; when the newest message for key expired, or there is none, the
// error wraps ErrNoValue (an older value is never returned in place of a
// newer one). On backends that cannot keep it the error wraps
// ErrNotSupported. See consume.Latest.
func (c *Client) Latest(ctx context.Context, topic, key string) (*Msg, time.Duration, error) {
	return consume.Latest(ctx, c.b, topic, key)
}
