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
// # Ordering and expiry
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
// dead-lettered with reason "expired".
//
// # Staleness
//
// DropStale skips (acks unhandled, Stats.Stale) a keyed message whose
// message.HeaderVersion is not above the highest version the group applied
// for its key. The version is checked before the handler runs and recorded
// after it succeeded, so a failed attempt records nothing and its retry is
// not stale; a message without a key or a valid version is always handled.
//
// DropStale() keeps the versions in memory, per registration and per
// process, for the last StaleKeys keys: they are lost on restart and not
// seen by other processes of the group, where an older version can then be
// applied over a newer one. DropStale(VersionsIn(store, ttl)) keeps them in
// a VersionStore shared by every runtime using it and kept across restarts:
// boltinbox (Inbox.Versions, one process), redisinbox.NewVersions or
// sqlinbox.NewVersions. A store records a version only if it is above the
// stored one, atomically with respect to every process (a Lua script in
// Redis, a conditional upsert in SQL, a bbolt write transaction): a record
// never goes down. It keeps a key for ttl (default DefaultVersionTTL, 7
// days) after the key's last applied version; a key forgotten after that
// accepts any version. Redis expires records itself; bolt and SQL records
// are swept while Run runs. A store that cannot be reached leaves the
// message unhandled for a retry (Stats.VersionErrors); a version that cannot
// be recorded after a successful handler is logged and counted there too.
//
// DropStale decides when a message may start; it is meant with
// OrderedByKey, which keeps a key's versions out of handlers at the same
// time. Without it (or with emulated ordering across processes) two
// versions of a key can be handled at once: both pass the check, and if the
// older finishes last its effect lands last. The store keeps the newer
// version, and the older one's success is logged and counted as
// Stats.Overtaken. With native ordering and a shared store, a key's
// versions are applied in increasing order across processes and restarts,
// with three exceptions: a process that dies between a handler's effect and
// the record (the message is redelivered and handled again: the same
// version, at least once), a record that failed after the handler (logged),
// and keys forgotten after ttl.
//
// With TxFunc and an SQL version store in the inbox's database
// (a TxVersionStore), the version is recorded in the handler's transaction,
// before the handler runs, by the same conditional upsert: a stale message
// rolls back and is acked, and otherwise the version commits with the
// handler's writes or not at all. The row stays locked until the
// transaction ends, so handlers of one key are serialized across processes
// even without OrderedByKey, and each sees the previous version's committed
// writes. With another store a TxFunc's version is recorded after its
// commit.
//
// # Acknowledgements
//
// A handler that returned nil is acked. Where the backend's ack takes a
// round trip to its server (broker.Delivery.AcksAsync: Redis Streams,
// NATS JetStream, SQS, the hub), the worker does not wait for the answer:
// it starts the ack with broker.Delivery.AckAsync and takes its next
// message, and the acks of all workers share round trips. At most 256 acks per registration are
// unanswered at once; a worker waits for a slot beyond that. The outcome
// is the same as waiting: Stats.Acked counts acks the server confirmed, a
// failed ack is counted in Stats.AckErrors and logged, and its message
// comes back after its deadline, as at-least-once delivery allows.
//
// A registration holds at most MaxInFlight unsettled deliveries (set it
// with switchboard.MaxInFlight or Subscribe; default twice Concurrency, or
// DefaultOrderWindow when ordering is emulated). Deliveries fetched ahead
// wait for a worker with their ack deadline running, which is why the
// default is small. On a remote broker the window also bounds how many
// messages a round trip can bring: with fast handlers, raise it. Measured
// end to end against the raw client on the local NATS JetStream
// (bench adapters --sb-runtime), Concurrency 8 gave 0.50x with the
// default window of 16 and 0.96x with MaxInFlight 256; on Redis Streams,
// 0.77x and 0.97x at 1 KiB.
//
// # Shutdown
//
// Cancelling Run's ctx stops taking messages, lets in-flight handlers
// finish, settles them, waits for the acks still unanswered, hands back
// messages waiting for a retry and closes the subscriptions. Messages
// received but not started are redelivered.
//
// # Metrics
//
// Runtime.Collector is a prometheus.Collector for the caller's registry:
// per registration received, acked, retried, dead-lettered (by reason),
// duplicates, busy, stale, overtaken, expired, panics, abandoned, inbox,
// version store and ack errors, and a handler latency histogram; per group
// the lag, in-flight and dead-letter counts where the backend implements
// broker.GroupAdmin.
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
