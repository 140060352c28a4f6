package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/examples/payments"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
)

// The calls suite: one caller making sequential GetCharge calls of the
// payments example, per protocol, against
//
//	bare-connect   a bare connect-go handler (no call.Server), Connect
//	               protocol + binary protobuf, HTTP/1.1
//	bare-grpc      the same bare handler, gRPC over h2c
//
// and call.Server serving the same handler as gRPC, Connect, REST, GraphQL
// and SOAP 1.1, plus Connect with the resilient client interceptor
// (policies). Latencies are per call, loopback, one connection; the
// systems take turns call by call, so machine noise hits them alike.

const (
	MetricCallP50  = "call_p50_us"
	MetricCallP99  = "call_p99_us"
	MetricCallRate = "calls_per_s"
	// MetricPolicyCost is the client interceptor's own CPU per call.
	MetricPolicyCost = "policy_us_per_call"
	caseGetCharge    = "get-charge"
)

type caller func(ctx context.Context) error

func runCalls(args []string) error {
	fs := flag.NewFlagSet("calls", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print one JSON object per result line instead of a table")
	runs := fs.Int("runs", 3, "runs per measurement; each value is the median")
	count := fs.Int("count", 5000, "calls per measurement")
	quick := fs.Bool("quick", false, "smoke run: count 500 and 1 run unless given explicitly")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["count"] {
			*count = 500
		}
		if !set["runs"] {
			*runs = 1
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := payments.NewStore(nil)
	// The bare handler.
	_, bare := paymentsv1connect.NewPaymentServiceHandler(&payments.V1{S: store})
	bareAddr, err := serveH2C(ctx, bare)
	if err != nil {
		return err
	}
	srv, err := payments.NewServer(store, nil)
	if err != nil {
		return err
	}
	addr, err := serveH2C(ctx, srv)
	if err != nil {
		return err
	}
	base, bareBase := "http://"+addr, "http://"+bareAddr
	// One charge to read.
	c0 := paymentsv1connect.NewPaymentServiceClient(http.DefaultClient, base)
	if _, err := c0.Charge(ctx, connect.NewRequest(&paymentsv1.ChargeRequest{Amount: &paymentsv1.Money{Currency: "USD", AmountMinor: 1250}})); err != nil {
		return err
	}
	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{Protocols: &p}}
	get := connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"})
	unary := func(c paymentsv1connect.PaymentServiceClient) caller {
		return func(ctx context.Context) error {
			_, err := c.GetCharge(ctx, connect.NewRequest(get.Msg))
			return err
		}
	}
	ci := call.NewClientInterceptor(nil)
	systems := []struct {
		name string
		fn   caller
	}{
		{"bare-connect", unary(paymentsv1connect.NewPaymentServiceClient(h1, bareBase))},
		{"bare-grpc", unary(paymentsv1connect.NewPaymentServiceClient(h2, bareBase, connect.WithGRPC()))},
		{"call-connect", unary(paymentsv1connect.NewPaymentServiceClient(h1, base))},
		{"call-connect+policies", unary(paymentsv1connect.NewPaymentServiceClient(h1, base, connect.WithInterceptors(ci)))},
		{"call-grpc", unary(paymentsv1connect.NewPaymentServiceClient(h2, base, connect.WithGRPC()))},
		{"call-rest", httpCaller(h1, "GET", base+"/v1/charges/ch_1", "", "", `"ch_1"`)},
		{"call-graphql", httpCaller(h1, "POST", base+"/graphql", "application/json",
			`{"query":"{ payments_v1_GetCharge(id: \"ch_1\") { charge { id status amount { currency amountMinor } createdAt } } }"}`, `"ch_1"`)},
		{"call-soap11", httpCaller(h1, "POST", base+"/soap/payments.v1.PaymentService", "text/xml",
			`<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetCharge xmlns="urn:switchboard:payments.v1.PaymentService"><id>ch_1</id></GetCharge></soap:Body></soap:Envelope>`, "<id>ch_1</id>")},
	}
	col := NewCollector()
	fns := make([]caller, len(systems))
	for i, s := range systems {
		fns[i] = s.fn
	}
	for run := 1; run <= *runs; run++ {
		progress("calls: run %d/%d: %d systems interleaved, %d calls each", run, *runs, len(systems), *count)
		lats, spent, err := measureInterleaved(ctx, fns, *count)
		if err != nil {
			return err
		}
		for i, s := range systems {
			lat := lats[i]
			col.Add(s.name, caseGetCharge, 0, 1, "n/a (in-memory handler)", MetricCallP50, percentileUS(lat, 50))
			col.Add(s.name, caseGetCharge, 0, 1, "n/a (in-memory handler)", MetricCallP99, percentileUS(lat, 99))
			col.Add(s.name, caseGetCharge, 0, 1, "n/a (in-memory handler)", MetricCallRate, float64(len(lat))/spent[i].Seconds())
		}
		col.Add("policies-only", caseGetCharge, 0, 1, "n/a (no network)", MetricPolicyCost, policyCost(ci, *count*20))
	}
	rs := col.Results()
	if *asJSON {
		return PrintJSON(os.Stdout, rs)
	}
	PrintTable(os.Stdout, rs)
	p50 := func(sys string) float64 {
		r, _ := Find(rs, sys, caseGetCharge, 0, MetricCallP50)
		return r.Value
	}
	ratio := func(name string, a, b string, goal float64) Ratio {
		v := p50(a) / p50(b)
		return Ratio{Name: name, Value: v, Goal: fmt.Sprintf("<= %.1f", goal), Pass: v <= goal,
			Note: fmt.Sprintf("%s p50 %.1fµs / %s p50 %.1fµs", a, p50(a), b, p50(b))}
	}
	ratios := []Ratio{
		ratio("REST p50 vs bare connect-go p50", "call-rest", "bare-connect", 1.1),
		ratio("Connect p50 via call.Server vs bare", "call-connect", "bare-connect", 1.1),
		ratio("gRPC p50 via call.Server vs bare gRPC", "call-grpc", "bare-grpc", 1.1),
		ratio("GraphQL p50 vs REST p50", "call-graphql", "call-rest", 2),
		ratio("SOAP p50 vs REST p50", "call-soap11", "call-rest", 2),
	}
	over := p50("call-connect+policies") - p50("call-connect")
	ratios = append(ratios, Ratio{Name: "client policies overhead (µs, p50 difference)", Value: over, Goal: "<= 5µs", Pass: over <= 5, Unit: "µs",
		Note: fmt.Sprintf("%.1fµs - %.1fµs", p50("call-connect+policies"), p50("call-connect"))})
	if r, ok := Find(rs, "policies-only", caseGetCharge, 0, MetricPolicyCost); ok {
		ratios = append(ratios, Ratio{Name: "client policies CPU per call (µs, no network)", Value: r.Value, Goal: "<= 5µs", Pass: r.Value <= 5, Unit: "µs",
			Note: "the interceptor around a call that returns at once"})
	}
	fmt.Println()
	PrintRatios(os.Stdout, ratios)
	return nil
}

func httpCaller(c *http.Client, method, url, ctype, body, want string) caller {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		if err != nil {
			return err
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := c.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			return err
		}
		if res.StatusCode != 200 || !strings.Contains(string(b), want) {
			return fmt.Errorf("%s %s: %d %s", method, url, res.StatusCode, b)
		}
		return nil
	}
}

// measureInterleaved makes n calls with each of fns, taking turns call by
// call (each round starting with the next function), so that the load of
// a shared, noisy machine falls on every system alike. It returns each
// system's sorted latencies and the total time its calls took.
func measureInterleaved(ctx context.Context, fns []caller, n int) ([][]time.Duration, []time.Duration, error) {
	for _, fn := range fns {
		for range min(n/10, 200) { // warm up connections and caches
			if err := fn(ctx); err != nil {
				return nil, nil, err
			}
		}
	}
	lats := make([][]time.Duration, len(fns))
	spent := make([]time.Duration, len(fns))
	for i := range lats {
		lats[i] = make([]time.Duration, 0, n)
	}
	for round := range n {
		for k := range fns {
			i := (round + k) % len(fns)
			t := time.Now()
			if err := fns[i](ctx); err != nil {
				return nil, nil, err
			}
			d := time.Since(t)
			lats[i] = append(lats[i], d)
			spent[i] += d
		}
	}
	for _, l := range lats {
		slices.Sort(l)
	}
	return lats, spent, nil
}

// policyCost returns the microseconds the client interceptor adds to a
// unary call that succeeds at once (no network), averaged over n calls.
func policyCost(ci *call.ClientInterceptor, n int) float64 {
	res := connect.NewResponse(&paymentsv1.GetChargeResponse{})
	f := ci.WrapUnary(func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) { return res, nil })
	req := connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"})
	ctx := context.Background()
	start := time.Now()
	for range n {
		if _, err := f(ctx, req); err != nil {
			return math.NaN()
		}
	}
	return float64(time.Since(start).Microseconds()) / float64(n)
}

func serveH2C(ctx context.Context, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			progress("calls: serve: %v", err)
		}
	}()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return ln.Addr().String(), nil
}
