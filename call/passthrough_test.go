package call

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"

	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
)

// oneCharge answers GetCharge with a fixed charge.
type oneCharge struct {
	paymentsv1connect.UnimplementedPaymentServiceHandler
}

func (oneCharge) GetCharge(_ context.Context, req *connect.Request[paymentsv1.GetChargeRequest]) (*connect.Response[paymentsv1.GetChargeResponse], error) {
	if req.Msg.GetId() != "ch_1" {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	return connect.NewResponse(&paymentsv1.GetChargeResponse{Charge: &paymentsv1.Charge{Id: "ch_1", Tags: []string{"a"}}}), nil
}

// The fast path answers exactly as the transcoder would, and takes only
// the calls the transcoder passes through unchanged.
func TestPassThroughMatchesTranscoder(t *testing.T) {
	path, h := paymentsv1connect.NewPaymentServiceHandler(oneCharge{})
	s, err := NewServer(WithService(path, h))
	if err != nil {
		t.Fatal(err)
	}
	svc := s.services[0]
	tc, err := vanguard.NewTranscoder([]*vanguard.Service{vanguard.NewService(path, svc.guard, vanguard.WithTargetCodecs(vanguard.CodecProto))},
		vanguard.WithCodec(NewStrictJSONCodec), vanguard.WithUnknownHandler(s.unknownMethod(s.cfg.unknown)))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := proto.Marshal(&paymentsv1.GetChargeRequest{Id: "ch_1"})
	env := func(b []byte) string {
		var h [5]byte
		binary.BigEndian.PutUint32(h[1:], uint32(len(b)))
		return string(h[:]) + string(b)
	}
	const proc = "/payments.v1.PaymentService/GetCharge"
	get := proc + "?connect=v1&encoding=proto&base64=1&message=" + base64.RawURLEncoding.EncodeToString(msg)
	connectHdr := []string{"Content-Type", "application/proto", "Connect-Protocol-Version", "1"}
	grpcHdr := []string{"Content-Type", "application/grpc", "Te", "trailers"}
	for _, tc2 := range []struct {
		name         string
		method, path string
		body         string
		h2           bool
		hdr          []string
		fast         bool
	}{
		{"connect", "POST", proc, string(msg), false, connectHdr, true},
		{"connect accepting gzip", "POST", proc, string(msg), false, append(connectHdr, "Accept-Encoding", "gzip"), true},
		{"connect with a timeout", "POST", proc, string(msg), false, append(connectHdr, "Connect-Timeout-Ms", "5000"), true},
		{"connect bad timeout", "POST", proc, string(msg), false, append(connectHdr, "Connect-Timeout-Ms", "x"), false},
		{"connect negative timeout", "POST", proc, string(msg), false, append(connectHdr, "Connect-Timeout-Ms", "-1"), false},
		{"connect br body", "POST", proc, string(msg), false, append(connectHdr, "Content-Encoding", "br"), false},
		{"connect json", "POST", proc, `{"id":"ch_1"}`, false, []string{"Content-Type", "application/json", "Connect-Protocol-Version", "1"}, false},
		{"connect to a stream", "POST", "/payments.v1.PaymentService/WatchCharges", "", false, connectHdr, false},
		{"connect stream to unary", "POST", proc, env(msg), false, []string{"Content-Type", "application/connect+proto"}, false},
		{"connect GET", "GET", get, "", false, nil, true},
		{"connect GET with version", "GET", get, "", false, []string{"Connect-Protocol-Version", "1"}, true},
		{"connect GET json", "GET", proc + "?connect=v1&encoding=json&message=%7B%7D", "", false, nil, false},
		{"connect GET br", "GET", get + "&compression=br", "", false, nil, false},
		{"connect GET of a mutation", "GET", "/payments.v1.PaymentService/Charge?connect=v1&encoding=proto&message=", "", false, nil, false},
		{"grpc", "POST", proc, env(msg), true, grpcHdr, true},
		{"grpc+proto accepting gzip", "POST", proc, env(msg), true, []string{"Content-Type", "application/grpc+proto", "Grpc-Accept-Encoding", "gzip"}, true},
		{"grpc over HTTP/1.1", "POST", proc, env(msg), false, grpcHdr, false},
		{"grpc timeout", "POST", proc, env(msg), true, append(grpcHdr, "Grpc-Timeout", "8H"), true},
		{"grpc timeout over 8h", "POST", proc, env(msg), true, append(grpcHdr, "Grpc-Timeout", "9H"), false},
		{"grpc timeout bad unit", "POST", proc, env(msg), true, append(grpcHdr, "Grpc-Timeout", "5x"), false},
		{"grpc timeout too long", "POST", proc, env(msg), true, append(grpcHdr, "Grpc-Timeout", "123456789S"), false},
		{"grpc br", "POST", proc, env(msg), true, append(grpcHdr, "Grpc-Encoding", "br"), false},
		{"grpc content-encoding", "POST", proc, env(msg), true, append(grpcHdr, "Content-Encoding", "gzip"), false},
		{"grpc json", "POST", proc, env([]byte(`{"id":"ch_1"}`)), true, []string{"Content-Type", "application/grpc+json"}, false},
		{"grpc unknown method", "POST", "/payments.v1.PaymentService/Nope", env(msg), true, grpcHdr, false},
		{"grpc-web", "POST", proc, env(msg), false, []string{"Content-Type", "application/grpc-web+proto"}, true},
		{"two content types", "POST", proc, string(msg), false, append(connectHdr, "Content-Type", "application/proto"), false},
	} {
		t.Run(tc2.name, func(t *testing.T) {
			req := func() *http.Request {
				r := httptest.NewRequest(tc2.method, tc2.path, strings.NewReader(tc2.body))
				for i := 0; i+1 < len(tc2.hdr); i += 2 {
					r.Header.Add(tc2.hdr[i], tc2.hdr[i+1])
				}
				if tc2.h2 {
					r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
				}
				return r
			}
			if fast := s.passThrough(req(), s.direct) != nil; fast != tc2.fast {
				t.Errorf("fast path %v, want %v", fast, tc2.fast)
			}
			got, want := httptest.NewRecorder(), httptest.NewRecorder()
			s.ServeHTTP(got, req())
			tc.ServeHTTP(want, req())
			if got.Code != want.Code || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
				t.Errorf("answer %d %q, transcoder %d %q", got.Code, got.Body, want.Code, want.Body)
			}
			for _, k := range []string{"Content-Type", "Content-Encoding", "Grpc-Status", "Grpc-Message", "Vary", "Accept-Encoding", "Grpc-Accept-Encoding", "Allow"} {
				if g, w := got.Header().Values(k), want.Header().Values(k); strings.Join(g, ",") != strings.Join(w, ",") {
					t.Errorf("%s: %q, transcoder %q", k, g, w)
				}
			}
		})
	}
}

// A route of the caller's that shadows a procedure, for any method, or
// names a host keeps the fast path away.
func TestPassThroughYieldsToRoutes(t *testing.T) {
	path, h := paymentsv1connect.NewPaymentServiceHandler(oneCharge{})
	mine := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, tc := range []struct {
		route  string
		direct int // procedures left on the fast path
	}{
		{"GET /healthz", 4},
		{"GET /payments.v1.PaymentService/GetCharge", 3},
		{"/payments.v1.PaymentService/", 0},
		{"example.com/healthz", 0},
	} {
		s, err := NewServer(WithService(path, h), WithRoute(tc.route, mine))
		if err != nil {
			t.Fatal(err)
		}
		if len(s.direct) != tc.direct {
			t.Errorf("%s: %d procedures on the fast path, want %d", tc.route, len(s.direct), tc.direct)
		}
	}
}
