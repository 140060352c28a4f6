package message

import (
	"maps"
	"time"
)

// Message is one message as published and as delivered.
//
// Only Payload is required to publish; Topic is normally given by the publish
// call. A zero ID is replaced by a new UUIDv7 at publish time. A caller-chosen
// ID is what the dedup window keys on: publishing the same ID to the same
// topic twice inside the window stores it once and tells the caller.
type Message struct {
	// ID identifies the message. Empty means "generate a UUIDv7".
	ID string
	// Topic the message is published to (dot-separated segments, see
	// ValidateTopic). Set by the backend on delivery.
	Topic string
	// Key is the optional ordering key: with per-key ordering, a group has at
	// most one message per key in flight, in publish order.
	Key string
	// Headers are string metadata carried end to end. Names starting with
	// "sb-" are reserved for Switchboard (see the Header constants).
	Headers map[string]string
	// Payload is the opaque body. It may be empty.
	Payload []byte
	// ContentType describes Payload (e.g. "application/json").
	ContentType string
	// PublishedAt is set by the backend when the message is stored.
	PublishedAt time.Time
	// DeliverAt, when set and in the future, delays delivery until then.
	DeliverAt time.Time
	// ExpiresAt, when set, is the time after which the message is never
	// handed to a handler (it is dead-lettered with reason "expired").
	ExpiresAt time.Time
}

// Clone returns a deep copy of m (headers and payload included).
func (m *Message) Clone() *Message {
	c := *m
	c.Headers = maps.Clone(m.Headers)
	if m.Payload != nil {
		c.Payload = append([]byte(nil), m.Payload...)
	}
	return &c
}

// Expired reports whether m has an expiry time that is not after now.
func (m *Message) Expired(now time.Time) bool {
	return !m.ExpiresAt.IsZero() && !now.Before(m.ExpiresAt)
}

// Header returns the value of header name, or "".
func (m *Message) Header(name string) string { return m.Headers[name] }

// SetHeader sets header name to value, allocating the map when needed.
func (m *Message) SetHeader(name, value string) {
	if m.Headers == nil {
		m.Headers = make(map[string]string, 4)
	}
	m.Headers[name] = value
}

// Info is the delivery metadata a backend attaches to a delivered message.
type Info struct {
	// Group is the consumer group, or "" for an ephemeral subscription.
	Group string
	// Seq is the message's sequence number (offset) inside its topic,
	// starting at 1. May be zero where the backend has no sequence
	// (ephemeral subscriptions, requests).
	Seq uint64
	// Attempt counts deliveries of this message to this group, starting at 1.
	Attempt int
	// Redelivered is true when the message was delivered to this group before
	// (after a nack, a missed deadline, or a restart).
	Redelivered bool
	// Deadline is when the delivery is redelivered if not settled. Zero for
	// ephemeral deliveries.
	Deadline time.Time
}

// Reserved header names. Backends and the runtime set them; publishers should
// not, except where noted.
const (
	// HeaderDLQReason is set on a dead letter: "max-attempts", "expired",
	// "term", "decode" or a reason given to Term.
	HeaderDLQReason = "sb-dlq-reason"
	// HeaderDLQError carries the last handler error text on a dead letter.
	HeaderDLQError = "sb-dlq-error"
	// HeaderDLQAttempts is the number of attempts made before dead-lettering.
	HeaderDLQAttempts = "sb-dlq-attempts"
	// HeaderDLQTopic is the topic the dead letter was published to originally.
	HeaderDLQTopic = "sb-dlq-topic"
	// HeaderDLQSeq is the original sequence number of a dead letter.
	HeaderDLQSeq = "sb-dlq-seq"
	// HeaderDLQGroup is the group that dead-lettered the message.
	HeaderDLQGroup = "sb-dlq-group"
	// HeaderReplayFor marks a replayed dead letter: only the named group
	// processes it; other groups of the topic skip it.
	HeaderReplayFor = "sb-replay-for"
	// HeaderReplyTo carries the reply address of a request.
	HeaderReplyTo = "sb-reply-to"
	// HeaderVersion is the optional per-key version used to drop stale updates.
	HeaderVersion = "sb-version"
	// HeaderError marks a reply that carries an error text instead of a result.
	HeaderError = "sb-error"
)

// DLQTopic returns the dead-letter topic of a group: "$dlq.<group>".
func DLQTopic(group string) string { return "$dlq." + group }
