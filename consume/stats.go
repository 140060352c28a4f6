package consume

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

// counters are one registration's running totals. The ones every message
// touches (hot) are also kept per worker, so that workers on different
// CPUs do not contend for their cache lines; totals add them up.
type counters struct {
	hot
	retried, deadLettered, duplicates, busy                   atomic.Int64
	stale, expired, panics, abandoned, inboxErrors, ackErrors atomic.Int64
	versionErrors, overtaken                                  atomic.Int64
	deadLetteredBy                                            [numReasons]atomic.Int64

	mu     sync.Mutex
	shards []*hot // one per worker ever started
}

// hot are the counters of the message path: received, acked, and the
// handler calls with their latency.
type hot struct {
	_                                     [64]byte // keep apart from the neighbours' lines
	received, acked, handled, handleNanos atomic.Int64
	latency                               histogram
	_                                     [64]byte
}

// newShard returns a worker's own hot counters.
func (c *counters) newShard() *hot {
	h := &hot{}
	c.mu.Lock()
	c.shards = append(c.shards, h)
	c.mu.Unlock()
	return h
}

// hotTotals are the hot counters summed over the registration and its
// workers.
type hotTotals struct {
	received, acked, handled, handleNanos int64
	buckets                               [len(latencyBucketsArr) + 1]int64
}

func (c *counters) hotTotals() hotTotals {
	c.mu.Lock()
	all := append([]*hot{&c.hot}, c.shards...)
	c.mu.Unlock()
	var t hotTotals
	for _, h := range all {
		t.received += h.received.Load()
		t.acked += h.acked.Load()
		t.handled += h.handled.Load()
		t.handleNanos += h.handleNanos.Load()
		for i := range t.buckets {
			t.buckets[i] += h.latency.buckets[i].Load()
		}
	}
	return t
}

func (c *hot) observe(d time.Duration) {
	c.handled.Add(1)
	c.handleNanos.Add(int64(d))
	c.latency.observe(d)
}

// dlReason is why a message was dead-lettered.
type dlReason int

const (
	reasonExpired dlReason = iota
	reasonDecode
	reasonPermanent
	reasonMaxAttempts
	numReasons
)

var reasonNames = [numReasons]string{"expired", "decode", "permanent", "max-attempts"}

func (r dlReason) String() string { return reasonNames[r] }

var latencyBucketNanos = func() [len(latencyBucketsArr)]int64 {
	var out [len(latencyBucketsArr)]int64
	for i, b := range latencyBucketsArr {
		out[i] = int64(b * 1e9)
	}
	return out
}()

// latencyBucketsArr are the upper bounds of the handler latency histogram,
// in seconds: 100µs to 1 min.
var latencyBucketsArr = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// histogram is a lock-free fixed-bucket histogram of handler latencies: one
// atomic add per observation (the count and sum are counters.handled and
// handleNanos).
type histogram struct {
	buckets [len(latencyBucketsArr) + 1]atomic.Int64 // per bucket, not cumulative; last is +Inf
}

func (h *histogram) observe(d time.Duration) {
	n := int64(d)
	i := 0
	for i < len(latencyBucketNanos) && n > latencyBucketNanos[i] {
		i++
	}
	h.buckets[i].Add(1)
}

// Stats are the running totals of one registration.
type Stats struct {
	Name, Topic, Group string
	// Received counts deliveries taken by a worker.
	Received int64
	// Acked counts messages settled as done (handled, duplicate or stale).
	Acked int64
	// Retried counts failed attempts handed back for another attempt.
	Retried int64
	// DeadLettered counts messages termed (decode, permanent, max-attempts,
	// expired).
	DeadLettered int64
	// Duplicates counts messages skipped because the inbox had them.
	Duplicates int64
	// Busy counts deliveries put back because a concurrent delivery of the
	// same ID held the inbox claim.
	Busy int64
	// Stale counts messages dropped by DropStale.
	Stale int64
	// Overtaken counts DropStale messages handled successfully while a
	// version of their key at or above theirs was recorded: two versions of
	// a key were in handlers at once (no OrderedByKey, or several processes
	// with emulated ordering), and this one's effect may have landed after
	// the newer one's. The record kept the newer version.
	Overtaken int64
	// Expired counts messages past their expiry, dead-lettered unhandled.
	Expired int64
	// Panics counts handler panics (retried like errors).
	Panics int64
	// Abandoned counts handlers that ignored their timeout and were left
	// running.
	Abandoned int64
	// InboxErrors counts inbox failures (message left for retry).
	InboxErrors int64
	// VersionErrors counts DropStale version store failures: a message left
	// for retry, or a version not recorded after its handler succeeded.
	VersionErrors int64
	// AckErrors counts failed acks (the message may come again).
	AckErrors int64
	// Handled counts handler calls; HandleTime is their total duration.
	Handled    int64
	HandleTime time.Duration
	// Waiting counts messages held for an emulated delayed retry and, where
	// the runtime emulates OrderedByKey, messages waiting behind an earlier
	// message of their key or for an in-runtime retry.
	Waiting int
}

// Stats returns the totals of every registration, in registration order.
func (r *Runtime) Stats() []Stats {
	r.mu.Lock()
	regs := append([]*registration(nil), r.regs...)
	r.mu.Unlock()
	out := make([]Stats, 0, len(regs))
	for _, g := range regs {
		c := &g.stats
		h := c.hotTotals()
		s := Stats{
			Name: g.cfg.name, Topic: g.cfg.sub.Topic, Group: g.cfg.sub.Group,
			Received: h.received, Acked: h.acked, Retried: c.retried.Load(),
			DeadLettered: c.deadLettered.Load(), Duplicates: c.duplicates.Load(), Busy: c.busy.Load(),
			Stale: c.stale.Load(), Overtaken: c.overtaken.Load(), Expired: c.expired.Load(),
			Panics: c.panics.Load(), Abandoned: c.abandoned.Load(), InboxErrors: c.inboxErrors.Load(),
			VersionErrors: c.versionErrors.Load(), AckErrors: c.ackErrors.Load(),
			Handled: h.handled, HandleTime: time.Duration(h.handleNanos),
		}
		if g.holds != nil {
			s.Waiting = g.holds.len()
		}
		if g.order != nil {
			s.Waiting += g.order.waitingCount()
		}
		out = append(out, s)
	}
	return out
}

// DeadLetter describes why a message was dead-lettered.
type DeadLetter struct {
	Reason   string // "max-attempts", "decode", "permanent", "expired", ...
	Error    string // the last handler error, if any
	Attempts string // attempts made, as the backend counted them
	Topic    string // the original topic
	Group    string
}

// DeadLetterInfo reads the dead-letter headers of m. The runtime terms a
// message with the reason "<reason>: <error text>"; a backend that keeps
// the error separately sets message.HeaderDLQError. Both are understood.
func DeadLetterInfo(m *message.Message) DeadLetter {
	dl := DeadLetter{
		Reason:   m.Header(message.HeaderDLQReason),
		Error:    m.Header(message.HeaderDLQError),
		Attempts: m.Header(message.HeaderDLQAttempts),
		Topic:    m.Header(message.HeaderDLQTopic),
		Group:    m.Header(message.HeaderDLQGroup),
	}
	if r, e, ok := strings.Cut(dl.Reason, ": "); ok {
		dl.Reason = r
		if dl.Error == "" {
			dl.Error = e
		}
	}
	return dl
}
