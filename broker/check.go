package broker

import (
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

// PrepareMessages validates a publish against limits and the backend's
// capabilities, and fills in what the backend needs: a generated ID where none
// was given and the topic. It is shared by every backend so that they refuse
// the same things with the same words. It modifies the messages in place.
func PrepareMessages(caps Capabilities, limits message.Limits, p *PublishParams) error {
	if err := message.ValidateTopic(p.Topic); err != nil {
		return err
	}
	if len(p.Messages) == 0 {
		return &message.ValidationError{Field: "batch", Reason: "no messages to publish"}
	}
	if caps.MaxPayload > 0 && caps.MaxPayload < limits.MaxPayload {
		limits.MaxPayload = caps.MaxPayload
	}
	for i, m := range p.Messages {
		if m == nil {
			return &message.ValidationError{Field: "batch", Reason: fmt.Sprintf("message %d is nil", i)}
		}
		if err := limits.Validate(m); err != nil {
			if len(p.Messages) > 1 {
				return fmt.Errorf("message %d of batch: %w", i, err)
			}
			return err
		}
		if !m.DeliverAt.IsZero() && !caps.Delay && m.DeliverAt.After(time.Now()) {
			return NotSupported(caps.Name, "delayed delivery (deliver-at)", "publish without a delay, or use a backend with delay")
		}
		if !m.ExpiresAt.IsZero() && !caps.Expiry {
			return NotSupported(caps.Name, "message expiry (expires-at)", "publish without an expiry")
		}
		if m.ID == "" {
			m.ID = message.NewID()
		}
		m.Topic = p.Topic
	}
	return nil
}

// CheckSubscribe validates subscription parameters against the backend's
// capabilities and refuses, with a NotSupportedError, any option the backend
// cannot honour.
func CheckSubscribe(caps Capabilities, p *SubscribeParams) error {
	pattern := message.IsPattern(p.Topic)
	if pattern {
		if err := message.ValidatePattern(p.Topic); err != nil {
			return err
		}
		if !caps.Patterns {
			return NotSupported(caps.Name, "topic pattern "+p.Topic, "subscribe to a concrete topic")
		}
	} else if err := message.ValidateTopic(p.Topic); err != nil {
		return err
	}
	if p.Group == "" {
		if !caps.Ephemeral {
			return NotSupported(caps.Name, "ephemeral subscription (no group)", "give a consumer group name")
		}
		if p.OrderedByKey || p.MaxAttempts != 0 || p.AckDeadline != 0 || p.Start.Kind != StartLatest || p.Backoff != nil {
			return &message.ValidationError{Field: "subscription", Reason: "ordering, attempts, deadlines, backoff and start positions need a consumer group; give a group name"}
		}
		return nil
	}
	if err := message.ValidateGroup(p.Group); err != nil {
		return err
	}
	if !caps.Groups {
		return NotSupported(caps.Name, "consumer group", "this backend keeps nothing; subscribe without a group")
	}
	if p.OrderedByKey && !caps.OrderedByKey {
		return NotSupported(caps.Name, "per-key ordering", "")
	}
	if p.Start.Kind != StartLatest && !caps.StartPositions {
		return NotSupported(caps.Name, "start position other than latest", "")
	}
	if p.Start.Kind == StartSeq && p.Start.Seq == 0 {
		return &message.ValidationError{Field: "start", Reason: "sequence numbers start at 1"}
	}
	if p.Start.Kind == StartTime && p.Start.Time.IsZero() {
		return &message.ValidationError{Field: "start", Reason: "start time is zero"}
	}
	if p.AckDeadline < 0 || p.MaxInFlight < 0 {
		return &message.ValidationError{Field: "subscription", Reason: "ack deadline and max in flight must not be negative"}
	}
	if p.AckDeadline != 0 && p.AckDeadline < 10*time.Millisecond {
		return &message.ValidationError{Field: "ack deadline", Reason: fmt.Sprintf("%s is too short (minimum 10ms)", p.AckDeadline)}
	}
	return nil
}
