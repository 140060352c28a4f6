package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard"
	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/cli"
	"github.com/switchboard-dev/switchboard/client"
	"github.com/switchboard-dev/switchboard/examples/payments"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
)

// paymentsServer serves examples/payments with call.NewServer on a loopback
// port. X-Test-Fail: <code> fails a call; X-Test-Hang blocks it until its
// deadline.
func paymentsServer(t *testing.T) string {
	t.Helper()
	hook := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if c := req.Header().Get("X-Test-Fail"); c != "" {
				var code connect.Code
				if err := code.UnmarshalText([]byte(c)); err != nil {
					return nil, err
				}
				return nil, connect.NewError(code, errors.New("injected "+c))
			}
			if req.Header().Get("X-Test-Hang") != "" {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return next(ctx, req)
		}
	})
	srv, err := payments.NewServer(payments.NewStore(nil), []connect.HandlerOption{connect.WithInterceptors(hook)})
	if err != nil {
		t.Fatal(err)
	}
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
	return ln.Addr().String()
}

// runCall runs `switchboard call args...` and returns exit code, stdout,
// stderr.
func runCall(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cfg := &cli.Config{Stdin: strings.NewReader(stdin), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := cli.Run(ctx, cfg, append([]string{"call"}, args...))
	return code, stdout.String(), stderr.String()
}

func TestCLICall(t *testing.T) {
	host := paymentsServer(t)
	code, out, errOut := runCall(t, "", host, "payments.v1.PaymentService/Charge",
		`{"amount": {"currency": "USD", "amountMinor": "1250"}, "card": {"last4": "4242"}, "metadata": {"order": "o-1"}, "idempotencyKey": "k1"}`)
	if code != 0 {
		t.Fatalf("call Charge: %d %s", code, errOut)
	}
	var res struct {
		Charge struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Amount struct {
				AmountMinor string `json:"amountMinor"`
			} `json:"amount"`
		} `json:"charge"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Charge.ID != "ch_1" || res.Charge.Status != "CHARGE_STATUS_SUCCEEDED" || res.Charge.Amount.AmountMinor != "1250" {
		t.Fatalf("call Charge printed %q (%v)", out, err)
	}
	if !strings.Contains(out, "\n  \"charge\": {\n    \"id\": \"ch_1\",") {
		t.Errorf("the response is not indented JSON:\n%s", out)
	}

	// Short service name, dotted method, request from stdin, headers, -v.
	for _, args := range [][]string{
		{host, "payments.v1.PaymentService/GetCharge", `{"id": "ch_1"}`},
		{host, "payments.v1.PaymentService.GetCharge", "-"},
		{"http://" + host, "/payments.v1.PaymentService/GetCharge", "-", "--header", "x-anything=1", "-v"},
	} {
		code, out, errOut = runCall(t, `{"id": "ch_1"}`, args...)
		if code != 0 || !strings.Contains(out, `"id": "ch_1"`) {
			t.Errorf("call %q: %d %s %s", args, code, out, errOut)
		}
		if len(args) > 3 && !strings.Contains(strings.ToLower(errOut), "header content-type: application/grpc") {
			t.Errorf("-v printed no response headers: %q", errOut)
		}
	}

	// A unique short service name.
	if code, out, errOut = runCall(t, "", host, "Health/Check"); code != 0 || !strings.Contains(out, `"status": "SERVING"`) {
		t.Errorf("call Health/Check: %d %s %s", code, out, errOut)
	}

	// Errors: one line with the connect code, exit status 1.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{host, "payments.v1.PaymentService/GetCharge", `{"id": "nope"}`}, []string{"not_found", `charge "nope" not found`}},
		{[]string{host, "payments.v1.PaymentService/GetCharge", `{"idd": "x"}`}, []string{"invalid_argument", "idd", "payments.v1.GetChargeRequest"}},
		{[]string{host, "payments.v1.PaymentService/Charge", `{}`}, []string{"invalid_argument", "amountMinor must be positive"}},
		{[]string{host, "payments.v1.PaymentService/GetCharge", `{"id": "x"}`, "--header", "X-Test-Fail=permission_denied"}, []string{"permission_denied", "injected"}},
		{[]string{host, "payments.v1.PaymentService/Nope"}, []string{"no method", "GetCharge"}},
		{[]string{host, "nope.Service/Get"}, []string{`no service "nope.Service"`, "payments.v1.PaymentService"}},
		{[]string{host, "payments.v1.PaymentService/WatchCharges"}, []string{"streaming"}},
	} {
		code, out, errOut := runCall(t, "", tc.args...)
		if code == 0 || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Errorf("call %q: exit %d, stdout %q, stderr %q; want a failure as one line", tc.args, code, out, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("call %q: stderr %q lacks %q", tc.args, errOut, w)
			}
		}
	}
}

func TestCLICallTimeouts(t *testing.T) {
	host := paymentsServer(t)
	start := time.Now()
	code, _, errOut := runCall(t, "", host, "payments.v1.PaymentService/GetCharge", `{"id": "x"}`, "--header", "X-Test-Hang=1", "--timeout", "500ms")
	if code != 1 || !strings.Contains(errOut, "deadline_exceeded") || !strings.Contains(errOut, "--timeout 500ms") {
		t.Errorf("hanging call: %d %q, want deadline_exceeded naming --timeout", code, errOut)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("hanging call with --timeout 500ms took %s", d)
	}
	// Nothing listening: unavailable, fast.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	start = time.Now()
	code, _, errOut = runCall(t, "", dead, "payments.v1.PaymentService/GetCharge", `{"id": "x"}`)
	if code != 1 || !strings.Contains(errOut, "unavailable") {
		t.Errorf("call to a closed port: %d %q, want unavailable", code, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("call to a closed port took %s, want a fast failure", d)
	}
	if code, _, errOut = runCall(t, "", host, "payments.v1.PaymentService/GetCharge", "--timeout", "0s"); code != 2 || !strings.Contains(errOut, "--timeout") {
		t.Errorf("--timeout 0: %d %q, want a usage error", code, errOut)
	}
}

func TestCLICallDescribe(t *testing.T) {
	host := paymentsServer(t)
	code, out, errOut := runCall(t, "", host, "--describe")
	if code != 0 {
		t.Fatalf("--describe: %d %s", code, errOut)
	}
	var all struct {
		Services []struct {
			Service string `json:"service"`
			Methods []struct {
				Method      string `json:"method"`
				Kind        string `json:"kind"`
				Idempotency string `json:"idempotency"`
			} `json:"methods"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("--describe printed %q: %v", out, err)
	}
	names := map[string]bool{}
	for _, s := range all.Services {
		names[s.Service] = true
		if s.Service == "payments.v1.PaymentService" {
			if len(s.Methods) != 4 || s.Methods[1].Method != "GetCharge" || s.Methods[1].Idempotency != "NO_SIDE_EFFECTS" || s.Methods[3].Kind != "server-streaming" {
				t.Errorf("payments.v1 methods: %+v", s.Methods)
			}
		}
	}
	for _, want := range []string{"payments.v1.PaymentService", "payments.v2.PaymentService", "grpc.health.v1.Health"} {
		if !names[want] {
			t.Errorf("--describe lacks %s: %v", want, names)
		}
	}

	code, out, errOut = runCall(t, "", host, "payments.v1.PaymentService/Charge", "--describe")
	if code != 0 {
		t.Fatalf("--describe Charge: %d %s", code, errOut)
	}
	var m struct {
		Procedure      string          `json:"procedure"`
		Input          string          `json:"input"`
		RequestExample json.RawMessage `json:"requestExample"`
		Messages       map[string][]struct {
			Name, JSONName, Type, TypeName, JSON, Oneof string
		} `json:"messages"`
		Enums map[string][]string `json:"enums"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("--describe Charge printed %q: %v", out, err)
	}
	if m.Procedure != "/payments.v1.PaymentService/Charge" || m.Input != "payments.v1.ChargeRequest" {
		t.Errorf("--describe Charge: %s", out)
	}
	fields := map[string]string{}
	for _, f := range m.Messages["payments.v1.Money"] {
		fields[f.JSONName] = f.JSON
	}
	if !strings.Contains(fields["amountMinor"], "64-bit integer in decimal") {
		t.Errorf("Money fields: %v", m.Messages["payments.v1.Money"])
	}
	if len(m.Messages["payments.v1.Charge"]) == 0 || len(m.Enums["payments.v1.ChargeStatus"]) != 5 {
		t.Errorf("--describe Charge lacks the output message or its enum: %s", out)
	}
	// The example is a request the server accepts as is.
	code, out, errOut = runCall(t, "", host, "payments.v1.PaymentService/Charge", string(m.RequestExample))
	if code != 1 || !strings.Contains(errOut, "amountMinor must be positive") {
		t.Errorf("the request example was not accepted as JSON: %d %s %s (example %s)", code, out, errOut, m.RequestExample)
	}

	code, out, errOut = runCall(t, "", host, "payments.v1.Money", "--describe")
	if code != 0 || !strings.Contains(out, `"message": "payments.v1.Money"`) {
		t.Errorf("--describe of a message: %d %s %s", code, out, errOut)
	}
	code, out, errOut = runCall(t, "", host, "payments.v2.PaymentService", "--describe")
	if code != 0 || !strings.Contains(out, `"procedure": "/payments.v2.PaymentService/GetCharge"`) {
		t.Errorf("--describe of a service: %d %s %s", code, out, errOut)
	}
	// PaymentService alone is ambiguous (v1 and v2).
	code, _, errOut = runCall(t, "", host, "PaymentService/GetCharge", `{}`)
	if code != 2 || !strings.Contains(errOut, "ambiguous") {
		t.Errorf("ambiguous short name: %d %q", code, errOut)
	}

	code, out, _ = runCall(t, "", "--help")
	for _, w := range []string{"switchboard call localhost:8080 --describe", "--timeout", "--header", "reflection"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("call --help lacks %q:\n%s", w, out)
		}
	}
}

// `switchboard call topic://…` reaches call.ServeTopic through the hub.
func TestCLICallTopic(t *testing.T) {
	hub := serve(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := client.New(ctx, "http://"+strings.TrimPrefix(hub, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	sb := switchboard.New(b)
	defer sb.Close()
	store := payments.NewStore(nil)
	done := make(chan error, 1)
	go func() {
		done <- call.ServeTopic(ctx, sb, "payments",
			call.WithService(paymentsv1connect.NewPaymentServiceHandler(&payments.V1{S: store})))
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeTopic: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("ServeTopic did not stop")
		}
	}()
	callTopic := func(args ...string) (int, string, string) {
		return runCall(t, "", append([]string{"topic://payments"}, append(args, "--hub", hub)...)...)
	}
	// Wait until ServeTopic has subscribed.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, errOut := callTopic("payments.v1.PaymentService/GetCharge", `{"id": "nope"}`)
		if code == 1 && strings.Contains(errOut, `not_found: charge "nope" not found`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("call over the topic never answered: %d %s", code, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, out, errOut := callTopic("payments.v1.PaymentService/Charge", `{"amount": {"currency": "USD", "amountMinor": "99"}, "bankAccount": "DE00"}`)
	if code != 0 || !strings.Contains(out, `"id": "ch_1"`) || !strings.Contains(out, `"bankAccount": "DE00"`) {
		t.Fatalf("Charge over a topic: %d %s %s", code, out, errOut)
	}
	code, _, errOut = callTopic("payments.v1.PaymentService/GetCharge", `{"idd": "x"}`)
	if code != 1 || !strings.Contains(errOut, "invalid_argument") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("unknown field over a topic: %d %q", code, errOut)
	}
	start := time.Now()
	code, _, errOut = runCall(t, "", "topic://nobody", "payments.v1.PaymentService/GetCharge", "--hub", hub)
	if code != 1 || !strings.Contains(errOut, "unavailable") || time.Since(start) > 5*time.Second {
		t.Errorf("no responder: %d %q after %s", code, errOut, time.Since(start))
	}
}
