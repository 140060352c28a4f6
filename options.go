package switchboard

import (
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// SubscribeOption configures Subscribe. Every SubscribeOption is also a
// HandlerOption: it configures a handler's subscription.
type SubscribeOption interface {
	applyToSubscribe(*broker.SubscribeParams)
	HandlerOption
}

type subscribeOptionFunc func(*broker.SubscribeParams)

func (f subscribeOptionFunc) applyToSubscribe(p *broker.SubscribeParams) { f(p) }

// MaxAttempts sets how many deliveries a message gets before it is
// dead-lettered (default 5; negative: unlimited).
func MaxAttempts(n int) SubscribeOption {
	return subscribeOptionFunc(func(p *broker.SubscribeParams) { p.MaxAttempts = n })
}

// AckDeadline sets how long a delivery may stay unsettled before it is
// redelivered (default 30 s).
func AckDeadline(d time.Duration) SubscribeOption {
	return subscribeOptionFunc(func(p *broker.SubscribeParams) { p.AckDeadline = d })
}

// OrderedByKey delivers at most one message per key at a time, in publish
// order; other keys are not held back.
func OrderedByKey() SubscribeOption {
	return subscribeOptionFunc(func(p *broker.SubscribeParams) { p.OrderedByKey = true })
}

// MaxInFlight bounds unsettled deliveries held by this consumer (default 256).
func MaxInFlight(n int) SubscribeOption {
	return subscribeOptionFunc(func(p *broker.SubscribeParams) { p.MaxInFlight = n })
}

// Backoff sets the redelivery delay after a nack without an explicit delay or
// a missed deadline, as a function of the attempt that failed.
func Backoff(f func(attempt int) time.Duration) SubscribeOption {
	return subscribeOptionFunc(func(p *broker.SubscribeParams) { p.Backoff = f })
}

// FromEarliest starts a new group at the oldest retained message.
func FromEarliest() SubscribeOption {
	return subscribeOptionFunc(func(p *broker.SubscribeParams) { p.Start = broker.StartPosition{Kind: broker.StartEarliest} })
}

// FromLatest starts a new group with the messages published after it is
// created (the default).
func FromLatest() SubscribeOption {
	return subscribeOptionFunc(func(p *broker.SubscribeParams) { p.Start = broker.StartPosition{Kind: broker.StartLatest} })
}

// FromTime starts a new group at the first message published at or after t.
func FromTime(t time.Time) SubscribeOption {
	return subscribeOptionFunc(func(p *broker.SubscribeParams) { p.Start = broker.StartPosition{Kind: broker.StartTime, Time: t} })
}

// FromSeq starts a new group at sequence seq (sequences start at 1).
func FromSeq(seq uint64) SubscribeOption {
	return subscribeOptionFunc(func(p *broker.SubscribeParams) { p.Start = broker.StartPosition{Kind: broker.StartSeq, Seq: seq} })
}
