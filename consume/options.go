package consume

import (
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// Defaults of a registration.
const (
	DefaultConcurrency = 8
	DefaultMaxAttempts = 5
	DefaultTimeout     = 30 * time.Second
	DefaultInboxTTL    = 24 * time.Hour
	DefaultStaleKeys   = 100_000
)

// DefaultBackoff is the retry policy when none is given: exponential from
// 1 s to 1 min with jitter.
var DefaultBackoff = Exponential(time.Second, time.Minute)

// handlerConfig is one registration's settings.
type handlerConfig struct {
	sub         broker.SubscribeParams
	name        string
	concurrency int
	backoff     BackoffPolicy
	maxAttempts int
	timeout     time.Duration
	inbox       Inbox
	inboxTTL    time.Duration
	dropStale   bool
	staleKeys   int
}

// Option configures one registration (Runtime.Handle).
type Option interface{ apply(*handlerConfig) }

type optionFunc func(*handlerConfig)

func (f optionFunc) apply(c *handlerConfig) { f(c) }

// Concurrency sets how many messages of this registration are handled at
// once (default 8). With OrderedByKey it is still at most one per key.
func Concurrency(n int) Option {
	return optionFunc(func(c *handlerConfig) { c.concurrency = n })
}

// Retry sets the retry policy: after a failed attempt the message is
// retried after policy(attempt), and after maxAttempts attempts it is
// dead-lettered with reason "max-attempts" and the last error (default:
// DefaultBackoff, 5 attempts). maxAttempts < 0 retries forever.
func Retry(policy BackoffPolicy, maxAttempts int) Option {
	return optionFunc(func(c *handlerConfig) { c.backoff, c.maxAttempts = policy, maxAttempts })
}

// Timeout bounds one handler call (default 30 s). The handler's ctx is
// cancelled then; a handler that ignores it is abandoned after a short
// grace (logged, counted), its message retried and its worker replaced, so
// a stuck handler never costs the registration a worker. The
// subscription's ack deadline is set a little above it unless AckDeadline is
// given through SubscribeParams.
func Timeout(d time.Duration) Option {
	return optionFunc(func(c *handlerConfig) { c.timeout = d })
}

// Idempotent skips messages whose ID the group already handled, remembered
// in inbox for ttl (0: 24 h). See Inbox for the guarantees; with TxFunc the
// inbox must be a TxInbox and the mark commits with the handler's writes.
func Idempotent(inbox Inbox, ttl time.Duration) Option {
	return optionFunc(func(c *handlerConfig) { c.inbox, c.inboxTTL = inbox, ttl })
}

// OrderedByKey hands the handler at most one message per key at a time, in
// order, retries included: a failing message holds back its own key only,
// other keys proceed at full Concurrency. Messages without a key are not
// ordered.
//
// Where the backend orders natively (Capabilities.OrderedByKey: the embedded
// engine, Kafka by partition key, SQS FIFO message groups) this holds for the
// whole group, across processes. Elsewhere (Redis Streams, RabbitMQ, NATS
// JetStream, SQS standard queues) the runtime emulates it, and then it holds
// within this runtime only: a key's messages are handled in the order this
// process received them, later ones wait in memory (their deadlines
// extended), and a failed message is retried in the runtime instead of being
// nacked, then dead-lettered after its last attempt. Several processes
// consuming the same group each get part of a key's messages, unordered
// between them: consume such a group from one process, or use a backend with
// native ordering. Waiting messages count against MaxInFlight (default
// DefaultOrderWindow): a key with more messages waiting than that fills the
// window and then holds back the others. Emulation needs Capabilities.Extend;
// on a backend with neither, Handle fails with broker.ErrNotSupported.
func OrderedByKey() Option {
	return optionFunc(func(c *handlerConfig) { c.sub.OrderedByKey = true })
}

// DropStale skips (acks without handling) a message whose version header
// (message.HeaderVersion, an unsigned integer) is not above the last version
// handled for its key by this registration. Versions are remembered in
// memory for the most recent 100,000 keys per registration (see
// StaleKeys); use it with OrderedByKey so that versions of a key are seen in
// order.
func DropStale() Option {
	return optionFunc(func(c *handlerConfig) { c.dropStale = true })
}

// StaleKeys bounds the keys DropStale remembers (default 100,000); the least
// recently seen key is forgotten first.
func StaleKeys(n int) Option {
	return optionFunc(func(c *handlerConfig) { c.staleKeys = n })
}

// Name names the registration in logs and metrics (default
// "<topic>/<group>").
func Name(name string) Option {
	return optionFunc(func(c *handlerConfig) { c.name = name })
}

// Subscribe edits the subscription parameters directly (start position,
// ack deadline, max in flight). The runtime sets MaxAttempts and Backoff
// itself.
func Subscribe(fn func(*broker.SubscribeParams)) Option {
	return optionFunc(func(c *handlerConfig) { fn(&c.sub) })
}
