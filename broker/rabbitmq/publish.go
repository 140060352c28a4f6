package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// publisher is a channel in confirm mode shared by all publishes of a
// connection.
type publisher struct {
	b       *Broker
	ch      *amqp.Channel
	returns chan amqp.Return

	mu       sync.Mutex
	returned map[string]int // message-id -> returns not yet claimed
}

func (b *Broker) publisher(ctx context.Context) (*publisher, error) {
	for {
		b.mu.Lock()
		pub := b.pub
		b.mu.Unlock()
		if pub != nil && !pub.ch.IsClosed() {
			return pub, nil
		}
		conn, err := b.connection(ctx)
		if err != nil {
			return nil, err
		}
		b.mu.Lock()
		if b.pub != nil && !b.pub.ch.IsClosed() {
			b.mu.Unlock()
			continue
		}
		ch, err := conn.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			b.mu.Unlock()
			if conn.IsClosed() {
				continue // reconnecting: wait in connection()
			}
			return nil, fmt.Errorf("%s: open a publisher channel on %s: %w: %w", backendName, b.cfg.addr, broker.ErrUnavailable, err)
		}
		pub = &publisher{b: b, ch: ch, returns: ch.NotifyReturn(make(chan amqp.Return, 1024)), returned: map[string]int{}}
		// amqp091's reader goroutine hands returns over with a blocking
		// send (dropping them after 5s): a full returns channel would stall
		// the whole connection. Publishes claim their returns (collect),
		// but one that gives up early (its context ended, or an earlier
		// message of its batch came back) leaves the rest unclaimed, so
		// every confirm also moves the returns received so far into the
		// map. Collecting under the mutex, never holding a return outside
		// it, keeps claimReturn exact: the return of a message always
		// precedes its confirm. Only mandatory publishes come back.
		if b.cfg.mandatory {
			confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1024))
			go func() {
				for range confirms {
					pub.mu.Lock()
					pub.collect()
					pub.mu.Unlock()
				}
			}()
		}
		b.pub = pub
		b.mu.Unlock()
		return pub, nil
	}
}

// collect moves returned messages from the channel into the map. A return
// comes before the confirm of the same message, so after a confirm its
// return (if any) is already in the channel.
func (p *publisher) collect() {
	for {
		select {
		case r, ok := <-p.returns:
			if !ok {
				return // the channel closed
			}
			p.returned[r.MessageId]++
		default:
			return
		}
	}
}

func (p *publisher) claimReturn(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.collect()
	if p.returned[id] > 0 {
		p.returned[id]--
		if p.returned[id] == 0 {
			delete(p.returned, id)
		}
		return true
	}
	return false
}

func (p *publisher) publish(ctx context.Context, exchange, key string, mandatory bool, msgs []amqp.Publishing) error {
	dcs := make([]*amqp.DeferredConfirmation, len(msgs))
	for i, m := range msgs {
		dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, mandatory, false, m)
		if err != nil {
			return p.b.opErr(ctx, fmt.Sprintf("publish to %s", key), err)
		}
		dcs[i] = dc
	}
	for i, dc := range dcs {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return p.b.opErr(ctx, fmt.Sprintf("confirm of message %d to %s", i, key), err)
		}
		if !ok {
			return fmt.Errorf("%s: RabbitMQ refused message %d to %s (nack): %w", backendName, i, key, broker.ErrStorage)
		}
		if mandatory && p.claimReturn(msgs[i].MessageId) {
			return fmt.Errorf("%s: message %s to %q was returned as unroutable: no group or subscriber is bound to the topic, and mandatory=true: %w", backendName, msgs[i].MessageId, key, broker.ErrTopicNotFound)
		}
	}
	return nil
}

// opErr wraps an AMQP error with what was being done.
func (b *Broker) opErr(ctx context.Context, what string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %s: %w", backendName, what, ctx.Err())
	case errors.Is(err, amqp.ErrClosed) || isHardError(err):
		if b.isClosed() {
			return fmt.Errorf("%s: %s: %w", backendName, what, broker.ErrClosed)
		}
		if errors.Is(err, amqp.ErrClosed) {
			return fmt.Errorf("%s: %s: connection to %s lost (reconnecting): %w", backendName, what, b.cfg.addr, broker.ErrUnavailable)
		}
		return fmt.Errorf("%s: %s: connection to %s lost (reconnecting): %w (%v)", backendName, what, b.cfg.addr, broker.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %s: %w", backendName, what, err)
}

// isHardError reports a connection exception (or a dropped connection)
// reported by amqp091 as the reason a channel closed.
func isHardError(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && !ae.Recover
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// ephemeralAcker settles nothing and answers requests.
type ephemeralAcker struct {
	brokerutil.NoopAcker
	b *Broker
}

// Reply publishes resp to the request's direct reply-to address.
func (a ephemeralAcker) Reply(ctx context.Context, req *message.Message, resp *message.Message) error {
	m, err := brokerutil.ReplyMessage(a.b.limits, resp)
	if err != nil {
		return err
	}
	pm := publishing(m, 0)
	pm.DeliveryMode = amqp.Transient
	pm.CorrelationId = req.ID
	return a.b.publish(ctx, "", req.Header(message.HeaderReplyTo), false, []amqp.Publishing{pm})
}

// Request implements broker.Requester with direct reply-to: the request is
// published mandatory on "<exchange>.req"; when no subscriber is bound it
// comes back at once and Request fails with ErrNoResponders.
//
// Each request runs on a channel of its own, used by one goroutine only
// (roundTrip): nothing else may send on it. In particular the reply
// consumer is not bound to a context (ConsumeWithContext would send
// basic.cancel from its own goroutine when the context ends, racing with
// channel.close: a basic.cancel that reaches RabbitMQ after it finished
// closing the channel is a connection error, 504 "expected
// 'channel.open'", which drops the whole shared connection and fails
// every other operation on it). Closing the channel cancels the consumer.
// Request itself returns as soon as ctx or the timeout ends, even if
// RabbitMQ is slow to answer; roundTrip then finishes (and closes its
// channel) in the background.
func (b *Broker) Request(ctx context.Context, topic string, req *message.Message, timeout time.Duration) (*message.Message, error) {
	if err := message.ValidateTopic(topic); err != nil {
		return nil, err
	}
	if timeout <= 0 {
		return nil, &message.ValidationError{Field: "timeout", Reason: "a request needs a timeout"}
	}
	if err := b.limits.Validate(req); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(err error) error {
		switch {
		case errors.Is(err, broker.ErrNoResponders):
			return fmt.Errorf("%s: request to %s: %w", backendName, topic, err)
		case ctx.Err() != nil:
			return fmt.Errorf("%s: request to %s: %w", backendName, topic, ctx.Err())
		case rctx.Err() != nil:
			return fmt.Errorf("%s: request to %s: no reply within %s: %w", backendName, topic, timeout, broker.ErrTimeout)
		}
		return b.opErr(ctx, "request to "+topic, err)
	}
	m := req.Clone()
	if m.ID == "" {
		m.ID = message.NewID()
	}
	pm := publishing(m, 0)
	pm.DeliveryMode = amqp.Transient
	pm.ReplyTo = "amq.rabbitmq.reply-to"

	type result struct {
		d   *amqp.Delivery
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := b.roundTrip(rctx, topic, pm)
		done <- result{d, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-rctx.Done():
		select {
		case r = <-done: // finished at the same time: keep a reply
		default:
			return nil, fail(rctx.Err())
		}
	}
	if r.err != nil {
		return nil, fail(r.err)
	}
	out, _, _ := fromDelivery(r.d)
	out.Topic = topic
	return out, nil
}

// roundTrip publishes pm as a request on a channel of its own and waits
// for the reply, a return (ErrNoResponders) or the end of ctx. It is the
// only user of the channel, which it closes before returning.
func (b *Broker) roundTrip(ctx context.Context, topic string, pm amqp.Publishing) (*amqp.Delivery, error) {
	conn, err := b.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	defer func() { _ = ch.Close() }()
	// Both notifications come at most once (one message is published), so
	// the buffers keep amqp091's reader from ever blocking on them.
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	replies, err := ch.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	if err := ch.PublishWithContext(ctx, b.reqExchange(), topic, true, false, pm); err != nil {
		return nil, err
	}
	select {
	case <-returns:
		return nil, broker.ErrNoResponders
	case d, ok := <-replies:
		if !ok {
			return nil, channelClosed(closed)
		}
		return &d, nil
	case e := <-closed:
		return nil, closeReason(e)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// channelClosed is the error of a channel whose deliveries ended: the
// reason it was closed for (see closeReason), waiting a moment for it.
func channelClosed(closed <-chan *amqp.Error) error {
	select {
	case e := <-closed:
		return closeReason(e)
	case <-time.After(100 * time.Millisecond):
		return amqp.ErrClosed
	}
}

// closeReason is the error of a closed channel: the server's exception
// when it closed the channel or the connection, else amqp.ErrClosed.
func closeReason(e *amqp.Error) error {
	if e != nil {
		return e
	}
	return amqp.ErrClosed
}
