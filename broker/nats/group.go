package nats

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// maxBackOff bounds the BackOff list of a consumer; later attempts reuse the
// last value (JetStream's rule).
const maxBackOff = 32

// groupSub is one subscription of a durable pull consumer.
type groupSub struct {
	*brokerutil.Sub
	b      *Broker
	group  string
	topic  string
	set    brokerutil.Settings
	sem    chan struct{}
	cancel context.CancelFunc
	acks   ackQueue

	mu       sync.Mutex
	inflight map[*flight]struct{}
	closed   bool
}

// flight is the adapter's state of one delivery (broker.Delivery.Token).
// Its fields other than msg are guarded by groupSub.mu.
type flight struct {
	msg    jetstream.Msg
	extend *time.Timer // repeats InProgress for an Extend past AckWait
	// deadline is when the delivery stops counting.
	deadline time.Time
	// finished is set when the delivery is settled or released.
	finished bool
}

func (b *Broker) consumerConfig(ctx context.Context, stream, filter string, p *broker.SubscribeParams, set brokerutil.Settings) (jetstream.ConsumerConfig, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       consumerName(p.Group),
		Description:   "Switchboard group " + p.Group,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       set.AckDeadline,
		MaxAckPending: 10000,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		// Zero (the default) keeps the consumer forever.
		InactiveThreshold: b.cfg.inactive,
	}
	if set.MaxAttempts > 0 {
		cfg.MaxDeliver = set.MaxAttempts + 1
	} else {
		cfg.MaxDeliver = -1
	}
	n := maxBackOff
	if set.MaxAttempts > 0 {
		n = min(n, set.MaxAttempts)
	}
	for i := 1; i <= n; i++ {
		cfg.BackOff = append(cfg.BackOff, set.AckDeadline+set.Backoff(i))
	}
	switch p.Start.Kind {
	case broker.StartLatest:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	case broker.StartEarliest:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case broker.StartTime:
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		t := p.Start.Time
		cfg.OptStartTime = &t
	case broker.StartSeq:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = p.Start.Seq
	}
	// An existing group keeps its position and its topic.
	if c, err := b.js.Consumer(ctx, stream, cfg.Durable); err == nil {
		old := c.CachedInfo().Config
		if old.FilterSubject != filter {
			return cfg, fmt.Errorf("%s: group %q already follows %q, not %q: %w", backendName, p.Group, topicOf(old.FilterSubject), p.Topic, broker.ErrAlreadyExists)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return cfg, b.opErr(ctx, "look up group "+p.Group, err)
	}
	return cfg, nil
}

func (b *Broker) subscribeGroup(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	set := brokerutil.SettingsOf(p)
	filter := subject(p.Topic)
	stream, err := b.streamFor(ctx, filter)
	if err != nil {
		return nil, err
	}
	cfg, err := b.consumerConfig(ctx, stream, filter, p, set)
	if err != nil {
		return nil, err
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, b.opErr(ctx, fmt.Sprintf("create group %s on %s (stream %s)", p.Group, p.Topic, stream), err)
	}
	// Requests reach one member of the group through a core queue
	// subscription (request/reply is not stored).
	reqs := make(chan *natsgo.Msg, 256)
	reqSub, err := b.nc.ChanQueueSubscribe(brokerutil.ReqPrefix+filter, consumerName(p.Group), reqs)
	if err != nil {
		return nil, b.opErr(ctx, "subscribe group "+p.Group+" to requests", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	g := &groupSub{
		b: b, group: p.Group, topic: p.Topic, set: set, cancel: cancel,
		sem:      make(chan struct{}, set.MaxInFlight),
		inflight: map[*flight]struct{}{},
		acks:     ackQueue{r: b.replies},
	}
	g.Sub = brokerutil.NewSub(g.release)
	if err := b.subs.Track(g.Sub, backendName); err != nil {
		cancel()
		_ = reqSub.Unsubscribe()
		return nil, err
	}
	g.Run(func() error {
		defer b.subs.Untrack(g.Sub)
		go func() { <-g.Done(); cancel() }()
		pumped := make(chan struct{})
		go func() { b.pump(g.Sub, g.group, reqs); close(pumped) }()
		defer func() { _ = reqSub.Unsubscribe(); <-pumped }()
		return g.loop(lctx, cons)
	})
	return g, nil
}

// handle turns m into a delivery, or settles it itself (expired, attempts
// exhausted). It reports whether a delivery was handed out, and whether m
// is to be released (nak'ed) once no pull request is outstanding (loop).
func (g *groupSub) handle(ctx context.Context, m jetstream.Msg) (handed, release bool) {
	md, err := m.Metadata()
	if err != nil {
		_ = m.Term() // not a JetStream message: cannot happen on a pull consumer
		return false, false
	}
	msg := fromNATS(&natsgo.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}, md.Timestamp)
	info := message.Info{
		Group:       g.group,
		Seq:         md.Sequence.Stream,
		Attempt:     int(md.NumDelivered),
		Redelivered: md.NumDelivered > 1,
		Deadline:    time.Now().Add(g.set.AckDeadline),
	}
	f := &flight{msg: m, deadline: info.Deadline}
	d := broker.NewDelivery(msg, info, g, f)
	switch {
	case msg.Header(message.HeaderReplayFor) != "" && msg.Header(message.HeaderReplayFor) != g.group:
		_ = m.Ack() // a dead letter replayed for another group
		return false, false
	case msg.Expired(time.Now()):
		_ = g.deadLetter(ctx, d, brokerutil.ReasonExpired)
		return false, false
	case g.set.MaxAttempts > 0 && info.Attempt > g.set.MaxAttempts:
		// The last attempt missed its deadline: JetStream delivers once more
		// (MaxDeliver = MaxAttempts+1) so that the adapter dead-letters it.
		d.Info.Attempt = g.set.MaxAttempts
		_ = g.deadLetter(ctx, d, brokerutil.ReasonMaxAttempts)
		return false, false
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false, true
	}
	g.inflight[f] = struct{}{}
	g.mu.Unlock()
	if !g.Send(d) {
		g.mu.Lock()
		delete(g.inflight, f)
		g.mu.Unlock()
		return false, true // the loop frees the slot and releases m
	}
	return true, false
}

// forget drops f from the in-flight set and frees its slot. It reports
// whether f was in flight, and its deadline.
func (g *groupSub) forget(f *flight) (deadline time.Time, ok bool) {
	g.mu.Lock()
	_, ok = g.inflight[f]
	delete(g.inflight, f)
	ext := f.extend
	if ok {
		f.finished, f.extend = true, nil
	}
	deadline = f.deadline
	g.mu.Unlock()
	if ok {
		if ext != nil {
			ext.Stop()
		}
		<-g.sem
	}
	return deadline, ok
}

// release gives every unsettled delivery back to the group (Nak) when the
// subscription closes.
func (g *groupSub) release() {
	g.mu.Lock()
	g.closed = true
	fs := make([]*flight, 0, len(g.inflight))
	for f := range g.inflight {
		fs = append(fs, f)
	}
	g.mu.Unlock()
	for _, f := range fs {
		if _, ok := g.forget(f); ok {
			_ = f.msg.Nak()
		}
	}
}

// settle claims d for a final verdict; it fails when the subscription was
// closed (the delivery was released for redelivery).
func (g *groupSub) settle(d *broker.Delivery, op string) (*flight, error) {
	f := d.Token.(*flight)
	deadline, ok := g.forget(f)
	if !ok {
		return nil, fmt.Errorf("%s of message %s: %w (the subscription was closed and the message released)", op, d.Message.ID, broker.ErrClosed)
	}
	if time.Now().After(deadline) {
		// JetStream redelivers it (or already did): this verdict no longer applies.
		return nil, fmt.Errorf("%s of message %s (attempt %d, deadline %s): %w", op, d.Message.ID, d.Info.Attempt, deadline.Format(time.RFC3339Nano), broker.ErrDeliveryExpired)
	}
	return f, nil
}

// Ack implements broker.Acker. It returns nil only once the server has
// processed the ack, as jetstream's DoubleAck: a plain Ack is
// fire-and-forget and can be lost when the subscription closes right after,
// which would redeliver a message the caller was told is done. Acks sent
// together share one confirmation (ack.go).
func (g *groupSub) Ack(ctx context.Context, d *broker.Delivery) error {
	f, err := g.settle(d, "ack")
	if err != nil {
		return err
	}
	if err := g.acks.ack(ctx, f.msg); err != nil {
		return g.ackErr(ctx, d.Message.ID, err)
	}
	return nil
}

// AckAsync implements broker.AsyncAcker: Ack whose outcome goes to done,
// from the goroutine that reads the confirmation. The ack joins the next
// batch like any other; it is given up after replyTimeout without answer.
func (g *groupSub) AckAsync(ctx context.Context, d *broker.Delivery, done func(error)) {
	f, err := g.settle(d, "ack")
	if err != nil {
		done(err)
		return
	}
	if err := ctx.Err(); err != nil {
		done(g.ackErr(ctx, d.Message.ID, err))
		return
	}
	g.acks.ackAsync(f.msg, func(err error) {
		if err != nil {
			err = g.ackErr(ctx, d.Message.ID, err)
		}
		done(err)
	})
}

// Nack implements broker.Acker: NakWithDelay, or a dead letter after the
// last attempt.
func (g *groupSub) Nack(ctx context.Context, d *broker.Delivery, delay time.Duration) error {
	if g.set.Exhausted(d.Info.Attempt) {
		if _, err := g.settle(d, "nack"); err != nil {
			return err
		}
		return g.deadLetter(ctx, d, brokerutil.ReasonMaxAttempts)
	}
	f, err := g.settle(d, "nack")
	if err != nil {
		return err
	}
	if err := f.msg.NakWithDelay(g.set.Delay(d.Info.Attempt, delay)); err != nil {
		return g.b.opErr(ctx, "nack of "+d.Message.ID, err)
	}
	return nil
}

// Term implements broker.Acker: the message goes to the dead-letter topic.
func (g *groupSub) Term(ctx context.Context, d *broker.Delivery, reason string) error {
	if _, err := g.settle(d, "term"); err != nil {
		return err
	}
	return g.deadLetter(ctx, d, reason)
}

// Extend implements broker.Acker with InProgress, which restarts the ack
// timer; for longer than the ack deadline it is repeated until the new
// deadline.
func (g *groupSub) Extend(ctx context.Context, d *broker.Delivery, by time.Duration) error {
	f := d.Token.(*flight)
	g.mu.Lock()
	_, ok := g.inflight[f]
	if ok && f.extend != nil {
		f.extend.Stop()
		f.extend = nil
	}
	g.mu.Unlock()
	if !ok {
		return fmt.Errorf("extend of message %s: %w", d.Message.ID, broker.ErrClosed)
	}
	g.mu.Lock()
	expired := time.Now().After(f.deadline)
	if !expired {
		f.deadline = time.Now().Add(max(by, g.set.AckDeadline))
	}
	g.mu.Unlock()
	if expired {
		return fmt.Errorf("extend of message %s: %w", d.Message.ID, broker.ErrDeliveryExpired)
	}
	if err := f.msg.InProgress(); err != nil {
		return g.b.opErr(ctx, "extend of "+d.Message.ID, err)
	}
	if by <= g.set.AckDeadline {
		return nil
	}
	until := time.Now().Add(by)
	step := g.set.AckDeadline / 2
	var tick func()
	// schedule arms the next InProgress unless f was settled meanwhile.
	schedule := func() {
		g.mu.Lock()
		if !f.finished {
			f.extend = time.AfterFunc(step, tick)
		}
		g.mu.Unlock()
	}
	tick = func() {
		g.mu.Lock()
		finished := f.finished
		g.mu.Unlock()
		if finished {
			return
		}
		_ = f.msg.InProgress()
		if time.Until(until) > g.set.AckDeadline {
			schedule()
		}
	}
	schedule()
	return nil
}

// deadLetter publishes d's message to the group's dead-letter topic and then
// terminates it in the stream. If the publish fails, the message is nak'ed
// so that it is not lost.
func (g *groupSub) deadLetter(ctx context.Context, d *broker.Delivery, reason string) error {
	f := d.Token.(*flight)
	dl := brokerutil.DeadLetter(d.Message, d.Info, reason)
	subj := subject(dl.Topic)
	if _, err := g.b.streamFor(ctx, subj); err != nil {
		_ = f.msg.Nak()
		return err
	}
	// Dedup on (group, original stream sequence): a dead letter published
	// twice (a crash before Term) is stored once.
	id := fmt.Sprintf("dlq:%s:%s:%d", g.group, d.Message.ID, d.Info.Seq)
	if _, err := g.b.js.PublishMsg(ctx, toNATS(subj, dl, id)); err != nil {
		_ = f.msg.Nak()
		return g.b.opErr(ctx, "dead-letter "+d.Message.ID+" to "+dl.Topic, err)
	}
	if err := f.msg.Term(); err != nil {
		return g.b.opErr(ctx, "term of "+d.Message.ID, err)
	}
	return nil
}
