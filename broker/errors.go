package broker

import (
	"errors"
	"fmt"
)

// Sentinel errors that callers can tell apart with errors.Is. Backends wrap
// them with details (what, where, what to do).
var (
	// ErrNotSupported: the backend cannot honour an option or operation.
	ErrNotSupported = errors.New("not supported by this backend")
	// ErrClosed: the broker or subscription was closed.
	ErrClosed = errors.New("closed")
	// ErrTopicNotFound: the topic does not exist (and auto-creation is off).
	ErrTopicNotFound = errors.New("topic not found")
	// ErrGroupNotFound: the consumer group does not exist.
	ErrGroupNotFound = errors.New("group not found")
	// ErrAlreadyExists: a topic or group with that name already exists with
	// a different configuration.
	ErrAlreadyExists = errors.New("already exists")
	// ErrAlreadySettled: the delivery was already acked, nacked or termed.
	ErrAlreadySettled = errors.New("delivery already settled")
	// ErrDeliveryExpired: the delivery's deadline passed and the message was
	// handed out again; this settlement no longer applies.
	ErrDeliveryExpired = errors.New("delivery expired and was redelivered")
	// ErrNoResponders: a request found nobody subscribed to its topic.
	ErrNoResponders = errors.New("no responders")
	// ErrTimeout: a request got no reply within its timeout.
	ErrTimeout = errors.New("timed out")
	// ErrStorage: the backend could not store the data (disk full, I/O
	// error, corrupt file). Nothing was acknowledged.
	ErrStorage = errors.New("storage failure")
	// ErrLocked: the data directory is in use by another process.
	ErrLocked = errors.New("data directory locked")
	// ErrUnavailable: the backend server cannot be reached right now.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrBadURL: the backend URL cannot be used.
	ErrBadURL = errors.New("bad backend URL")
)

// NotSupportedError says which option a backend refused and what to do.
// It matches ErrNotSupported.
type NotSupportedError struct {
	Backend string // e.g. "redis-pubsub"
	Option  string // e.g. "consumer group"
	Hint    string // e.g. "use redis:// (Streams) for durable groups"
}

func (e *NotSupportedError) Error() string {
	s := fmt.Sprintf("%s: %s is not supported by this backend", e.Backend, e.Option)
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// Is makes NotSupportedError match ErrNotSupported.
func (e *NotSupportedError) Is(target error) bool { return target == ErrNotSupported }

// NotSupported returns a *NotSupportedError.
func NotSupported(backend, option, hint string) error {
	return &NotSupportedError{Backend: backend, Option: option, Hint: hint}
}
