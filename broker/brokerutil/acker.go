package brokerutil

import (
	"context"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// NoopAcker settles ephemeral deliveries: they need no settlement, so every
// method succeeds and does nothing. Adapters embed it in an acker that adds
// Reply for request deliveries.
type NoopAcker struct{}

// Ack does nothing.
func (NoopAcker) Ack(context.Context, *broker.Delivery) error { return nil }

// Nack does nothing: an ephemeral delivery is never redelivered.
func (NoopAcker) Nack(context.Context, *broker.Delivery, time.Duration) error { return nil }

// Term does nothing: ephemeral subscriptions have no dead-letter topic.
func (NoopAcker) Term(context.Context, *broker.Delivery, string) error { return nil }

// Extend does nothing: ephemeral deliveries have no deadline.
func (NoopAcker) Extend(context.Context, *broker.Delivery, time.Duration) error { return nil }

// ReplyMessage checks resp against l and returns the copy to send as the
// reply, with a new ID when resp has none.
func ReplyMessage(l message.Limits, resp *message.Message) (*message.Message, error) {
	if err := l.Validate(resp); err != nil {
		return nil, err
	}
	m := resp.Clone()
	if m.ID == "" {
		m.ID = message.NewID()
	}
	return m, nil
}

// Request topics. A request travels on ReqPrefix+topic so that it reaches
// the topic's ephemeral subscribers (the responders) and is never stored in
// the topic's durable stream, queue or group.
const ReqPrefix = "_sbreq."
