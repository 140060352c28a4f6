// Package consume is Switchboard's consumer runtime: the layer handlers run
// in. It gives every backend the same delivery contract, using what the
// backend does natively (broker.Capabilities) and emulating the rest.
//
// Most programs use it through the root package (switchboard.Client.Handle,
// HandleTx and Run); New gives a Runtime on any broker.Broker.
//
// # Handlers
//
// A handler is a func(ctx, *T) error. Each payload is decoded into a new T by
// its content type: JSON (application/json, */*+json, or none), protobuf
// (application/protobuf when *T is a proto.Message; protojson for JSON). A
// payload that does not decode is dead-lettered at once with reason
// "decode": retrying cannot change its bytes. Concurrency(n) handlers of a
// registration run at once. The handler's ctx carries the delivery
// (DeliveryFrom) and a trace span (TraceParent); it is cancelled after the
// registration's Timeout. A handler must not settle the delivery itself.
//
// # Retries and dead letters
//
// A handler error is a failed attempt: the message is retried after
// Retry's backoff (Exponential: doubling with jitter, capped). A panic is a
// failed attempt too, logged with its stack. After the last attempt the
// message goes to the group's dead-letter topic ("$dlq.<group>") with reason
// "max-attempts"; a Permanent error goes there at once with reason
// "permanent". The dead letter keeps the payload, key and original headers
// plus the reason, the error text and the attempts (DeadLetterInfo reads
// them). On backends without delayed nacks (Capabilities.NackDelay false) a
// failed message waits in the runtime's timer, unsettled but without a
// worker, its deadline extended where the backend can, and is nacked when
// due: other messages keep flowing.
//
// Handlers run on the registration's worker goroutines (no goroutine per
// message). A watchdog timer per worker cancels the handler's ctx at
// Timeout (ctx.Err() is context.DeadlineExceeded); a handler that returns
// within a short grace after that counts as a failed attempt. One that
// ignores its ctx and is still running after the grace is abandoned: its
// attempt counts as failed and is retried (or dead-lettered after the last
// attempt), a new worker takes its place, and the stuck goroutine exits
// when the handler finally returns, without settling anything (a TxFunc's
// transaction is rolled back, never committed). Stats.Abandoned counts
// them.
//
// # Idempotent consumers
//
// Idempotent(inbox, ttl) remembers the IDs a group handled and skips
// copies: redeliveries after a lost ack, publishes retried by a producer.
// A worker first claims the ID (a lease as long as the handler's timeout):
// a concurrent copy finds it busy and is retried later, a later copy finds
// it handled and is acked without running the handler. With a plain inbox
// (boltinbox, redisinbox, sqlinbox) the effect is at most once while the
// mark is kept, except when the process dies between the handler's effect
// and the mark. With TxFunc and the SQL inbox the mark is written in the
// handler's own transaction: both commit or neither, so the effect happens
// exactly once. When the inbox store cannot be reached the message is not
// handled and not acked: it is retried later (nothing lost), and the error
// is logged and counted (Stats.InboxErrors). Inbox failures never
// dead-letter a message by themselves.
//
// # Ordering and staleness
//
// OrderedByKey hands a registration at most one message per key at a time,
// in order, retries included: a failing message holds back its own key
// only, and other keys proceed at full concurrency. Messages without a key
// are not ordered.
//
// Backends with Capabilities.OrderedByKey (the embedded engine, Kafka by
// partition key, SQS FIFO message groups) order natively, for the whole
// group across processes. On the others that have groups (Redis Streams,
// RabbitMQ, NATS JetStream, SQS standard queues) the runtime emulates it,
// and the guarantee holds within one runtime only:
//
//   - A key's messages reach the handler one at a time in the order this
//     process received them (the backend's order: publish order for first
//     deliveries; a message the backend redelivers, after a crash or
//     another consumer's release, comes after those received before it).
//     A handler abandoned after ignoring its Timeout may still be running
//     when its message is retried.
//   - Messages of a key that arrive while an earlier one is in a handler or
//     waiting for its retry wait in the runtime, unsettled; their deadlines
//     are extended as they near, and a delivery is extended before its
//     handler runs when what is left would not cover the Timeout.
//   - A failed message is retried in the runtime after its backoff (its
//     delivery held and extended), not nacked, so no later message of its
//     key can overtake it; after the last attempt it is dead-lettered and
//     the key's next message proceeds. The handler's DeliveryFrom(ctx)
//     counts these attempts; the dead letter's attempts header keeps the
//     backend's count and its error text says how many were made.
//   - Everything held (handled, waiting for a worker, for its key or for a
//     retry) counts against MaxInFlight (default DefaultOrderWindow), so
//     memory is bounded; a key with more messages waiting than that fills
//     the window and then holds back other keys.
//   - Across processes consuming the same group there is no ordering: each
//     gets part of a key's messages. Consume such a group from one process
//     or use a backend with native ordering. On shutdown the waiting
//     messages are released to the backend, and retries made in the
//     runtime are not remembered.
//
// Emulation needs Capabilities.Extend (a waiting message would otherwise
// pass its deadline and come back out of order); Handle refuses
// OrderedByKey on a backend with neither.
//
// Expired messages (message.ExpiresAt) never reach a handler: they are
// dead-lettered with reason "expired". DropStale skips a message whose
// message.HeaderVersion is not above the last version handled for its key;
// the last versions live in memory (bounded by StaleKeys, per
// registration, lost on restart), so use it with OrderedByKey.
//
// # Shutdown
//
// Cancelling Run's ctx stops taking messages, lets in-flight handlers
// finish, settles them, hands back messages waiting for a retry and closes
// the subscriptions. Messages received but not started are redelivered.
//
// # Metrics
//
// Runtime.Collector is a prometheus.Collector for the caller's registry:
// per registration received, acked, retried, dead-lettered (by reason),
// duplicates, busy, stale, expired, panics, abandoned, inbox and ack
// errors, and a handler latency histogram; per group the lag, in-flight
// and dead-letter counts where the backend implements broker.GroupAdmin.
//
// # Latest value per key
//
// Latest (and Runtime.Latest, switchboard.Client.Latest) returns the newest
// message of a topic for a key and its age, on backends that implement
// LatestReader; an expired newest message means "no current value"
// (ErrNoValue). Elsewhere it fails with broker.ErrNotSupported.
//
// # Attempts
//
// Attempts are the backend's delivery count (message.Info.Attempt), so a
// redelivery caused by an inbox outage or a crash counts too; with emulated
// ordering the retries made in the runtime are added. The backend's
// own limit is set 20 above the runtime's, so that a message that crashes
// the process is dead-lettered eventually.
package consume
