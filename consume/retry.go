package consume

import (
	"errors"
	"math/rand/v2"
	"time"
)

// BackoffPolicy gives the delay before the next attempt after attempt
// (1-based) failed.
type BackoffPolicy func(attempt int) time.Duration

// Exponential returns a policy that waits base after the first failure and
// doubles up to limit, with full jitter in [d/2, d] so that retries of many
// messages that failed together spread out instead of hammering a recovering
// dependency. A base <= 0 is taken as 100ms, a limit below base as base.
func Exponential(base, limit time.Duration) BackoffPolicy {
	if base <= 0 {
		base = 100 * time.Millisecond
	}
	if limit < base {
		limit = base
	}
	return func(attempt int) time.Duration {
		if attempt < 1 {
			attempt = 1
		}
		d := base
		for i := 1; i < attempt && d < limit; i++ {
			d *= 2
		}
		if d > limit {
			d = limit
		}
		half := d / 2
		return half + time.Duration(rand.Int64N(int64(d-half)+1))
	}
}

// Constant returns a policy that always waits d (no jitter); for tests and
// for callers that add their own jitter.
func Constant(d time.Duration) BackoffPolicy { return func(int) time.Duration { return d } }

// permanentError marks an error that must not be retried.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that the runtime does not retry the message: it is
// dead-lettered at once with reason "permanent" and err's text. Use it for
// errors that no retry can fix (validation failures, unknown entities).
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err (or an error it wraps) was made by
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// DecodeError is returned (and logged) when a payload cannot be decoded into
// the handler's type. Such a message is dead-lettered at once with reason
// "decode"; it is never retried, because retrying cannot change its bytes.
type DecodeError struct {
	ContentType string
	Type        string
	Err         error
}

func (e *DecodeError) Error() string {
	ct := e.ContentType
	if ct == "" {
		ct = "no content type"
	}
	return "decode " + ct + " payload into " + e.Type + ": " + e.Err.Error()
}

func (e *DecodeError) Unwrap() error { return e.Err }

// PanicError is the error a handler panic is turned into. The stack is
// logged with it.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return "handler panicked: " + fmtAny(e.Value) }
