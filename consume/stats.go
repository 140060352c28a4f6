package consume

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

// counters are one registration's running totals.
type counters struct {
	received, acked, retried, deadLettered, duplicates, busy  atomic.Int64
	stale, expired, panics, abandoned, inboxErrors, ackErrors atomic.Int64
	handled, handleNanos                                      atomic.Int64
}

func (c *counters) observe(d time.Duration) {
	c.handled.Add(1)
	c.handleNanos.Add(int64(d))
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
	// Expired counts messages past their expiry, dead-lettered unhandled.
	Expired int64
	// Panics counts handler panics (retried like errors).
	Panics int64
	// Abandoned counts handlers that ignored their timeout and were left
	// running.
	Abandoned int64
	// InboxErrors counts inbox failures (message left for retry).
	InboxErrors int64
	// AckErrors counts failed acks (the message may come again).
	AckErrors int64
	// Handled counts handler calls; HandleTime is their total duration.
	Handled    int64
	HandleTime time.Duration
	// Waiting counts messages held for an emulated delayed retry.
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
		s := Stats{
			Name: g.cfg.name, Topic: g.cfg.sub.Topic, Group: g.cfg.sub.Group,
			Received: c.received.Load(), Acked: c.acked.Load(), Retried: c.retried.Load(),
			DeadLettered: c.deadLettered.Load(), Duplicates: c.duplicates.Load(), Busy: c.busy.Load(),
			Stale: c.stale.Load(), Expired: c.expired.Load(), Panics: c.panics.Load(),
			Abandoned: c.abandoned.Load(), InboxErrors: c.inboxErrors.Load(), AckErrors: c.ackErrors.Load(),
			Handled: c.handled.Load(), HandleTime: time.Duration(c.handleNanos.Load()),
		}
		if g.holds != nil {
			s.Waiting = g.holds.len()
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
