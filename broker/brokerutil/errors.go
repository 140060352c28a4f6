package brokerutil

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// DefaultDialTimeout bounds connecting to a server when the URL gives no
// dial_timeout.
const DefaultDialTimeout = 5 * time.Second

// Unreachable wraps a dial failure: it names the backend and the address,
// and matches broker.ErrUnavailable.
func Unreachable(backend, addr string, err error) error {
	return fmt.Errorf("%s: cannot connect to %s: %w (%v); check that the server runs and the URL is right", backend, addr, broker.ErrUnavailable, err)
}

// BadURL returns an error matching broker.ErrBadURL.
func BadURL(backend string, u *url.URL, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %q: %s", broker.ErrBadURL, backend, broker.Redact(u.String()), fmt.Sprintf(format, args...))
}

// ParseURL parses rawURL for backend: its scheme must be one of schemes
// and it must name a host. The errors match broker.ErrBadURL, show the URL
// with its password redacted, and end with example as the URL to use.
func ParseURL(backend, rawURL, example string, schemes ...string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %q: %v", broker.ErrBadURL, backend, broker.Redact(rawURL), err)
	}
	if !slices.Contains(schemes, u.Scheme) {
		return nil, BadURL(backend, u, "scheme must be %s://; use %s", strings.Join(schemes, ":// or "), example)
	}
	if u.Host == "" {
		return nil, BadURL(backend, u, "no host; use %s", example)
	}
	return u, nil
}

// Query reads the known query parameters of u and refuses unknown ones, so a
// typo in a URL is an error rather than silently ignored.
type Query struct {
	u       *url.URL
	backend string
	vals    url.Values
	known   map[string]bool
	err     error
}

// NewQuery starts reading u's query.
func NewQuery(backend string, u *url.URL) *Query {
	return &Query{u: u, backend: backend, vals: u.Query(), known: map[string]bool{}}
}

// String returns parameter name or def.
func (q *Query) String(name, def string) string {
	q.known[name] = true
	if v := q.vals.Get(name); v != "" {
		return v
	}
	return def
}

// Duration returns parameter name parsed as a Go duration, or def.
func (q *Query) Duration(name string, def time.Duration) time.Duration {
	s := q.String(name, "")
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		q.fail("%s=%q is not a positive duration such as 5s", name, s)
		return def
	}
	return d
}

// Int returns parameter name parsed as an integer, or def.
func (q *Query) Int(name string, def int64) int64 {
	s := q.String(name, "")
	if s == "" {
		return def
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		q.fail("%s=%q is not a non-negative integer", name, s)
		return def
	}
	return n
}

// Bool returns parameter name parsed as a boolean, or def.
func (q *Query) Bool(name string, def bool) bool {
	s := q.String(name, "")
	if s == "" {
		return def
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		q.fail("%s=%q is not true or false", name, s)
		return def
	}
	return b
}

// Fail records an error about the URL (the first one wins).
func (q *Query) fail(format string, args ...any) {
	if q.err == nil {
		q.err = BadURL(q.backend, q.u, format, args...)
	}
}

// Fail records an error about the URL (the first one wins).
func (q *Query) Fail(format string, args ...any) { q.fail(format, args...) }

// Err returns the first error, or one naming the first unknown parameter.
// Call it after reading every parameter.
func (q *Query) Err() error {
	if q.err != nil {
		return q.err
	}
	for k := range q.vals {
		if !q.known[k] {
			return BadURL(q.backend, q.u, "unknown parameter %q", k)
		}
	}
	return nil
}

// CtxErr maps a context error to a wrapped one that still matches
// context.Canceled / context.DeadlineExceeded, or returns err unchanged.
func CtxErr(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%s: %w (%v)", what, ctx.Err(), err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
