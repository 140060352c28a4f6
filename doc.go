// Package switchboard is how services talk to each other asynchronously: a
// durable mailbox with the delivery guarantees built in.
//
// # Opening a backend
//
// [Open] picks the backend from a URL. The default is the embedded engine,
// which needs nothing installed:
//
//	sb, err := switchboard.Open(ctx, "embedded:///var/lib/myapp/sb") // or "embedded://?memory"
//	defer sb.Close()
//
// Other backends register themselves when their package is imported (a blank
// import, like database/sql drivers): amqp:// (RabbitMQ), kafka://, sqs://,
// redis://, nats://, switchboard:// (a remote hub).
//
// # Publishing
//
// [Client.Publish] returns only when the message is durable (embedded:
// fsynced). A message published twice with the same ID inside the dedup window
// is stored once, and the second call reports Duplicate.
//
// # Consuming
//
// [Client.Subscribe] with a group joins a durable consumer group: every group
// gets every message (fan-out) and inside a group each message goes to one
// consumer (work queue). Each delivery must be settled:
//
//	sub, err := sb.Subscribe(ctx, "orders.*", "email", switchboard.MaxAttempts(5), switchboard.OrderedByKey())
//	for d := range sub.Deliveries() {
//		// ... handle d.Message ...
//		d.Ack(ctx) // or d.Nack(ctx, backoff), d.Term(ctx, reason), d.Extend(ctx, more)
//	}
//
// A delivery not settled before its ack deadline is redelivered; after
// MaxAttempts it goes to the group's dead-letter topic ("$dlq.<group>") with
// the reason, the attempts and the original headers.
//
// # Guarantees
//
// Delivery is at least once: a message is redelivered after a nack, a missed
// deadline, a closed subscription or a crash, and never lost once Publish
// returned. Use an idempotent consumer (the consume package's inbox) for an
// exactly-once effect.
package switchboard
