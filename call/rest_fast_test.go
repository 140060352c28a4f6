package call_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	sbv1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/examples/payments"
)

// restProbe is an interceptor whose behaviour the request's headers pick:
// X-Test-Fail fails the call with a code (failInterceptor), X-Test-Detail
// with details and metadata, X-Test-Headers answers with extra response
// headers and trailers.
func restProbe(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Header().Get("X-Test-Detail") != "" {
			err := connect.NewError(connect.CodeFailedPrecondition, errors.New("card declined: \"insufficient funds\""))
			if d, derr := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: "DECLINED", Domain: "payments", Metadata: map[string]string{"b": "2", "a": "1"}}); derr == nil {
				err.AddDetail(d)
			}
			err.Meta().Set("X-Error-Meta", "m")
			return nil, err
		}
		res, err := next(ctx, req)
		if err == nil && req.Header().Get("X-Test-Headers") != "" {
			res.Header().Set("X-Resp", "h")
			res.Header().Add("X-Multi", "1")
			res.Header().Add("X-Multi", "2")
			res.Trailer().Set("X-Trail", "t")
		}
		return res, err
	}
}

type restCase struct {
	name, method, path, body string
	hdr                      map[string]string
	chunked                  bool
}

// TestRESTFastPathMatchesVanguard sends the same requests to a Server with
// the REST fast path and to one that sends every REST call through
// vanguard, and requires the same status, headers and body bytes.
func TestRESTFastPathMatchesVanguard(t *testing.T) {
	clock := func() time.Time { return time.Unix(1700000000, 0).UTC() }
	newSrv := func(slow bool) (*call.Server, string) {
		opts := []connect.HandlerOption{connect.WithInterceptors(connect.UnaryInterceptorFunc(restProbe), failInterceptor(&fixture{deadlines: make(chan time.Duration, 1)}))}
		var copts []call.Option
		if slow {
			copts = append(copts, call.WithoutRESTFastPath())
		}
		srv, err := payments.NewServer(payments.NewStore(clock), opts, copts...)
		if err != nil {
			t.Fatal(err)
		}
		return srv, serve(t, srv)
	}
	_, fast := newSrv(false)
	_, slow := newSrv(true)
	charge := `{"amount":{"currency":"USD","amountMinor":"1250"},"metadata":{"b":"2","a":"1"},"card":{"last4":"4242"},"description":"d","attributes":{"x":1.5,"s":"é\n"},"tags":["t"]}`
	cases := []restCase{
		{name: "charge", method: "POST", path: "/v1/charges", body: charge},
		{name: "charge idempotent", method: "POST", path: "/v1/charges", body: `{"amount":{"currency":"EUR","amountMinor":"5"},"idempotencyKey":"k1"}`},
		{name: "charge replayed", method: "POST", path: "/v1/charges", body: `{"amount":{"currency":"EUR","amountMinor":"5"},"idempotencyKey":"k1"}`},
		{name: "charge form type (curl -d)", method: "POST", path: "/v1/charges", body: `{"amount":{"currency":"USD","amountMinor":"1"}}`, hdr: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
		{name: "charge charset", method: "POST", path: "/v1/charges", body: `{"amount":{"currency":"USD","amountMinor":"1"}}`, hdr: map[string]string{"Content-Type": "application/json; charset=utf-8"}},
		{name: "charge chunked", method: "POST", path: "/v1/charges", body: `{"amount":{"currency":"USD","amountMinor":"2"}}`, chunked: true},
		{name: "charge empty body", method: "POST", path: "/v1/charges", body: ``},
		{name: "charge empty object", method: "POST", path: "/v1/charges", body: `{}`},
		{name: "charge unknown field", method: "POST", path: "/v1/charges", body: `{"amount":{"currency":"USD","amountMinor":"1"},"nope":1}`},
		{name: "charge malformed", method: "POST", path: "/v1/charges", body: `{"amount":`},
		{name: "charge wrong type", method: "POST", path: "/v1/charges", body: `{"amount":"USD"}`},
		{name: "charge array", method: "POST", path: "/v1/charges", body: `[]`},
		{name: "charge text/plain", method: "POST", path: "/v1/charges", body: `{}`, hdr: map[string]string{"Content-Type": "text/plain"}},
		{name: "charge gzip body", method: "POST", path: "/v1/charges", body: gzipped(t, `{"amount":{"currency":"USD","amountMinor":"3"}}`), hdr: map[string]string{"Content-Encoding": "gzip"}},
		{name: "charge v2", method: "POST", path: "/v2/charges", body: `{"amount":{"currency":"USD","amountMinor":"7"}}`},
		{name: "get", method: "GET", path: "/v1/charges/ch_1"},
		{name: "get gzip", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"Accept-Encoding": "gzip"}},
		{name: "get gzip with q", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"Accept-Encoding": "br, gzip;q=0.5"}},
		{name: "get v2", method: "GET", path: "/v2/charges/ch_2"},
		{name: "get missing", method: "GET", path: "/v1/charges/ch_404"},
		{name: "get headers and trailers", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"X-Test-Headers": "1"}},
		{name: "get failing", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"X-Test-Fail": "unavailable"}},
		{name: "get failing internal", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"X-Test-Fail": "internal"}},
		{name: "get failing resource", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"X-Test-Fail": "resource_exhausted"}},
		{name: "get failing canceled", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"X-Test-Fail": "canceled"}},
		{name: "get error details", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"X-Test-Detail": "1"}},
		{name: "charge error details", method: "POST", path: "/v1/charges", body: `{}`, hdr: map[string]string{"X-Test-Detail": "1"}},
		{name: "get query", method: "GET", path: "/v1/charges/ch_1?id=ch_2"},
		{name: "get unknown query", method: "GET", path: "/v1/charges/ch_1?nope=1"},
		{name: "get escaped", method: "GET", path: "/v1/charges/ch%5F1"},
		{name: "get escaped slash", method: "GET", path: "/v1/charges/a%2Fb"},
		{name: "get trailing slash", method: "GET", path: "/v1/charges/ch_1/"},
		{name: "get empty id", method: "GET", path: "/v1/charges/"},
		{name: "get double slash", method: "GET", path: "/v1//charges/ch_1"},
		{name: "get verb", method: "GET", path: "/v1/charges/ch_1:get"},
		{name: "get unicode", method: "GET", path: "/v1/charges/%C3%A9"},
		{name: "get with body", method: "GET", path: "/v1/charges/ch_1", body: `{"id":"x"}`},
		{name: "get timeout header", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"X-Server-Timeout": "5"}},
		{name: "get bad timeout header", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"X-Server-Timeout": "soon"}},
		{name: "get connect timeout header", method: "GET", path: "/v1/charges/ch_1", hdr: map[string]string{"Connect-Timeout-Ms": "5000"}},
		{name: "head", method: "HEAD", path: "/v1/charges/ch_1"},
		{name: "put", method: "PUT", path: "/v1/charges/ch_1", body: `{}`},
		{name: "delete", method: "DELETE", path: "/v1/charges"},
		{name: "no route", method: "GET", path: "/v1/nothing"},
	}
	compareREST(t, fast, slow, cases)
}

// compareREST sends each case to the fast server and to the vanguard one
// and requires the same status, headers (but Date) and body bytes.
func compareREST(t *testing.T, fast, slow string, cases []restCase) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	for _, c := range cases {
		f := restDo(t, client, fast, c)
		s := restDo(t, client, slow, c)
		if f.status != s.status || !bytes.Equal(f.body, s.body) || !equalHeaders(f.hdr, s.hdr) {
			t.Errorf("%s: %s %s\nfast    %d %v %q\nvanguard %d %v %q", c.name, c.method, c.path, f.status, f.hdr, f.body, s.status, s.hdr, s.body)
		}
	}
}

type restResult struct {
	status int
	hdr    http.Header
	body   []byte
}

func restDo(t *testing.T, client *http.Client, base string, c restCase) restResult {
	t.Helper()
	var body io.Reader = strings.NewReader(c.body)
	if c.chunked {
		body = io.MultiReader(strings.NewReader(c.body)) // unknown length: sent chunked
	}
	if c.body == "" {
		body = nil
	}
	req, err := http.NewRequest(c.method, base+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.hdr {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	res.Header.Del("Date")
	return restResult{res.StatusCode, res.Header, b}
}

// equalHeaders compares headers, Allow as a set: vanguard lists a 405's
// methods in map order, which differs from call to call.
func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w := b[k]
		if k == "Allow" {
			v, w = sortedItems(v), sortedItems(w)
		}
		if !slices.Equal(v, w) {
			return false
		}
	}
	return true
}

// sortedItems splits comma-separated header values into sorted items.
func sortedItems(vs []string) []string {
	var out []string
	for _, v := range vs {
		for item := range strings.SplitSeq(v, ",") {
			out = append(out, strings.TrimSpace(item))
		}
	}
	slices.Sort(out)
	return out
}

func gzipped(t *testing.T, s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// hubAPI is a stand-in for the hub's API (switchboard.v1), whose REST
// routes have a message-field body (Publish: body "message") and routes
// that share their segments with other HTTP methods.
type hubAPI struct {
	switchboardv1connect.UnimplementedSwitchboardServiceHandler
}

func (hubAPI) Publish(_ context.Context, req *connect.Request[sbv1.PublishRequest]) (*connect.Response[sbv1.PublishResponse], error) {
	m := req.Msg.GetMessage()
	return connect.NewResponse(&sbv1.PublishResponse{Result: &sbv1.MessageResult{
		Id: req.Msg.GetTopic() + "|" + m.GetText() + "|" + string(m.GetPayload()) + "|" + m.GetKey(), Seq: uint64(len(m.GetHeaders())), Duplicate: m == nil,
	}}), nil
}

func (hubAPI) DescribeTopic(_ context.Context, req *connect.Request[sbv1.DescribeTopicRequest]) (*connect.Response[sbv1.DescribeTopicResponse], error) {
	if req.Msg.GetTopic() == "nope" {
		return nil, connect.NewError(connect.CodeNotFound, errors.New(`topic "nope" not found`))
	}
	return connect.NewResponse(&sbv1.DescribeTopicResponse{Topic: &sbv1.TopicInfo{Name: req.Msg.GetTopic(), Groups: []string{"b", "a"}, Messages: 3}}), nil
}

func (hubAPI) DeleteTopic(context.Context, *connect.Request[sbv1.DeleteTopicRequest]) (*connect.Response[sbv1.DeleteTopicResponse], error) {
	return connect.NewResponse(&sbv1.DeleteTopicResponse{}), nil
}

func TestRESTFastPathMatchesVanguardHubAPI(t *testing.T) {
	newSrv := func(opts ...call.Option) string {
		srv, err := call.NewServer(append(opts, call.WithService(switchboardv1connect.NewSwitchboardServiceHandler(hubAPI{})))...)
		if err != nil {
			t.Fatal(err)
		}
		return serve(t, srv)
	}
	fast, slow := newSrv(), newSrv(call.WithoutRESTFastPath())
	cases := []restCase{
		{name: "publish text", method: "POST", path: "/v1/topics/orders.placed/messages", body: `{"text":"hi","key":"k","headers":{"b":"2","a":"1"}}`},
		{name: "publish payload", method: "POST", path: "/v1/topics/t/messages", body: `{"payload":"AAEC"}`},
		{name: "publish empty body", method: "POST", path: "/v1/topics/t/messages"},
		{name: "publish empty object", method: "POST", path: "/v1/topics/t/messages", body: `{}`},
		{name: "publish topic in body", method: "POST", path: "/v1/topics/t/messages", body: `{"topic":"other","text":"x"}`},
		{name: "publish unknown field", method: "POST", path: "/v1/topics/t/messages", body: `{"txt":"x"}`},
		{name: "publish wrapped (wrong shape)", method: "POST", path: "/v1/topics/t/messages", body: `{"message":{"text":"x"}}`},
		{name: "publish bad base64", method: "POST", path: "/v1/topics/t/messages", body: `{"payload":"!!"}`},
		{name: "publish oneof twice", method: "POST", path: "/v1/topics/t/messages", body: `{"payload":"AA==","text":"x"}`},
		{name: "publish batch (verb route)", method: "POST", path: "/v1/topics/t/messages:batch", body: `{"messages":[{"text":"x"}]}`},
		{name: "describe", method: "GET", path: "/v1/topics/orders"},
		{name: "describe missing", method: "GET", path: "/v1/topics/nope"},
		{name: "delete", method: "DELETE", path: "/v1/topics/orders"},
		{name: "unimplemented", method: "GET", path: "/v1/topics"},
		{name: "patch (no route)", method: "PATCH", path: "/v1/topics/orders"},
	}
	compareREST(t, fast, slow, cases)
}

// FuzzRESTFastPath sends arbitrary REST requests to a Server with the
// fast path and to one without, in process, and requires the same
// answers. The seeds are requests of the test above.
func FuzzRESTFastPath(f *testing.F) {
	for _, s := range []struct{ method, target, ctype, body string }{
		{"GET", "/v1/charges/ch_1", "", ""},
		{"GET", "/v1/charges/ch%5F1", "", ""},
		{"GET", "/v1/charges/ch_1?id=x", "", ""},
		{"POST", "/v1/charges", "application/json", `{"amount":{"currency":"USD","amountMinor":"1"},"tags":["a"]}`},
		{"POST", "/v1/charges", "", `{"amount":`},
		{"POST", "/v2/charges", "application/json; charset=utf-8", `{}`},
		{"DELETE", "/v1/charges/ch_1", "", ""},
	} {
		f.Add(s.method, s.target, s.ctype, []byte(s.body))
	}
	clock := func() time.Time { return time.Unix(1700000000, 0).UTC() }
	newSrv := func(opts ...call.Option) http.Handler {
		srv, err := payments.NewServer(payments.NewStore(clock), nil, append(opts, call.WithLogger(discardLogger()))...)
		if err != nil {
			f.Fatal(err)
		}
		return srv
	}
	fast, slow := newSrv(), newSrv(call.WithoutRESTFastPath())
	do := func(h http.Handler, method, target, ctype string, body []byte) (*httptest.ResponseRecorder, bool) {
		req, err := http.NewRequest(method, "http://x"+target, bytes.NewReader(body))
		if err != nil || req.URL.Host != "x" {
			return nil, false
		}
		req.RequestURI = req.URL.RequestURI()
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w, true
	}
	f.Fuzz(func(t *testing.T, method, target, ctype string, body []byte) {
		if !strings.HasPrefix(target, "/") {
			return
		}
		a, ok := do(fast, method, target, ctype, body)
		if !ok {
			return
		}
		b, _ := do(slow, method, target, ctype, body)
		if a.Code != b.Code || !bytes.Equal(a.Body.Bytes(), b.Body.Bytes()) || !equalHeaders(a.Header(), b.Header()) {
			t.Fatalf("%s %s (%q, %q)\nfast    %d %v %q\nvanguard %d %v %q", method, target, ctype, body,
				a.Code, a.Header(), a.Body.Bytes(), b.Code, b.Header(), b.Body.Bytes())
		}
	})
}
