package message

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalid is matched (errors.Is) by every validation error of this package.
var ErrInvalid = errors.New("invalid")

// ErrTooLarge is matched (errors.Is) by validation errors about a size limit.
var ErrTooLarge = errors.New("too large")

// ValidationError says what is wrong with which part of a message or name, and
// how to fix it. It matches ErrInvalid, and ErrTooLarge for size limits.
type ValidationError struct {
	Field  string // "topic", "payload", "header \"x\"", "group", ...
	Value  string // the offending value, shortened
	Reason string // what rule it breaks
	size   bool
}

func (e *ValidationError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// Is makes a ValidationError match ErrInvalid and, for size limits, ErrTooLarge.
func (e *ValidationError) Is(target error) bool {
	return target == ErrInvalid || (e.size && target == ErrTooLarge)
}

func invalid(field, value, format string, args ...any) error {
	if len(value) > 64 {
		value = value[:61] + "..."
	}
	return &ValidationError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

func tooLarge(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...), size: true}
}

// MaxNameLen is the longest topic, pattern or group name accepted.
const MaxNameLen = 249

const nameRule = "use 1 to 249 characters: letters, digits, '_', '-' and ':' in dot-separated segments, e.g. \"orders.placed\""

// ValidateTopic checks a concrete topic name: dot-separated, non-empty
// segments of ASCII letters, digits, '_', '-' and ':'. A leading '$' marks a
// system topic (e.g. "$dlq.email"); wildcards are not allowed.
func ValidateTopic(topic string) error { return validateName("topic", topic, false) }

// ValidatePattern checks a subscription pattern: a topic name in which a
// segment may be '*' (exactly one segment) and the last segment may be '>'
// (one or more segments).
func ValidatePattern(pattern string) error { return validateName("topic pattern", pattern, true) }

// IsPattern reports whether s contains a wildcard segment.
func IsPattern(s string) bool {
	for seg := range strings.SplitSeq(s, ".") {
		if seg == "*" || seg == ">" {
			return true
		}
	}
	return false
}

func validateName(field, s string, pattern bool) error {
	if s == "" {
		return invalid(field, s, "empty; %s", nameRule)
	}
	if len(s) > MaxNameLen {
		return invalid(field, s, "%d characters is too long; %s", len(s), nameRule)
	}
	body := s
	if body[0] == '$' {
		body = body[1:]
	}
	segs := strings.Split(body, ".")
	for i, seg := range segs {
		if seg == "" {
			return invalid(field, s, "empty segment at position %d; %s", i+1, nameRule)
		}
		if seg == "*" || seg == ">" {
			if !pattern {
				return invalid(field, s, "wildcard %q is only allowed in subscription patterns", seg)
			}
			if seg == ">" && i != len(segs)-1 {
				return invalid(field, s, "'>' must be the last segment")
			}
			continue
		}
		for j := 0; j < len(seg); j++ {
			c := seg[j]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == ':') {
				r, _ := utf8.DecodeRuneInString(seg[j:])
				return invalid(field, s, "character %q is not allowed; %s", r, nameRule)
			}
		}
	}
	return nil
}

// ValidateGroup checks a consumer group name: 1 to 128 ASCII letters, digits,
// '_', '-', ':' or '.'.
func ValidateGroup(group string) error {
	if group == "" {
		return invalid("group", group, "empty; name the group, e.g. \"email\"")
	}
	if len(group) > 128 {
		return invalid("group", group, "%d characters is too long (max 128)", len(group))
	}
	for i := 0; i < len(group); i++ {
		c := group[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == ':' || c == '.') {
			r, _ := utf8.DecodeRuneInString(group[i:])
			return invalid("group", group, "character %q is not allowed; use letters, digits, '_', '-', ':' and '.'", r)
		}
	}
	return nil
}

// Match reports whether topic matches pattern ('*' one segment, '>' one or
// more trailing segments). Wildcards never match a system topic ('$' prefix)
// unless the pattern itself starts with '$'.
func Match(pattern, topic string) bool {
	if pattern == topic {
		return true
	}
	if strings.HasPrefix(topic, "$") && !strings.HasPrefix(pattern, "$") {
		return false
	}
	for {
		pi := strings.IndexByte(pattern, '.')
		ti := strings.IndexByte(topic, '.')
		var pseg, tseg string
		if pi < 0 {
			pseg = pattern
		} else {
			pseg = pattern[:pi]
		}
		if ti < 0 {
			tseg = topic
		} else {
			tseg = topic[:ti]
		}
		if pseg == ">" {
			return tseg != ""
		}
		if pseg != "*" && pseg != tseg {
			return false
		}
		if pi < 0 || ti < 0 {
			return pi < 0 && ti < 0
		}
		pattern, topic = pattern[pi+1:], topic[ti+1:]
	}
}

// Limits bounds what a message may carry. The zero value is not useful; start
// from DefaultLimits.
type Limits struct {
	// MaxPayload is the largest payload in bytes. Default 1 MiB.
	MaxPayload int
	// MaxHeaders is the most headers a message may carry. Default 64.
	MaxHeaders int
	// MaxHeaderBytes bounds the sum of header name and value lengths.
	// Default 16 KiB.
	MaxHeaderBytes int
	// MaxKeyLen bounds the key. Default 1024 bytes.
	MaxKeyLen int
	// MaxIDLen bounds a caller-chosen ID. Default 128 bytes.
	MaxIDLen int
}

// HardMaxPayload is the largest payload any configuration may allow (64 MiB):
// one record must fit comfortably in a segment and in memory.
const HardMaxPayload = 64 << 20

// DefaultLimits returns the default limits: 1 MiB payload, 64 headers, 16 KiB
// of headers, 1 KiB keys and 128-byte IDs.
func DefaultLimits() Limits {
	return Limits{MaxPayload: 1 << 20, MaxHeaders: 64, MaxHeaderBytes: 16 << 10, MaxKeyLen: 1024, MaxIDLen: 128}
}

// Check validates the limits themselves.
func (l Limits) Check() error {
	if l.MaxPayload <= 0 || l.MaxPayload > HardMaxPayload {
		return invalid("limit", "", "max payload %d must be between 1 and %d bytes", l.MaxPayload, HardMaxPayload)
	}
	if l.MaxHeaders < 0 || l.MaxHeaderBytes < 0 || l.MaxKeyLen < 0 || l.MaxIDLen <= 0 {
		return invalid("limit", "", "header, key and ID limits must not be negative")
	}
	return nil
}

// Validate checks m against the limits: ID, key, header and payload sizes,
// header names, and that ExpiresAt is not before DeliverAt. It does not check
// the topic (see ValidateTopic) and does not modify m.
func (l Limits) Validate(m *Message) error {
	if len(m.Payload) > l.MaxPayload {
		return tooLarge("payload", "%d bytes exceeds the limit of %d bytes; split the message or raise the payload limit", len(m.Payload), l.MaxPayload)
	}
	if len(m.ID) > l.MaxIDLen {
		return tooLarge("id", "%d bytes exceeds the limit of %d bytes", len(m.ID), l.MaxIDLen)
	}
	if !utf8.ValidString(m.ID) {
		return invalid("id", m.ID, "not valid UTF-8")
	}
	if len(m.Key) > l.MaxKeyLen {
		return tooLarge("key", "%d bytes exceeds the limit of %d bytes", len(m.Key), l.MaxKeyLen)
	}
	if len(m.Headers) > l.MaxHeaders {
		return tooLarge("headers", "%d headers exceeds the limit of %d", len(m.Headers), l.MaxHeaders)
	}
	total := 0
	for k, v := range m.Headers {
		if k == "" {
			return invalid("header", k, "empty header name")
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; c <= ' ' || c >= 0x7f || c == ':' {
				return invalid("header", k, "header names must be printable ASCII without spaces or ':'")
			}
		}
		if !utf8.ValidString(v) {
			return invalid("header", k, "value is not valid UTF-8")
		}
		total += len(k) + len(v)
	}
	if total > l.MaxHeaderBytes {
		return tooLarge("headers", "%d bytes of headers exceeds the limit of %d bytes", total, l.MaxHeaderBytes)
	}
	if len(m.ContentType) > 255 {
		return tooLarge("content type", "%d bytes exceeds the limit of 255", len(m.ContentType))
	}
	if !m.ExpiresAt.IsZero() && !m.DeliverAt.IsZero() && m.ExpiresAt.Before(m.DeliverAt) {
		return invalid("expires-at", m.ExpiresAt.String(), "expires before its deliver-at time %s; it could never be delivered", m.DeliverAt)
	}
	return nil
}
