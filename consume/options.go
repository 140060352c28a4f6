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
	// DefaultVersionTTL is how long a VersionStore keeps a key's version
	// after the last version applied for the key (VersionsIn with ttl 0).
	DefaultVersionTTL = 7 * 24 * time.Hour
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
	versions    VersionStore // nil: in memory (memVersions)
	versionsSet bool         // VersionsIn was given (nil is refused)
	versionTTL  time.Duration
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
// (message.HeaderVersion, a decimal integer from 0 to math.MaxInt64) is not
// above the highest version the group applied for its key. Messages without
// a key or a valid version are always handled. Skipped messages count as
// Stats.Stale.
//
// The version of a message is checked before its handler runs and recorded
// after the handler succeeded, so a failed attempt records nothing and its
// retry is not stale. With TxFunc and an SQL store (TxVersionStore) the
// check and the record are one conditional write inside the handler's
// transaction, before the handler runs: the version commits with the
// handler's writes or not at all, and a concurrent handler of the same key
// waits for the transaction.
//
// Where the versions live:
//
//   - DropStale() keeps them in memory, per registration and per process,
//     for the most recent StaleKeys keys (default 100,000). They are lost on
//     restart and not shared with other processes consuming the group: after
//     a restart, or in another process, an older version can be applied
//     over a newer one.
//   - DropStale(VersionsIn(store, ttl)) keeps them in store, shared by every
//     runtime and process using it, across restarts, for ttl after a key's
//     last applied version (then the key is forgotten and accepts any
//     version).
//
// Use it with OrderedByKey. DropStale decides when a message may start; it
// cannot keep two versions of a key out of handlers at the same time, which
// happens without OrderedByKey, or with emulated ordering across processes.
// Then the store still never lets an older version replace a newer record,
// but a slower handler of an older version can finish after a newer one:
// its effect is not undone, and it is logged and counted
// (Stats.Overtaken). With native ordering (embedded, Kafka, SQS FIFO) and a
// shared store, a key's versions are applied in increasing order across
// processes and restarts (see the package doc for the exceptions). With
// TxFunc and an SQL store they are too, with or without OrderedByKey,
// because the version's row stays locked until the handler's transaction
// ends.
func DropStale(opts ...StaleOption) Option {
	return optionFunc(func(c *handlerConfig) {
		c.dropStale = true
		for _, o := range opts {
			o.applyStale(c)
		}
	})
}

// StaleOption configures DropStale.
type StaleOption interface{ applyStale(*handlerConfig) }

type staleOptionFunc func(*handlerConfig)

func (f staleOptionFunc) applyStale(c *handlerConfig) { f(c) }

// VersionsIn keeps DropStale's versions in store instead of memory: per
// (group, key), the highest version applied, kept for ttl after the key's
// last applied version (0: DefaultVersionTTL, 7 days). Choose ttl longer
// than a message can take to come back (the backend's retention and
// redelivery): a key forgotten after ttl accepts the next version it sees,
// older or not. Stores that need it are swept while Run runs (Sweeper).
func VersionsIn(store VersionStore, ttl time.Duration) StaleOption {
	return staleOptionFunc(func(c *handlerConfig) { c.versions, c.versionsSet, c.versionTTL = store, true, ttl })
}

// StaleKeys bounds the keys DropStale remembers in memory (default
// 100,000); the least recently seen key is forgotten first. It does not
// apply to VersionsIn.
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
