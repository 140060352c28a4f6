package call_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/examples/payments"
)

// fixture is a payments server on a real loopback listener.
type fixture struct {
	base  string
	store *payments.Store
	// deadlines records, per procedure, whether the handler saw a deadline.
	deadlines chan time.Duration
}

// failInterceptor fails any call whose request has X-Test-Fail: <code>.
func failInterceptor(f *fixture) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if dl, ok := ctx.Deadline(); ok {
				select {
				case f.deadlines <- time.Until(dl):
				default:
				}
			}
			if c := req.Header().Get("X-Test-Fail"); c != "" {
				var code connect.Code
				if err := code.UnmarshalText([]byte(c)); err != nil {
					return nil, err
				}
				return nil, connect.NewError(code, errors.New("injected "+c))
			}
			return next(ctx, req)
		}
	}
}

func newFixture(t *testing.T, opts ...call.Option) *fixture {
	t.Helper()
	f := &fixture{store: payments.NewStore(nil), deadlines: make(chan time.Duration, 16)}
	srv, err := payments.NewServer(f.store, []connect.HandlerOption{connect.WithInterceptors(failInterceptor(f))}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f.base = serve(t, srv)
	return f
}

// serve runs srv on a loopback port until the test ends and returns its
// base URL.
func serve(t *testing.T, srv *call.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	})
	return "http://" + ln.Addr().String()
}

// newRequest builds a request with a 20 s deadline, ctype as its
// Content-Type (when set) and hdr as header name/value pairs.
func newRequest(t *testing.T, method, url, ctype, body string, hdr ...string) (*http.Request, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req, cancel
}

// do sends a request and returns status, content type and body.
func do(t *testing.T, method, url, ctype, body string, hdr ...string) (int, string, string) {
	t.Helper()
	req, cancel := newRequest(t, method, url, ctype, body, hdr...)
	defer cancel()
	ctx := req.Context()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, res.Header.Get("Content-Type"), string(b)
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s: want %q in\n%s", what, w, got)
		}
	}
}

const chargeJSON = `{"amount":{"currency":"USD","amountMinor":"1250"},"card":{"last4":"4242","expMonth":12,"expYear":2030},"metadata":{"order":"o-1"},"description":"tea","attributes":{"gift":true},"tags":["a","b"]}`

// charge makes ch_1 (on a fresh fixture) over REST.
func (f *fixture) charge(t *testing.T) {
	t.Helper()
	st, _, body := do(t, "POST", f.base+"/v1/charges", "application/json", chargeJSON)
	if st != 200 {
		t.Fatalf("charge: %d %s", st, body)
	}
}

// deadline waits (bounded) for the deadline the handler saw.
func (f *fixture) deadline(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-f.deadlines:
		return d
	case <-time.After(20 * time.Second):
		t.Fatal("the handler was not called")
		return 0
	}
}
