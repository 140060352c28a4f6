package brokerutil

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// Defaults every adapter applies when SubscribeParams leave a field zero.
const (
	DefaultMaxAttempts = 5
	DefaultAckDeadline = 30 * time.Second
	DefaultMaxInFlight = 256
)

// Settings are a group subscription's parameters with the defaults applied.
type Settings struct {
	MaxAttempts int // < 0: unlimited
	AckDeadline time.Duration
	Backoff     func(attempt int) time.Duration
	MaxInFlight int
}

// SettingsOf applies the defaults to p.
func SettingsOf(p *broker.SubscribeParams) Settings {
	s := Settings{MaxAttempts: p.MaxAttempts, AckDeadline: p.AckDeadline, Backoff: p.Backoff, MaxInFlight: p.MaxInFlight}
	if s.MaxAttempts == 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	if s.AckDeadline == 0 {
		s.AckDeadline = DefaultAckDeadline
	}
	if s.Backoff == nil {
		s.Backoff = DefaultBackoff
	}
	if s.MaxInFlight == 0 {
		s.MaxInFlight = DefaultMaxInFlight
	}
	return s
}

// Exhausted reports whether attempt was the last one allowed.
func (s Settings) Exhausted(attempt int) bool { return s.MaxAttempts > 0 && attempt >= s.MaxAttempts }

// Delay returns the redelivery delay after a nack of attempt: the explicit
// delay when given, else the backoff.
func (s Settings) Delay(attempt int, explicit time.Duration) time.Duration {
	if explicit > 0 {
		return explicit
	}
	d := s.Backoff(attempt)
	if d < 0 {
		d = 0
	}
	return d
}

// DefaultBackoff is the redelivery backoff when a subscription gives none:
// exponential from 1 s, doubling per attempt up to 1 min, with ±20% jitter.
func DefaultBackoff(attempt int) time.Duration {
	d := time.Second
	for i := 1; i < attempt && d < time.Minute; i++ {
		d *= 2
	}
	d = min(d, time.Minute)
	return jitter(d)
}

func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d)/5*2+1))
}

// ReconnectBackoff is the wait before reconnect try n (0-based): 100 ms
// doubling to 5 s, with jitter.
func ReconnectBackoff(n int) time.Duration {
	d := 100 * time.Millisecond
	for i := 0; i < n && d < 5*time.Second; i++ {
		d *= 2
	}
	return jitter(min(d, 5*time.Second))
}

// Retry calls f until it succeeds or ctx ends, waiting ReconnectBackoff
// between tries. onErr, when not nil, sees each failure.
func Retry(ctx context.Context, f func(ctx context.Context) error, onErr func(error)) error {
	for n := 0; ; n++ {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if onErr != nil {
			onErr(err)
		}
		t := time.NewTimer(ReconnectBackoff(n))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Dead-letter reasons set by the adapters.
const (
	ReasonMaxAttempts = "max-attempts"
	ReasonExpired     = "expired"
	ReasonTerm        = "term"
)

// DeadLetter builds the message that goes to the group's dead-letter topic
// (message.DLQTopic(group)): the original ID, key, payload, content type and
// headers, plus the reason, the attempts made, the original topic, sequence
// and group.
func DeadLetter(m *message.Message, info message.Info, reason string) *message.Message {
	if reason == "" {
		reason = ReasonTerm
	}
	dl := m.Clone()
	dl.Topic = message.DLQTopic(info.Group)
	dl.PublishedAt = time.Time{}
	dl.DeliverAt = time.Time{}
	dl.ExpiresAt = time.Time{} // a dead letter must not expire again
	dl.SetHeader(message.HeaderDLQReason, reason)
	dl.SetHeader(message.HeaderDLQAttempts, strconv.Itoa(info.Attempt))
	dl.SetHeader(message.HeaderDLQTopic, m.Topic)
	dl.SetHeader(message.HeaderDLQGroup, info.Group)
	if info.Seq != 0 {
		dl.SetHeader(message.HeaderDLQSeq, strconv.FormatUint(info.Seq, 10))
	}
	if !m.ExpiresAt.IsZero() {
		dl.SetHeader("sb-dlq-expires-at", m.ExpiresAt.UTC().Format(TimeFormat))
	}
	return dl
}

// Replay turns a dead letter of group back into the message to republish
// on its original topic (returned): the dead-letter headers are removed and
// message.HeaderReplayFor names the group, so that only that group handles
// it and the topic's other groups skip it. ok is false when dl does not say
// which topic it came from.
func Replay(dl *message.Message, group string) (m *message.Message, topic string, ok bool) {
	topic = dl.Header(message.HeaderDLQTopic)
	if topic == "" {
		return nil, "", false
	}
	m = dl.Clone()
	m.Topic = topic
	m.PublishedAt = time.Time{}
	for _, h := range []string{message.HeaderDLQReason, message.HeaderDLQError, message.HeaderDLQAttempts,
		message.HeaderDLQTopic, message.HeaderDLQSeq, message.HeaderDLQGroup, "sb-dlq-expires-at"} {
		delete(m.Headers, h)
	}
	m.SetHeader(message.HeaderReplayFor, group)
	return m, topic, true
}
