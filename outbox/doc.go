// Package outbox is the transactional outbox: a service publishes messages
// inside its own SQL transaction, and a relay forwards them to a backend
// (any broker.Broker) afterwards. The message exists if and only if the
// transaction commits — no "saved the order but lost the event", no "sent
// the event for an order that was rolled back".
//
// It works with SQLite (modernc.org/sqlite) and PostgreSQL (pgx's
// database/sql driver, github.com/jackc/pgx/v5/stdlib):
//
//	outbox.Migrate(ctx, db, outbox.Postgres)              // once: CREATE TABLE IF NOT EXISTS sb_outbox ...
//
//	tx, _ := db.BeginTx(ctx, nil)
//	tx.ExecContext(ctx, `INSERT INTO orders ...`)
//	outbox.Publish(ctx, tx, message.Message{Topic: "orders.placed", Key: orderID, Payload: body})
//	tx.Commit()
//
//	relay, _ := outbox.NewRelay(db, outbox.Postgres, client.Broker())
//	go relay.Run(ctx)
//
// # Guarantees
//
// Atomicity. Publish and PublishBatch insert rows with the application's
// *sql.Tx; a rolled-back transaction leaves nothing to relay. Messages are
// validated at insert (topic name, sizes, header names), so malformed ones
// fail the application's call instead of reaching the relay.
//
// IDs. A message without an ID gets a UUIDv7 at insert. Every copy the relay
// ever sends of a row carries that ID, so a backend's dedup window (the
// embedded engine's: 2 minutes by default) stores a re-send once and reports
// it as a duplicate, and an idempotent consumer (consume.Idempotent) skips
// it either way.
//
// At least once. A row is deleted only after the backend acknowledged its
// publish (durable, as the backend defines it). If the backend or the
// database fails, or the relay stops or crashes, between the publish and the
// delete, the row is sent again later with the same ID. Nothing committed is
// lost while the table is intact. A message the backend refuses for good
// (message.ErrInvalid, broker.ErrNotSupported — e.g. a delay on a backend
// without delays) is not retried forever: its row is kept with failed_at and
// last_error set, logged, and counted in Lag.Failed; later messages, of its
// key too, go on. Set failed_at back to NULL to try it again.
//
// Order. Each row gets an insert sequence (seq: SQLite AUTOINCREMENT,
// PostgreSQL BIGSERIAL). The active relay reads the committed rows in seq
// order, publishes each topic's rows as one batch in that order (topics in
// parallel), and reads the next batch only after the previous one is
// acknowledged. Hence, for each topic and so for each key:
//
//   - Messages are published in seq order among the rows committed when the
//     relay reads them; a row that commits after a read is published after
//     everything that read returned.
//   - So when a key's transactions do not overlap (one commits before the
//     next inserts its outbox row — what happens when writers of a key lock
//     the same aggregate row, and always on SQLite, which has one writer),
//     its messages are published in commit order. Two transactions that
//     write the same key concurrently on PostgreSQL are published in seq
//     order if both committed before the relay's read, else in commit order;
//     serialize such writers if the order between them matters.
//   - A message re-sent after a failure is sent again before anything
//     newer; with the backend's dedup window it is not stored twice, so
//     consumers see each key in order. Without dedup (or past the window) a
//     re-send can show up after newer messages of its key: consumers need
//     the inbox or a version (message.HeaderVersion with DropStale).
//   - Across topics there is no order.
//
// One active relay. Any number of relays may run on a table (for
// availability); one is active at a time. On PostgreSQL the active relay holds
// a session advisory lock on a dedicated connection and runs all its
// statements on it: if the process dies or the connection breaks, the server
// frees the lock and a standby takes over within StandbyInterval (1 s). On
// SQLite the active relay holds a lease row (<table>_lease) that it renews;
// it stops publishing before the lease can expire, and a relay that dies
// without releasing it is replaced after LeaseTTL (15 s). A relay stopped
// through its context releases the role at once. The one case of two
// relays publishing at once is a PostgreSQL connection that the server
// already dropped while the old relay's last publish is still under way:
// that batch may then be sent twice (same IDs).
//
// Backpressure and failures. When the backend is down, the relay keeps the
// rows and retries after Backoff (100 ms doubling to 10 s, jittered; no busy
// loop), and logs each failure. The rows wait in the table; Lag shows how
// many and how old.
//
// Lag. Relay.Lag reads the pending rows, the insert time of the oldest, and
// the failed rows. Relay.Collector exports them (and relayed, duplicate and
// error counters and whether the relay is active) as Prometheus metrics, on
// a registry you give.
//
// # Throughput
//
// One relay forwards up to BatchSize rows per cycle: one SELECT, one
// publish per topic (one fsync on the embedded engine), one DELETE. The
// writer's cost is one INSERT per message (PublishBatch: one per 500) in the
// transaction it already has. Measure with `cd bench && go run . outbox`.
package outbox
