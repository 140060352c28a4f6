// Package inbox groups the consume.Inbox stores:
//
//   - boltinbox: a bbolt file, e.g. in the embedded engine's data directory
//     (boltinbox.ForBroker). One process.
//   - redisinbox: Redis keys with SET NX PX semantics, shared by every
//     process that uses the same Redis.
//   - sqlinbox: a table in SQLite or PostgreSQL through database/sql; it is
//     also a consume.TxInbox, so a transactional handler's writes and the
//     inbox row commit together (exactly-once effect).
//
// Every store keeps an entry per (group, message ID) with an expiry: a claim
// while a handler runs (its lease) and a "handled" mark for the TTL.
package inbox
