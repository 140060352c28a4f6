package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
	"github.com/switchboard-dev/switchboard/message"
)

// backoffSamples is how many attempts of a Backoff function are sent to the
// hub as a schedule (the last entry repeats for later attempts).
const backoffSamples = 16

// streamBatch is the most deliveries the hub may send in one stream message.
const streamBatch = 256

// subscription is one Subscribe stream of the hub.
type subscription struct {
	b      *Broker
	id     string
	ch     chan *broker.Delivery
	ctx    context.Context // the stream's; done once Close cancels it
	cancel context.CancelFunc
	done   chan struct{} // closed when the receive loop ended

	mu      sync.Mutex
	closed  bool // Close was called
	err     error
	durable bool
}

// Subscribe opens a Subscribe stream. ctx bounds the setup only; the
// subscription lives until Close (or until the hub ends it: Err says why).
func (b *Broker) Subscribe(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	// Refuse locally what the hub's backend would refuse, with the same words.
	if err := broker.CheckSubscribe(b.caps, p); err != nil {
		return nil, err
	}
	req := &v1.SubscribeRequest{
		Topic: p.Topic, Group: p.Group, Start: apiconv.StartToProto(p.Start),
		MaxAttempts: int32(p.MaxAttempts), AckDeadline: apiconv.Duration(p.AckDeadline),
		OrderedByKey: p.OrderedByKey, MaxInFlight: int32(p.MaxInFlight),
		Backoff:  apiconv.BackoffSchedule(p.Backoff, backoffSamples),
		MaxBatch: streamBatch,
	}
	sctx, cancel := context.WithCancel(context.Background())
	stream, err := b.rpc.Subscribe(sctx, connect.NewRequest(req))
	if err != nil {
		cancel()
		return nil, apiconv.FromConnect(err)
	}
	// Wait for "subscribed" so that setup errors are returned here; ctx
	// bounds that wait.
	stop := context.AfterFunc(ctx, cancel)
	ok := stream.Receive()
	stopped := stop()
	if !ok {
		err := stream.Err()
		cancel()
		_ = stream.Close()
		if !stopped && ctx.Err() != nil {
			return nil, fmt.Errorf("subscribe to %q: %w", p.Topic, ctx.Err())
		}
		if err == nil {
			err = fmt.Errorf("hub %s ended the subscription before confirming it", b.base)
		}
		return nil, apiconv.FromConnect(err)
	}
	first := stream.Msg().GetSubscribed()
	if first == nil {
		cancel()
		_ = stream.Close()
		return nil, fmt.Errorf("hub %s sent a delivery before confirming the subscription; is the hub the same version as this client?", b.base)
	}
	s := &subscription{
		b: b, id: first.GetSubscriptionId(), ch: make(chan *broker.Delivery),
		ctx: sctx, cancel: cancel, done: make(chan struct{}), durable: p.Group != "",
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		cancel()
		_ = stream.Close()
		return nil, fmt.Errorf("hub client %s: %w", b.base, broker.ErrClosed)
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	go s.receive(stream)
	return s, nil
}

// receive hands deliveries over until the stream ends. It blocks while the
// user does not read Deliveries, so the hub's stream is flow-controlled.
func (s *subscription) receive(stream *connect.ServerStreamForClient[v1.SubscribeResponse]) {
	defer close(s.done)
	defer close(s.ch)
	defer func() { _ = stream.Close() }()
	one := make([]*v1.Delivery, 1)
	for stream.Receive() {
		pds := stream.Msg().GetDeliveries().GetDeliveries()
		if pd := stream.Msg().GetDelivery(); pd != nil {
			one[0] = pd
			pds = one
		}
		for _, pd := range pds {
			if !s.hand(pd) {
				return
			}
		}
	}
	err := stream.Err()
	s.mu.Lock()
	if !s.closed && err != nil && !errors.Is(err, context.Canceled) {
		s.err = apiconv.FromConnect(err)
	}
	s.mu.Unlock()
	s.b.forget(s)
}

// hand passes one delivery to the user; false when the subscription closed.
func (s *subscription) hand(pd *v1.Delivery) bool {
	m := apiconv.MessageFromProto(pd.GetMessage())
	info := apiconv.InfoFromProto(pd)
	var acker broker.Acker
	switch request := m.Header(message.HeaderReplyTo) != ""; {
	case s.durable && !request:
		acker = (*durableAcker)(s) // the token is the delivery's Token
	case s.durable:
		acker = &tokenAcker{s: s, token: pd.GetToken()} // Reply needs it too
	case request:
		acker = &replyOnly{tokenAcker{s: s, token: pd.GetToken()}}
	}
	d := broker.NewDelivery(m, info, acker, pd.GetToken())
	select {
	case s.ch <- d:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (b *Broker) forget(s *subscription) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
}

func (s *subscription) Deliveries() <-chan *broker.Delivery { return s.ch }

// Close ends the stream; the hub releases unsettled deliveries for
// redelivery. Settling them afterwards returns ErrClosed.
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
	s.b.forget(s)
	return nil
}

func (s *subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *subscription) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// settle sends one settlement of d through the Broker's settler.
func (s *subscription) settle(ctx context.Context, d *broker.Delivery, st *v1.Settlement) error {
	if s.isClosed() {
		return closedErr(strings.ToLower(st.GetOp().String()), d)
	}
	return s.b.settler.settle(ctx, st)
}

// closedErr is the error of settling d with op after its subscription
// closed.
func closedErr(op string, d *broker.Delivery) error {
	return fmt.Errorf("%s of message %s: subscription closed: %w", op, d.Message.ID, broker.ErrClosed)
}

// durableAcker settles the deliveries of a durable subscription through the
// hub by their token (Delivery.Token): no allocation per delivery.
type durableAcker subscription

func (a *durableAcker) sub() *subscription { return (*subscription)(a) }

func tokenOf(d *broker.Delivery) string { s, _ := d.Token.(string); return s }

func (a *durableAcker) Ack(ctx context.Context, d *broker.Delivery) error {
	return a.sub().settle(ctx, d, &v1.Settlement{Token: tokenOf(d), Op: v1.Settlement_ACK})
}

// AckAsync implements broker.AsyncAcker: the ack joins the settler's next
// Settle call and its result goes to done.
func (a *durableAcker) AckAsync(ctx context.Context, d *broker.Delivery, done func(error)) {
	s := a.sub()
	if s.isClosed() {
		done(closedErr("ack", d))
		return
	}
	s.b.settler.settleAsync(ctx, &v1.Settlement{Token: tokenOf(d), Op: v1.Settlement_ACK}, done)
}

func (a *durableAcker) Nack(ctx context.Context, d *broker.Delivery, delay time.Duration) error {
	return a.sub().settle(ctx, d, &v1.Settlement{Token: tokenOf(d), Op: v1.Settlement_NACK, Delay: apiconv.Duration(delay)})
}

func (a *durableAcker) Term(ctx context.Context, d *broker.Delivery, reason string) error {
	return a.sub().settle(ctx, d, &v1.Settlement{Token: tokenOf(d), Op: v1.Settlement_TERM, Reason: reason})
}

func (a *durableAcker) Extend(ctx context.Context, d *broker.Delivery, by time.Duration) error {
	return a.sub().settle(ctx, d, &v1.Settlement{Token: tokenOf(d), Op: v1.Settlement_EXTEND, By: apiconv.Duration(by)})
}

// tokenAcker settles one request delivery through the hub by its token, and
// answers it (Reply does not get the Delivery, so the acker keeps the token).
type tokenAcker struct {
	s     *subscription
	token string
}

func (a *tokenAcker) Ack(ctx context.Context, d *broker.Delivery) error {
	return (*durableAcker)(a.s).Ack(ctx, d)
}

func (a *tokenAcker) Nack(ctx context.Context, d *broker.Delivery, delay time.Duration) error {
	return (*durableAcker)(a.s).Nack(ctx, d, delay)
}

func (a *tokenAcker) Term(ctx context.Context, d *broker.Delivery, reason string) error {
	return (*durableAcker)(a.s).Term(ctx, d, reason)
}

func (a *tokenAcker) Extend(ctx context.Context, d *broker.Delivery, by time.Duration) error {
	return (*durableAcker)(a.s).Extend(ctx, d, by)
}

// Reply answers a request delivery through the hub.
func (a *tokenAcker) Reply(ctx context.Context, _ *message.Message, resp *message.Message) error {
	if a.s.isClosed() {
		return fmt.Errorf("reply: subscription closed: %w", broker.ErrClosed)
	}
	if err := checkUTF8(resp); err != nil {
		return err
	}
	_, err := a.s.b.rpc.Reply(ctx, connect.NewRequest(&v1.ReplyRequest{Token: a.token, Message: apiconv.MessageToProto(resp, false)}))
	return apiconv.FromConnect(err)
}

// replyOnly is the acker of an ephemeral request delivery: settling is a
// no-op (ephemeral deliveries need none), replying goes to the hub.
type replyOnly struct{ tokenAcker }

func (replyOnly) Ack(context.Context, *broker.Delivery) error                 { return nil }
func (replyOnly) Nack(context.Context, *broker.Delivery, time.Duration) error { return nil }
func (replyOnly) Term(context.Context, *broker.Delivery, string) error        { return nil }
func (replyOnly) Extend(context.Context, *broker.Delivery, time.Duration) error {
	return nil
}
