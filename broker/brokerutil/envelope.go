package brokerutil

import (
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

// Envelope header names. A message's own fields travel as headers with these
// names next to the user's headers, which travel as they are. User headers
// are lower-case by convention ("sb-" is reserved for Switchboard's own), so
// the capitalised "Sb-" names do not collide with them on case-sensitive
// brokers (NATS, AMQP tables, Redis stream fields).
const (
	HeaderID          = "Sb-Id"
	HeaderKey         = "Sb-Key"
	HeaderContentType = "Sb-Content-Type"
	HeaderPublishedAt = "Sb-Published-At"
	HeaderDeliverAt   = "Sb-Deliver-At"
	HeaderExpiresAt   = "Sb-Expires-At"
	// HeaderAttempts counts attempts made before a message was republished
	// by an adapter that emulates a delayed nack by republishing (RabbitMQ).
	HeaderAttempts = "Sb-Attempts"
)

// TimeFormat is how envelope times are written: RFC 3339 with nanoseconds, UTC.
const TimeFormat = time.RFC3339Nano

// IsEnvelope reports whether name is one of the envelope header names.
func IsEnvelope(name string) bool { return strings.HasPrefix(name, "Sb-") }

// Encode calls set for every envelope field that m has and then for every
// user header. Fields the adapter carries natively can be skipped by the
// adapter's set func (it receives the envelope name). publishedAt is written
// when not zero.
func Encode(m *message.Message, publishedAt time.Time, set func(name, value string)) {
	if m.ID != "" {
		set(HeaderID, m.ID)
	}
	if m.Key != "" {
		set(HeaderKey, m.Key)
	}
	if m.ContentType != "" {
		set(HeaderContentType, m.ContentType)
	}
	if !publishedAt.IsZero() {
		set(HeaderPublishedAt, publishedAt.UTC().Format(TimeFormat))
	}
	if !m.DeliverAt.IsZero() {
		set(HeaderDeliverAt, m.DeliverAt.UTC().Format(TimeFormat))
	}
	if !m.ExpiresAt.IsZero() {
		set(HeaderExpiresAt, m.ExpiresAt.UTC().Format(TimeFormat))
	}
	for k, v := range m.Headers {
		set(k, v)
	}
}

// Decode sets the field of m named by an envelope header, or adds a user
// header. Unparsable times are kept as user headers rather than lost.
func Decode(m *message.Message, name, value string) {
	switch name {
	case HeaderID:
		m.ID = value
		return
	case HeaderKey:
		m.Key = value
		return
	case HeaderContentType:
		m.ContentType = value
		return
	case HeaderPublishedAt, HeaderDeliverAt, HeaderExpiresAt:
		t, err := time.Parse(TimeFormat, value)
		if err != nil {
			break
		}
		switch name {
		case HeaderPublishedAt:
			m.PublishedAt = t
		case HeaderDeliverAt:
			m.DeliverAt = t
		default:
			m.ExpiresAt = t
		}
		return
	case HeaderAttempts:
		return // adapter bookkeeping, read by the adapter itself
	}
	m.SetHeader(name, value)
}
