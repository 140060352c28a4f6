package payments

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/switchboard-dev/switchboard/call"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
	paymentsv2 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v2"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v2/paymentsv2connect"
)

// Store is an in-memory payments ledger shared by the v1 and v2 services.
// It is safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	now      func() time.Time
	next     int
	charges  map[string]*paymentsv1.Charge
	byKey    map[string]string // idempotency key → charge id
	watchers map[chan *paymentsv1.ChargeEvent]struct{}
}

// NewStore returns an empty ledger. now may be nil (time.Now).
func NewStore(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{now: now, charges: map[string]*paymentsv1.Charge{}, byKey: map[string]string{},
		watchers: map[chan *paymentsv1.ChargeEvent]struct{}{}}
}

// V1 is the payments.v1 handler.
type V1 struct {
	paymentsv1connect.UnimplementedPaymentServiceHandler
	S *Store
}

// Charge charges once per idempotency key.
func (h *V1) Charge(_ context.Context, req *connect.Request[paymentsv1.ChargeRequest]) (*connect.Response[paymentsv1.ChargeResponse], error) {
	m := req.Msg
	if m.GetAmount().GetAmountMinor() <= 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("amount.amountMinor must be positive"))
	}
	if m.GetAmount().GetCurrency() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("amount.currency is required (ISO 4217, e.g. USD)"))
	}
	if m.GetCard().GetLast4() == "0000" {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("card declined"))
	}
	c, replayed := h.S.charge(m)
	return connect.NewResponse(&paymentsv1.ChargeResponse{Charge: c, Replayed: replayed}), nil
}

// GetCharge reads a charge.
func (h *V1) GetCharge(_ context.Context, req *connect.Request[paymentsv1.GetChargeRequest]) (*connect.Response[paymentsv1.GetChargeResponse], error) {
	c := h.S.get(req.Msg.GetId())
	if c == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("charge %q not found", req.Msg.GetId()))
	}
	return connect.NewResponse(&paymentsv1.GetChargeResponse{Charge: c}), nil
}

// Refund refunds a charge.
func (h *V1) Refund(_ context.Context, req *connect.Request[paymentsv1.RefundRequest]) (*connect.Response[paymentsv1.RefundResponse], error) {
	c, err := h.S.refund(req.Msg.GetChargeId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&paymentsv1.RefundResponse{Charge: c}), nil
}

// WatchCharges streams charge events until the client leaves or limit
// events were sent.
func (h *V1) WatchCharges(ctx context.Context, req *connect.Request[paymentsv1.WatchChargesRequest], st *connect.ServerStream[paymentsv1.ChargeEvent]) error {
	ch := h.S.watch()
	defer h.S.unwatch(ch)
	for n := int32(0); req.Msg.GetLimit() == 0 || n < req.Msg.GetLimit(); n++ {
		select {
		case ev := <-ch:
			if err := st.Send(ev); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

func (s *Store) charge(m *paymentsv1.ChargeRequest) (*paymentsv1.Charge, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := m.GetIdempotencyKey(); k != "" {
		if id, ok := s.byKey[k]; ok {
			return proto.Clone(s.charges[id]).(*paymentsv1.Charge), true
		}
	}
	s.next++
	c := &paymentsv1.Charge{
		Id: "ch_" + strconv.Itoa(s.next), Amount: m.GetAmount(), Status: paymentsv1.ChargeStatus_CHARGE_STATUS_SUCCEEDED,
		CreatedAt: timestamppb.New(s.now()), Metadata: m.GetMetadata(), Description: m.GetDescription(),
		Attributes: m.GetAttributes(), SettleAfter: durationpb.New(48 * time.Hour), Tags: m.GetTags(),
	}
	switch src := m.GetSource().(type) {
	case *paymentsv1.ChargeRequest_Card:
		c.Source = &paymentsv1.Charge_Card{Card: src.Card}
	case *paymentsv1.ChargeRequest_BankAccount:
		c.Source = &paymentsv1.Charge_BankAccount{BankAccount: src.BankAccount}
	}
	s.charges[c.Id] = c
	if k := m.GetIdempotencyKey(); k != "" {
		s.byKey[k] = c.Id
	}
	s.publish("created", c)
	return proto.Clone(c).(*paymentsv1.Charge), false
}

func (s *Store) get(id string) *paymentsv1.Charge {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.charges[id]; ok {
		return proto.Clone(c).(*paymentsv1.Charge)
	}
	return nil
}

func (s *Store) refund(id string) (*paymentsv1.Charge, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.charges[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("charge %q not found", id))
	}
	if c.Status == paymentsv1.ChargeStatus_CHARGE_STATUS_REFUNDED {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("charge %q is already refunded", id))
	}
	c.Status = paymentsv1.ChargeStatus_CHARGE_STATUS_REFUNDED
	s.publish("refunded", c)
	return proto.Clone(c).(*paymentsv1.Charge), nil
}

// publish sends an event to every watcher that has room (watchers that
// fall behind miss events rather than block charges). Called with s.mu held.
func (s *Store) publish(typ string, c *paymentsv1.Charge) {
	for ch := range s.watchers {
		select {
		case ch <- &paymentsv1.ChargeEvent{Type: typ, Charge: proto.Clone(c).(*paymentsv1.Charge)}:
		default:
		}
	}
}

func (s *Store) watch() chan *paymentsv1.ChargeEvent {
	ch := make(chan *paymentsv1.ChargeEvent, 64)
	s.mu.Lock()
	s.watchers[ch] = struct{}{}
	s.mu.Unlock()
	return ch
}

func (s *Store) unwatch(ch chan *paymentsv1.ChargeEvent) {
	s.mu.Lock()
	delete(s.watchers, ch)
	s.mu.Unlock()
}

// Watchers is the number of open WatchCharges streams (for tests).
func (s *Store) Watchers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.watchers)
}

// V2 is the payments.v2 handler over the same ledger: amounts are decimal
// strings.
type V2 struct {
	paymentsv2connect.UnimplementedPaymentServiceHandler
	S *Store
}

// Charge converts a v2 request to v1 and charges.
func (h *V2) Charge(_ context.Context, req *connect.Request[paymentsv2.ChargeRequest]) (*connect.Response[paymentsv2.ChargeResponse], error) {
	f, err := strconv.ParseFloat(req.Msg.GetAmount().GetAmount(), 64)
	if err != nil || f <= 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("amount.amount must be a positive decimal such as \"12.50\", not %q", req.Msg.GetAmount().GetAmount()))
	}
	c, _ := h.S.charge(&paymentsv1.ChargeRequest{
		Amount:         &paymentsv1.Money{Currency: req.Msg.GetAmount().GetCurrency(), AmountMinor: int64(f*100 + 0.5)},
		IdempotencyKey: req.Msg.GetIdempotencyKey(),
	})
	return connect.NewResponse(&paymentsv2.ChargeResponse{Charge: toV2(c)}), nil
}

// GetCharge reads a charge in the v2 shape.
func (h *V2) GetCharge(_ context.Context, req *connect.Request[paymentsv2.GetChargeRequest]) (*connect.Response[paymentsv2.GetChargeResponse], error) {
	c := h.S.get(req.Msg.GetId())
	if c == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("charge %q not found", req.Msg.GetId()))
	}
	return connect.NewResponse(&paymentsv2.GetChargeResponse{Charge: toV2(c)}), nil
}

func toV2(c *paymentsv1.Charge) *paymentsv2.Charge {
	a := c.GetAmount()
	return &paymentsv2.Charge{
		Id:        c.GetId(),
		Amount:    &paymentsv2.Money{Currency: a.GetCurrency(), Amount: fmt.Sprintf("%d.%02d", a.GetAmountMinor()/100, a.GetAmountMinor()%100)},
		Status:    c.GetStatus().String(),
		CreatedAt: c.GetCreatedAt(),
	}
}

// NewServer serves payments.v1 and payments.v2 over one store, every way.
// handlerOpts apply to both connect handlers (interceptors, limits).
func NewServer(store *Store, handlerOpts []connect.HandlerOption, opts ...call.Option) (*call.Server, error) {
	all := append([]call.Option{
		call.WithService(paymentsv1connect.NewPaymentServiceHandler(&V1{S: store}, handlerOpts...)),
		call.WithService(paymentsv2connect.NewPaymentServiceHandler(&V2{S: store}, handlerOpts...)),
	}, opts...)
	return call.NewServer(all...)
}
