package hub_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/hub"
)

func TestRESTPublishAndAdmin(t *testing.T) {
	h := startHub(t, nil)
	topic := uniqueTopic(t)

	code, body := h.call(t, "POST", "/v1/topics", map[string]any{"topic": topic, "retention": map[string]any{"maxAge": "3600s"}})
	if code != http.StatusOK {
		t.Fatalf("create topic: %d %v", code, body)
	}
	code, body = h.call(t, "POST", "/v1/topics/"+topic+"/messages", `{"id": "m-1", "key": "k", "text": "hello", "headers": {"a": "b"}, "contentType": "text/plain"}`)
	if code != http.StatusOK {
		t.Fatalf("publish: %d %v", code, body)
	}
	res := body["result"].(map[string]any)
	if res["id"] != "m-1" || res["duplicate"] != false || res["seq"] != "1" {
		t.Fatalf("publish result = %v, want id m-1, seq 1, not duplicate", res)
	}
	// Same ID again: a duplicate, not stored twice.
	_, body = h.call(t, "POST", "/v1/topics/"+topic+"/messages", `{"id": "m-1", "text": "hello"}`)
	if body["result"].(map[string]any)["duplicate"] != true {
		t.Fatalf("republish of m-1 = %v, want duplicate", body)
	}
	code, body = h.call(t, "POST", "/v1/topics/"+topic+"/messages:batch", `{"messages": [{"text": "a"}, {"payload": "AAEC"}]}`)
	if code != http.StatusOK || len(body["results"].([]any)) != 2 {
		t.Fatalf("batch: %d %v", code, body)
	}
	code, body = h.call(t, "GET", "/v1/topics/"+topic, nil)
	if code != http.StatusOK || body["topic"].(map[string]any)["messages"] != "3" {
		t.Fatalf("describe topic: %d %v, want 3 messages", code, body)
	}
	code, body = h.call(t, "GET", "/v1/topics", nil)
	if code != http.StatusOK || !strings.Contains(fmt.Sprint(body), topic) {
		t.Fatalf("list topics: %d %v", code, body)
	}
	code, body = h.call(t, "POST", "/v1/groups", map[string]any{"group": "g1", "topic": topic, "start": map[string]any{"earliest": true}})
	if code != http.StatusOK {
		t.Fatalf("create group: %d %v", code, body)
	}
	code, body = h.call(t, "GET", "/v1/groups/g1", nil)
	if code != http.StatusOK || body["group"].(map[string]any)["lag"] != "3" {
		t.Fatalf("describe group: %d %v, want lag 3", code, body)
	}
	code, body = h.call(t, "GET", "/v1/groups/g1/dead-letters", nil)
	if code != http.StatusOK {
		t.Fatalf("list dead letters: %d %v", code, body)
	}
	code, body = h.call(t, "GET", "/v1/capabilities", nil)
	if code != http.StatusOK || body["name"] != "embedded" {
		t.Fatalf("capabilities: %d %v", code, body)
	}
	code, body = h.call(t, "DELETE", "/v1/groups/g1", nil)
	if code != http.StatusOK {
		t.Fatalf("delete group: %d %v", code, body)
	}
	code, _ = h.call(t, "DELETE", "/v1/topics/"+topic, nil)
	if code != http.StatusOK {
		t.Fatalf("delete topic: %d", code)
	}
	code, body = h.call(t, "GET", "/v1/topics/"+topic, nil)
	if code != http.StatusNotFound {
		t.Fatalf("describe deleted topic: %d %v, want 404", code, body)
	}
}

func TestRESTBadInput(t *testing.T) {
	h := startHub(t, &hub.Config{MaxRequestBytes: 4 << 20})
	topic := uniqueTopic(t)
	big := strings.Repeat("x", 2<<20)  // over the 1 MiB payload limit, under the body limit
	huge := strings.Repeat("x", 5<<20) // over the body limit

	cases := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantText   string
	}{
		{"malformed JSON", "POST", "/v1/topics/" + topic + "/messages", `{"text": "a"`, 400, ""},
		{"unknown field", "POST", "/v1/topics/" + topic + "/messages", `{"txt": "a"}`, 400, "txt"},
		{"wrong type", "POST", "/v1/topics/" + topic + "/messages", `{"text": 42}`, 400, "text"},
		{"bad topic", "POST", "/v1/topics/bad..topic/messages", `{"text": "a"}`, 400, "empty segment"},
		{"payload too large", "POST", "/v1/topics/" + topic + "/messages", `{"text": "` + big + `"}`, 400, "exceeds the limit"},
		{"body too large", "POST", "/v1/topics/" + topic + "/messages", `{"text": "` + huge + `"}`, 413, "max_request_bytes"},
		{"empty batch", "POST", "/v1/topics/" + topic + "/messages:batch", `{"messages": []}`, 400, "at least one"},
		{"unknown group", "GET", "/v1/groups/nope", "", 404, "group"},
		{"unknown token", "POST", "/v1/deliveries/abc.1:ack", `{}`, 400, "unknown"},
		{"request without timeout", "POST", "/v1/topics/" + topic + ":request", `{"message": {"text": "a"}}`, 400, "timeout is required"},
		{"no route", "GET", "/v2/nothing", "", 404, "no route"},
		{"bad start", "GET", "/v1/topics/" + topic + "/groups/g/events?from=yesterday", "", 400, "from="},
		{"unknown query parameter", "GET", "/v1/topics/" + topic + "/groups/g/events?form=earliest", "", 400, "form"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.body != "" {
				body = c.body
			}
			code, out := h.call(t, c.method, c.path, body)
			if code != c.wantStatus {
				t.Fatalf("status %d, want %d; body %.300v", code, c.wantStatus, out)
			}
			msg, _ := out["message"].(string)
			if msg == "" {
				t.Fatalf("no message in the error body: %.300v", out)
			}
			if !strings.Contains(msg, c.wantText) {
				t.Fatalf("message %q does not mention %q", msg, c.wantText)
			}
		})
	}
}

func TestHealthEndpoints(t *testing.T) {
	h := startHub(t, nil)
	if code, body := h.call(t, "GET", "/healthz", nil); code != 200 || body["status"] != "ok" {
		t.Fatalf("/healthz: %d %v", code, body)
	}
	if code, body := h.call(t, "GET", "/readyz", nil); code != 200 || body["status"] != "ready" {
		t.Fatalf("/readyz: %d %v", code, body)
	}
	h.Server.Shutdown()
	if code, _ := h.call(t, "GET", "/readyz", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after Shutdown: %d, want 503", code)
	}
}

// TestRESTErrorsAreJSON: every REST error body is labelled as the JSON it is,
// including those the REST transcoder writes itself for undecodable bodies.
func TestRESTErrorsAreJSON(t *testing.T) {
	h := startHub(t, nil)
	topic := uniqueTopic(t)
	for _, body := range []string{`{"txt": "a"}`, `{"text": "a"`, `{"text": 42}`} {
		resp, err := http.Post(h.URL+"/v1/topics/"+topic+"/messages", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 400 || ct != "application/json" {
			t.Errorf("body %s: status %d, Content-Type %q; want 400 application/json", body, resp.StatusCode, ct)
		}
	}
}
