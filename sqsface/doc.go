// Package sqsface answers the Amazon SQS API over HTTP, backed by a
// Switchboard broker, so that applications written for SQS run on
// Switchboard unchanged.
//
// [New] returns an http.Handler that speaks both SQS wire protocols: AWS
// JSON 1.0 (X-Amz-Target: AmazonSQS.<Operation>, what current SDKs send)
// and the Query protocol (form-encoded Action=<Operation> with XML answers,
// what older SDKs and Debian's awscli send). Errors have the shapes and
// codes the SDKs expect in both protocols.
//
// # Mapping
//
// A queue is a topic plus one consumer group, both named
// Config.TopicPrefix+name. SendMessage publishes; ReceiveMessage takes
// deliveries from the queue's subscription and makes them invisible with
// Delivery.Extend; DeleteMessage acks; ChangeMessageVisibility extends or
// nacks. FIFO queues use per-key ordering (key = MessageGroupId) and the
// engine's dedup window (message ID = deduplication ID; open the embedded
// engine with dedup_window=5m). Redrive to a dead-letter queue happens after
// maxReceiveCount receives. Queue attributes and tags are kept in
// Config.Dir/queues.json.
//
// # Guarantees
//
// Delivery is at least once. A message is stored durably (as the backend
// defines it) before SendMessage answers. A received message stays invisible
// until its visibility timeout passes, it is deleted, or the face closes
// (Close releases every message in flight). Receipt handles live in memory:
// after a restart, messages in flight are delivered again.
//
// The handler is safe for concurrent use. See docs/sqs.md for the supported
// operations and attributes and every known difference from AWS.
package sqsface
