package embedded

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// Durability says when a publish is acknowledged.
type Durability int

const (
	// DurabilityFsync (the default) acknowledges a publish only after its
	// records are written and fdatasync'd: an acknowledged message survives
	// a crash or power loss. Concurrent publishes share one fsync (group
	// commit).
	DurabilityFsync Durability = iota
	// DurabilityNone acknowledges after the write reaches the operating
	// system: acknowledged messages survive a crash of the process but can
	// be lost on power failure or a kernel crash.
	DurabilityNone
)

func (d Durability) String() string {
	if d == DurabilityNone {
		return "os-buffered (no fsync)"
	}
	return "fsync-before-ack"
}

type options struct {
	durability     Durability
	dedupWindow    time.Duration
	dedupMax       int
	segmentBytes   int64
	repair         bool
	limits         message.Limits
	autoCreate     bool
	maxAttempts    int
	ackDeadline    time.Duration
	maxInFlight    int
	groupMaxQueued int
	checkpoint     time.Duration
	janitor        time.Duration
}

func defaultOptions() options {
	return options{
		durability:     DurabilityFsync,
		dedupWindow:    2 * time.Minute,
		dedupMax:       1 << 20,
		segmentBytes:   64 << 20,
		limits:         message.DefaultLimits(),
		autoCreate:     true,
		maxAttempts:    5,
		ackDeadline:    30 * time.Second,
		maxInFlight:    256,
		groupMaxQueued: 10000,
		checkpoint:     100 * time.Millisecond,
		janitor:        time.Second,
	}
}

// Option configures Open.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithDurability sets when publishes are acknowledged (default
// DurabilityFsync).
func WithDurability(d Durability) Option { return optionFunc(func(o *options) { o.durability = d }) }

// WithDedupWindow sets how long a caller-chosen message ID is remembered per
// topic (default 2 minutes; 0 disables dedup).
func WithDedupWindow(d time.Duration) Option {
	return optionFunc(func(o *options) { o.dedupWindow = d })
}

// WithDedupMaxEntries bounds the dedup index per topic (default 1,048,576
// IDs). When full the oldest IDs are forgotten first.
func WithDedupMaxEntries(n int) Option { return optionFunc(func(o *options) { o.dedupMax = n }) }

// WithSegmentBytes sets the size at which a topic starts a new segment file
// (default 64 MiB). Retention removes whole segments.
func WithSegmentBytes(n int64) Option { return optionFunc(func(o *options) { o.segmentBytes = n }) }

// WithLimits sets the message limits (default message.DefaultLimits()).
func WithLimits(l message.Limits) Option { return optionFunc(func(o *options) { o.limits = l }) }

// WithAutoCreateTopics sets whether publishing to or subscribing to an unknown
// topic creates it (default true). When false such calls fail with
// broker.ErrTopicNotFound.
func WithAutoCreateTopics(on bool) Option { return optionFunc(func(o *options) { o.autoCreate = on }) }

// WithRepair makes Open cut a corrupt segment at the first bad record instead
// of failing. The records after it are lost; use it only after a failed Open
// told you which file is damaged.
func WithRepair() Option { return optionFunc(func(o *options) { o.repair = true }) }

// WithGroupDefaults sets the defaults of new subscriptions: max attempts
// (default 5), ack deadline (default 30 s) and max in flight per consumer
// (default 256).
func WithGroupDefaults(maxAttempts int, ackDeadline time.Duration, maxInFlight int) Option {
	return optionFunc(func(o *options) {
		o.maxAttempts, o.ackDeadline, o.maxInFlight = maxAttempts, ackDeadline, maxInFlight
	})
}

// WithGroupMaxQueued bounds the messages a group holds in memory that are not
// yet handed out (waiting for a key, a consumer or a retry delay), per group
// (default 10,000). Reading from the log pauses while it is reached.
func WithGroupMaxQueued(n int) Option { return optionFunc(func(o *options) { o.groupMaxQueued = n }) }

func (o *options) validate() error {
	if err := o.limits.Check(); err != nil {
		return err
	}
	if o.segmentBytes < 4<<10 {
		return fmt.Errorf("%w: segment size %d is below the 4 KiB minimum", broker.ErrBadURL, o.segmentBytes)
	}
	if o.dedupWindow < 0 || o.dedupMax <= 0 {
		return fmt.Errorf("%w: dedup window must be >= 0 and max entries > 0", broker.ErrBadURL)
	}
	if o.maxInFlight <= 0 || o.ackDeadline <= 0 || o.groupMaxQueued <= 0 {
		return fmt.Errorf("%w: max in flight, ack deadline and group queue must be positive", broker.ErrBadURL)
	}
	return nil
}

// optionsFromURL reads query parameters of an embedded:// URL:
//
//	durability=fsync|none   dedup_window=2m   dedup_max=1048576
//	segment_bytes=67108864  max_payload=1048576   auto_create=true|false
//	repair=truncate         memory (no value: a temporary directory, removed on Close)
func optionsFromURL(u *url.URL) ([]Option, bool, error) {
	q := u.Query()
	var opts []Option
	bad := func(k, v, want string) error {
		return fmt.Errorf("%w: embedded URL parameter %s=%q: want %s", broker.ErrBadURL, k, v, want)
	}
	memory := false
	for k, vs := range q {
		v := vs[0]
		switch k {
		case "memory":
			memory = true
		case "durability":
			switch v {
			case "fsync", "":
				opts = append(opts, WithDurability(DurabilityFsync))
			case "none":
				opts = append(opts, WithDurability(DurabilityNone))
			default:
				return nil, false, bad(k, v, "fsync or none")
			}
		case "dedup_window":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return nil, false, bad(k, v, "a duration such as 2m")
			}
			opts = append(opts, WithDedupWindow(d))
		case "dedup_max", "segment_bytes", "max_payload":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return nil, false, bad(k, v, "a positive integer")
			}
			switch k {
			case "dedup_max":
				opts = append(opts, WithDedupMaxEntries(int(n)))
			case "segment_bytes":
				opts = append(opts, WithSegmentBytes(n))
			default:
				opts = append(opts, optionFunc(func(o *options) { o.limits.MaxPayload = int(n) }))
			}
		case "auto_create":
			on, err := strconv.ParseBool(v)
			if err != nil {
				return nil, false, bad(k, v, "true or false")
			}
			opts = append(opts, WithAutoCreateTopics(on))
		case "repair":
			if v != "truncate" {
				return nil, false, bad(k, v, "truncate")
			}
			opts = append(opts, WithRepair())
		default:
			return nil, false, fmt.Errorf("%w: unknown embedded URL parameter %q (known: durability, dedup_window, dedup_max, segment_bytes, max_payload, auto_create, repair, memory)", broker.ErrBadURL, k)
		}
	}
	return opts, memory, nil
}
