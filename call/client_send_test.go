package call_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/switchboard-dev/switchboard/call"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
)

// probe is a payments handler that counts the GetCharge calls reaching it;
// with hang set it answers only when its ctx ends (deadline_exceeded).
type probe struct {
	paymentsv1connect.UnimplementedPaymentServiceHandler
	calls atomic.Int32
	hang  bool
}

func (h *probe) GetCharge(ctx context.Context, req *connect.Request[paymentsv1.GetChargeRequest]) (*connect.Response[paymentsv1.GetChargeResponse], error) {
	h.calls.Add(1)
	if h.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return connect.NewResponse(&paymentsv1.GetChargeResponse{Charge: &paymentsv1.Charge{Id: req.Msg.GetId()}}), nil
}

// protocol is how a test client talks: Connect over HTTP/1.1 or gRPC over
// cleartext HTTP/2.
type protocol struct {
	name   string
	protos func() *http.Protocols
	opts   []connect.ClientOption
}

var sendProtocols = []protocol{
	{"connect-http1", func() *http.Protocols { var p http.Protocols; p.SetHTTP1(true); return &p }, nil},
	{"grpc-h2c", func() *http.Protocols { var p http.Protocols; p.SetUnencryptedHTTP2(true); return &p }, []connect.ClientOption{connect.WithGRPC()}},
}

// serveProbe serves h over HTTP/1.1 and h2c; wrap, if set, wraps the
// handler.
func serveProbe(t *testing.T, h *probe, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	_, hh := paymentsv1connect.NewPaymentServiceHandler(h)
	if wrap != nil {
		hh = wrap(hh)
	}
	srv := httptest.NewUnstartedServer(hh)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// connTrace counts the connections the Transport handed to requests of
// ctx (whatever the interceptor does).
func connTrace(ctx context.Context) (context.Context, *atomic.Int32) {
	var n atomic.Int32
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { n.Add(1) }}), &n
}

// metric reads one sample of a registry: the counter or gauge name whose
// labels include want (0 when absent).
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// A DeadlineExceeded before the request was sent — the first address is
// blackholed, so the dial never completes — is retried: the retry reaches
// the server, which sees the call once.
func TestClientRetriesDeadlineBeforeSend(t *testing.T) {
	hole, ok := blackhole(t)
	if !ok {
		t.Skip("this kernel does not drop SYNs to a full accept queue; no blackhole to dial")
	}
	for _, p := range sendProtocols {
		for _, mode := range []string{"transport dial timeout", "ConnectTimeout"} {
			t.Run(p.name+"/"+mode, func(t *testing.T) {
				h := &probe{}
				base := serveProbe(t, h, nil)
				target := strings.TrimPrefix(base, "http://")
				// The transport dials the blackhole first (a dead backend
				// behind round-robin DNS), then the server.
				var dials atomic.Int32
				dialer := &net.Dialer{Timeout: time.Second}
				cfg := &call.ClientConfig{MaxAttempts: 4, BaseBackoff: time.Millisecond}
				if mode == "ConnectTimeout" {
					// The transport would wait 10 s for the dial; the
					// interceptor gives up after 1 s.
					dialer.Timeout = 10 * time.Second
					cfg.ConnectTimeout = time.Second
				}
				tr := &http.Transport{
					Protocols: p.protos(),
					DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
						if dials.Add(1) == 1 {
							addr = hole
						}
						return dialer.DialContext(ctx, network, addr)
					},
				}
				t.Cleanup(tr.CloseIdleConnections)
				ci := call.NewClientInterceptor(cfg)
				reg := prometheus.NewPedanticRegistry()
				reg.MustRegister(ci.Collector())
				c := paymentsv1connect.NewPaymentServiceClient(&http.Client{Transport: tr}, base, append(p.opts, connect.WithInterceptors(ci))...)

				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				ctx, conns := connTrace(ctx)
				res, err := c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "a"}))
				if err != nil {
					t.Fatalf("a deadline before send must be retried: %v (dials %d)", err, dials.Load())
				}
				if res.Msg.GetCharge().GetId() != "a" {
					t.Errorf("answer: %v", res.Msg)
				}
				if n := h.calls.Load(); n != 1 {
					t.Errorf("the server saw %d calls, want 1", n)
				}
				if n := dials.Load(); n < 2 {
					t.Errorf("dials: %d, want the blackholed one and a retry", n)
				}
				if n := conns.Load(); n != 1 {
					t.Errorf("connections handed to attempts: %d, want 1 (the blackholed attempt never got one)", n)
				}
				if n := metric(t, reg, "switchboard_call_client_retries_total", map[string]string{"target": target, "code": "deadline_exceeded"}); n < 1 {
					t.Errorf("retries_total{code=deadline_exceeded} = %v", n)
				}
			})
		}
	}
}

// hangingListener accepts connections and reads HTTP/1.1 requests from
// them, counting each, but never answers.
func hangingListener(t *testing.T) (addr string, requests *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	requests = new(atomic.Int32)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					requests.Add(1)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String(), requests
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A DeadlineExceeded after the request was written is not retried, even
// for a method without side effects and with time left on the call.
func TestClientNoRetryDeadlineAfterSend(t *testing.T) {
	check := func(t *testing.T, c paymentsv1connect.PaymentServiceClient, reg *prometheus.Registry, target string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ctx, conns := connTrace(ctx)
		_, err := c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "a"}))
		if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			t.Fatalf("want deadline_exceeded, got %v", err)
		}
		if ctx.Err() != nil {
			t.Fatal("the call's own deadline expired; the test needs time left for a retry")
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("attempts that got a connection: %d, want 1", n)
		}
		if n := metric(t, reg, "switchboard_call_client_attempts_total", map[string]string{"target": target}); n != 1 {
			t.Errorf("attempts_total = %v, want 1", n)
		}
		if n := metric(t, reg, "switchboard_call_client_retries_total", map[string]string{"target": target, "code": "deadline_exceeded"}); n != 0 {
			t.Errorf("retries_total{deadline_exceeded} = %v, want 0", n)
		}
	}
	newClient := func(tr *http.Transport, base string, opts ...connect.ClientOption) (paymentsv1connect.PaymentServiceClient, *prometheus.Registry) {
		ci := call.NewClientInterceptor(&call.ClientConfig{MaxAttempts: 4, BaseBackoff: time.Millisecond})
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(ci.Collector())
		return paymentsv1connect.NewPaymentServiceClient(&http.Client{Transport: tr}, base, append(opts, connect.WithInterceptors(ci))...), reg
	}

	// A listener that accepts and reads the request but never answers; the
	// transport stops waiting for the response headers after 500 ms.
	t.Run("connect-http1/no answer", func(t *testing.T) {
		addr, requests := hangingListener(t)
		tr := &http.Transport{ResponseHeaderTimeout: 500 * time.Millisecond}
		t.Cleanup(tr.CloseIdleConnections)
		c, reg := newClient(tr, "http://"+addr)
		check(t, c, reg, addr)
		waitFor(t, "the request to reach the listener", func() bool { return requests.Load() >= 1 })
		if n := requests.Load(); n != 1 {
			t.Errorf("the listener read %d requests, want 1", n)
		}
	})
	// A server that answers deadline_exceeded itself (its own 300 ms
	// limit ran out while the caller still had a minute).
	for _, p := range sendProtocols {
		t.Run(p.name+"/server deadline", func(t *testing.T) {
			h := &probe{hang: true}
			base := serveProbe(t, h, func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ctx, cancel := context.WithTimeout(r.Context(), 300*time.Millisecond)
					defer cancel()
					next.ServeHTTP(w, r.WithContext(ctx))
				})
			})
			tr := &http.Transport{Protocols: p.protos()}
			t.Cleanup(tr.CloseIdleConnections)
			c, reg := newClient(tr, base, p.opts...)
			check(t, c, reg, strings.TrimPrefix(base, "http://"))
			if n := h.calls.Load(); n != 1 {
				t.Errorf("the server saw %d calls, want 1", n)
			}
		})
	}
}
