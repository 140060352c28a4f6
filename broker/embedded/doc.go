// Package embedded is Switchboard's built-in broker: durable topics in
// append-only segment files with a CRC per record and group commit (publish
// returns after fsync), durable consumer groups, ack deadlines, redelivery
// with backoff, dead letters, delayed delivery, expiry, a dedup window,
// per-key ordering, replay, ephemeral fan-out and request/reply, all in the
// process. Import it (the root switchboard package does) and open it with
// the URL "embedded:///path/to/dir" or "embedded://?memory".
package embedded
