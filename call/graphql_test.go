package call_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/examples/payments"
)

func gql(t *testing.T, f *fixture, query string, vars map[string]any, hdr ...string) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	st, _, body := do(t, "POST", f.base+"/graphql", "application/json", string(b), hdr...)
	var out map[string]any
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("GraphQL answer is not JSON: %d %s", st, body)
	}
	return st, out
}

func errCode(out map[string]any) string {
	errs, _ := out["errors"].([]any)
	if len(errs) == 0 {
		return ""
	}
	e, _ := errs[0].(map[string]any)
	ext, _ := e["extensions"].(map[string]any)
	c, _ := ext["code"].(string)
	return c
}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestGraphQLQueryAndMutation(t *testing.T) {
	f := newFixture(t)
	// A mutation with a oneof member, a map, a wrapper, a Struct.
	st, out := gql(t, f, `mutation { payments_v1_Charge(amount: {currency: "USD", amountMinor: "1250"}, card: {last4: "4242"},
		metadata: [{key: "order", value: "o-1"}], description: "tea", attributes: {gift: true, n: [1, 2]}, tags: ["a"]) {
		replayed charge { id status metadata { key value } description attributes createdAt settleAfter card { last4 } bankAccount } } }`, nil)
	got := js(out)
	if st != 200 || errCode(out) != "" {
		t.Fatalf("mutation: %d %s", st, got)
	}
	mustContain(t, "mutation", got, `"id":"ch_1"`, `"status":"CHARGE_STATUS_SUCCEEDED"`, `"metadata":[{"key":"order","value":"o-1"}]`,
		`"description":"tea"`, `"attributes":{"gift":true,"n":[1,2]}`, `"settleAfter":"172800s"`, `"bankAccount":null`, `"last4":"4242"`)

	// Field selection: only what was asked.
	_, out = gql(t, f, `query($id: String) { payments_v1_GetCharge(id: $id) { charge { id } } }`, map[string]any{"id": "ch_1"})
	if got := js(out); got != `{"data":{"payments_v1_GetCharge":{"charge":{"id":"ch_1"}}}}` {
		t.Errorf("selection: %s", got)
	}
	// v2 side by side.
	_, out = gql(t, f, `{ payments_v2_GetCharge(id: "ch_1") { charge { amount { amount } } } }`, nil)
	mustContain(t, "v2", js(out), `"amount":"12.50"`)
	// Errors map through the table.
	_, out = gql(t, f, `{ payments_v1_GetCharge(id: "nope") { charge { id } } }`, nil)
	if errCode(out) != "NOT_FOUND" {
		t.Errorf("not found: %s", js(out))
	}
	_, out = gql(t, f, `{ payments_v1_GetCharge(id: "x") { charge { id } } }`, nil, "X-Test-Fail", "unavailable")
	if errCode(out) != "UNAVAILABLE" {
		t.Errorf("unavailable: %s", js(out))
	}
	_, out = gql(t, f, `mutation { payments_v1_Charge(amount: {currency: "USD", amountMinor: "1"}, card: {last4: "1"}, bankAccount: "x") { replayed } }`, nil)
	if errCode(out) != "INVALID_ARGUMENT" {
		t.Errorf("two oneof members: %s", js(out))
	}
	// Queries only over GET; mutations need POST.
	st, _, body := do(t, "GET", f.base+`/graphql?query={payments_v1_GetCharge(id:"ch_1"){charge{id}}}`, "", "")
	if st != 200 || !strings.Contains(body, "ch_1") {
		t.Errorf("GET query: %d %s", st, body)
	}
	st, _, _ = do(t, "GET", f.base+`/graphql?query=mutation{payments_v1_Refund(chargeId:"ch_1"){charge{id}}}`, "", "")
	if st != 405 {
		t.Errorf("GET mutation: %d", st)
	}
}

func TestGraphQLBadInput(t *testing.T) {
	f := newFixture(t)
	deep := `{ payments_v1_GetCharge(id: "x") { charge { card { last4 } } } }`
	for range 10 {
		deep = strings.Replace(deep, "card { last4 }", "card { last4 } amount { currency }", 1)
	}
	nested := "{ __typename }"
	_ = nested
	var many strings.Builder
	many.WriteString("{")
	for i := range 120 {
		many.WriteString(" a" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + `: payments_v1_GetCharge(id: "x") { charge { id } }`)
	}
	many.WriteString("}")
	for _, tc := range []struct{ name, query, code string }{
		{"parse error", `{ payments_v1_GetCharge(id: "x") { charge { id }`, "GRAPHQL_PARSE_FAILED"},
		{"unknown field", `{ payments_v1_GetCharge(id: "x") { charge { nope } } }`, "GRAPHQL_VALIDATION_FAILED"},
		{"unknown argument", `{ payments_v1_GetCharge(bogus: "x") { charge { id } } }`, "GRAPHQL_VALIDATION_FAILED"},
		{"too costly", many.String(), "QUERY_TOO_COSTLY"},
	} {
		_, out := gql(t, f, tc.query, nil)
		if errCode(out) != tc.code {
			t.Errorf("%s: %s", tc.name, js(out))
		}
	}
	// Too deep, with a limit small enough for the payments schema.
	f2 := newFixture(t, call.WithGraphQLLimits(call.GraphQLLimits{MaxDepth: 3}))
	_, out := gql(t, f2, `{ payments_v1_GetCharge(id: "x") { charge { card { last4 } } } }`, nil)
	if errCode(out) != "QUERY_TOO_DEEP" || !strings.Contains(js(out), "query depth 4 exceeds the limit of 3") {
		t.Errorf("too deep: %s", js(out))
	}
	// Depth through fragments counts too.
	_, out = gql(t, f2, `{ payments_v1_GetCharge(id: "x") { ...C } } fragment C on payments_v1_GetChargeResponse { charge { card { last4 } } }`, nil)
	if errCode(out) != "QUERY_TOO_DEEP" {
		t.Errorf("too deep via fragment: %s", js(out))
	}
	// Malformed JSON and unknown envelope fields: 400.
	st, _, body := do(t, "POST", f.base+"/graphql", "application/json", `{"query": `)
	if st != 400 || !strings.Contains(body, "BAD_REQUEST") {
		t.Errorf("malformed JSON: %d %s", st, body)
	}
	st, _, body = do(t, "POST", f.base+"/graphql", "application/json", `{"query": "{ __typename }", "bogus": 1}`)
	if st != 400 || !strings.Contains(body, "bogus") {
		t.Errorf("unknown envelope field: %d %s", st, body)
	}
	// application/graphql-response+json: request errors are 400.
	st, _, _ = do(t, "POST", f.base+"/graphql", "application/json", `{"query": "{ nope }"}`, "Accept", "application/graphql-response+json")
	if st != 400 {
		t.Errorf("graphql-response+json validation error: %d", st)
	}
}

func wsRead(t *testing.T, ctx context.Context, c *websocket.Conn) map[string]any {
	t.Helper()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func wsWrite(t *testing.T, ctx context.Context, c *websocket.Conn, v string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(v)); err != nil {
		t.Fatal(err)
	}
}

func TestGraphQLSubscription(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(f.base, "http")+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	wsWrite(t, ctx, c, `{"type":"connection_init"}`)
	if m := wsRead(t, ctx, c); m["type"] != "connection_ack" {
		t.Fatalf("want connection_ack, got %v", m)
	}
	wsWrite(t, ctx, c, `{"id":"1","type":"subscribe","payload":{"query":"subscription { payments_v1_WatchCharges(limit: 1) { type charge { id } } }"}}`)
	// Charge until the stream is open and has seen one (bounded).
	got := make(chan map[string]any, 4)
	go func() {
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				close(got)
				return
			}
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			got <- m
		}
	}()
	var next map[string]any
	for i := 0; next == nil && i < 100; i++ {
		f.charge(t)
		select {
		case m := <-got:
			next = m
		case <-time.After(200 * time.Millisecond):
		}
	}
	if next == nil || next["type"] != "next" || !strings.Contains(js(next), `"type":"created"`) {
		t.Fatalf("want a next event, got %v", next)
	}
	if m := <-got; m["type"] != "complete" || m["id"] != "1" {
		t.Fatalf("want complete, got %v", m)
	}
	// A query over the socket; then a bad one is an error message.
	wsWrite(t, ctx, c, `{"id":"2","type":"subscribe","payload":{"query":"{ payments_v1_GetCharge(id: \"ch_1\") { charge { id } } }"}}`)
	if m := <-got; m["type"] != "next" || !strings.Contains(js(m), "ch_1") {
		t.Fatalf("query over ws: %v", m)
	}
	if m := <-got; m["type"] != "complete" {
		t.Fatalf("want complete, got %v", m)
	}
	wsWrite(t, ctx, c, `{"id":"3","type":"subscribe","payload":{"query":"subscription { nope }"}}`)
	if m := <-got; m["type"] != "error" || !strings.Contains(js(m), "GRAPHQL_VALIDATION_FAILED") {
		t.Fatalf("want error, got %v", m)
	}
}

func TestGraphQLWSProtocolErrors(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(f.base, "http") + "/graphql"
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	wsWrite(t, ctx, c, `{"id":"1","type":"subscribe","payload":{"query":"{ __typename }"}}`)
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != 4401 {
		t.Errorf("subscribe before init: %v, want close 4401", err)
	}
}

// A query sent again is answered from the kept operation: with its own
// variables and operation name, and as many times at once as asked.
func TestGraphQLPreparedReuse(t *testing.T) {
	f := newFixture(t)
	f.charge(t)
	f.charge(t)
	post := func(query, op string, vars map[string]any) (int, string, error) {
		b, _ := json.Marshal(map[string]any{"query": query, "operationName": op, "variables": vars})
		res, err := http.Post(f.base+"/graphql", "application/json", strings.NewReader(string(b)))
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return res.StatusCode, string(body), err
	}
	doc := `query A($id: String) { payments_v1_GetCharge(id: $id) { charge { id } } } query B { payments_v1_GetCharge(id: "ch_2") { charge { id tags } } }`
	for range 2 {
		for _, c := range []struct{ op, id, want string }{{"A", "ch_1", `"id":"ch_1"}`}, {"A", "ch_2", `"id":"ch_2"}`}, {"B", "", `"tags":["a","b"]`}} {
			st, body, err := post(doc, c.op, map[string]any{"id": c.id})
			if err != nil || st != 200 || !strings.Contains(body, c.want) {
				t.Errorf("%s(%s): %d %s %v", c.op, c.id, st, body, err)
			}
		}
		if _, body, _ := post(doc, "C", nil); !strings.Contains(body, call.GraphQLBadRequest) {
			t.Errorf("unknown operation: %s", body)
		}
	}
	limited := newFixture(t, call.WithGraphQLLimits(call.GraphQLLimits{MaxDepth: 2}))
	for range 2 {
		if _, out := gql(t, limited, `{ payments_v1_GetCharge(id: "ch_1") { charge { amount { currency } } } }`, nil); errCode(out) != call.GraphQLTooDeep {
			t.Errorf("too deep, again: %s", js(out))
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, body, err := post(`{ payments_v1_GetCharge(id: "ch_1") { charge { id tags } } }`, "", nil)
			if err != nil || st != 200 || !strings.Contains(body, `"id":"ch_1"`) {
				t.Errorf("concurrent: %d %s %v", st, body, err)
			}
		}()
	}
	wg.Wait()
}

// TestGraphQLWebSocketGoingAway: when Serve shuts down, an open GraphQL
// WebSocket (which net/http no longer tracks) is closed with 1001 and its
// subscription ends, instead of outliving the server.
func TestGraphQLWebSocketGoingAway(t *testing.T) {
	srv, err := payments.NewServer(payments.NewStore(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String()+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	wsWrite(t, ctx, c, `{"type":"connection_init"}`)
	if m := wsRead(t, ctx, c); m["type"] != "connection_ack" {
		t.Fatalf("want connection_ack, got %v", m)
	}
	wsWrite(t, ctx, c, `{"id":"1","type":"subscribe","payload":{"query":"subscription { payments_v1_WatchCharges { type } }"}}`)
	time.Sleep(100 * time.Millisecond) // let the subscription start
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
	}
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		if s := websocket.CloseStatus(err); s != websocket.StatusGoingAway {
			t.Fatalf("socket ended with %v (status %v); want 1001 going away", err, s)
		}
		return
	}
}
