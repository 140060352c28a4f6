package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// liveSub is one attached consumer: the broker subscription and the tokens of
// its deliveries. Both the gRPC/Connect stream and Server-Sent Events use it.
type liveSub struct {
	s           *Server
	sub         broker.Subscription
	st          *subTokens
	durable     bool
	maxInFlight int
}

// subscribeParams checks a request and turns it into broker parameters.
func (s *Server) subscribeParams(req *v1.SubscribeRequest) (*broker.SubscribeParams, error) {
	mif := int(req.GetMaxInFlight())
	switch {
	case mif < 0:
		return nil, invalid("max_in_flight %d must not be negative (0 = hub default %d)", mif, s.cfg.DefaultMaxInFlight)
	case mif == 0:
		mif = s.cfg.DefaultMaxInFlight
	case mif > s.cfg.MaxInFlight:
		return nil, invalid("max_in_flight %d exceeds the hub's limit of %d", mif, s.cfg.MaxInFlight)
	}
	for i, d := range req.GetBackoff() {
		if d.AsDuration() < 0 {
			return nil, invalid("backoff[%d] %s must not be negative", i, d.AsDuration())
		}
	}
	p := &broker.SubscribeParams{
		Topic:        req.GetTopic(),
		Group:        req.GetGroup(),
		Start:        apiconv.StartFromProto(req.GetStart()),
		MaxAttempts:  int(req.GetMaxAttempts()),
		AckDeadline:  apiconv.Dur(req.GetAckDeadline()),
		OrderedByKey: req.GetOrderedByKey(),
		MaxInFlight:  mif,
		Backoff:      apiconv.BackoffFunc(req.GetBackoff()),
	}
	if p.Group == "" {
		p.MaxInFlight = 0 // ephemeral: no settlement, nothing to bound
	}
	// Refuse what the backend cannot do with the same words as in process.
	if err := broker.CheckSubscribe(s.b.Capabilities(), p); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	return p, nil
}

// attach subscribes on the broker. ctx bounds the setup only.
func (s *Server) attach(ctx context.Context, req *v1.SubscribeRequest) (*liveSub, error) {
	p, err := s.subscribeParams(req)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, PermConsume, p.Topic); err != nil {
		return nil, err
	}
	if s.closing() {
		return nil, errShuttingDown()
	}
	sub, err := s.b.Subscribe(ctx, p)
	if err != nil {
		if p.Group == "" {
			return nil, apiconv.ToConnect(fmt.Errorf("subscribe to %q: %w", p.Topic, err))
		}
		return nil, apiconv.ToConnect(fmt.Errorf("subscribe group %q to %q: %w", p.Group, p.Topic, err))
	}
	ls := &liveSub{s: s, sub: sub, durable: p.Group != "", maxInFlight: p.MaxInFlight}
	ls.st = s.tokens.attach(p.MaxInFlight, principalFrom(ctx), p.Topic)
	s.metrics.subscriptions.Inc()
	s.cfg.Logger.Debug("subscription attached", "subscription", ls.st.id, "topic", p.Topic, "group", p.Group, "max_in_flight", p.MaxInFlight)
	// The tokens may have been replaced since this request was
	// authenticated. SetAuth stores the new set before it checks the
	// attached subscriptions, so this one is either checked there or
	// here, against the new set.
	if err := s.auth.Load().streamErr(ls.st.who, p.Topic); err != nil {
		ls.close()
		return nil, err
	}
	return ls, nil
}

// close detaches the consumer: the broker releases its unsettled deliveries
// for redelivery, and their tokens stop working.
func (ls *liveSub) close() {
	if ls.st.isEnded() {
		ls.s.cfg.Logger.Debug("subscription ended: its bearer token was revoked or lost consume", "subscription", ls.st.id, "token", ls.st.ownerName(), "topic", ls.st.topic, "err", ls.st.endErr)
	}
	ls.s.tokens.detach(ls.st)
	_ = ls.sub.Close()
	ls.s.metrics.subscriptions.Dec()
	ls.s.cfg.Logger.Debug("subscription detached", "subscription", ls.st.id)
}

// pump hands deliveries to send until ctx is done, the hub shuts down or the
// broker ends the subscription: each delivery that is ready, with up to
// maxBatch-1 more that are ready too (never waiting for them). send blocks
// while the consumer does not read (transport flow control), and the broker
// hands out at most max in flight unsettled deliveries, so a slow consumer
// costs bounded memory. tick, when not nil, is called every keepAlive while
// idle. When the subscription's bearer token is revoked (SetAuth), pump
// returns why, and sends nothing more.
//
// The deliveries handed to send are reused for the next batch: send must be
// done with them (have marshaled them) when it returns.
func (ls *liveSub) pump(ctx context.Context, maxBatch int, send func([]*v1.Delivery) error, keepAlive time.Duration, tick func() error) error {
	var tc <-chan time.Time
	if tick != nil && keepAlive > 0 {
		t := time.NewTicker(keepAlive)
		defer t.Stop()
		tc = t.C
	}
	maxBatch = max(maxBatch, 1)
	batch := make([]*v1.Delivery, 0, maxBatch)
	var buf apiconv.DeliveryBuf
	deliveries := ls.sub.Deliveries()
	ended := func() error {
		if err := ls.sub.Err(); err != nil {
			return apiconv.ToConnect(fmt.Errorf("subscription ended: %w", err))
		}
		return apiconv.NewError(connect.CodeUnavailable, apiconv.ReasonClosed, "subscription ended: the backend closed it; subscribe again")
	}
	for {
		select {
		case <-ctx.Done():
			return nil // the consumer went away
		case <-ls.s.done:
			return errShuttingDown()
		case <-ls.st.ended:
			return ls.st.endErr
		case <-tc:
			if err := tick(); err != nil {
				return err
			}
		case d, ok := <-deliveries:
			if !ok {
				return ended()
			}
			batch = append(batch[:0], buf.Delivery(0, d, ls.st.register(d, ls.durable), true))
			size := len(d.Message.Payload)
			open := true
		more:
			for len(batch) < maxBatch && size < maxBatchBytes {
				select {
				case d, ok := <-deliveries:
					if !ok {
						open = false
						break more
					}
					batch = append(batch, buf.Delivery(len(batch), d, ls.st.register(d, ls.durable), true))
					size += len(d.Message.Payload)
				default:
					break more
				}
			}
			if ls.st.isEnded() {
				// Revoked while the batch was gathered: these deliveries
				// have no working token; the broker redelivers them.
				return ls.st.endErr
			}
			if err := send(batch); err != nil {
				return err
			}
			ls.s.metrics.delivered.Add(float64(len(batch)))
			buf.Release(len(batch))
			clear(batch)
			if !open {
				return ended()
			}
		}
	}
}

func errShuttingDown() error {
	return apiconv.NewError(connect.CodeUnavailable, apiconv.ReasonShuttingDown, "the hub is shutting down; unsettled deliveries will be redelivered, subscribe again (to another hub or after restart)")
}

// maxStreamBatch caps SubscribeRequest.max_batch; maxBatchBytes ends a
// batch once its payloads reach that size (a batch holds at least one
// delivery).
const (
	maxStreamBatch = 1024
	maxBatchBytes  = 1 << 20
)

// Subscribe streams deliveries (see the .proto for the contract).
func (sv *service) Subscribe(ctx context.Context, req *connect.Request[v1.SubscribeRequest], stream *connect.ServerStream[v1.SubscribeResponse]) error {
	if req.Msg.GetMaxBatch() < 0 {
		return invalid("max_batch %d must not be negative (0 or 1: one delivery per message)", req.Msg.GetMaxBatch())
	}
	ls, err := sv.s.attach(ctx, req.Msg)
	if err != nil {
		return err
	}
	defer ls.close()
	if err := stream.Send(&v1.SubscribeResponse{Event: &v1.SubscribeResponse_Subscribed{Subscribed: &v1.Subscribed{
		SubscriptionId: ls.st.id, MaxInFlight: int32(ls.maxInFlight),
	}}}); err != nil {
		return err
	}
	maxBatch := min(int(req.Msg.GetMaxBatch()), maxStreamBatch)
	return ls.pump(ctx, maxBatch, func(ds []*v1.Delivery) error {
		if len(ds) == 1 {
			return stream.Send(&v1.SubscribeResponse{Event: &v1.SubscribeResponse_Delivery{Delivery: ds[0]}})
		}
		return stream.Send(&v1.SubscribeResponse{Event: &v1.SubscribeResponse_Deliveries{Deliveries: &v1.Deliveries{Deliveries: ds}}})
	}, 0, nil)
}

// ownerName is the name of the caller's bearer token ("" with auth off).
func ownerName(ctx context.Context) string { return principalFrom(ctx).nameOf() }

// delivery finds the delivery of a token, or says why it cannot. Only the
// bearer token that subscribed may settle its deliveries.
func (sv *service) delivery(ctx context.Context, token string, final bool) (*broker.Delivery, error) {
	return sv.deliveryOf(ownerName(ctx), token, final)
}

// deliveryOf is delivery for the bearer token named owner.
func (sv *service) deliveryOf(owner, token string, final bool) (*broker.Delivery, error) {
	if token == "" {
		return nil, invalid("token is required: the token of the delivery, as received")
	}
	d, st, err := sv.s.tokens.lookup(token, final, owner)
	switch {
	case errors.Is(err, errForeign):
		return nil, apiconv.NewError(connect.CodePermissionDenied, apiconv.ReasonPermissionDenied,
			fmt.Sprintf("delivery token %q belongs to a subscription of bearer token %q; settle it with the token that subscribed", token, st.ownerName()))
	case err != nil:
		return nil, apiconv.NewError(connect.CodeFailedPrecondition, apiconv.ReasonUnknownDelivery,
			fmt.Sprintf("delivery token %q is unknown: it was already settled, or the subscription that received it has ended (its message will be redelivered)", token))
	}
	return d, nil
}

func (sv *service) Ack(ctx context.Context, req *connect.Request[v1.AckRequest]) (*connect.Response[v1.AckResponse], error) {
	d, err := sv.delivery(ctx, req.Msg.GetToken(), true)
	if err != nil {
		return nil, err
	}
	if err := d.Ack(ctx); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	sv.s.metrics.settled.WithLabelValues("ack").Inc()
	return connect.NewResponse(&v1.AckResponse{}), nil
}

func (sv *service) Nack(ctx context.Context, req *connect.Request[v1.NackRequest]) (*connect.Response[v1.NackResponse], error) {
	delay := apiconv.Dur(req.Msg.GetDelay())
	if delay < 0 {
		return nil, invalid("delay %s must not be negative", delay)
	}
	d, err := sv.delivery(ctx, req.Msg.GetToken(), true)
	if err != nil {
		return nil, err
	}
	if err := d.Nack(ctx, delay); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	sv.s.metrics.settled.WithLabelValues("nack").Inc()
	return connect.NewResponse(&v1.NackResponse{}), nil
}

func (sv *service) Term(ctx context.Context, req *connect.Request[v1.TermRequest]) (*connect.Response[v1.TermResponse], error) {
	d, err := sv.delivery(ctx, req.Msg.GetToken(), true)
	if err != nil {
		return nil, err
	}
	if err := d.Term(ctx, req.Msg.GetReason()); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	sv.s.metrics.settled.WithLabelValues("term").Inc()
	return connect.NewResponse(&v1.TermResponse{}), nil
}

func (sv *service) Extend(ctx context.Context, req *connect.Request[v1.ExtendRequest]) (*connect.Response[v1.ExtendResponse], error) {
	by := apiconv.Dur(req.Msg.GetBy())
	if by <= 0 {
		return nil, invalid("by is required and must be positive, e.g. \"by\": \"30s\"")
	}
	d, err := sv.delivery(ctx, req.Msg.GetToken(), false)
	if err != nil {
		return nil, err
	}
	if err := d.Extend(ctx, by); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	sv.s.tokens.extended(req.Msg.GetToken(), time.Now().Add(by))
	sv.s.metrics.settled.WithLabelValues("extend").Inc()
	return connect.NewResponse(&v1.ExtendResponse{}), nil
}

func (sv *service) Reply(ctx context.Context, req *connect.Request[v1.ReplyRequest]) (*connect.Response[v1.ReplyResponse], error) {
	d, err := sv.delivery(ctx, req.Msg.GetToken(), false)
	if err != nil {
		return nil, err
	}
	m := apiconv.MessageFromProto(req.Msg.GetMessage())
	m.Topic = ""
	if err := sv.checkMessage(m); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	if err := d.Reply(ctx, m); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	if d.Info.Group == "" { // an ephemeral request is done once answered
		_, _, _ = sv.s.tokens.lookup(req.Msg.GetToken(), true, ownerName(ctx))
	}
	sv.s.metrics.settled.WithLabelValues("reply").Inc()
	return connect.NewResponse(&v1.ReplyResponse{}), nil
}
