package call_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard"
	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/examples/payments"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
	paymentsv2 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v2"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v2/paymentsv2connect"
)

// topicFixture serves payments v1 and v2 from a topic of an in-memory
// embedded broker.
type topicFixture struct {
	sb    *switchboard.Client
	topic string
	store *payments.Store
	// seen records the deadline and X-Test-Echo header each call had.
	seen chan seenCall
}

type seenCall struct {
	deadline time.Duration
	echo     string
}

// topicInterceptor records what the handler saw, fails calls with
// X-Test-Fail: <code>, sleeps until the deadline with X-Test-Hang, and
// echoes X-Test-Echo into a response header and trailer.
func topicInterceptor(f *topicFixture) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			s := seenCall{echo: req.Header().Get("X-Test-Echo")}
			if dl, ok := ctx.Deadline(); ok {
				s.deadline = time.Until(dl)
			}
			select {
			case f.seen <- s:
			default:
			}
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
			res, err := next(ctx, req)
			if err == nil && s.echo != "" {
				res.Header().Set("X-Echo", s.echo)
				res.Trailer().Set("X-Echo-Trailer", s.echo)
			}
			return res, err
		}
	}
}

func openMemory(t *testing.T) *switchboard.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sb, err := switchboard.Open(ctx, "embedded://?memory")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	return sb
}

// newTopicFixture starts ServeTopic (replicas of it, sharing one store) and
// waits until it answers.
func newTopicFixture(t *testing.T, replicas int, opts ...call.Option) *topicFixture {
	t.Helper()
	f := &topicFixture{sb: openMemory(t), topic: "payments.calls", store: payments.NewStore(nil), seen: make(chan seenCall, 64)}
	ho := connect.WithInterceptors(topicInterceptor(f))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range replicas {
		all := append([]call.Option{
			call.WithService(paymentsv1connect.NewPaymentServiceHandler(&payments.V1{S: f.store}, ho)),
			call.WithService(paymentsv2connect.NewPaymentServiceHandler(&payments.V2{S: f.store}, ho)),
		}, opts...)
		wg.Go(func() {
			if err := call.ServeTopic(ctx, f.sb, f.topic, all...); err != nil {
				t.Errorf("ServeTopic: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("ServeTopic did not return after its ctx was cancelled")
		}
	})
	// Ready once a call is answered (ServeTopic subscribes asynchronously here).
	client := f.client()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := client.GetCharge(context.Background(), connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "warmup"}))
		if connect.CodeOf(err) == connect.CodeNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ServeTopic never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for len(f.seen) > 0 {
		<-f.seen
	}
	return f
}

func (f *topicFixture) client(opts ...connect.ClientOption) paymentsv1connect.PaymentServiceClient {
	return paymentsv1connect.NewPaymentServiceClient(call.TopicHTTPClient(f.sb, f.topic), "topic://"+f.topic, opts...)
}

func (f *topicFixture) lastSeen(t *testing.T) seenCall {
	t.Helper()
	select {
	case s := <-f.seen:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("the handler was not called")
		return seenCall{}
	}
}

func chargeReq() *paymentsv1.ChargeRequest {
	return &paymentsv1.ChargeRequest{
		Amount:   &paymentsv1.Money{Currency: "USD", AmountMinor: 1250},
		Source:   &paymentsv1.ChargeRequest_Card{Card: &paymentsv1.Card{Last4: "4242"}},
		Metadata: map[string]string{"order": "o-1"},
	}
}

func TestTopicCallSuccess(t *testing.T) {
	f := newTopicFixture(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"proto", nil},
		{"json", []connect.ClientOption{connect.WithProtoJSON()}},
		{"get", []connect.ClientOption{connect.WithHTTPGet()}},
		{"json-get", []connect.ClientOption{connect.WithProtoJSON(), connect.WithHTTPGet()}},
		{"gzip", []connect.ClientOption{connect.WithSendGzip(), connect.WithCompressMinBytes(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.client(tc.opts...)
			req := connect.NewRequest(chargeReq())
			req.Header().Set("X-Test-Echo", "hi-"+tc.name)
			res, err := c.Charge(ctx, req)
			if err != nil {
				t.Fatalf("Charge: %v", err)
			}
			ch := res.Msg.GetCharge()
			if !strings.HasPrefix(ch.GetId(), "ch_") || ch.GetAmount().GetAmountMinor() != 1250 || ch.GetCard().GetLast4() != "4242" || ch.GetMetadata()["order"] != "o-1" {
				t.Errorf("Charge answered %v", res.Msg)
			}
			if s := f.lastSeen(t); s.echo != "hi-"+tc.name || s.deadline <= 0 || s.deadline > call.DefaultTopicTimeout {
				t.Errorf("handler saw %+v, want the echo header and a deadline of at most %s", s, call.DefaultTopicTimeout)
			}
			if got := res.Header().Get("X-Echo"); got != "hi-"+tc.name {
				t.Errorf("response header X-Echo = %q", got)
			}
			if got := res.Trailer().Get("X-Echo-Trailer"); got != "hi-"+tc.name {
				t.Errorf("response trailer X-Echo-Trailer = %q", got)
			}
			got, err := c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: ch.GetId()}))
			if err != nil || got.Msg.GetCharge().GetId() != ch.GetId() {
				t.Fatalf("GetCharge(%s): %v %v", ch.GetId(), got, err)
			}
			f.lastSeen(t)
		})
	}
	// v2 on the same topic: routed by the method header.
	v2 := paymentsv2connect.NewPaymentServiceClient(call.TopicHTTPClient(f.sb, f.topic), "topic://"+f.topic)
	if _, err := v2.GetCharge(ctx, connect.NewRequest(&paymentsv2.GetChargeRequest{Id: "ch_1"})); err != nil {
		t.Errorf("v2 GetCharge: %v", err)
	}
	// A caller deadline shorter than the transport's reaches the handler.
	f.lastSeen(t)
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	if _, err := f.client().GetCharge(dctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"})); err != nil {
		t.Fatal(err)
	}
	if s := f.lastSeen(t); s.deadline <= 0 || s.deadline > 2*time.Second {
		t.Errorf("handler deadline %s, want at most the caller's 2s", s.deadline)
	}
}

func TestTopicCallErrors(t *testing.T) {
	f := newTopicFixture(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, opts := range [][]connect.ClientOption{nil, {connect.WithProtoJSON()}} {
		c := f.client(opts...)
		_, err := c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "nope"}))
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound || ce.Message() != `charge "nope" not found` {
			t.Errorf("GetCharge(nope): %v, want not_found with the handler's message", err)
		}
		bad := chargeReq()
		bad.Source = &paymentsv1.ChargeRequest_Card{Card: &paymentsv1.Card{Last4: "0000"}}
		if _, err := c.Charge(ctx, connect.NewRequest(bad)); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("declined charge: %v, want failed_precondition", err)
		}
		for _, code := range []connect.Code{connect.CodeResourceExhausted, connect.CodePermissionDenied, connect.CodeUnauthenticated, connect.CodeDataLoss} {
			req := connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "x"})
			req.Header().Set("X-Test-Fail", code.String())
			if _, err := c.GetCharge(ctx, req); connect.CodeOf(err) != code || !strings.Contains(err.Error(), "injected") {
				t.Errorf("injected %s: got %v", code, err)
			}
		}
	}
	// gRPC is refused with a clear error, not a hang.
	_, err := f.client(connect.WithGRPC()).GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "x"}))
	if connect.CodeOf(err) != connect.CodeUnimplemented || !strings.Contains(err.Error(), "WithGRPC") {
		t.Errorf("gRPC over a topic: %v, want unimplemented naming WithGRPC", err)
	}
	// Streaming methods are not served over topics.
	st, err := f.client().WatchCharges(ctx, connect.NewRequest(&paymentsv1.WatchChargesRequest{Limit: 1}))
	if err == nil {
		for st.Receive() {
		}
		err = st.Err()
	}
	if connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Errorf("WatchCharges over a topic: %v, want unimplemented", err)
	}
}

func TestTopicCallNoResponderFailsFast(t *testing.T) {
	sb := openMemory(t)
	c := paymentsv1connect.NewPaymentServiceClient(call.TopicHTTPClient(sb, "nobody.home"), "topic://nobody.home")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"}))
	elapsed := time.Since(start)
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "no responder") {
		t.Fatalf("no responder: %v, want unavailable", err)
	}
	if elapsed > time.Second {
		t.Errorf("no responder took %s, want a fast failure (< 1s)", elapsed)
	}
}

func TestTopicCallTimeout(t *testing.T) {
	sb := openMemory(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A subscriber that takes requests and never replies.
	sub, err := sb.Subscribe(ctx, "silent", "")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	timeout := 300 * time.Millisecond
	c := paymentsv1connect.NewPaymentServiceClient(call.NewTopicTransport(sb, "silent", timeout), "topic://silent")
	start := time.Now()
	_, err = c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"}))
	elapsed := time.Since(start)
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("silent responder: %v, want deadline_exceeded", err)
	}
	if elapsed < timeout-20*time.Millisecond || elapsed > timeout+5*time.Second {
		t.Errorf("timed out after %s, want about %s", elapsed, timeout)
	}
	// The caller's ctx deadline, when shorter, is the timeout.
	dctx, dcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer dcancel()
	start = time.Now()
	_, err = paymentsv1connect.NewPaymentServiceClient(call.TopicHTTPClient(sb, "silent"), "topic://silent").
		GetCharge(dctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"}))
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded || time.Since(start) > 5*time.Second {
		t.Errorf("ctx deadline: %v after %s, want deadline_exceeded after about 200ms", err, time.Since(start))
	}
}

// A handler slower than the caller's timeout: DeadlineExceeded for the
// caller, and the handler's ctx ends too.
func TestTopicCallHandlerTimeout(t *testing.T) {
	f := newTopicFixture(t, 1)
	c := paymentsv1connect.NewPaymentServiceClient(call.NewTopicTransport(f.sb, f.topic, 300*time.Millisecond), "topic://"+f.topic)
	req := connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"})
	req.Header().Set("X-Test-Hang", "1")
	start := time.Now()
	_, err := c.GetCharge(context.Background(), req)
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded || time.Since(start) > 5*time.Second {
		t.Fatalf("hanging handler: %v after %s, want deadline_exceeded after about 300ms", err, time.Since(start))
	}
	if s := f.lastSeen(t); s.deadline <= 0 || s.deadline > 300*time.Millisecond {
		t.Errorf("handler deadline %s, want at most 300ms", s.deadline)
	}
}

// The wire contract without a connect client: JSON in, JSON out, errors
// in headers.
func TestTopicCallWireContract(t *testing.T) {
	f := newTopicFixture(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := switchboard.Msg{
		Payload:     []byte(`{"amount":{"currency":"EUR","amountMinor":"700"},"bankAccount":"DE00"}`),
		ContentType: "application/json",
		Headers:     map[string]string{call.HeaderCallMethod: "payments.v1.PaymentService/Charge"},
	}
	resp, err := f.sb.Request(ctx, f.topic, req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Charge struct {
			ID          string `json:"id"`
			BankAccount string `json:"bankAccount"`
		} `json:"charge"`
	}
	if resp.Header(call.HeaderCallCode) != "" || resp.ContentType != "application/json" || json.Unmarshal(resp.Payload, &out) != nil || out.Charge.BankAccount != "DE00" {
		t.Fatalf("JSON call answered %v %q %s", resp.Headers, resp.ContentType, resp.Payload)
	}
	if s := f.lastSeen(t); s.deadline <= 0 || s.deadline > 30*time.Second {
		t.Errorf("a request without %s got handler deadline %s, want the server default (30s)", call.HeaderCallTimeout, s.deadline)
	}
	for _, tc := range []struct {
		name, method, ctype, payload, code, msg string
	}{
		{"not found", "/payments.v1.PaymentService/GetCharge", "", `{"id":"nope"}`, "not_found", `charge "nope" not found`},
		{"unknown field", "payments.v1.PaymentService/GetCharge", "application/json", `{"idd":"x"}`, "invalid_argument", "idd"},
		{"no method header", "", "application/json", `{}`, "invalid_argument", call.HeaderCallMethod},
		{"unknown method", "payments.v1.PaymentService/Nope", "application/json", `{}`, "unimplemented", "payments.v1.PaymentService/GetCharge"},
		{"streaming", "payments.v1.PaymentService/WatchCharges", "application/json", `{}`, "unimplemented", "streaming"},
		{"content type", "payments.v1.PaymentService/GetCharge", "text/plain", `id=x`, "invalid_argument", "application/proto"},
	} {
		req := switchboard.Msg{Payload: []byte(tc.payload), ContentType: tc.ctype, Headers: map[string]string{}}
		if tc.method != "" {
			req.Headers[call.HeaderCallMethod] = tc.method
		}
		resp, err := f.sb.Request(ctx, f.topic, req, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var wire struct{ Code, Message string }
		if resp.Header(call.HeaderCallCode) != tc.code || !strings.Contains(resp.Header(call.HeaderCallMessage), tc.msg) ||
			json.Unmarshal(resp.Payload, &wire) != nil || wire.Code != tc.code {
			t.Errorf("%s: reply %v %s, want code %s and %q in the message", tc.name, resp.Headers, resp.Payload, tc.code, tc.msg)
		}
	}
	// A plain publish to the topic is not a call: it is dead-lettered.
	if _, err := f.sb.Publish(ctx, f.topic, switchboard.Msg{Payload: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
}

// Replicas share the default group: each request is handled once.
func TestTopicCallReplicasHandleOnce(t *testing.T) {
	f := newTopicFixture(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := f.client()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			req := chargeReq()
			req.Metadata = map[string]string{"n": fmt.Sprint(i)}
			if _, err := c.Charge(ctx, connect.NewRequest(req)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// 20 charges were made exactly once each: the next is ch_21.
	res, err := c.Charge(ctx, connect.NewRequest(chargeReq()))
	if err != nil {
		t.Fatal(err)
	}
	if id := res.Msg.GetCharge().GetId(); id != "ch_21" {
		t.Errorf("after 20 charges over 3 replicas the next id is %s, want ch_21 (each request handled once)", id)
	}
}
