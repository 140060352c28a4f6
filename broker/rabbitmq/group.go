package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

func (b *Broker) groupQueue(group string) string { return b.cfg.exchange + "." + group }
func (b *Broker) dlqQueue(group string) string   { return b.cfg.exchange + ".dlq." + group }

func (b *Broker) queueArgs() amqp.Table {
	args := amqp.Table{"x-queue-type": b.cfg.queueType}
	if b.cfg.queueExpires > 0 {
		args["x-expires"] = b.cfg.queueExpires.Milliseconds()
	}
	return args
}

// withChannel runs f on a short-lived channel (a failed declaration closes
// its channel, so declarations never share a consumer's channel).
func (b *Broker) withChannel(ctx context.Context, f func(ch *amqp.Channel) error) error {
	conn, err := b.connection(ctx)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return b.opErr(ctx, "open channel", err)
	}
	defer ch.Close()
	return f(ch)
}

func groupKey(topic, group string) string { return "group\x00" + topic + "\x00" + group }

// declareGroup declares the group's durable queue, binds it to the topic,
// and declares the group's dead-letter queue.
func (b *Broker) declareGroup(ctx context.Context, topic, group string) error {
	key := groupKey(topic, group)
	if _, ok := b.declared.Load(key); ok {
		return nil
	}
	err := b.withChannel(ctx, func(ch *amqp.Channel) error {
		q := b.groupQueue(group)
		if _, err := ch.QueueDeclare(q, true, false, false, false, b.queueArgs()); err != nil {
			return fmt.Errorf("%s: declare queue %q for group %s: %w (a queue of that name with another type exists? see ?queue_type=)", backendName, q, group, err)
		}
		if err := ch.QueueBind(q, bindingKey(topic), b.exchangeFor(topic), false, nil); err != nil {
			return fmt.Errorf("%s: bind queue %q to %q: %w", backendName, q, topic, err)
		}
		dq := b.dlqQueue(group)
		if _, err := ch.QueueDeclare(dq, true, false, false, false, b.queueArgs()); err != nil {
			return fmt.Errorf("%s: declare dead-letter queue %q: %w", backendName, dq, err)
		}
		return ch.QueueBind(dq, message.DLQTopic(group), b.sysExchange(), false, nil)
	})
	if err == nil {
		b.declared.Store(key, true)
	}
	return err
}

// delayQueue declares (once) the queue that holds republished copies for
// delay and dead-letters them back to the group's queue when it ends.
func (b *Broker) delayQueue(ctx context.Context, group string, delay time.Duration) (string, error) {
	ms := max(delay.Milliseconds(), 1)
	name := fmt.Sprintf("%s.delay.%s.%d", b.cfg.exchange, group, ms)
	if _, ok := b.declared.Load(name); ok {
		return name, nil
	}
	err := b.withChannel(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{
			"x-queue-type":              "classic",
			"x-message-ttl":             ms,
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": b.groupQueue(group),
			"x-expires":                 ms + time.Minute.Milliseconds(),
		})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%s: declare delay queue %q: %w", backendName, name, err)
	}
	b.declared.Store(name, true)
	return name, nil
}

// groupSub is one consumer of a group's queue.
type groupSub struct {
	*brokerutil.Sub
	b     *Broker
	topic string
	group string
	set   brokerutil.Settings

	mu      sync.Mutex
	flights map[*flight]struct{}
}

// flight is the state of one delivery (broker.Delivery.Token).
type flight struct {
	d        amqp.Delivery
	ch       *amqp.Channel
	timer    *time.Timer
	deadline time.Time
	state    int // 0 in flight, 1 settled, 2 expired (the adapter requeued it), 3 released
}

const (
	inFlight = iota
	settled
	expired
	released
)

func (b *Broker) subscribeGroup(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := b.declareGroup(ctx, p.Topic, p.Group); err != nil {
		return nil, err
	}
	g := &groupSub{b: b, topic: p.Topic, group: p.Group, set: brokerutil.SettingsOf(p), flights: map[*flight]struct{}{}}
	g.Sub = brokerutil.NewSub(nil)
	// Open the first consumer now, so that errors reach the caller.
	ch, msgs, reqs, err := g.consume(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.subs.Track(g.Sub, backendName); err != nil {
		_ = ch.Close()
		return nil, err
	}
	g.Run(func() error {
		defer b.subs.Untrack(g.Sub)
		for {
			g.serve(ch, msgs, reqs)
			g.releaseAll()
			closeChannel(ch, msgs, reqs)
			if g.Closing() {
				return nil
			}
			// The channel or connection dropped: consume again once the
			// backend has reconnected.
			err := brokerutil.Retry(doneCtx(g.Sub), func(ctx context.Context) error {
				var err error
				ch, msgs, reqs, err = g.consume(ctx)
				return err
			}, nil)
			if err != nil {
				return nil // closing
			}
		}
	})
	return g, nil
}

// closeChannel closes ch while draining its consumers' delivery channels:
// amqp091 blocks on a consumer channel nobody reads. Messages still in
// flight on a closed channel are requeued by RabbitMQ.
func closeChannel(ch *amqp.Channel, deliveries ...<-chan amqp.Delivery) {
	for _, c := range deliveries {
		go func() {
			for range c {
			}
		}()
	}
	_ = ch.Close()
}

// doneCtx is a context cancelled when s closes.
func doneCtx(s *brokerutil.Sub) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-s.Done(); cancel() }()
	return ctx
}

// consume opens a channel consuming the group's queue and its request
// queue. The request queue is auto-delete and shared by the group's
// consumers: it vanishes when another member's consumer goes away between
// our declaration and our consumer, and then the declaration is retried on
// a new channel (a 404 closes the channel).
func (g *groupSub) consume(ctx context.Context) (*amqp.Channel, <-chan amqp.Delivery, <-chan amqp.Delivery, error) {
	for attempt := 1; ; attempt++ {
		ch, msgs, reqs, err := g.consumeOnce(ctx)
		var ae *amqp.Error
		if err == nil || !errors.As(err, &ae) || ae.Code != amqp.NotFound || attempt == 5 || ctx.Err() != nil {
			return ch, msgs, reqs, err
		}
		// Declare the group again too, in case its queue expired.
		g.b.declared.Delete(groupKey(g.topic, g.group))
	}
}

func (g *groupSub) consumeOnce(ctx context.Context) (*amqp.Channel, <-chan amqp.Delivery, <-chan amqp.Delivery, error) {
	b := g.b
	if err := b.declareGroup(ctx, g.topic, g.group); err != nil {
		return nil, nil, nil, err
	}
	conn, err := b.connection(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, nil, b.opErr(ctx, "open channel", err)
	}
	fail := func(what string, err error) (*amqp.Channel, <-chan amqp.Delivery, <-chan amqp.Delivery, error) {
		_ = ch.Close()
		return nil, nil, nil, fmt.Errorf("%s: %s for group %s: %w", backendName, what, g.group, err)
	}
	if err := ch.Qos(g.set.MaxInFlight, 0, false); err != nil {
		return fail("set prefetch", err)
	}
	msgs, err := ch.Consume(b.groupQueue(g.group), "", false, false, false, false, nil)
	if err != nil {
		return fail("consume", err)
	}
	// Requests reach one member of the group through a transient queue
	// shared by the group's consumers.
	// Consuming before binding keeps the queue alive (auto-delete) while
	// it is bound.
	rq := b.cfg.exchange + ".req." + g.group
	if _, err := ch.QueueDeclare(rq, false, true, false, false, amqp.Table{"x-queue-type": "classic"}); err != nil {
		return fail("declare request queue", err)
	}
	reqs, err := ch.Consume(rq, "", true, false, false, false, nil)
	if err != nil {
		return fail("consume requests", err)
	}
	if err := ch.QueueBind(rq, bindingKey(g.topic), b.reqExchange(), false, nil); err != nil {
		return fail("bind request queue", err)
	}
	return ch, msgs, reqs, nil
}

// serve hands deliveries out until the channel closes or the subscription
// does.
func (g *groupSub) serve(ch *amqp.Channel, msgs, reqs <-chan amqp.Delivery) {
	acker := ephemeralAcker{b: g.b}
	for {
		select {
		case <-g.Done():
			return
		case d, ok := <-reqs:
			if !ok {
				return
			}
			m, _, _ := fromDelivery(&d)
			if d.ReplyTo == "" || m.Expired(time.Now()) {
				continue
			}
			m.SetHeader(message.HeaderReplyTo, d.ReplyTo)
			if !g.Send(broker.NewDelivery(m, message.Info{Group: g.group, Attempt: 1}, acker, nil)) {
				return
			}
		case d, ok := <-msgs:
			if !ok {
				return
			}
			if !g.handle(ch, d) {
				return
			}
		}
	}
}

// handle turns d into a delivery or settles it itself. It returns false
// when the subscription is closing.
func (g *groupSub) handle(ch *amqp.Channel, d amqp.Delivery) bool {
	m, seq, carried := fromDelivery(&d)
	requeues := 0
	switch n := d.Headers["x-delivery-count"].(type) {
	case int64:
		requeues = int(n)
	case int32:
		requeues = int(n)
	case int:
		requeues = n
	default:
		if d.Redelivered {
			requeues = 1
		}
	}
	attempt := 1 + carried + requeues
	info := message.Info{Group: g.group, Seq: seq, Attempt: attempt, Redelivered: attempt > 1, Deadline: time.Now().Add(g.set.AckDeadline)}
	f := &flight{d: d, ch: ch, deadline: info.Deadline}
	del := broker.NewDelivery(m, info, g, f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch {
	case m.Header(message.HeaderReplayFor) != "" && m.Header(message.HeaderReplayFor) != g.group:
		_ = d.Ack(false)
		return true
	case m.Expired(time.Now()):
		_ = g.deadLetter(ctx, del, f, brokerutil.ReasonExpired)
		return true
	case g.set.MaxAttempts > 0 && attempt > g.set.MaxAttempts:
		del.Info.Attempt = g.set.MaxAttempts
		_ = g.deadLetter(ctx, del, f, brokerutil.ReasonMaxAttempts)
		return true
	}
	g.mu.Lock()
	g.flights[f] = struct{}{}
	f.timer = time.AfterFunc(g.set.AckDeadline, func() { g.missed(del, f) })
	g.mu.Unlock()
	if !g.Send(del) {
		g.mu.Lock()
		f.timer.Stop()
		g.mu.Unlock()
		return false // releaseAll gives it back
	}
	return true
}

// claim moves f from in flight to state; it reports what state f was in.
func (g *groupSub) claim(f *flight, state int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := f.state
	if old == inFlight {
		f.state = state
		if f.timer != nil {
			f.timer.Stop()
		}
		delete(g.flights, f)
	}
	return old
}

// missed runs when a delivery's deadline passes unsettled: the message is
// republished for the next attempt after the backoff (or dead-lettered
// after the last one), and this delivery no longer counts.
func (g *groupSub) missed(del *broker.Delivery, f *flight) {
	if g.claim(f, expired) != inFlight {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if g.set.Exhausted(del.Info.Attempt) {
		_ = g.deadLetter(ctx, del, f, brokerutil.ReasonMaxAttempts)
		return
	}
	_ = g.retry(ctx, del, f, g.set.Delay(del.Info.Attempt, 0))
}

// releaseAll gives every unsettled delivery back to the queue (nack with
// requeue) when the subscription closes or its channel dropped.
func (g *groupSub) releaseAll() {
	g.mu.Lock()
	fs := make([]*flight, 0, len(g.flights))
	for f := range g.flights {
		fs = append(fs, f)
	}
	g.mu.Unlock()
	for _, f := range fs {
		if g.claim(f, released) == inFlight {
			_ = f.d.Nack(false, true)
		}
	}
}

func (g *groupSub) settleErr(op string, del *broker.Delivery, state int) error {
	if state == released {
		return fmt.Errorf("%s of message %s: %w (the subscription was closed and the message released)", op, del.Message.ID, broker.ErrClosed)
	}
	return fmt.Errorf("%s of message %s (attempt %d): %w", op, del.Message.ID, del.Info.Attempt, broker.ErrDeliveryExpired)
}

// Ack implements broker.Acker.
func (g *groupSub) Ack(ctx context.Context, del *broker.Delivery) error {
	f := del.Token.(*flight)
	if st := g.claim(f, settled); st != inFlight {
		return g.settleErr("ack", del, st)
	}
	if err := f.d.Ack(false); err != nil {
		// The channel closed: RabbitMQ requeues the message.
		return fmt.Errorf("ack of message %s: %w (%v)", del.Message.ID, broker.ErrDeliveryExpired, err)
	}
	return nil
}

// Nack implements broker.Acker: a republished copy comes back after the
// delay (or the backoff); after the last attempt, a dead letter.
func (g *groupSub) Nack(ctx context.Context, del *broker.Delivery, delay time.Duration) error {
	f := del.Token.(*flight)
	if st := g.claim(f, settled); st != inFlight {
		return g.settleErr("nack", del, st)
	}
	if g.set.Exhausted(del.Info.Attempt) {
		return g.deadLetter(ctx, del, f, brokerutil.ReasonMaxAttempts)
	}
	return g.retry(ctx, del, f, g.set.Delay(del.Info.Attempt, delay))
}

// Term implements broker.Acker.
func (g *groupSub) Term(ctx context.Context, del *broker.Delivery, reason string) error {
	f := del.Token.(*flight)
	if st := g.claim(f, settled); st != inFlight {
		return g.settleErr("term", del, st)
	}
	return g.deadLetter(ctx, del, f, reason)
}

// Extend implements broker.Acker: the adapter's deadline timer moves.
func (g *groupSub) Extend(ctx context.Context, del *broker.Delivery, by time.Duration) error {
	f := del.Token.(*flight)
	g.mu.Lock()
	defer g.mu.Unlock()
	if f.state != inFlight {
		return g.settleErr("extend", del, f.state)
	}
	f.deadline = time.Now().Add(by)
	f.timer.Reset(by)
	return nil
}

// copyOf is the republished copy of f's message for the next attempt.
func (g *groupSub) copyOf(f *flight, attempt int) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range f.d.Headers {
		if !rabbitHeader(k) {
			h[k] = v
		}
	}
	h[brokerutil.HeaderAttempts] = strconv.Itoa(attempt)
	h[headerTopic] = f.d.RoutingKey
	if t, ok := f.d.Headers[headerTopic]; ok {
		h[headerTopic] = t
	}
	return amqp.Publishing{
		Headers: h, ContentType: f.d.ContentType, DeliveryMode: amqp.Persistent,
		MessageId: f.d.MessageId, Timestamp: f.d.Timestamp, Body: f.d.Body,
	}
}

// retry republishes the message for the next attempt after delay, then
// acks this delivery. If the publish fails the delivery is requeued.
func (g *groupSub) retry(ctx context.Context, del *broker.Delivery, f *flight, delay time.Duration) error {
	pub := g.copyOf(f, del.Info.Attempt)
	key := g.b.groupQueue(g.group)
	if delay > 0 {
		q, err := g.b.delayQueue(ctx, g.group, delay)
		if err != nil {
			_ = f.d.Nack(false, true)
			return err
		}
		key = q
	}
	if err := g.b.publish(ctx, "", key, false, []amqp.Publishing{pub}); err != nil {
		_ = f.d.Nack(false, true)
		return err
	}
	if err := f.d.Ack(false); err != nil {
		return fmt.Errorf("%s: ack of message %s after requeueing it: %w", backendName, del.Message.ID, err)
	}
	return nil
}

// deadLetter publishes the message to "$dlq.<group>" and acks the original.
func (g *groupSub) deadLetter(ctx context.Context, del *broker.Delivery, f *flight, reason string) error {
	dl := brokerutil.DeadLetter(del.Message, del.Info, reason)
	if err := g.b.publish(ctx, g.b.sysExchange(), dl.Topic, false, []amqp.Publishing{publishing(dl, g.b.nextSeq())}); err != nil {
		_ = f.d.Nack(false, true)
		return err
	}
	if err := f.d.Ack(false); err != nil {
		return fmt.Errorf("%s: ack of message %s after dead-lettering it: %w", backendName, del.Message.ID, err)
	}
	return nil
}

// subscribeEphemeral binds an exclusive, auto-delete queue to the topic and
// to the topic's requests.
func (b *Broker) subscribeEphemeral(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	s := brokerutil.NewSub(nil)
	consume := func(ctx context.Context) (*amqp.Channel, <-chan amqp.Delivery, error) {
		conn, err := b.connection(ctx)
		if err != nil {
			return nil, nil, err
		}
		ch, err := conn.Channel()
		if err != nil {
			return nil, nil, b.opErr(ctx, "open channel", err)
		}
		q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{"x-queue-type": "classic"})
		if err == nil {
			err = ch.QueueBind(q.Name, bindingKey(p.Topic), b.exchangeFor(p.Topic), false, nil)
		}
		if err == nil {
			err = ch.QueueBind(q.Name, bindingKey(p.Topic), b.reqExchange(), false, nil)
		}
		var msgs <-chan amqp.Delivery
		if err == nil {
			msgs, err = ch.Consume(q.Name, "", true, true, false, false, nil)
		}
		if err != nil {
			_ = ch.Close()
			return nil, nil, fmt.Errorf("%s: subscribe to %s: %w", backendName, p.Topic, err)
		}
		return ch, msgs, nil
	}
	ch, msgs, err := consume(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.subs.Track(s, backendName); err != nil {
		_ = ch.Close()
		return nil, err
	}
	acker := ephemeralAcker{b: b}
	s.Run(func() error {
		defer b.subs.Untrack(s)
		for {
		serve:
			for {
				select {
				case <-s.Done():
					break serve
				case d, ok := <-msgs:
					if !ok {
						break serve
					}
					m, _, _ := fromDelivery(&d)
					if d.Exchange == b.reqExchange() {
						if d.ReplyTo == "" {
							continue
						}
						m.SetHeader(message.HeaderReplyTo, d.ReplyTo)
					}
					if m.Expired(time.Now()) {
						continue
					}
					if !s.Send(broker.NewDelivery(m, message.Info{Attempt: 1}, acker, nil)) {
						break serve
					}
				}
			}
			closeChannel(ch, msgs)
			if s.Closing() {
				return nil
			}
			if err := brokerutil.Retry(doneCtx(s), func(ctx context.Context) error {
				var err error
				ch, msgs, err = consume(ctx)
				return err
			}, nil); err != nil {
				return nil
			}
		}
	})
	return s, nil
}
