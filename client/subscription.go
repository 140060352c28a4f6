package client

import (
	"context"
	"errors"
	"fmt"
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
		Backoff: apiconv.BackoffSchedule(p.Backoff, backoffSamples),
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
	for stream.Receive() {
		pd := stream.Msg().GetDelivery()
		if pd == nil {
			continue
		}
		m := apiconv.MessageFromProto(pd.GetMessage())
		info := apiconv.InfoFromProto(pd)
		var acker broker.Acker
		switch {
		case s.durable:
			acker = &tokenAcker{s: s, token: pd.GetToken()}
		case m.Header(message.HeaderReplyTo) != "":
			acker = &replyOnly{tokenAcker{s: s, token: pd.GetToken()}}
		}
		d := broker.NewDelivery(m, info, acker, pd.GetToken())
		select {
		case s.ch <- d:
		case <-s.ctx.Done():
			return
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

// tokenAcker settles one delivery through the hub by its token.
type tokenAcker struct {
	s     *subscription
	token string
}

func (a *tokenAcker) check(op string, d *broker.Delivery) error {
	if a.s.isClosed() {
		return fmt.Errorf("%s of message %s: subscription closed: %w", op, d.Message.ID, broker.ErrClosed)
	}
	return nil
}

func (a *tokenAcker) Ack(ctx context.Context, d *broker.Delivery) error {
	if err := a.check("ack", d); err != nil {
		return err
	}
	_, err := a.s.b.rpc.Ack(ctx, connect.NewRequest(&v1.AckRequest{Token: a.token}))
	return apiconv.FromConnect(err)
}

func (a *tokenAcker) Nack(ctx context.Context, d *broker.Delivery, delay time.Duration) error {
	if err := a.check("nack", d); err != nil {
		return err
	}
	_, err := a.s.b.rpc.Nack(ctx, connect.NewRequest(&v1.NackRequest{Token: a.token, Delay: apiconv.Duration(delay)}))
	return apiconv.FromConnect(err)
}

func (a *tokenAcker) Term(ctx context.Context, d *broker.Delivery, reason string) error {
	if err := a.check("term", d); err != nil {
		return err
	}
	_, err := a.s.b.rpc.Term(ctx, connect.NewRequest(&v1.TermRequest{Token: a.token, Reason: reason}))
	return apiconv.FromConnect(err)
}

func (a *tokenAcker) Extend(ctx context.Context, d *broker.Delivery, by time.Duration) error {
	if err := a.check("extend", d); err != nil {
		return err
	}
	_, err := a.s.b.rpc.Extend(ctx, connect.NewRequest(&v1.ExtendRequest{Token: a.token, By: apiconv.Duration(by)}))
	return apiconv.FromConnect(err)
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
