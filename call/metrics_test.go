package call_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-dev/switchboard/call"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
)

// The breaker metrics follow a real cycle against the payments server:
// closed → open (failures) → half-open → open (a failed probe) →
// half-open → closed (a good probe). The clock is the test's, so no step
// depends on timing.
func TestClientMetricsBreakerCycle(t *testing.T) {
	f := newFixture(t)
	f.charge(t)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var events []string
	ci := call.NewClientInterceptor(&call.ClientConfig{
		MaxAttempts: 3, FailureThreshold: 3, OpenFor: time.Minute, BaseBackoff: time.Millisecond,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		OnStateChange: func(_ string, from, to call.BreakerState) {
			events = append(events, from.String()+">"+to.String())
		},
	})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(ci.Collector())
	c := paymentsv1connect.NewPaymentServiceClient(h2cClient(), f.base, connect.WithInterceptors(ci))
	target := strings.TrimPrefix(f.base, "http://")
	get := func(fail string) error {
		req := connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"})
		if fail != "" {
			req.Header().Set("X-Test-Fail", fail)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := c.GetCharge(ctx, req)
		return err
	}
	type want struct {
		state                                      call.BreakerState
		closedOpen, openHalf, halfOpen, halfClosed float64
		rejected, attempts, retries                float64
	}
	expect := func(step string, w want) {
		t.Helper()
		tl := map[string]string{"target": target}
		tr := func(from, to call.BreakerState) float64 {
			return metric(t, reg, "switchboard_call_client_breaker_transitions_total",
				map[string]string{"target": target, "from": from.String(), "to": to.String()})
		}
		got := want{
			state:      call.BreakerState(metric(t, reg, "switchboard_call_client_breaker_state", tl)),
			closedOpen: tr(call.BreakerClosed, call.BreakerOpen), openHalf: tr(call.BreakerOpen, call.BreakerHalfOpen),
			halfOpen: tr(call.BreakerHalfOpen, call.BreakerOpen), halfClosed: tr(call.BreakerHalfOpen, call.BreakerClosed),
			rejected: metric(t, reg, "switchboard_call_client_breaker_rejected_total", tl),
			attempts: metric(t, reg, "switchboard_call_client_attempts_total", tl),
			retries:  metric(t, reg, "switchboard_call_client_retries_total", map[string]string{"target": target, "code": "unavailable"}),
		}
		if got != w {
			t.Errorf("%s:\n got %+v\nwant %+v", step, got, w)
		}
		if s := ci.BreakerState(target); s != w.state {
			t.Errorf("%s: BreakerState %v, gauge says %v", step, s, w.state)
		}
	}

	if err := get(""); err != nil {
		t.Fatal(err)
	}
	expect("healthy", want{state: call.BreakerClosed, attempts: 1})

	// Three unavailable attempts (one call, two retries) open the breaker.
	if err := get("unavailable"); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatal(err)
	}
	expect("opened", want{state: call.BreakerOpen, closedOpen: 1, attempts: 4, retries: 2})

	// Open: the next call fails fast and never reaches the server.
	if err := get(""); !errors.Is(err, call.ErrCircuitOpen) {
		t.Fatalf("open breaker: %v", err)
	}
	expect("failing fast", want{state: call.BreakerOpen, closedOpen: 1, rejected: 1, attempts: 4, retries: 2})

	// OpenFor passed: the gauge says half-open before the probe arrives.
	advance(time.Minute)
	expect("probe due", want{state: call.BreakerHalfOpen, closedOpen: 1, rejected: 1, attempts: 4, retries: 2})

	// A failing probe reopens it; its retry meets the open breaker.
	if err := get("unavailable"); !errors.Is(err, call.ErrCircuitOpen) {
		t.Fatalf("retry after a failed probe: %v", err)
	}
	expect("probe failed", want{state: call.BreakerOpen, closedOpen: 1, openHalf: 1, halfOpen: 1, rejected: 2, attempts: 5, retries: 3})

	// Again after OpenFor: a good probe closes it.
	advance(time.Minute)
	if err := get(""); err != nil {
		t.Fatal(err)
	}
	expect("closed", want{state: call.BreakerClosed, closedOpen: 1, openHalf: 2, halfOpen: 1, halfClosed: 1, rejected: 2, attempts: 6, retries: 3})

	if got := strings.Join(events, " "); got != "closed>open open>half-open half-open>open open>half-open half-open>closed" {
		t.Errorf("OnStateChange saw %s", got)
	}
}

func TestClientMetricsHedgesAndBudget(t *testing.T) {
	// The breaker stays closed, so every failing call asks for retries.
	h, c, ci, target := newFlaky(t, 0, connect.CodeUnavailable, &call.ClientConfig{DefaultTimeout: 30 * time.Second, FailureThreshold: 1 << 20})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(ci.Collector())
	tl := map[string]string{"target": target}
	// The first attempt hangs; the hedge answers.
	if _, err := call.Hedge(context.Background(), 20*time.Millisecond, c.GetCharge, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "slow"})); err != nil {
		t.Fatal(err)
	}
	if n := metric(t, reg, "switchboard_call_client_hedges_total", tl); n != 1 {
		t.Errorf("hedges_total = %v", n)
	}
	if n := metric(t, reg, "switchboard_call_client_hedge_wins_total", tl); n != 1 {
		t.Errorf("hedge_wins_total = %v", n)
	}
	// A fast answer: no hedge is sent.
	if _, err := call.Hedge(context.Background(), 10*time.Second, c.GetCharge, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "a"})); err != nil {
		t.Fatal(err)
	}
	if n := metric(t, reg, "switchboard_call_client_hedges_total", tl); n != 1 {
		t.Errorf("hedges_total after an unhedged call = %v", n)
	}

	// A target failing forever drains the budget (10 tokens).
	h.mu.Lock()
	h.fail = 1 << 30
	h.mu.Unlock()
	for range 20 {
		_, _ = c.GetCharge(context.Background(), connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "a"}))
	}
	if n := metric(t, reg, "switchboard_call_client_retry_budget_exhausted_total", tl); n < 1 {
		t.Errorf("retry_budget_exhausted_total = %v", n)
	}
	if n := metric(t, reg, "switchboard_call_client_retry_budget_tokens", nil); n >= 1 {
		t.Errorf("retry_budget_tokens = %v after the budget ran out", n)
	}
}
