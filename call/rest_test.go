package call_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard/call"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
)

func TestREST(t *testing.T) {
	f := newFixture(t)
	f.charge(t)
	st, ct, body := do(t, "GET", f.base+"/v1/charges/ch_1", "", "")
	if st != 200 || !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("GET: %d %s %s", st, ct, body)
	}
	mustContain(t, "GET", body, `"id":"ch_1"`, `"amountMinor":"1250"`, `"status":"CHARGE_STATUS_SUCCEEDED"`, `"metadata":{"order":"o-1"}`, `"settleAfter":"172800s"`)

	// The default route of an unannotated method, as curl -d sends it.
	st, _, body = do(t, "POST", f.base+"/payments.v1.PaymentService/Refund", "application/x-www-form-urlencoded", `{"chargeId":"ch_1"}`)
	if st != 200 || !strings.Contains(body, "CHARGE_STATUS_REFUNDED") {
		t.Fatalf("default route: %d %s", st, body)
	}
	// v2 beside v1, over the same ledger.
	st, _, body = do(t, "GET", f.base+"/v2/charges/ch_1", "", "")
	if st != 200 || !strings.Contains(body, `"amount":"12.50"`) {
		t.Fatalf("v2: %d %s", st, body)
	}
	st, _, body = do(t, "GET", f.base+"/v1/charges/nope", "", "")
	if st != 404 || !strings.Contains(body, `"code":5`) {
		t.Fatalf("not found: %d %s", st, body)
	}
}

func TestRESTBadInput(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ name, url, body, want string }{
		{"malformed JSON", "/v1/charges", `{"amount":`, "invalid JSON body"},
		{"unknown field", "/v1/charges", `{"amount":{"currency":"USD","amountMinor":"1"},"bogus":1}`, `unknown field \"bogus\"`},
		{"two oneof members", "/v1/charges", `{"amount":{"currency":"USD","amountMinor":"1"},"card":{},"bankAccount":"x"}`, "oneof"},
		{"handler validation", "/v1/charges", `{"amount":{"currency":"USD","amountMinor":"0"}}`, "must be positive"},
	} {
		st, ct, body := do(t, "POST", f.base+tc.url, "application/json", tc.body)
		if st != 400 || !strings.HasPrefix(ct, "application/json") || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s %s", tc.name, st, ct, body)
		}
	}
	st, _, body := do(t, "POST", f.base+"/payments.v1.PaymentService/Refund", "application/json", `{"chargeId":`)
	if st != 400 || !strings.Contains(body, "invalid_argument") {
		t.Errorf("default route malformed: %d %s", st, body)
	}
	st, _, _ = do(t, "GET", f.base+"/v3/charges/x", "", "")
	if st != 404 {
		t.Errorf("unknown route: %d", st)
	}
}

// A call without a deadline gets the server's default; one with a
// deadline keeps its own.
func TestDefaultDeadline(t *testing.T) {
	f := newFixture(t, call.WithDefaultTimeout(7*time.Second))
	do(t, "GET", f.base+"/v1/charges/x", "", "")
	if d := f.deadline(t); d <= 0 || d > 7*time.Second {
		t.Errorf("REST without deadline: %v, want the 7s default", d)
	}
	c := paymentsv1connect.NewPaymentServiceClient(h2cClient(), f.base, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, _ = c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "x"}))
	if d := f.deadline(t); d <= 7*time.Second {
		t.Errorf("gRPC with a 60s deadline: handler saw %v", d)
	}
}

func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func TestGRPCAndConnect(t *testing.T) {
	f := newFixture(t)
	f.charge(t)
	for name, opt := range map[string][]connect.ClientOption{
		"grpc": {connect.WithGRPC()}, "grpc-web": {connect.WithGRPCWeb()}, "connect": nil, "connect-json": {connect.WithProtoJSON()},
	} {
		c := paymentsv1connect.NewPaymentServiceClient(h2cClient(), f.base, opt...)
		res, err := c.GetCharge(context.Background(), connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"}))
		if err != nil || res.Msg.GetCharge().GetAmount().GetAmountMinor() != 1250 {
			t.Errorf("%s: %v %v", name, res, err)
		}
		_, err = c.GetCharge(context.Background(), connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "nope"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s: not found: %v", name, err)
		}
	}
}

// grpcurlPath finds grpcurl (go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4).
func grpcurlPath() string {
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	for _, d := range []string{os.Getenv("GOBIN"), filepath.Join(os.Getenv("HOME"), "go", "bin"), "/tmp/gobin"} {
		if p := filepath.Join(d, "grpcurl"); d != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return ""
}

func TestGrpcurl(t *testing.T) {
	bin := grpcurlPath()
	if bin == "" {
		t.Skip("grpcurl not installed; go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4")
	}
	f := newFixture(t)
	f.charge(t)
	addr := strings.TrimPrefix(f.base, "http://")
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, append([]string{"-plaintext"}, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := run(addr, "list")
	if err != nil || !strings.Contains(out, "payments.v1.PaymentService") || !strings.Contains(out, "payments.v2.PaymentService") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, err = run("-d", `{"id":"ch_1"}`, addr, "payments.v1.PaymentService/GetCharge")
	if err != nil || !strings.Contains(out, `"amountMinor": "1250"`) {
		t.Fatalf("GetCharge: %v\n%s", err, out)
	}
	out, err = run("-d", `{"id":"nope"}`, addr, "payments.v1.PaymentService/GetCharge")
	if err == nil || !strings.Contains(out, "NotFound") || !strings.Contains(out, `charge "nope" not found`) {
		t.Fatalf("not found: %v\n%s", err, out)
	}
	out, err = run("-d", `{"bogus":1}`, addr, "payments.v1.PaymentService/GetCharge")
	if err == nil || !strings.Contains(out, "bogus") {
		t.Fatalf("unknown field: %v\n%s", err, out)
	}
	out, err = run(addr, "grpc.health.v1.Health/Check")
	if err != nil || !strings.Contains(out, "SERVING") {
		t.Fatalf("health: %v\n%s", err, out)
	}
}
