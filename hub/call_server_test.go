package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/coder/websocket"

	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/hub"
)

// The hub's API is served by call.Server, as any service built on package
// call: besides gRPC, Connect and REST, GraphQL at /graphql and SOAP at
// /soap/{service}, behind the hub's authentication.

const (
	soapPath = "/soap/switchboard.v1.SwitchboardService"
	soapNS   = "urn:switchboard:switchboard.v1.SwitchboardService"
)

// send makes a request with an optional bearer token and returns the
// status, headers and body.
func (h *testHub) send(t *testing.T, token, method, path, contentType, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, string(raw)
}

// graphql runs a GraphQL operation over HTTP and decodes the answer.
func (h *testHub) graphql(t *testing.T, token, query string) (int, map[string]any) {
	t.Helper()
	req, err := json.Marshal(map[string]any{"query": query})
	if err != nil {
		t.Fatal(err)
	}
	code, _, body := h.send(t, token, "POST", "/graphql", "application/json", string(req))
	out := map[string]any{}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("GraphQL answer is not JSON (%v): %s", err, body)
	}
	return code, out
}

// soapCall calls a method over SOAP 1.1 with the request fields in XML.
func (h *testHub) soapCall(t *testing.T, token, method, fields string) (int, string) {
	t.Helper()
	env := `<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><` + method + ` xmlns="` + soapNS + `">` +
		fields + `</` + method + `></soap:Body></soap:Envelope>`
	code, _, body := h.send(t, token, "POST", soapPath, "text/xml; charset=utf-8", env, "SOAPAction", `"`+soapNS+"/"+method+`"`)
	return code, body
}

func TestCallServerGraphQL(t *testing.T) {
	h := startHub(t, nil)
	topic := uniqueTopic(t)
	code, out := h.graphql(t, "", fmt.Sprintf(`mutation { switchboard_v1_Publish(topic: %q, message: {id: "g-1", text: "hi"}) { result { id seq duplicate } } }`, topic))
	res := toJSON(out)
	if code != http.StatusOK || !strings.Contains(res, `"id":"g-1"`) || !strings.Contains(res, `"seq":"1"`) || strings.Contains(res, "errors") {
		t.Fatalf("publish over GraphQL: %d %s", code, res)
	}
	code, out = h.graphql(t, "", `mutation { switchboard_v1_ListTopics { topics { name messages } } }`)
	if code != http.StatusOK || !strings.Contains(toJSON(out), `{"messages":"1","name":"`+topic+`"}`) {
		t.Fatalf("list topics over GraphQL: %d %s", code, toJSON(out))
	}
	// A hub error keeps its code, mapped by the error table.
	_, out = h.graphql(t, "", `mutation { switchboard_v1_DescribeTopic(topic: "no.such.topic") { topic { name } } }`)
	if errs := toJSON(out["errors"]); !strings.Contains(errs, `"code":"NOT_FOUND"`) {
		t.Fatalf("describe an unknown topic over GraphQL: %s, want NOT_FOUND", toJSON(out))
	}
}

// Subscribe, a server stream, is a GraphQL subscription over WebSocket
// (graphql-transport-ws); it gets no deadline from call.Server.
func TestCallServerGraphQLSubscription(t *testing.T) {
	h := startHub(t, nil)
	topic := uniqueTopic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.URL, "http")+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	read := func() map[string]any {
		t.Helper()
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		m := map[string]any{}
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	write := func(v string) {
		t.Helper()
		if err := c.Write(ctx, websocket.MessageText, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"type":"connection_init"}`)
	if m := read(); m["type"] != "connection_ack" {
		t.Fatalf("want connection_ack, got %v", m)
	}
	sub := fmt.Sprintf(`subscription { switchboard_v1_Subscribe(topic: %q, group: "g", start: {earliest: true}) { subscribed { maxInFlight } delivery { token message { text } } } }`, topic)
	write(`{"id":"1","type":"subscribe","payload":{"query":` + toJSON(sub) + `}}`)
	if m := read(); m["type"] != "next" || !strings.Contains(toJSON(m), `"subscribed":{"maxInFlight":256}`) {
		t.Fatalf("want the subscribed event, got %v", m)
	}
	if code, body := h.call(t, "POST", "/v1/topics/"+topic+"/messages", `{"text": "over graphql"}`); code != http.StatusOK {
		t.Fatalf("publish: %d %v", code, body)
	}
	m := read()
	if m["type"] != "next" || !strings.Contains(toJSON(m), `"text":"over graphql"`) {
		t.Fatalf("want the delivery, got %v", m)
	}
	tok, _ := m["payload"].(map[string]any)["data"].(map[string]any)["switchboard_v1_Subscribe"].(map[string]any)["delivery"].(map[string]any)["token"].(string)
	if code, out := h.graphql(t, "", fmt.Sprintf(`mutation { switchboard_v1_Ack(token: %q) { _empty } }`, tok)); code != http.StatusOK || out["errors"] != nil {
		t.Fatalf("ack over GraphQL: %d %s", code, toJSON(out))
	}
}

func TestCallServerSOAP(t *testing.T) {
	h := startHub(t, nil)
	topic := uniqueTopic(t)
	code, _, wsdl := h.send(t, "", "GET", soapPath+"?wsdl", "", "")
	if code != http.StatusOK || !strings.Contains(wsdl, `soapAction="`+soapNS+`/Publish"`) {
		t.Fatalf("WSDL: %d %.300s", code, wsdl)
	}
	// Server streams have no SOAP operation; the service is served without.
	if strings.Contains(wsdl, `<operation name="Subscribe">`) {
		t.Error("the WSDL lists Subscribe, a server stream")
	}
	code, out := h.soapCall(t, "", "Publish", "<topic>"+topic+"</topic><message><id>s-1</id><text>hi</text></message>")
	if code != http.StatusOK || !strings.Contains(out, "<id>s-1</id>") || !strings.Contains(out, "<seq>1</seq>") {
		t.Fatalf("publish over SOAP: %d %s", code, out)
	}
	code, out = h.soapCall(t, "", "GetCapabilities", "")
	if code != http.StatusOK || !strings.Contains(out, "<name>embedded</name>") {
		t.Fatalf("capabilities over SOAP: %d %s", code, out)
	}
	code, out = h.soapCall(t, "", "DescribeTopic", "<topic>no.such.topic</topic>")
	if code != http.StatusInternalServerError || !strings.Contains(out, "Fault") || !strings.Contains(out, "not_found") {
		t.Fatalf("describe an unknown topic over SOAP: %d %s, want a fault with not_found", code, out)
	}
}

// gRPC reflection and health come from call.Server; the hub marks itself
// not serving when it shuts down.
func TestCallServerReflectionAndHealth(t *testing.T) {
	h := startHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc := grpcreflect.NewClient(h2cClient(), h.URL, connect.WithGRPC())
	stream := rc.NewStream(ctx)
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	listed := fmt.Sprint(names)
	if !strings.Contains(listed, switchboardv1connect.SwitchboardServiceName) || !strings.Contains(listed, grpchealth.HealthV1ServiceName) {
		t.Fatalf("reflection lists %v, want %s and %s", names, switchboardv1connect.SwitchboardServiceName, grpchealth.HealthV1ServiceName)
	}
	hc := grpchealth.NewClient(h2cClient(), h.URL, connect.WithGRPC())
	for _, svc := range []string{"", switchboardv1connect.SwitchboardServiceName} {
		res, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: svc})
		if err != nil || res.Status != grpchealth.StatusServing {
			t.Fatalf("health of %q: %v %v, want serving", svc, res, err)
		}
	}
	h.Server.Shutdown()
	for _, svc := range []string{"", switchboardv1connect.SwitchboardServiceName} {
		res, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: svc})
		if err != nil || res.Status != grpchealth.StatusNotServing {
			t.Fatalf("health of %q after Shutdown: %v %v, want not serving", svc, res, err)
		}
	}
}

// GraphQL and SOAP, the WSDL and introspection included, need a token, and
// a token's permissions apply to the calls they make.
func TestCallServerAuth(t *testing.T) {
	h := startHub(t, authConfig())
	list := `{"query": "mutation { switchboard_v1_ListTopics { topics { name } } }"}`
	env := `<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetCapabilities xmlns="` + soapNS + `"/></soap:Body></soap:Envelope>`
	for _, c := range []struct{ method, path, contentType, body string }{
		{"POST", "/graphql", "application/json", list},
		{"GET", "/graphql?query=%7B__typename%7D", "", ""},
		{"GET", soapPath + "?wsdl", "", ""},
		{"POST", soapPath, "text/xml; charset=utf-8", env},
	} {
		code, hdr, body := h.send(t, "", c.method, c.path, c.contentType, c.body)
		if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(body, "UNAUTHENTICATED") {
			t.Errorf("%s %s without a token: %d %s, want 401 UNAUTHENTICATED", c.method, c.path, code, body)
		}
		if code, _, body = h.send(t, "not-a-token-of-this-hub", c.method, c.path, c.contentType, c.body); code != http.StatusUnauthorized {
			t.Errorf("%s %s with an unknown token: %d %s, want 401", c.method, c.path, code, body)
		}
	}
	code, out := h.graphql(t, tokPub, `mutation { switchboard_v1_Publish(topic: "orders.gql", message: {text: "hi"}) { result { seq } } }`)
	if code != http.StatusOK || out["errors"] != nil {
		t.Fatalf("publish with the publisher's token: %d %s", code, toJSON(out))
	}
	_, out = h.graphql(t, tokPub, `mutation { switchboard_v1_Publish(topic: "billing.gql", message: {text: "hi"}) { result { seq } } }`)
	if !strings.Contains(toJSON(out["errors"]), `"code":"PERMISSION_DENIED"`) {
		t.Fatalf("publish outside the token's topics: %s, want PERMISSION_DENIED", toJSON(out))
	}
	if code, out := h.soapCall(t, tokCons, "GetCapabilities", ""); code != http.StatusOK || !strings.Contains(out, "<name>embedded</name>") {
		t.Fatalf("SOAP with a token: %d %s", code, out)
	}
}

// A GraphQL or SOAP body over the hub's request limit is refused in the
// client's protocol, and a REST one with 413 and resource_exhausted.
func TestCallServerBodyLimit(t *testing.T) {
	h := startHub(t, &hub.Config{MaxRequestBytes: 4096, Limits: smallLimits()})
	big := strings.Repeat("x", 8192)
	code, out := h.graphql(t, "", `mutation { switchboard_v1_Publish(topic: "t", message: {text: "`+big+`"}) { result { seq } } }`)
	if code != http.StatusRequestEntityTooLarge || out["errors"] == nil {
		t.Fatalf("GraphQL body over the limit: %d %.300s, want 413 with GraphQL errors", code, toJSON(out))
	}
	code, body := h.soapCall(t, "", "Publish", "<topic>t</topic><message><text>"+big+"</text></message>")
	if code == http.StatusOK || !strings.Contains(body, "Fault") {
		t.Fatalf("SOAP body over the limit: %d %.300s, want a fault", code, body)
	}
	code, rest := h.call(t, "POST", "/v1/topics/t/messages", `{"text": "`+big+`"}`)
	problem(t, "REST body over the limit", code, rest, http.StatusRequestEntityTooLarge, "REQUEST_TOO_LARGE", "max_request_bytes")
	if c, _ := rest["code"].(float64); c != 8 {
		t.Errorf("REST body over the limit: code %v, want 8 (resource_exhausted, as in every protocol)", rest["code"])
	}
}
