package broker

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

// Acker settles deliveries for a backend. The *Delivery wrapper guarantees
// that each delivery reaches the Acker at most once with a final verdict
// (Ack, Nack, Term); Extend may be called any number of times before that.
type Acker interface {
	Ack(ctx context.Context, d *Delivery) error
	Nack(ctx context.Context, d *Delivery, delay time.Duration) error
	Term(ctx context.Context, d *Delivery, reason string) error
	Extend(ctx context.Context, d *Delivery, by time.Duration) error
}

// AsyncAcker is implemented by the Acker of a backend whose Ack waits for a
// round trip to its server. AckAsync starts the ack of d and returns without
// waiting; done is then called exactly once with the error Ack would have
// returned: on another goroutine once the server answered, or before
// AckAsync returns when the ack cannot be sent (expired, closed). The
// backend bounds the wait with its own timeouts, so done is called even if
// the server never answers; ctx applies until the ack is sent. done must
// not block.
type AsyncAcker interface {
	AckAsync(ctx context.Context, d *Delivery, done func(error))
}

// Delivery is one message handed to one consumer. Its methods are safe for
// concurrent use; the first of Ack, Nack or Term settles it and later ones
// return ErrAlreadySettled.
type Delivery struct {
	// Message as stored (the consumer must not modify it).
	Message *message.Message
	// Info is the delivery metadata (group, sequence, attempt, ...).
	Info message.Info
	// Token lets a backend find its own state; opaque to users.
	Token any

	acker   Acker
	settled atomic.Bool
}

// NewDelivery is for backends: it wraps a message with its metadata and the
// Acker that settles it. A nil acker makes an ephemeral delivery whose
// settlement methods are no-ops; a backend with request/reply passes an acker
// that implements Replier even for ephemeral deliveries.
func NewDelivery(m *message.Message, info message.Info, acker Acker, token any) *Delivery {
	return &Delivery{Message: m, Info: info, acker: acker, Token: token}
}

func (d *Delivery) settle(op string) error {
	if !d.settled.CompareAndSwap(false, true) {
		return fmt.Errorf("%s of %s: %w", op, d.describe(), ErrAlreadySettled)
	}
	return nil
}

func (d *Delivery) describe() string {
	if d.Info.Seq != 0 {
		return fmt.Sprintf("message %s (topic %q, seq %d, group %q, attempt %d)", d.Message.ID, d.Message.Topic, d.Info.Seq, d.Info.Group, d.Info.Attempt)
	}
	return fmt.Sprintf("message %s (topic %q, group %q)", d.Message.ID, d.Message.Topic, d.Info.Group)
}

// Ack marks the message done for this group: it is never delivered to the
// group again (except after a crash that lost the ack, which at-least-once
// delivery allows). It fails with ErrDeliveryExpired when the deadline passed
// and the message was handed out again, and with ErrClosed after the
// subscription closed. A failed settlement is final for this Delivery: the
// message comes back after its deadline.
func (d *Delivery) Ack(ctx context.Context) error {
	if err := d.settle("ack"); err != nil {
		return err
	}
	if d.acker == nil {
		return nil
	}
	return d.acker.Ack(ctx, d)
}

// AckAsync is Ack without the wait: it starts the ack and returns, and
// done receives exactly what Ack would have returned, once. A nil error
// carries the same guarantee as a nil Ack: the message is not delivered to
// the group again. Acks started together share round trips to the server,
// so one goroutine can keep many in flight; that is how the consumer
// runtime acks.
//
// On a backend whose Ack does not wait for the server (AcksAsync is false),
// AckAsync acks at once and calls done before it returns. Otherwise done
// runs on another goroutine once the server answered (or before AckAsync
// returns when the ack cannot be sent at all), and must not block: hand
// its result off.
func (d *Delivery) AckAsync(ctx context.Context, done func(error)) {
	if err := d.settle("ack"); err != nil {
		done(err)
		return
	}
	if d.acker == nil {
		done(nil)
		return
	}
	if a, ok := d.acker.(AsyncAcker); ok {
		a.AckAsync(ctx, d, done)
		return
	}
	done(d.acker.Ack(ctx, d))
}

// AcksAsync reports whether AckAsync returns before the ack is confirmed,
// that is whether the backend's Ack waits for a round trip to its server.
func (d *Delivery) AcksAsync() bool {
	_, ok := d.acker.(AsyncAcker)
	return ok
}

// Nack asks for redelivery after delay (0: the group's backoff). When the
// attempts are exhausted the message goes to the dead-letter topic instead.
func (d *Delivery) Nack(ctx context.Context, delay time.Duration) error {
	if err := d.settle("nack"); err != nil {
		return err
	}
	if d.acker == nil {
		return nil
	}
	return d.acker.Nack(ctx, d, delay)
}

// Term dead-letters the message now with reason, without further attempts.
func (d *Delivery) Term(ctx context.Context, reason string) error {
	if err := d.settle("term"); err != nil {
		return err
	}
	if d.acker == nil {
		return nil
	}
	return d.acker.Term(ctx, d, reason)
}

// Extend pushes the delivery's deadline to now+by. Info.Deadline keeps the
// deadline the delivery was handed out with.
func (d *Delivery) Extend(ctx context.Context, by time.Duration) error {
	if d.settled.Load() {
		return fmt.Errorf("extend of %s: %w", d.describe(), ErrAlreadySettled)
	}
	if d.acker == nil {
		return nil
	}
	return d.acker.Extend(ctx, d, by)
}

// Settled reports whether Ack, Nack or Term was called.
func (d *Delivery) Settled() bool { return d.settled.Load() }

// Reply answers a request delivery (one whose message has a reply address).
// It fails with ErrNotSupported when the backend has no request/reply.
func (d *Delivery) Reply(ctx context.Context, resp *message.Message) error {
	if d.Message.Header(message.HeaderReplyTo) == "" {
		return fmt.Errorf("reply to %s: the message is not a request (no %s header)", d.describe(), message.HeaderReplyTo)
	}
	r, ok := d.acker.(Replier)
	if !ok {
		return fmt.Errorf("reply to %s: %w", d.describe(), ErrNotSupported)
	}
	return r.Reply(ctx, d.Message, resp)
}
