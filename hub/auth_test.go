package hub_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/client"
	"github.com/switchboard-dev/switchboard/hub"
	"github.com/switchboard-dev/switchboard/message"
)

const (
	tokPub   = "publisher-secret-0123456789"
	tokCons  = "consumer-secret-0123456789"
	tokAdmin = "admin-secret-0123456789abc"
	tokSlow  = "slow-secret-0123456789abcd"
)

func authConfig() *hub.Config {
	return &hub.Config{Auth: &hub.Auth{Tokens: []hub.Token{
		{Name: "pub", Token: tokPub, Publish: []string{"orders.>"}},
		{Name: "cons", Token: tokCons, Consume: []string{"orders.>"}},
		{Name: "admin", Token: tokAdmin, Admin: []string{">", "$dlq.>"}},
		// One request per ~17 minutes after a burst of 2: the third request
		// in a row is refused however slow the machine.
		{Name: "slow", Token: tokSlow, Publish: []string{">"}, Rate: 0.001, Burst: 2},
	}}}
}

// do makes a REST request with an optional bearer token.
func (h *testHub) do(t *testing.T, token, method, path, body string) (int, http.Header, map[string]any) {
	t.Helper()
	code, hdr, raw := h.send(t, token, method, path, "", body)
	out := map[string]any{}
	if len(raw) > 0 && strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal([]byte(raw), &out); err != nil {
			t.Fatalf("%s %s: answer is not JSON (%v): %s", method, path, err, raw)
		}
	}
	return code, hdr, out
}

// problem checks a JSON problem body: status, reason and a message that
// mentions want.
func problem(t *testing.T, what string, code int, body map[string]any, wantCode int, wantReason, want string) {
	t.Helper()
	if code != wantCode {
		t.Fatalf("%s: status %d, want %d; body %v", what, code, wantCode, body)
	}
	msg, _ := body["message"].(string)
	if !strings.Contains(msg, want) {
		t.Fatalf("%s: message %q does not mention %q", what, msg, want)
	}
	details, _ := body["details"].([]any)
	if len(details) == 0 || details[0].(map[string]any)["reason"] != wantReason {
		t.Fatalf("%s: details %v, want reason %s", what, body["details"], wantReason)
	}
}

func TestAuthREST(t *testing.T) {
	h := startHub(t, authConfig())
	pub := "/v1/topics/orders.placed/messages"

	code, hdr, body := h.do(t, "", "POST", pub, `{"text": "a"}`)
	problem(t, "no token", code, body, 401, "UNAUTHENTICATED", "Authorization: Bearer")
	if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: %v", hdr)
	}
	code, _, body = h.do(t, "not-a-token-of-this-hub", "POST", pub, `{"text": "a"}`)
	problem(t, "wrong token", code, body, 401, "UNAUTHENTICATED", "not one of this hub's tokens")

	if code, _, body = h.do(t, tokPub, "POST", pub, `{"text": "a"}`); code != 200 {
		t.Fatalf("publish with token: %d %v", code, body)
	}
	code, _, body = h.do(t, tokPub, "POST", "/v1/topics/payments.done/messages", `{"text": "a"}`)
	problem(t, "publish outside patterns", code, body, 403, "PERMISSION_DENIED", "orders.>")
	code, _, body = h.do(t, tokCons, "POST", pub, `{"text": "a"}`)
	problem(t, "consumer publishes", code, body, 403, "PERMISSION_DENIED", `may not publish`)
	code, _, body = h.do(t, tokCons, "GET", "/v1/topics/payments.done/groups/g/events", "")
	problem(t, "consume outside patterns", code, body, 403, "PERMISSION_DENIED", "may not consume")
	code, _, body = h.do(t, tokCons, "GET", "/v1/topics/>/groups/g/events", "")
	problem(t, "consume a wider pattern", code, body, 403, "PERMISSION_DENIED", "may not consume")
	code, _, body = h.do(t, tokPub, "POST", "/v1/topics", `{"topic": "orders.new"}`)
	problem(t, "create topic without admin", code, body, 403, "PERMISSION_DENIED", "may not admin")

	// Groups: consume may create and describe; deleting needs admin.
	if code, _, body = h.do(t, tokCons, "POST", "/v1/groups", `{"group": "billing", "topic": "orders.*", "start": {"earliest": true}}`); code != 200 {
		t.Fatalf("create group with consume: %d %v", code, body)
	}
	if code, _, body = h.do(t, tokCons, "GET", "/v1/groups/billing", ""); code != 200 {
		t.Fatalf("describe group with consume: %d %v", code, body)
	}
	code, _, body = h.do(t, tokCons, "DELETE", "/v1/groups/billing", "")
	problem(t, "delete group without admin", code, body, 403, "PERMISSION_DENIED", "group billing")
	code, _, body = h.do(t, tokPub, "GET", "/v1/groups/billing", "")
	problem(t, "describe group without consume", code, body, 403, "PERMISSION_DENIED", "orders.*")

	// Lists show only what the token may touch.
	if code, _, body = h.do(t, tokAdmin, "POST", "/v1/topics/audit.log/messages", `{"text": "x"}`); code != 200 {
		t.Fatalf("admin publishes anywhere: %d %v", code, body)
	}
	_, _, body = h.do(t, tokPub, "GET", "/v1/topics", "")
	if s := toJSON(body); !strings.Contains(s, "orders.placed") || strings.Contains(s, "audit.log") {
		t.Fatalf("topics listed for pub: %s", s)
	}
	_, _, body = h.do(t, tokPub, "GET", "/v1/groups", "")
	if s := toJSON(body); strings.Contains(s, "billing") {
		t.Fatalf("groups listed for pub (no consume): %s", s)
	}
	if code, _, body = h.do(t, tokAdmin, "DELETE", "/v1/groups/billing", ""); code != 200 {
		t.Fatalf("admin deletes group: %d %v", code, body)
	}

	// Health stays open; metrics need a token unless public.
	if code, _, _ = h.do(t, "", "GET", "/healthz", ""); code != 200 {
		t.Fatalf("/healthz without token: %d", code)
	}
	if code, _, _ = h.do(t, "", "GET", "/readyz", ""); code != 200 {
		t.Fatalf("/readyz without token: %d", code)
	}
	if code, _, _ = h.do(t, "", "GET", "/metrics", ""); code != 401 {
		t.Fatalf("/metrics without token: %d, want 401", code)
	}
	if code, _, _ = h.do(t, tokCons, "GET", "/metrics", ""); code != 200 {
		t.Fatalf("/metrics with a token: %d", code)
	}
}

func TestRateLimit(t *testing.T) {
	h := startHub(t, authConfig())
	for i := range 2 {
		if code, _, body := h.do(t, tokSlow, "POST", "/v1/topics/t/messages", `{"text": "a"}`); code != 200 {
			t.Fatalf("request %d within the burst: %d %v", i, code, body)
		}
	}
	code, hdr, body := h.do(t, tokSlow, "POST", "/v1/topics/t/messages", `{"text": "a"}`)
	problem(t, "over the rate", code, body, 429, "RATE_LIMITED", "rate limit")
	if n, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || n < 1 {
		t.Fatalf("Retry-After = %q, want whole seconds >= 1", hdr.Get("Retry-After"))
	}
	// gRPC gets ResourceExhausted, and the Go client a readable error.
	c := switchboardv1connect.NewSwitchboardServiceClient(h2cClient(), h.URL, connect.WithGRPC())
	req := connect.NewRequest(&v1.PublishRequest{Topic: "t", Message: &v1.Message{Body: &v1.Message_Text{Text: "a"}}})
	req.Header().Set("Authorization", "Bearer "+tokSlow)
	_, err := c.Publish(context.Background(), req)
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "rate limit") {
		t.Fatalf("gRPC over the rate: %v, want ResourceExhausted", err)
	}
	// Other tokens are not affected.
	if code, _, body := h.do(t, tokPub, "POST", "/v1/topics/orders.x/messages", `{"text": "a"}`); code != 200 {
		t.Fatalf("another token: %d %v", code, body)
	}
}

func TestAuthRPCAndClient(t *testing.T) {
	h := startHub(t, authConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, opts := range map[string][]connect.ClientOption{"grpc": {connect.WithGRPC()}, "grpc-web": {connect.WithGRPCWeb()}, "connect": nil} {
		c := switchboardv1connect.NewSwitchboardServiceClient(h2cClient(), h.URL, opts...)
		_, err := c.ListTopics(ctx, connect.NewRequest(&v1.ListTopicsRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "Bearer") {
			t.Fatalf("%s without token: %v, want Unauthenticated", name, err)
		}
	}

	// The Go client: the open itself fails without a token.
	addr := strings.TrimPrefix(h.URL, "http://")
	if _, err := broker.Open(ctx, "switchboard://"+addr); err == nil || !strings.Contains(err.Error(), "bearer token") {
		t.Fatalf("open without token: %v", err)
	}
	pub, err := broker.Open(ctx, "switchboard://"+addr+"?token="+tokPub)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	cons, err := client.New(ctx, h.URL, client.WithToken(tokCons))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	if _, err := pub.Publish(ctx, &broker.PublishParams{Topic: "payments.x", Messages: msgs("a")}); err == nil || !strings.Contains(err.Error(), "may not publish on payments.x") {
		t.Fatalf("publish outside patterns: %v", err)
	}
	if _, err := cons.Subscribe(ctx, &broker.SubscribeParams{Topic: "payments.x", Group: "g"}); err == nil || !strings.Contains(err.Error(), "may not consume") {
		t.Fatalf("subscribe outside patterns: %v", err)
	}

	// A delivery can only be settled by the token that subscribed.
	sub, err := cons.Subscribe(ctx, &broker.SubscribeParams{Topic: "orders.placed", Group: "g", Start: broker.StartPosition{Kind: broker.StartEarliest}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := pub.Publish(ctx, &broker.PublishParams{Topic: "orders.placed", Messages: msgs("hello")}); err != nil {
		t.Fatal(err)
	}
	var d *broker.Delivery
	select {
	case d = <-sub.Deliveries():
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	// Find the token on the wire: subscribe over REST with the consumer's
	// token and try to ack with the publisher's.
	code, _, body := h.do(t, tokPub, "POST", "/v1/deliveries/"+sseToken(t, h, "orders.placed", "g2")+":ack", `{}`)
	problem(t, "ack with another token", code, body, 403, "PERMISSION_DENIED", `bearer token "cons"`)
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("ack by the subscriber: %v", err)
	}
}

// sseToken subscribes group on topic over SSE as the consumer and returns
// the token of the first delivery (the stream stays open until the test
// ends).
func sseToken(t *testing.T, h *testHub, topic, group string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/v1/topics/"+topic+"/groups/"+group+"/events?from=earliest", nil)
	req.Header.Set("Authorization", "Bearer "+tokCons)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			return id
		}
	}
	t.Fatalf("no delivery on the SSE stream: %v", sc.Err())
	return ""
}

func TestAuthConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		auth *hub.Auth
		want string
	}{
		{"no tokens", &hub.Auth{}, "no tokens"},
		{"no name", &hub.Auth{Tokens: []hub.Token{{Token: tokPub}}}, "no name"},
		{"short secret", &hub.Auth{Tokens: []hub.Token{{Name: "a", Token: "short"}}}, "at least 16"},
		{"no secret", &hub.Auth{Tokens: []hub.Token{{Name: "a"}}}, "no secret"},
		{"both secrets", &hub.Auth{Tokens: []hub.Token{{Name: "a", Token: tokPub, TokenSHA256: strings.Repeat("ab", 32)}}}, "not both"},
		{"bad hash", &hub.Auth{Tokens: []hub.Token{{Name: "a", TokenSHA256: "xyz"}}}, "64 hex"},
		{"same secret", &hub.Auth{Tokens: []hub.Token{{Name: "a", Token: tokPub}, {Name: "b", Token: tokPub}}}, "same secret"},
		{"same name", &hub.Auth{Tokens: []hub.Token{{Name: "a", Token: tokPub}, {Name: "a", Token: tokCons}}}, "used twice"},
		{"bad pattern", &hub.Auth{Tokens: []hub.Token{{Name: "a", Token: tokPub, Publish: []string{"orders..x"}}}}, "publish pattern"},
		{"negative rate", &hub.Auth{Tokens: []hub.Token{{Name: "a", Token: tokPub, Rate: -1}}}, "negative"},
	}
	b := openMemoryBroker(t)
	for _, c := range cases {
		_, err := hub.New(b, &hub.Config{Auth: c.auth})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
}

func TestConfigFile(t *testing.T) {
	f, err := hub.ParseFile(strings.NewReader(`{"addr": "0.0.0.0:7420", "limits": {"max_payload": 2048}, "rate": {"per_second": 5},
		"tokens": [{"name": "a", "token_sha256": "` + strings.Repeat("0f", 32) + `", "publish": ["x.>"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	a := f.Auth()
	if f.Addr != "0.0.0.0:7420" || a == nil || a.Rate != 5 || len(a.Tokens) != 1 || a.Tokens[0].Publish[0] != "x.>" {
		t.Fatalf("parsed %+v, auth %+v", f, a)
	}
	var cfg hub.Config
	f.Limits.Apply(&cfg)
	if cfg.Limits.MaxPayload != 2048 || cfg.Limits.MaxHeaders != 64 {
		t.Fatalf("limits %+v", cfg.Limits)
	}
	for in, want := range map[string]string{
		`{"adr": "x"}`:             `unknown field "adr"`,
		`{"addr": 7420}`:           "cannot unmarshal number",
		`{"addr": "x"`:             "unexpected EOF",
		`{"addr": "x"} {}`:         "data after",
		`{"tokens": [{"nam": 1}]}`: `unknown field "nam"`,
	} {
		if _, err := hub.ParseFile(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseFile(%s) = %v, want %q", in, err, want)
		}
	}
}

func msgs(texts ...string) []*message.Message {
	out := make([]*message.Message, len(texts))
	for i, s := range texts {
		out[i] = &message.Message{Payload: []byte(s)}
	}
	return out
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func openMemoryBroker(t *testing.T) broker.Broker {
	t.Helper()
	b, err := broker.Open(context.Background(), "embedded://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
