package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	_ "github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/hub"
)

// testHub is a hub serving an embedded broker on a random loopback port.
type testHub struct {
	URL    string
	Broker broker.Broker
	Server *hub.Server
}

func startHub(t *testing.T, cfg *hub.Config) *testHub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := broker.Open(ctx, "embedded://"+t.TempDir())
	if err != nil {
		t.Fatalf("open embedded broker: %v", err)
	}
	s, err := hub.New(b, cfg)
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	return &testHub{URL: "http://" + ln.Addr().String(), Broker: b, Server: s}
}

// call does a REST request with a JSON body (a string, or a value to encode)
// and decodes the JSON answer into a map.
func (h *testHub) call(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(buf)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: answer is not JSON (%v): %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, out
}

func uniqueTopic(t *testing.T) string {
	t.Helper()
	r := strings.NewReplacer("/", "-", " ", "_", "#", "_")
	return "test." + r.Replace(t.Name()) + "." + time.Now().Format("150405.000000000")[7:]
}
