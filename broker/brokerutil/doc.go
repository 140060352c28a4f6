// Package brokerutil holds the code that the adapters for real brokers
// (broker/nats, broker/redis, broker/rabbitmq) share, so that they map
// messages, dead letters, retries and errors the same way:
//
//   - the header envelope that carries a [message.Message]'s fields (ID, key,
//     content type, times) next to its user headers ([Encode], [Decode]);
//   - dead letters ([DeadLetter]) with the reason, attempts, original topic,
//     sequence and group;
//   - the default redelivery backoff ([DefaultBackoff]) and the reconnect
//     backoff ([Retry]);
//   - dial errors that name the address ([Unreachable]);
//   - the subscription plumbing ([Sub]): a deliveries channel, Close and Err.
//
// It imports only broker and message. It is for adapters, not for users.
package brokerutil
