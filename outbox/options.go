package outbox

import (
	"log/slog"
	"time"
)

// Option configures Migrate and NewRelay.
type Option func(*config)

type config struct {
	table          string
	batch          int
	poll           time.Duration
	standbyPoll    time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration
	leaseTTL       time.Duration
	publishTimeout time.Duration
	log            *slog.Logger
}

func defaults() config {
	return config{
		table:          DefaultTable,
		batch:          500,
		poll:           100 * time.Millisecond,
		standbyPoll:    time.Second,
		minBackoff:     100 * time.Millisecond,
		maxBackoff:     10 * time.Second,
		leaseTTL:       15 * time.Second,
		publishTimeout: 30 * time.Second,
	}
}

// WithTable names the outbox table (default DefaultTable); it must match the
// table the application publishes to (New).
func WithTable(name string) Option { return func(c *config) { c.table = name } }

// BatchSize is the most rows the relay reads and forwards per cycle (default
// 500). A full batch is followed at once by the next one.
func BatchSize(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.batch = n
		}
	}
}

// PollInterval is how long the active relay waits after finding no rows
// before it looks again (default 100 ms): the delivery latency of a message
// committed while the relay is idle.
func PollInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.poll = d
		}
	}
}

// StandbyInterval is how often a relay that is not the active one tries to
// take over (default 1 s).
func StandbyInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.standbyPoll = d
		}
	}
}

// Backoff bounds the wait after a failed cycle (backend or database down):
// it starts at min, doubles per consecutive failure up to max, with jitter,
// and resets after a successful cycle. Defaults 100 ms and 10 s.
func Backoff(min, max time.Duration) Option {
	return func(c *config) {
		if min > 0 {
			c.minBackoff = min
		}
		if max >= c.minBackoff {
			c.maxBackoff = max
		}
	}
}

// LeaseTTL is how long an SQLite relay lease lasts without renewal (default
// 15 s): a relay that dies without releasing it is replaced after at most
// this. The active relay renews it every TTL/3 and never publishes past its
// expiry. PostgreSQL uses an advisory lock instead and ignores this.
func LeaseTTL(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.leaseTTL = d
		}
	}
}

// PublishTimeout bounds one publish to the backend (default 30 s); a
// publish that takes longer counts as failed and is retried.
func PublishTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.publishTimeout = d
		}
	}
}

// WithLogger sets the relay's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }
