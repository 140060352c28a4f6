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
//
// The same packages hold the consume.VersionStore of
// consume.DropStale(consume.VersionsIn(store, ttl)): per (group, message
// key) the highest version applied, with an expiry, recorded only if it is
// above the stored one in one atomic step:
//
//   - boltinbox: Inbox.Versions, a bucket of the inbox file (a bbolt write
//     transaction). One process.
//   - redisinbox: NewVersions, a key per (group, key) set by a Lua script,
//     expiring by itself.
//   - sqlinbox: NewVersions, a table beside the inbox's written by a
//     conditional upsert (INSERT ... ON CONFLICT ... DO UPDATE ... WHERE);
//     also a consume.TxVersionStore, so a transactional handler's writes and
//     the version commit together.
package inbox
