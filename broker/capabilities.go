package broker

// Capabilities declares what a backend does natively. The conformance suite
// runs the tests of a capability only where it is declared, and the consumer
// runtime emulates what is missing where that is safe.
type Capabilities struct {
	// Name of the backend, e.g. "embedded", "nats-jetstream".
	Name string
	// Durable: published messages survive a restart of the backend.
	Durable bool
	// Groups: durable consumer groups (fan-out across groups, work queue
	// inside a group).
	Groups bool
	// Ephemeral: subscriptions without a group that see live messages only.
	Ephemeral bool
	// Patterns: subscriptions on topic patterns ('*', '>').
	Patterns bool
	// Ack: per-message ack, nack and ack deadlines with redelivery.
	Ack bool
	// NackDelay: a nack can ask for redelivery after a delay.
	NackDelay bool
	// Extend: a delivery's deadline can be extended.
	Extend bool
	// DeadLetter: messages that exhaust MaxAttempts, are termed or expire go
	// to the group's dead-letter topic.
	DeadLetter bool
	// Delay: messages can be published with a deliver-at time.
	Delay bool
	// Expiry: messages with an expires-at time are never delivered late.
	Expiry bool
	// Dedup: a publish with an ID seen inside the dedup window is not stored
	// again and is reported as a duplicate.
	Dedup bool
	// OrderedByKey: per-key ordering inside a group (one in flight per key).
	OrderedByKey bool
	// StartPositions: a new group can start at earliest, a time or a
	// sequence (latest is always supported).
	StartPositions bool
	// AtomicBatch: a batch publish is stored all or nothing.
	AtomicBatch bool
	// Request: request/reply (the backend implements Requester).
	Request bool
	// MaxPayload is the largest payload the backend accepts, in bytes
	// (0 = no backend limit below Switchboard's own).
	MaxPayload int
}
