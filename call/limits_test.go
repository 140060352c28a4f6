package call_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/examples/payments"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// testLimit is the WithMaxBodyBytes of the size-limit tests.
const testLimit = 4096

// limitText is in every answer to a body over testLimit, in every protocol.
const limitText = "exceeds the server's limit of 4096 bytes"

// The streams service of the size-limit tests: limitstest.v1.Streams, with
// a client stream, a bidi stream and a server stream of BytesValue.
const (
	streamsPath   = "/limitstest.v1.Streams/"
	uploadProc    = streamsPath + "Upload"
	echoProc      = streamsPath + "Echo"
	downloadProc  = streamsPath + "Download"
	streamsPkg    = "limitstest.v1"
	streamsFile   = "limitstest/v1/streams.proto"
	bytesValue    = ".google.protobuf.BytesValue"
	int64Value    = ".google.protobuf.Int64Value"
	wrappersProto = "google/protobuf/wrappers.proto"
)

var registerStreams = sync.OnceValue(func() error {
	if _, err := protoregistry.GlobalFiles.FindFileByPath(streamsFile); err == nil {
		return nil
	}
	m := func(name, in, out string, client, server bool) *descriptorpb.MethodDescriptorProto {
		return &descriptorpb.MethodDescriptorProto{Name: proto.String(name), InputType: proto.String(in), OutputType: proto.String(out),
			ClientStreaming: proto.Bool(client), ServerStreaming: proto.Bool(server)}
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String(streamsFile), Package: proto.String(streamsPkg), Syntax: proto.String("proto3"),
		Dependency: []string{wrappersProto},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Streams"),
			Method: []*descriptorpb.MethodDescriptorProto{
				m("Upload", bytesValue, int64Value, true, false),
				m("Echo", bytesValue, bytesValue, true, true),
				m("Download", bytesValue, int64Value, false, true),
			},
		}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		return err
	}
	return protoregistry.GlobalFiles.RegisterFile(fd)
})

// streamsHandler serves limitstest.v1.Streams: Upload answers the bytes it
// received, Echo echoes, Download answers the size of its request.
func streamsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(uploadProc, connect.NewClientStreamHandler(uploadProc,
		func(_ context.Context, s *connect.ClientStream[wrapperspb.BytesValue]) (*connect.Response[wrapperspb.Int64Value], error) {
			var n int64
			for s.Receive() {
				n += int64(len(s.Msg().GetValue()))
			}
			if err := s.Err(); err != nil {
				return nil, err
			}
			return connect.NewResponse(wrapperspb.Int64(n)), nil
		}))
	mux.Handle(echoProc, connect.NewBidiStreamHandler(echoProc,
		func(_ context.Context, s *connect.BidiStream[wrapperspb.BytesValue, wrapperspb.BytesValue]) error {
			for {
				msg, err := s.Receive()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if err := s.Send(msg); err != nil {
					return err
				}
			}
		}))
	mux.Handle(downloadProc, connect.NewServerStreamHandler(downloadProc,
		func(_ context.Context, req *connect.Request[wrapperspb.BytesValue], s *connect.ServerStream[wrapperspb.Int64Value]) error {
			return s.Send(wrapperspb.Int64(int64(len(req.Msg.GetValue()))))
		}))
	return mux
}

// serveLimited serves the payments example and limitstest.v1.Streams with
// WithMaxBodyBytes(testLimit).
func serveLimited(t *testing.T) string {
	t.Helper()
	if err := registerStreams(); err != nil {
		t.Fatal(err)
	}
	srv, err := payments.NewServer(payments.NewStore(nil), nil,
		call.WithLogger(discardLogger()), call.WithMaxBodyBytes(testLimit), call.WithService(streamsPath, streamsHandler()))
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, srv)
}

// lengthTransport sends every request body with a declared Content-Length
// (declared) or chunked, without one, and remembers the size of the last
// body it declared.
type lengthTransport struct {
	base     http.RoundTripper
	declared bool

	mu     sync.Mutex
	sent   int64 // the last declared length
	status int   // the last response's status
}

func (t *lengthTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		r = r.Clone(r.Context())
		r.GetBody = nil
		if t.declared {
			b, err := io.ReadAll(r.Body)
			_ = r.Body.Close()
			if err != nil {
				return nil, err
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			t.mu.Lock()
			t.sent = int64(len(b))
			t.mu.Unlock()
		} else {
			r.Body, r.ContentLength = struct{ io.ReadCloser }{r.Body}, -1
		}
	}
	res, err := t.base.RoundTrip(r)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.status = 0
	if err == nil {
		t.status = res.StatusCode
	}
	return res, err
}

func (t *lengthTransport) last() (sent int64, status int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sent, t.status
}

// lengthClient is an HTTP/1.1 (or, h2, HTTP/2 cleartext) client whose
// requests are declared or chunked.
func lengthClient(h2, declared bool) (*http.Client, *lengthTransport) {
	var p http.Protocols
	if h2 {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	lt := &lengthTransport{base: &http.Transport{Protocols: &p}, declared: declared}
	return &http.Client{Transport: lt, Timeout: 30 * time.Second}, lt
}

func mode(declared bool) string {
	if declared {
		return "declared"
	}
	return "chunked"
}

// bigCharge is a valid charge whose description makes it larger than
// testLimit in every encoding, gzipped too: the limit is on the body as
// sent.
func bigCharge() *paymentsv1.ChargeRequest {
	m := chargeMsg(100, "4242")
	rnd := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 2*testLimit)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	m.Description = wrapperspb.String(base64.StdEncoding.EncodeToString(b))
	return m
}

// wantTooLarge checks a connect-go client's error: resource_exhausted,
// naming the limit and, when the server knew it, the size.
func wantTooLarge(t *testing.T, what string, err error, size int64) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("%s: %v, want resource_exhausted", what, err)
		return
	}
	var re *apiconv.RemoteError
	if !errors.As(apiconv.FromConnect(err), &re) || re.Reason != apiconv.ReasonRequestTooLarge {
		t.Errorf("%s: %v carries no ErrorInfo with reason %s", what, err, apiconv.ReasonRequestTooLarge)
	}
	msg := err.Error()
	if !strings.Contains(msg, limitText) {
		t.Errorf("%s: message %q does not name the limit (%q)", what, msg, limitText)
	}
	if size > 0 && !strings.Contains(msg, " of "+strconv.FormatInt(size, 10)+" bytes exceeds") {
		t.Errorf("%s: message %q does not name the size %d", what, msg, size)
	}
}

// gRPC, gRPC-Web and Connect unary calls over the limit are refused with
// resource_exhausted in the caller's protocol, whether the body's length
// is declared (refused before it is read, naming both sizes) or not (cut
// while reading); calls under the limit still work both ways.
func TestBodyLimitRPCUnary(t *testing.T) {
	base := serveLimited(t)
	for _, p := range []struct {
		name string
		h2   bool
		opts []connect.ClientOption
		// exact: the server sees the client's body (the fast path), so a
		// declared length is named in the message.
		exact bool
	}{
		{"grpc", true, []connect.ClientOption{connect.WithGRPC()}, true},
		{"grpc-web", false, []connect.ClientOption{connect.WithGRPCWeb()}, true},
		{"grpc-web h2", true, []connect.ClientOption{connect.WithGRPCWeb()}, true},
		{"connect", false, nil, true},
		{"connect h2", true, nil, true},
		{"connect gzip", false, []connect.ClientOption{connect.WithSendGzip()}, true},
		{"connect json", false, []connect.ClientOption{connect.WithProtoJSON()}, false},
		{"grpc-web json", false, []connect.ClientOption{connect.WithGRPCWeb(), connect.WithProtoJSON()}, false},
	} {
		for _, declared := range []bool{true, false} {
			t.Run(p.name+" "+mode(declared), func(t *testing.T) {
				hc, lt := lengthClient(p.h2, declared)
				c := paymentsv1connect.NewPaymentServiceClient(hc, base, p.opts...)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if _, err := c.Charge(ctx, connect.NewRequest(chargeMsg(100, "4242"))); err != nil {
					t.Fatalf("a call under the limit: %v", err)
				}
				_, err := c.Charge(ctx, connect.NewRequest(bigCharge()))
				sent, status := lt.last()
				if !declared || !p.exact {
					sent = 0
				}
				wantTooLarge(t, "charge", err, sent)
				// A Connect unary error has the status of the error table.
				if p.opts == nil || p.name == "connect json" || p.name == "connect gzip" {
					if want := call.MappingOf(connect.CodeResourceExhausted).HTTPStatus; status != want {
						t.Errorf("connect: HTTP %d, want %d", status, want)
					}
				}
			})
		}
	}
}

// Streams are limited per message: a client or bidi stream may carry any
// number of messages under the limit, and fails with resource_exhausted at
// the first message over it; a server stream's one request message is
// limited like a unary body.
func TestBodyLimitRPCStreams(t *testing.T) {
	base := serveLimited(t)
	small := wrapperspb.Bytes(bytes.Repeat([]byte("s"), testLimit/2))
	big := wrapperspb.Bytes(bytes.Repeat([]byte("b"), 2*testLimit))
	bigSize := int64(proto.Size(big))
	for _, p := range []struct {
		name string
		h2   bool
		opts []connect.ClientOption
		bidi bool
	}{
		{"grpc", true, []connect.ClientOption{connect.WithGRPC()}, true},
		{"grpc-web", false, []connect.ClientOption{connect.WithGRPCWeb()}, false},
		{"grpc-web h2", true, []connect.ClientOption{connect.WithGRPCWeb()}, true},
		{"connect", false, nil, false},
		{"connect h2", true, nil, true},
		{"connect json", true, []connect.ClientOption{connect.WithProtoJSON()}, true},
	} {
		t.Run(p.name, func(t *testing.T) {
			hc, _ := lengthClient(p.h2, false)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// json: the server sees the transcoded message, of another size.
			wantSize := bigSize
			if p.name == "connect json" {
				wantSize = 0
			}

			upload := connect.NewClient[wrapperspb.BytesValue, wrapperspb.Int64Value](hc, base+uploadProc, p.opts...)
			up := func(msgs ...*wrapperspb.BytesValue) (int64, error) {
				s := upload.CallClientStream(ctx)
				for _, m := range msgs {
					if err := s.Send(m); err != nil {
						break // the server answered: CloseAndReceive has its error
					}
				}
				res, err := s.CloseAndReceive()
				if err != nil {
					return 0, err
				}
				return res.Msg.GetValue(), nil
			}
			msgs := make([]*wrapperspb.BytesValue, 10) // 5 times the limit in all
			for i := range msgs {
				msgs[i] = small
			}
			if n, err := up(msgs...); err != nil || n != 10*testLimit/2 {
				t.Errorf("client stream of messages under the limit: %d %v", n, err)
			}
			_, err := up(small, big, small)
			wantTooLarge(t, "client stream", err, wantSize)

			download := connect.NewClient[wrapperspb.BytesValue, wrapperspb.Int64Value](hc, base+downloadProc, p.opts...)
			down := func(m *wrapperspb.BytesValue) (int64, error) {
				s, err := download.CallServerStream(ctx, connect.NewRequest(m))
				if err != nil {
					return 0, err
				}
				defer s.Close()
				var n int64
				for s.Receive() {
					n = s.Msg().GetValue()
				}
				return n, s.Err()
			}
			if n, err := down(small); err != nil || n != testLimit/2 {
				t.Errorf("server stream under the limit: %d %v", n, err)
			}
			_, err = down(big)
			wantTooLarge(t, "server stream", err, 0)

			if !p.bidi {
				return
			}
			echo := connect.NewClient[wrapperspb.BytesValue, wrapperspb.BytesValue](hc, base+echoProc, p.opts...)
			s := echo.CallBidiStream(ctx)
			for i := range 6 { // 3 times the limit in all
				if err := s.Send(small); err != nil {
					t.Fatalf("bidi send %d: %v", i, err)
				}
				if _, err := s.Receive(); err != nil {
					t.Fatalf("bidi echo %d under the limit: %v", i, err)
				}
			}
			_ = s.Send(big)
			_, err = s.Receive()
			wantTooLarge(t, "bidi stream", err, wantSize)
			_ = s.CloseRequest()
			_ = s.CloseResponse()
		})
	}
}

// doBody sends body with a declared length or chunked, returning the
// status, content type and body of the answer.
func doBody(t *testing.T, declared bool, method, url, ctype, body string, hdr ...string) (int, string, string) {
	t.Helper()
	req, cancel := newRequest(t, method, url, ctype, body, hdr...)
	defer cancel()
	if !declared {
		req.Body, req.ContentLength = io.NopCloser(struct{ io.Reader }{strings.NewReader(body)}), -1
	}
	res, err := http.DefaultClient.Do(req)
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

// REST, GraphQL and SOAP bodies over the limit get the same code,
// resource_exhausted, in each protocol's shape: REST and GraphQL with HTTP
// 413, SOAP as the error table maps the code (a Server / Receiver fault,
// HTTP 500).
func TestBodyLimitHTTP(t *testing.T) {
	base := serveLimited(t)
	pad := strings.Repeat("x", 2*testLimit)
	restBody := `{` + chargeOK + `,"description":"` + pad + `"}`
	gqlBody := js(map[string]any{"query": `mutation { payments_v1_Charge(amount: {currency: "USD", amountMinor: "100"}, card: {last4: "4242"}, description: "` + pad + `") { replayed } }`})
	soapBody := func(env string) string {
		return envelope(env, "", `<Charge xmlns="`+tns+`"><amount><currency>USD</currency><amountMinor>100</amountMinor></amount><card><last4>4242</last4></card><description>`+pad+`</description></Charge>`)
	}
	// sizeIn checks the message names the size of a declared body.
	sizeIn := func(what string, declared bool, msg string, size int) {
		t.Helper()
		if !strings.Contains(msg, limitText) {
			t.Errorf("%s: %q does not name the limit", what, msg)
		}
		if declared && !strings.Contains(msg, fmt.Sprintf("request body of %d bytes exceeds", size)) {
			t.Errorf("%s: %q does not name the size %d", what, msg, size)
		}
	}
	for _, declared := range []bool{true, false} {
		t.Run(mode(declared), func(t *testing.T) {
			// REST: 413 and a google.rpc.Status with code 8, on an
			// annotated route and on the default route of a method.
			for _, path := range []string{"/v1/charges", paymentsv1connect.PaymentServiceChargeProcedure} {
				st, ct, body := doBody(t, declared, "POST", base+path, "application/json", restBody)
				var rest struct {
					Code    any    `json:"code"`
					Message string `json:"message"`
					Details []struct {
						Type  string `json:"type"`
						Value string `json:"value"`
					} `json:"details"`
				}
				if err := json.Unmarshal([]byte(body), &rest); err != nil || st != http.StatusRequestEntityTooLarge || !strings.HasPrefix(ct, "application/json") {
					t.Errorf("rest %s: %d %s %s, want 413 and JSON", path, st, ct, body)
				}
				// The default route is the Connect protocol's unary JSON
				// call: a Connect error, whether declared or cut.
				wantCode := any(float64(connect.CodeResourceExhausted))
				if path == paymentsv1connect.PaymentServiceChargeProcedure {
					wantCode = "resource_exhausted"
				}
				if rest.Code != wantCode {
					t.Errorf("rest %s: code %v, want %v: %s", path, rest.Code, wantCode, body)
				}
				if path == paymentsv1connect.PaymentServiceChargeProcedure {
					// Connect's own error, with its ErrorInfo detail.
					var info errdetails.ErrorInfo
					if len(rest.Details) != 1 || rest.Details[0].Type != "google.rpc.ErrorInfo" {
						t.Errorf("rest %s: details %+v, want one google.rpc.ErrorInfo", path, rest.Details)
					} else if raw, err := base64.RawStdEncoding.DecodeString(rest.Details[0].Value); err != nil || proto.Unmarshal(raw, &info) != nil || info.GetReason() != apiconv.ReasonRequestTooLarge {
						t.Errorf("rest %s: ErrorInfo %v, want reason %s", path, &info, apiconv.ReasonRequestTooLarge)
					}
				}
				sizeIn("rest "+path, declared, rest.Message, len(restBody))
				// Under the limit, the same route works.
				if st, _, body := doBody(t, declared, "POST", base+path, "application/json", "{"+chargeOK+"}"); st != http.StatusOK {
					t.Errorf("rest %s under the limit: %d %s", path, st, body)
				}
			}

			// GraphQL: 413, extensions.code of the error table.
			st, _, body := doBody(t, declared, "POST", base+"/graphql", "application/json", gqlBody)
			var out struct {
				Errors []struct {
					Message    string         `json:"message"`
					Extensions map[string]any `json:"extensions"`
				} `json:"errors"`
			}
			if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Errors) != 1 || st != http.StatusRequestEntityTooLarge {
				t.Errorf("graphql: %d %s, want 413 and one error", st, body)
			} else {
				e := out.Errors[0]
				if e.Extensions["code"] != call.MappingOf(connect.CodeResourceExhausted).GraphQL || e.Extensions["connectCode"] != "resource_exhausted" {
					t.Errorf("graphql: extensions %v, want code RESOURCE_EXHAUSTED, connectCode resource_exhausted", e.Extensions)
				}
				sizeIn("graphql", declared, e.Message, len(gqlBody))
			}

			// SOAP 1.1 and 1.2: the table's fault for resource_exhausted.
			row := call.MappingOf(connect.CodeResourceExhausted)
			for _, v12 := range []bool{false, true} {
				name, ctype, raw, fault := "soap 1.1", "text/xml; charset=utf-8", soapBody(env11), "<faultcode>soap:"+row.SOAP11+"</faultcode>"
				if v12 {
					name, ctype, raw, fault = "soap 1.2", "application/soap+xml; charset=utf-8", soapBody(env12), "<soap:Value>soap:"+row.SOAP12+"</soap:Value>"
				}
				st, _, body := doBody(t, declared, "POST", base+"/soap/payments.v1.PaymentService", ctype, raw)
				if st != http.StatusInternalServerError || !strings.Contains(body, fault) || !strings.Contains(body, "<sb:code>resource_exhausted</sb:code>") {
					t.Errorf("%s: %d %s, want 500 with %s and sb:code resource_exhausted", name, st, body, fault)
				}
				sizeIn(name, declared, html.UnescapeString(body), len(raw))
			}
		})
	}
}

// TestBodyLimitOnTheWire: a Connect JSON call is limited by the bytes it
// sends, not by the protobuf message vanguard makes of them (padding makes
// the JSON over the limit, the message far under it).
func TestBodyLimitOnTheWire(t *testing.T) {
	base := serveLimited(t)
	body := `{"id":"ch_1"` + strings.Repeat(" ", testLimit) + `}`
	for _, declared := range []bool{true, false} {
		status, _, got := doBody(t, declared, "POST", base+"/payments.v1.PaymentService/GetCharge", "application/json", body,
			"Connect-Protocol-Version", "1")
		if status != http.StatusTooManyRequests || !strings.Contains(got, `"resource_exhausted"`) || !strings.Contains(got, limitText) {
			t.Errorf("%s: padded Connect JSON call: %d %s; want 429 resource_exhausted naming the limit", mode(declared), status, got)
		}
	}
}
