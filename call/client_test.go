package call_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard/call"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
)

// flaky fails the first `fail` calls of each method with `code`; a
// GetCharge for "slow" blocks until its ctx ends (once).
type flaky struct {
	paymentsv1connect.UnimplementedPaymentServiceHandler
	mu        sync.Mutex
	fail      int
	code      connect.Code
	calls     map[string]int
	deadlines chan bool
	slowOnce  atomic.Bool
}

func (h *flaky) count(m string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls[m]++
	if h.calls[m] <= h.fail {
		return connect.NewError(h.code, errors.New("flaky"))
	}
	return nil
}

func (h *flaky) n(m string) int { h.mu.Lock(); defer h.mu.Unlock(); return h.calls[m] }

func (h *flaky) GetCharge(ctx context.Context, req *connect.Request[paymentsv1.GetChargeRequest]) (*connect.Response[paymentsv1.GetChargeResponse], error) {
	_, ok := ctx.Deadline()
	select {
	case h.deadlines <- ok:
	default:
	}
	if req.Msg.GetId() == "slow" && h.slowOnce.CompareAndSwap(false, true) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err := h.count("get"); err != nil {
		return nil, err
	}
	return connect.NewResponse(&paymentsv1.GetChargeResponse{Charge: &paymentsv1.Charge{Id: req.Msg.GetId()}}), nil
}

func (h *flaky) Charge(_ context.Context, _ *connect.Request[paymentsv1.ChargeRequest]) (*connect.Response[paymentsv1.ChargeResponse], error) {
	if err := h.count("charge"); err != nil {
		return nil, err
	}
	return connect.NewResponse(&paymentsv1.ChargeResponse{}), nil
}

func newFlaky(t *testing.T, fail int, code connect.Code, cfg *call.ClientConfig) (*flaky, paymentsv1connect.PaymentServiceClient, *call.ClientInterceptor, string) {
	t.Helper()
	h := &flaky{fail: fail, code: code, calls: map[string]int{}, deadlines: make(chan bool, 16)}
	srv := httptest.NewServer(http.StripPrefix("", func() http.Handler { _, hh := paymentsv1connect.NewPaymentServiceHandler(h); return hh }()))
	t.Cleanup(srv.Close)
	if cfg == nil {
		cfg = &call.ClientConfig{}
	}
	cfg.BaseBackoff = time.Millisecond
	ci := call.NewClientInterceptor(cfg)
	c := paymentsv1connect.NewPaymentServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(ci))
	return h, c, ci, strings.TrimPrefix(srv.URL, "http://")
}

func TestClientRetriesOnlySafeCalls(t *testing.T) {
	h, c, _, _ := newFlaky(t, 2, connect.CodeUnavailable, nil)
	ctx := context.Background()
	if _, err := c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "a"})); err != nil {
		t.Fatalf("GetCharge (no side effects) should succeed after retries: %v", err)
	}
	if h.n("get") != 3 {
		t.Errorf("GetCharge attempts: %d, want 3", h.n("get"))
	}
	_, err := c.Charge(ctx, connect.NewRequest(&paymentsv1.ChargeRequest{}))
	if connect.CodeOf(err) != connect.CodeUnavailable || h.n("charge") != 1 {
		t.Errorf("Charge without a key must not be retried: %v, %d attempts", err, h.n("charge"))
	}
	if _, err := c.Charge(ctx, connect.NewRequest(&paymentsv1.ChargeRequest{IdempotencyKey: "k"})); err != nil || h.n("charge") != 3 {
		t.Errorf("Charge with a key is retried: %v, %d attempts", err, h.n("charge"))
	}
	// The handler saw a deadline although the caller set none.
	if ok := <-h.deadlines; !ok {
		t.Error("no default deadline")
	}
}

func TestClientNoRetryOnOtherCodes(t *testing.T) {
	h, c, _, _ := newFlaky(t, 1, connect.CodeInvalidArgument, nil)
	_, err := c.GetCharge(context.Background(), connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "a"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || h.n("get") != 1 {
		t.Errorf("%v after %d attempts", err, h.n("get"))
	}
}

func TestClientBreaker(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	var transitions []string
	cfg := &call.ClientConfig{
		MaxAttempts: 1, FailureThreshold: 3, OpenFor: time.Minute,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		OnStateChange: func(_ string, from, to call.BreakerState) {
			transitions = append(transitions, from.String()+">"+to.String())
		},
	}
	h, c, ci, target := newFlaky(t, 3, connect.CodeUnavailable, cfg)
	ctx := context.Background()
	get := func() error {
		_, err := c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "a"}))
		return err
	}
	for range 3 {
		_ = get()
	}
	if s := ci.BreakerState(target); s != call.BreakerOpen {
		t.Fatalf("after 3 failures: %v", s)
	}
	err := get()
	if !errors.Is(err, call.ErrCircuitOpen) || connect.CodeOf(err) != connect.CodeUnavailable || h.n("get") != 3 {
		t.Fatalf("open breaker must fail fast: %v (%d calls reached the server)", err, h.n("get"))
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if s := ci.BreakerState(target); s != call.BreakerHalfOpen {
		t.Fatalf("after OpenFor: %v", s)
	}
	if err := get(); err != nil { // the probe succeeds (the server recovered)
		t.Fatal(err)
	}
	if s := ci.BreakerState(target); s != call.BreakerClosed {
		t.Fatalf("after a good probe: %v", s)
	}
	if got := strings.Join(transitions, " "); got != "closed>open open>half-open half-open>closed" {
		t.Errorf("transitions: %s", got)
	}
}

func TestClientHedging(t *testing.T) {
	h, c, _, _ := newFlaky(t, 0, connect.CodeUnavailable, &call.ClientConfig{DefaultTimeout: 30 * time.Second})
	// The first attempt hangs; the hedge answers. Without hedging this
	// would wait for the 30 s deadline.
	res, err := call.Hedge(context.Background(), 20*time.Millisecond, c.GetCharge, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "slow"}))
	if err != nil || res.Msg.GetCharge().GetId() != "slow" {
		t.Fatalf("hedged: %v %v", res, err)
	}
	if h.n("get") != 1 {
		t.Errorf("attempts that reached the handler body: %d", h.n("get"))
	}
}

func TestClientRetryBudget(t *testing.T) {
	// Fails forever: 10 saved tokens allow at most ~10 retries in total,
	// however many calls fail.
	h, c, _, _ := newFlaky(t, 1<<30, connect.CodeUnavailable, &call.ClientConfig{MaxAttempts: 3})
	for range 20 {
		_, _ = c.GetCharge(context.Background(), connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "a"}))
	}
	if n := h.n("get"); n > 20+10+2 {
		t.Errorf("%d attempts for 20 calls: the retry budget did not hold", n)
	}
}

// TestClientTooLargeNotRetried: a request refused for its size would be
// refused again, and says nothing about the server's health: the client
// neither retries it nor lets it open the breaker.
func TestClientTooLargeNotRetried(t *testing.T) {
	f := newFixture(t, call.WithMaxBodyBytes(64))
	var attempts atomic.Int32
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		attempts.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	ci := call.NewClientInterceptor(&call.ClientConfig{FailureThreshold: 2})
	c := paymentsv1connect.NewPaymentServiceClient(hc, f.base, connect.WithInterceptors(ci))
	big := &paymentsv1.GetChargeRequest{Id: strings.Repeat("x", 200)}
	for range 5 {
		_, err := c.GetCharge(context.Background(), connect.NewRequest(big))
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("oversized GetCharge: %v; want resource_exhausted", err)
		}
	}
	if n := attempts.Load(); n != 5 {
		t.Errorf("%d attempts for 5 oversized calls: they were retried", n)
	}
	target := strings.TrimPrefix(f.base, "http://")
	if s := ci.BreakerState(target); s != call.BreakerClosed {
		t.Errorf("breaker %v after oversized calls; they must not count as failures", s)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (h *flaky) WatchCharges(_ context.Context, _ *connect.Request[paymentsv1.WatchChargesRequest], st *connect.ServerStream[paymentsv1.ChargeEvent]) error {
	if err := h.count("watch"); err != nil {
		return err
	}
	return st.Send(&paymentsv1.ChargeEvent{Type: "created"})
}

// TestClientBreakerStreams: streams meet the breaker as unary calls do:
// failing streams open it, an open breaker refuses a stream without
// reaching the server, and a stream that gets its first message closes it
// again after OpenFor.
func TestClientBreakerStreams(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	cfg := &call.ClientConfig{
		MaxAttempts: 1, FailureThreshold: 2, OpenFor: time.Minute,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	}
	h, c, ci, target := newFlaky(t, 2, connect.CodeUnavailable, cfg)
	ctx := context.Background()
	watch := func() error {
		st, err := c.WatchCharges(ctx, connect.NewRequest(&paymentsv1.WatchChargesRequest{Limit: 1}))
		if err != nil {
			return err
		}
		defer st.Close()
		for st.Receive() {
		}
		return st.Err()
	}
	for i := range 2 {
		if err := watch(); connect.CodeOf(err) != connect.CodeUnavailable || errors.Is(err, call.ErrCircuitOpen) {
			t.Fatalf("stream %d: %v; want the server's unavailable", i, err)
		}
	}
	if s := ci.BreakerState(target); s != call.BreakerOpen {
		t.Fatalf("after 2 failed streams: %v", s)
	}
	if err := watch(); !errors.Is(err, call.ErrCircuitOpen) || h.n("watch") != 2 {
		t.Fatalf("open breaker must refuse the stream at once: %v (%d streams reached the server)", err, h.n("watch"))
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if err := watch(); err != nil { // the probe: the server recovered
		t.Fatal(err)
	}
	if s := ci.BreakerState(target); s != call.BreakerClosed {
		t.Fatalf("after a good probe stream: %v", s)
	}
}
