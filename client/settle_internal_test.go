package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/broker"
)

// fakeHub answers Settle calls: it records each batch and holds the call
// until the test releases it.
type fakeHub struct {
	switchboardv1connect.SwitchboardServiceClient // nil: other calls panic

	mu          sync.Mutex
	batches     [][]string
	release     chan struct{} // nil: answer at once
	unsupported bool
	acks        []string // single Ack calls
}

func (f *fakeHub) Settle(ctx context.Context, req *connect.Request[v1.SettleRequest]) (*connect.Response[v1.SettleResponse], error) {
	f.mu.Lock()
	var toks []string
	for _, s := range req.Msg.GetSettlements() {
		toks = append(toks, s.GetToken())
	}
	f.batches = append(f.batches, toks)
	release, unsupported := f.release, f.unsupported
	f.mu.Unlock()
	if unsupported {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("no Settle here"))
	}
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	resp := &v1.SettleResponse{}
	for _, tok := range toks {
		r := &v1.SettleResult{}
		switch tok {
		case "expired":
			r.Code, r.Reason, r.Message = int32(connect.CodeFailedPrecondition), "DELIVERY_EXPIRED", "redelivered"
		case "settled":
			r.Code, r.Reason, r.Message = int32(connect.CodeFailedPrecondition), "ALREADY_SETTLED", "settled"
		}
		resp.Results = append(resp.Results, r)
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeHub) Ack(_ context.Context, req *connect.Request[v1.AckRequest]) (*connect.Response[v1.AckResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acks = append(f.acks, req.Msg.GetToken())
	return connect.NewResponse(&v1.AckResponse{}), nil
}

func (f *fakeHub) calls() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.batches...)
}

func newFakeSettler(f *fakeHub) *settler {
	b := &Broker{base: "fake", rpc: f}
	b.settler.b = b
	b.settler.maxBatch = maxSettleBatch
	return &b.settler
}

func ack(tok string) *v1.Settlement { return &v1.Settlement{Token: tok, Op: v1.Settlement_ACK} }

// waitFor polls cond: the test does not depend on timing, only waits.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A lone settlement is sent at once; while calls are in flight, others
// queue and go together in the next call; each gets its own result.
func TestSettlerBatches(t *testing.T) {
	f := &fakeHub{}
	st := newFakeSettler(f)
	ctx := context.Background()
	if err := st.settle(ctx, ack("lone")); err != nil {
		t.Fatal(err)
	}
	if got := f.calls(); len(got) != 1 || len(got[0]) != 1 {
		t.Fatalf("calls after one ack = %v, want one call of one", got)
	}

	f.mu.Lock()
	f.release = make(chan struct{})
	f.mu.Unlock()
	errs := make(chan error, 100)
	// Fill both call slots with one settlement each.
	for i := range maxSettleCalls {
		go func() { errs <- st.settle(ctx, ack("slot"+string(rune('a'+i)))) }()
	}
	waitFor(t, "both calls in flight", func() bool { return len(f.calls()) == 1+maxSettleCalls })
	// These queue behind them.
	toks := []string{"q1", "expired", "q2", "settled", "q3"}
	results := make(map[string]chan error)
	for _, tok := range toks {
		c := make(chan error, 1)
		results[tok] = c
		go func() { c <- st.settle(ctx, ack(tok)) }()
	}
	waitFor(t, "5 queued settlements", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.queue) == len(toks)
	})
	close(f.release)
	for range maxSettleCalls {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for tok, c := range results {
		err := <-c
		switch tok {
		case "expired":
			if !errors.Is(err, broker.ErrDeliveryExpired) {
				t.Errorf("%s: %v, want ErrDeliveryExpired", tok, err)
			}
		case "settled":
			if !errors.Is(err, broker.ErrAlreadySettled) {
				t.Errorf("%s: %v, want ErrAlreadySettled", tok, err)
			}
		default:
			if err != nil {
				t.Errorf("%s: %v", tok, err)
			}
		}
	}
	calls := f.calls()
	if len(calls) != 2+maxSettleCalls || len(calls[len(calls)-1]) != len(toks) {
		t.Fatalf("calls = %v, want the 5 queued settlements in one call", calls)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.inFlight != 0 || len(st.queue) != 0 {
		t.Fatalf("settler idle with %d calls in flight and %d queued", st.inFlight, len(st.queue))
	}
}

// A caller that gives up before its settlement is sent gets its context's
// error, and the settlement is not sent.
func TestSettlerCancelled(t *testing.T) {
	f := &fakeHub{release: make(chan struct{})}
	st := newFakeSettler(f)
	for range maxSettleCalls {
		go func() { _ = st.settle(context.Background(), ack("busy")) }()
	}
	waitFor(t, "calls in flight", func() bool { return len(f.calls()) == maxSettleCalls })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.settle(ctx, ack("gave-up")) }()
	waitFor(t, "queued", func() bool { st.mu.Lock(); defer st.mu.Unlock(); return len(st.queue) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled settle: %v", err)
	}
	close(f.release)
	waitFor(t, "idle", func() bool { st.mu.Lock(); defer st.mu.Unlock(); return st.inFlight == 0 })
	for _, c := range f.calls() {
		for _, tok := range c {
			if tok == "gave-up" {
				t.Fatalf("a cancelled settlement was sent: %v", f.calls())
			}
		}
	}
}

// Against a hub without Settle the client falls back to the single calls.
func TestSettlerOlderHub(t *testing.T) {
	f := &fakeHub{unsupported: true}
	st := newFakeSettler(f)
	for _, tok := range []string{"a", "b"} {
		if err := st.settle(context.Background(), ack(tok)); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.calls(); len(got) != 1 {
		t.Fatalf("Settle calls = %v, want 1 (then none)", got)
	}
	if len(f.acks) != 2 {
		t.Fatalf("Ack calls = %v, want a and b", f.acks)
	}
}

// No call carries more settlements than the hub accepts (its max_batch).
func TestSettlerHubLimit(t *testing.T) {
	f := &fakeHub{release: make(chan struct{})}
	st := newFakeSettler(f)
	st.maxBatch = 2
	errs := make(chan error, 10)
	for range maxSettleCalls {
		go func() { errs <- st.settle(context.Background(), ack("slot")) }()
	}
	waitFor(t, "calls in flight", func() bool { return len(f.calls()) == maxSettleCalls })
	for range 5 {
		go func() { errs <- st.settle(context.Background(), ack("q")) }()
	}
	waitFor(t, "5 queued", func() bool { st.mu.Lock(); defer st.mu.Unlock(); return len(st.queue) == 5 })
	close(f.release)
	for range maxSettleCalls + 5 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, c := range f.calls() {
		if len(c) > 2 {
			t.Fatalf("a call of %d settlements with max_batch 2: %v", len(c), f.calls())
		}
		n += len(c)
	}
	if n != maxSettleCalls+5 {
		t.Fatalf("%d settlements sent, want %d", n, maxSettleCalls+5)
	}
}
