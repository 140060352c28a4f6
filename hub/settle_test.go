package hub_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/hub"
	"github.com/switchboard-dev/switchboard/message"
)

// subscribeN subscribes group on topic, publishes n messages and returns
// their deliveries (the stream stays open until the test ends).
func subscribeN(t *testing.T, ctx context.Context, c switchboardv1connect.SwitchboardServiceClient, topic, group string, n int) []*v1.Delivery {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	sub, err := c.Subscribe(sctx, connect.NewRequest(&v1.SubscribeRequest{
		Topic: topic, Group: group, Start: &v1.StartPosition{Position: &v1.StartPosition_Earliest{Earliest: true}},
		MaxBatch: 4, AckDeadline: durationpb.New(time.Minute),
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	if !sub.Receive() || sub.Msg().GetSubscribed() == nil {
		t.Fatalf("first event is not subscribed: %v %v", sub.Msg(), sub.Err())
	}
	msgs := make([]*v1.Message, n)
	for i := range msgs {
		msgs[i] = &v1.Message{Id: fmt.Sprint("m", i), Body: &v1.Message_Text{Text: fmt.Sprint(i)}}
	}
	if _, err := c.PublishBatch(ctx, connect.NewRequest(&v1.PublishBatchRequest{Topic: topic, Messages: msgs})); err != nil {
		t.Fatal(err)
	}
	var out []*v1.Delivery
	for len(out) < n {
		if !sub.Receive() {
			t.Fatalf("stream ended after %d of %d deliveries: %v", len(out), n, sub.Err())
		}
		if d := sub.Msg().GetDelivery(); d != nil {
			out = append(out, d)
		}
		out = append(out, sub.Msg().GetDeliveries().GetDeliveries()...)
	}
	return out
}

// Settle applies every settlement on its own and answers one result each,
// in order: a failing one does not stop the others.
func TestSettleBatch(t *testing.T) {
	h := startHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := switchboardv1connect.NewSwitchboardServiceClient(h2cClient(), h.URL, connect.WithGRPC())
	topic := uniqueTopic(t)
	ds := subscribeN(t, ctx, c, topic, "g", 5)
	tok := func(i int) string { return ds[i].GetToken() }

	resp, err := c.Settle(ctx, connect.NewRequest(&v1.SettleRequest{Settlements: []*v1.Settlement{
		{Token: tok(0), Op: v1.Settlement_ACK},
		{Token: tok(1), Op: v1.Settlement_NACK, Delay: durationpb.New(time.Hour)},
		{Token: tok(2), Op: v1.Settlement_TERM, Reason: "bad address"},
		{Token: tok(3), Op: v1.Settlement_EXTEND, By: durationpb.New(time.Minute)},
		{Token: tok(0), Op: v1.Settlement_ACK},               // settled above
		{Token: "0123456789abcdef.1", Op: v1.Settlement_ACK}, // unknown subscription
		{Token: tok(4)}, // no op
		{Token: tok(4), Op: v1.Settlement_EXTEND},                                    // no duration
		{Op: v1.Settlement_ACK},                                                      // no token
		{Token: tok(3), Op: v1.Settlement_ACK},                                       // extended, then acked
		{Token: tok(4), Op: v1.Settlement_NACK, Delay: durationpb.New(-time.Second)}, // negative delay
	}}))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		code   connect.Code
		reason string
	}
	wants := []want{
		{0, ""}, {0, ""}, {0, ""}, {0, ""},
		{connect.CodeFailedPrecondition, "UNKNOWN_DELIVERY"},
		{connect.CodeFailedPrecondition, "UNKNOWN_DELIVERY"},
		{connect.CodeInvalidArgument, "INVALID"},
		{connect.CodeInvalidArgument, "INVALID"},
		{connect.CodeInvalidArgument, "INVALID"},
		{0, ""},
		{connect.CodeInvalidArgument, "INVALID"},
	}
	rs := resp.Msg.GetResults()
	if len(rs) != len(wants) {
		t.Fatalf("%d results for %d settlements", len(rs), len(wants))
	}
	for i, w := range wants {
		r := rs[i]
		if connect.Code(r.GetCode()) != w.code || r.GetReason() != w.reason || (w.code != 0) != (r.GetMessage() != "") {
			t.Errorf("result %d = %v, want code %v reason %q", i, r, w.code, w.reason)
		}
	}
	// The failed settlements left delivery 4 unsettled: it still acks.
	resp, err = c.Settle(ctx, connect.NewRequest(&v1.SettleRequest{Settlements: []*v1.Settlement{{Token: tok(4), Op: v1.Settlement_ACK}}}))
	if err != nil || resp.Msg.GetResults()[0].GetCode() != 0 {
		t.Fatalf("ack of delivery 4: %v %v", resp, err)
	}
	// The term went to the dead letters, the nack waits an hour: lag 1.
	g, err := c.DescribeGroup(ctx, connect.NewRequest(&v1.DescribeGroupRequest{Group: "g"}))
	if err != nil {
		t.Fatal(err)
	}
	if g.Msg.GetGroup().GetLag() != 1 || g.Msg.GetGroup().GetDeadLetters() != 1 {
		t.Fatalf("group after settle = %v, want lag 1 (the nack) and 1 dead letter", g.Msg.GetGroup())
	}
	text := scrape(t, h)
	for _, m := range []string{`switchboard_hub_settlements_total{op="ack"} 3`, `switchboard_hub_settlements_total{op="nack"} 1`,
		`switchboard_hub_settlements_total{op="term"} 1`, `switchboard_hub_settlements_total{op="extend"} 1`} {
		if !strings.Contains(text, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}

// A call is bounded: at most max_batch settlements (and the request size
// limit); an empty one is refused.
func TestSettleLimits(t *testing.T) {
	h := startHub(t, &hub.Config{MaxBatch: 3, MaxRequestBytes: 4096, Limits: smallLimits()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := switchboardv1connect.NewSwitchboardServiceClient(h2cClient(), h.URL)
	_, err := c.Settle(ctx, connect.NewRequest(&v1.SettleRequest{}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty settle: %v, want InvalidArgument", err)
	}
	four := make([]*v1.Settlement, 4)
	for i := range four {
		four[i] = &v1.Settlement{Token: fmt.Sprint("x.", i), Op: v1.Settlement_ACK}
	}
	_, err = c.Settle(ctx, connect.NewRequest(&v1.SettleRequest{Settlements: four}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "limit of 3") {
		t.Fatalf("4 settlements with max_batch 3: %v, want InvalidArgument", err)
	}
	big := []*v1.Settlement{{Token: strings.Repeat("x", 8192), Op: v1.Settlement_ACK}}
	_, err = c.Settle(ctx, connect.NewRequest(&v1.SettleRequest{Settlements: big}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("8 KiB settle with a 4 KiB request limit: %v, want ResourceExhausted", err)
	}
	code, body := h.call(t, "POST", "/v1/deliveries:settle", fmt.Sprintf(`{"settlements": [{"token": %q, "op": "ACK"}]}`, strings.Repeat("x", 8192)))
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("REST settle over the size limit: %d %v, want 413", code, body)
	}
}

// Over REST: POST /v1/deliveries:settle, per-settlement results, and a
// token may only settle the deliveries of its own subscriptions.
func TestSettleRESTAndAuth(t *testing.T) {
	cfg := authConfig()
	cfg.Auth.Tokens = append(cfg.Auth.Tokens, hub.Token{Name: "cons2", Token: "consumer2-secret-0123456789", Consume: []string{"orders.>"}})
	h := startHub(t, cfg)
	if code, _, _ := h.do(t, "", "POST", "/v1/deliveries:settle", `{"settlements": [{"token": "a.1", "op": "ACK"}]}`); code != http.StatusUnauthorized {
		t.Fatalf("settle without a bearer token: %d, want 401", code)
	}
	if code, _, body := h.do(t, tokPub, "POST", "/v1/topics/orders.settle/messages", `{"text": "hi"}`); code != 200 {
		t.Fatalf("publish: %d %v", code, body)
	}
	tok := sseToken(t, h, "orders.settle", "g")
	body := fmt.Sprintf(`{"settlements": [{"token": %q, "op": "ACK"}, {"token": "nope.1", "op": "ACK"}]}`, tok)

	// Another consumer token: refused for that settlement only.
	code, _, out := h.do(t, "consumer2-secret-0123456789", "POST", "/v1/deliveries:settle", body)
	if code != http.StatusOK {
		t.Fatalf("settle by another token: %d %v", code, out)
	}
	rs := out["results"].([]any)
	r0, r1 := rs[0].(map[string]any), rs[1].(map[string]any)
	if r0["code"] != float64(connect.CodePermissionDenied) || r0["reason"] != "PERMISSION_DENIED" || !strings.Contains(r0["message"].(string), `bearer token "cons"`) {
		t.Fatalf("settle of a foreign delivery = %v, want PERMISSION_DENIED", r0)
	}
	if r1["reason"] != "UNKNOWN_DELIVERY" {
		t.Fatalf("settle of an unknown token = %v, want UNKNOWN_DELIVERY", r1)
	}
	// The subscriber's own token settles it.
	code, _, out = h.do(t, tokCons, "POST", "/v1/deliveries:settle", body)
	rs = out["results"].([]any)
	if code != http.StatusOK || rs[0].(map[string]any)["code"] != 0.0 || rs[0].(map[string]any)["reason"] != "" || rs[1].(map[string]any)["reason"] != "UNKNOWN_DELIVERY" {
		t.Fatalf("settle by the subscriber: %d %v, want code 0 for the ack", code, out)
	}
	// Strict JSON: an unknown op or field is a 400.
	// (Shown on a hub without auth.)
	code, out = startHub(t, nil).call(t, "POST", "/v1/deliveries:settle", `{"settlements": [{"token": "a.1", "op": "DONE"}]}`)
	problem(t, "unknown op", code, out, 400, "MALFORMED_REQUEST", "invalid value for enum field op")
}

func smallLimits() message.Limits {
	l := message.DefaultLimits()
	l.MaxPayload = 1024
	return l
}
