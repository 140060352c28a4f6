package call_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/examples/payments"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
)

// secret is what a panicking handler knows and no client may see.
const secret = "admin:hunter2@10.0.0.7"

// matrixInterceptor gives the payments handler the failures of the error
// matrix: authentication (Authorization: Bearer expired → unauthenticated,
// Bearer reader charging → permission_denied), a panic (X-Test-Panic), a
// call that waits for its deadline (X-Test-Block), a plain Go error
// (X-Test-Plain) and a connect error (X-Test-Fail: code).
func matrixInterceptor() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			switch req.Header().Get("Authorization") {
			case "Bearer expired":
				return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("the bearer token has expired"))
			case "Bearer reader":
				if req.Spec().Procedure == paymentsv1connect.PaymentServiceChargeProcedure {
					return nil, connect.NewError(connect.CodePermissionDenied, errors.New("a reader token cannot charge"))
				}
			}
			switch {
			case req.Header().Get("X-Test-Panic") != "":
				panic("ledger: cannot connect to " + secret)
			case req.Header().Get("X-Test-Block") != "":
				<-ctx.Done()
				return nil, ctx.Err()
			case req.Header().Get("X-Test-Plain") != "":
				return nil, errors.New("ledger is read-only")
			case req.Header().Get("X-Test-Fail") != "":
				var code connect.Code
				if err := code.UnmarshalText([]byte(req.Header().Get("X-Test-Fail"))); err != nil {
					return nil, err
				}
				return nil, connect.NewError(code, errors.New("injected "+code.String()))
			}
			return next(ctx, req)
		}
	}
}

// logBuffer is a server log a test can read.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// serveMatrix serves the payments example with matrixInterceptor and
// returns its base URL; its log goes to log, if set.
func serveMatrix(t *testing.T, log *logBuffer, opts ...call.Option) string {
	t.Helper()
	logger := discardLogger()
	if log != nil {
		logger = slog.New(slog.NewTextHandler(log, nil))
	}
	srv, err := payments.NewServer(payments.NewStore(nil), []connect.HandlerOption{connect.WithInterceptors(matrixInterceptor())},
		append([]call.Option{call.WithLogger(logger)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, srv)
}

// statusRecorder remembers the HTTP status of the last response.
type statusRecorder struct {
	mu     sync.Mutex
	status int
}

func (s *statusRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = 0
	if err == nil {
		s.status = res.StatusCode
	}
	return res, err
}

func (s *statusRecorder) last() int { s.mu.Lock(); defer s.mu.Unlock(); return s.status }

// rawCodec sends fixed bytes as every request: a malformed body from a
// real connect-go client.
type rawCodec struct {
	name string
	body []byte
}

func (c rawCodec) Name() string                { return c.name }
func (c rawCodec) Marshal(any) ([]byte, error) { return c.body, nil }
func (c rawCodec) Unmarshal(data []byte, v any) error {
	if c.name == "json" {
		return protojson.Unmarshal(data, v.(proto.Message))
	}
	return proto.Unmarshal(data, v.(proto.Message))
}

// rpcCall is one call of a case through a connect-go client; opts choose
// the protocol.
type rpcCall func(ctx context.Context, base string, hc *http.Client, opts []connect.ClientOption, hdr http.Header) error

func rpc[Req, Res any](procedure string, msg *Req) rpcCall {
	return func(ctx context.Context, base string, hc *http.Client, opts []connect.ClientOption, hdr http.Header) error {
		c := connect.NewClient[Req, Res](hc, base+procedure, opts...)
		req := connect.NewRequest(msg)
		for k, v := range hdr {
			req.Header()[k] = v
		}
		_, err := c.CallUnary(ctx, req)
		return err
	}
}

// withCodec is a call made with extra client options (a raw codec).
func withCodec(grpc, connectOpt connect.ClientOption, call rpcCall) (rpcCall, rpcCall) {
	wrap := func(extra connect.ClientOption) rpcCall {
		return func(ctx context.Context, base string, hc *http.Client, opts []connect.ClientOption, hdr http.Header) error {
			return call(ctx, base, hc, append(append([]connect.ClientOption(nil), opts...), extra), hdr)
		}
	}
	return wrap(grpc), wrap(connectOpt)
}

// matrixCase is one bad input, sent through every protocol.
type matrixCase struct {
	name string
	code connect.Code // the answer every protocol maps through call.ErrorTable
	// msg, when set, is in every protocol's message.
	msg string
	// deadline cases run on a server whose default timeout is short.
	deadline bool
	hdr      []string // headers of every protocol's request

	grpc, connect rpcCall // connect-go clients (connect defaults to the grpc call)
	restMethod    string
	restPath      string
	restBody      string
	gqlBody       string // a raw GraphQL POST body; or
	gqlQuery      string // a query, sent as {"query": ...}
	// gqlCode and gqlStatus override the table for a GraphQL request error
	// (nothing was called: the request is not a method call).
	gqlCode   string
	gqlStatus int
	soapBody  string // the Body's operation element; or
	soapRaw   string // a whole raw SOAP 1.1 request body (1.2 swaps the namespace)
}

const (
	chargeOK   = `"amount":{"currency":"USD","amountMinor":"100"},"card":{"last4":"4242"}`
	soapCharge = `<Charge xmlns="` + tns + `"><amount><currency>USD</currency><amountMinor>%s</amountMinor></amount><card><last4>%s</last4></card></Charge>`
)

func chargeMsg(minor int64, last4 string) *paymentsv1.ChargeRequest {
	return &paymentsv1.ChargeRequest{Amount: &paymentsv1.Money{Currency: "USD", AmountMinor: minor},
		Source: &paymentsv1.ChargeRequest_Card{Card: &paymentsv1.Card{Last4: last4}}}
}

var (
	getNope   = rpc[paymentsv1.GetChargeRequest, paymentsv1.GetChargeResponse](paymentsv1connect.PaymentServiceGetChargeProcedure, &paymentsv1.GetChargeRequest{Id: "nope"})
	gqlGet    = `{ payments_v1_GetCharge(id: "nope") { charge { id } } }`
	restGet   = "/v1/charges/nope"
	soapGet   = `<GetCharge xmlns="` + tns + `"><id>nope</id></GetCharge>`
	chargeRPC = func(minor int64, last4 string) rpcCall {
		return rpc[paymentsv1.ChargeRequest, paymentsv1.ChargeResponse](paymentsv1connect.PaymentServiceChargeProcedure, chargeMsg(minor, last4))
	}
	gqlCharge = func(minor, last4 string) string {
		return fmt.Sprintf(`mutation { payments_v1_Charge(amount: {currency: "USD", amountMinor: "%s"}, card: {last4: "%s"}) { replayed } }`, minor, last4)
	}
	unknownRPC = rpc[emptypb.Empty, emptypb.Empty]("/payments.v1.PaymentService/Nope", &emptypb.Empty{})
)

func matrixCases() []matrixCase {
	badProtoG, badJSONC := withCodec(
		connect.WithCodec(rawCodec{"proto", []byte{0x0a, 0xff, 0x01}}), // field 1, length 255, 1 byte
		connect.WithCodec(rawCodec{"json", []byte(`{"id":`)}),
		rpc[paymentsv1.GetChargeRequest, paymentsv1.GetChargeResponse](paymentsv1connect.PaymentServiceGetChargeProcedure, &paymentsv1.GetChargeRequest{}))
	return []matrixCase{
		{
			name: "invalid argument from handler validation", code: connect.CodeInvalidArgument, msg: "amount.amountMinor must be positive",
			grpc: chargeRPC(0, "4242"), restMethod: "POST", restPath: "/v1/charges", restBody: `{"amount":{"currency":"USD","amountMinor":"0"},"card":{"last4":"4242"}}`,
			gqlQuery: gqlCharge("0", "4242"), soapBody: fmt.Sprintf(soapCharge, "0", "4242"),
		},
		{
			name: "not found", code: connect.CodeNotFound, msg: `charge "nope" not found`,
			grpc: getNope, restMethod: "GET", restPath: restGet, gqlQuery: gqlGet, soapBody: soapGet,
		},
		{
			name: "failed precondition", code: connect.CodeFailedPrecondition, msg: "card declined",
			grpc: chargeRPC(100, "0000"), restMethod: "POST", restPath: "/v1/charges", restBody: `{"amount":{"currency":"USD","amountMinor":"100"},"card":{"last4":"0000"}}`,
			gqlQuery: gqlCharge("100", "0000"), soapBody: fmt.Sprintf(soapCharge, "100", "0000"),
		},
		{
			name: "unauthenticated", code: connect.CodeUnauthenticated, msg: "the bearer token has expired", hdr: []string{"Authorization", "Bearer expired"},
			grpc: getNope, restMethod: "GET", restPath: restGet, gqlQuery: gqlGet, soapBody: soapGet,
		},
		{
			name: "permission denied", code: connect.CodePermissionDenied, msg: "a reader token cannot charge", hdr: []string{"Authorization", "Bearer reader"},
			grpc: chargeRPC(100, "4242"), restMethod: "POST", restPath: "/v1/charges", restBody: "{" + chargeOK + "}",
			gqlQuery: gqlCharge("100", "4242"), soapBody: fmt.Sprintf(soapCharge, "100", "4242"),
		},
		{
			name: "malformed body", code: connect.CodeInvalidArgument,
			grpc: badProtoG, connect: badJSONC, restMethod: "POST", restPath: "/v1/charges", restBody: `{"amount":`,
			gqlBody: `{"query": "{ payments_v1_GetCharge`, gqlCode: call.GraphQLBadRequest, gqlStatus: http.StatusBadRequest,
			soapRaw: `<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetCharge xmlns="` + tns + `"><id>x</id>`,
		},
		{
			name: "unknown method", code: connect.CodeUnimplemented,
			grpc: unknownRPC, restMethod: "POST", restPath: "/payments.v1.PaymentService/Nope", restBody: `{}`,
			gqlQuery: `{ payments_v1_Nope(id: "x") { charge { id } } }`, gqlCode: call.GraphQLValidationFailed, gqlStatus: http.StatusOK,
			soapBody: `<Nope xmlns="` + tns + `"/>`,
		},
		{
			name: "deadline exceeded", code: connect.CodeDeadlineExceeded, deadline: true, hdr: []string{"X-Test-Block", "1"},
			grpc: getNope, restMethod: "GET", restPath: restGet, gqlQuery: gqlGet, soapBody: soapGet,
		},
		{
			name: "internal from a handler panic", code: connect.CodeInternal, hdr: []string{"X-Test-Panic", "1"},
			grpc: getNope, restMethod: "GET", restPath: restGet, gqlQuery: gqlGet, soapBody: soapGet,
		},
		{
			name: "internal from a handler error", code: connect.CodeInternal, msg: "injected internal", hdr: []string{"X-Test-Fail", "internal"},
			grpc: getNope, restMethod: "GET", restPath: restGet, gqlQuery: gqlGet, soapBody: soapGet,
		},
		{
			name: "unknown from a plain Go error", code: connect.CodeUnknown, msg: "ledger is read-only", hdr: []string{"X-Test-Plain", "1"},
			grpc: getNope, restMethod: "GET", restPath: restGet, gqlQuery: gqlGet, soapBody: soapGet,
		},
	}
}

// TestErrorMatrix sends each bad input through gRPC, Connect, REST,
// GraphQL and SOAP 1.1/1.2 and checks every client gets the row of
// call.ErrorTable for the same connect code (the table of docs/calls.md).
func TestErrorMatrix(t *testing.T) {
	var log logBuffer
	main := serveMatrix(t, &log)
	short := serveMatrix(t, nil, call.WithDefaultTimeout(300*time.Millisecond))
	// No ctx deadline: the server's default applies.
	connectStatus := &statusRecorder{}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: connectStatus}
	h2 := h2cClient()
	h2.Timeout = 30 * time.Second
	for _, tc := range matrixCases() {
		t.Run(tc.name, func(t *testing.T) {
			base := main
			if tc.deadline {
				base = short
			}
			row := call.MappingOf(tc.code)
			hdr := http.Header{}
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				hdr.Set(tc.hdr[i], tc.hdr[i+1])
			}
			noLeak := func(proto, body string) {
				if strings.Contains(body, secret) || strings.Contains(body, "goroutine ") {
					t.Errorf("%s leaks handler details: %s", proto, body)
				}
			}
			wantMsg := func(proto, body string) {
				if tc.msg != "" && !strings.Contains(body, tc.msg) && !strings.Contains(body, strings.ReplaceAll(tc.msg, `"`, `\"`)) &&
					!strings.Contains(body, strings.ReplaceAll(tc.msg, `"`, "&#34;")) {
					t.Errorf("%s: want message %q in %s", proto, tc.msg, body)
				}
			}

			// connect-go clients: gRPC (HTTP/2) and Connect (HTTP/1.1).
			connectCall := tc.connect
			if connectCall == nil {
				connectCall = tc.grpc
			}
			for _, c := range []struct {
				name string
				call rpcCall
				hc   *http.Client
				opts []connect.ClientOption
			}{{"grpc", tc.grpc, h2, []connect.ClientOption{connect.WithGRPC()}}, {"connect", connectCall, hc, nil}} {
				err := c.call(context.Background(), base, c.hc, c.opts, hdr.Clone())
				if got := connect.CodeOf(err); got != tc.code {
					t.Errorf("%s: code %v, want %v (%v)", c.name, got, tc.code, err)
				}
				if err != nil {
					wantMsg(c.name, err.Error())
					noLeak(c.name, err.Error())
				}
			}
			// A Connect unary error has the table's HTTP status.
			if st := connectStatus.last(); st != row.HTTPStatus {
				t.Errorf("connect: HTTP %d, want %d", st, row.HTTPStatus)
			}

			// REST: the status of the table, a JSON error naming the code.
			st, ct, body := do(t, tc.restMethod, base+tc.restPath, "application/json", tc.restBody, tc.hdr...)
			if st != row.HTTPStatus || !strings.HasPrefix(ct, "application/json") {
				t.Errorf("rest: %d %s, want %d: %s", st, ct, row.HTTPStatus, body)
			}
			var rest struct {
				Code    any    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal([]byte(body), &rest); err != nil {
				t.Errorf("rest: body is not JSON: %s", body)
			}
			if rest.Code != float64(tc.code) && rest.Code != tc.code.String() {
				t.Errorf("rest: code %v, want %d or %q: %s", rest.Code, tc.code, tc.code, body)
			}
			wantMsg("rest", rest.Message)
			noLeak("rest", body)

			// GraphQL: extensions.code of the table (HTTP 200: GraphQL over
			// HTTP), or the documented request error.
			gqlBody := tc.gqlBody
			if gqlBody == "" {
				b, _ := json.Marshal(map[string]any{"query": tc.gqlQuery})
				gqlBody = string(b)
			}
			st, _, body = do(t, "POST", base+"/graphql", "application/json", gqlBody, tc.hdr...)
			var out map[string]any
			if err := json.Unmarshal([]byte(body), &out); err != nil {
				t.Errorf("graphql: not JSON: %d %s", st, body)
			}
			wantCode, wantStatus := row.GraphQL, http.StatusOK
			if tc.gqlCode != "" {
				wantCode, wantStatus = tc.gqlCode, tc.gqlStatus
			}
			if st != wantStatus || errCode(out) != wantCode {
				t.Errorf("graphql: %d %s, want %d %s: %s", st, errCode(out), wantStatus, wantCode, body)
			}
			if tc.gqlCode == "" && !strings.Contains(body, `"connectCode":"`+tc.code.String()+`"`) {
				t.Errorf("graphql: want extensions.connectCode %q: %s", tc.code, body)
			}
			if tc.gqlCode == "" {
				wantMsg("graphql", body)
			}
			noLeak("graphql", body)

			// SOAP 1.1 (always HTTP 500) and 1.2 (Sender 400, Receiver 500).
			for _, v12 := range []bool{false, true} {
				name, ctype, env, raw := "soap 1.1", "text/xml; charset=utf-8", env11, tc.soapRaw
				if v12 {
					name, ctype, env = "soap 1.2", "application/soap+xml; charset=utf-8", env12
					raw = strings.Replace(raw, "http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope", 1)
				}
				if raw == "" {
					raw = envelope(env, "", tc.soapBody)
				}
				st, _, body := do(t, "POST", base+"/soap/payments.v1.PaymentService", ctype, raw, tc.hdr...)
				wantStatus, wantFault := http.StatusInternalServerError, "<faultcode>soap:"+row.SOAP11+"</faultcode>"
				if v12 {
					wantFault = "<soap:Value>soap:" + row.SOAP12 + "</soap:Value>"
					if row.SOAP12 == "Sender" {
						wantStatus = http.StatusBadRequest
					}
				}
				if st != wantStatus || !strings.Contains(body, wantFault) || !strings.Contains(body, "<sb:code>"+tc.code.String()+"</sb:code>") {
					t.Errorf("%s: %d, want %d with %s and sb:code %s: %s", name, st, wantStatus, wantFault, tc.code, body)
				}
				wantMsg(name, body)
				noLeak(name, body)
			}
		})
	}
	// What no client saw is in the server's log.
	if l := log.String(); !strings.Contains(l, "handler panic") || !strings.Contains(l, secret) || !strings.Contains(l, "stack=") {
		t.Errorf("the panic is not in the server log:\n%s", l)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// An RPC to a service the server does not serve is unimplemented in every
// RPC protocol, like an unknown method; an unknown REST route stays 404.
func TestUnknownServiceAndMethod(t *testing.T) {
	base := serveMatrix(t, nil)
	for _, path := range []string{"/other.v1.Service/Get", "/payments.v1.PaymentService/Nope"} {
		for name, opts := range map[string][]connect.ClientOption{
			"grpc": {connect.WithGRPC()}, "grpc-web": {connect.WithGRPCWeb()}, "connect": nil, "connect-json": {connect.WithProtoJSON()},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := rpc[emptypb.Empty, emptypb.Empty](path, &emptypb.Empty{})(ctx, base, h2cClient(), opts, nil)
			cancel()
			if connect.CodeOf(err) != connect.CodeUnimplemented {
				t.Errorf("%s %s: %v, want unimplemented", name, path, err)
			}
		}
	}
	if st, _, body := do(t, "GET", base+"/v1/nothing-here", "", ""); st != http.StatusNotFound || !strings.Contains(body, `"code":5`) {
		t.Errorf("unknown REST route: %d %s", st, body)
	}
}
