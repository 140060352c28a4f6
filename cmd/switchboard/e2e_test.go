package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/client"
	"github.com/switchboard-dev/switchboard/message"
)

// The end-to-end test drives a real `switchboard serve` process, built from
// this package, as users would: REST with plain HTTP, gRPC (found through
// server reflection), the Go client backend and the CLI binary. It kills the
// server with SIGKILL while publishers publish and checks that every
// acknowledged message is consumed after the restart, and that deliveries in
// flight at a graceful SIGTERM are redelivered.

const (
	adminToken = "e2e-admin-token-0123456789abcdef"
	pubToken   = "e2e-orders-publisher-0123456789"
	slowToken  = "e2e-slow-token-0123456789abcdef"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/switchboard once per test run.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the switchboard binary; skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "switchboard-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "switchboard")
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go tool is not on PATH: %w", err)
			return
		}
		cmd := exec.Command(goTool, "build", "-o", binPath, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// env is the process environment without SWITCHBOARD_* settings of the
// developer's shell.
func env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// server is one `switchboard serve` process.
type server struct {
	cmd    *exec.Cmd
	addr   string // host:port
	out    *syncBuffer
	exited chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer runs serve on addr (e.g. 127.0.0.1:0) with dir and config and
// waits until it listens.
func startServer(t *testing.T, bin, addr, dir, config string) *server {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--addr", addr, "--data", dir, "--config", config, "--log-level", "info")
	cmd.Env = env()
	s := &server{cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	r := &hubRun{ready: make(chan string, 1)}
	// Wait returns only after the writer saw all of stdout (no pipe race).
	cmd.Stdout = &lineWriter{w: s.out, line: r.scan}
	cmd.Stderr = s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := r.ready
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { s.kill() })
	select {
	case s.addr = <-listening:
	case <-s.exited:
		t.Fatalf("serve exited before listening: %v\n%s", s.err, s.out)
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not listen within 60 s:\n%s", s.out)
	}
	return s
}

func (s *server) kill() {
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not exit within 60 s of SIGTERM:\n%s", s.out)
	}
	if s.err != nil {
		t.Fatalf("serve exited with %v after SIGTERM:\n%s", s.err, s.out)
	}
	if !strings.Contains(s.out.String(), "stopped") {
		t.Fatalf("serve did not report a clean stop:\n%s", s.out)
	}
}

func writeConfig(t *testing.T) string {
	t.Helper()
	cfg := map[string]any{
		"tokens": []map[string]any{
			{"name": "admin", "token": adminToken, "admin": []string{">", "$dlq.>"}},
			{"name": "orders", "token": pubToken, "publish": []string{"orders.>"}, "consume": []string{"orders.>"}},
			{"name": "slow", "token": slowToken, "publish": []string{">"}, "rate": 0.001, "burst": 1},
		},
		"limits": map[string]any{"max_payload": 64 << 10},
	}
	b, _ := json.Marshal(cfg)
	path := filepath.Join(t.TempDir(), "hub.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rest does one HTTP request like curl would.
func rest(t *testing.T, addr, token, method, path, body string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// cli runs the binary against the server.
func cli(t *testing.T, bin, addr, token string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--hub", addr)...)
	cmd.Env = env("SWITCHBOARD_TOKEN=" + token)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func h2c() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func TestEndToEnd(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	config := writeConfig(t)
	srv := startServer(t, bin, "127.0.0.1:0", dir, config)
	addr := srv.addr
	if !strings.Contains(srv.out.String(), "auth on: 3 tokens") {
		t.Fatalf("serve does not say auth is on:\n%s", srv.out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	t.Run("rest", func(t *testing.T) {
		code, _, body := rest(t, addr, pubToken, "POST", "/v1/topics/orders.rest/messages", `{"id": "r-1", "text": "hello"}`)
		if code != 200 || !strings.Contains(body, `"id":"r-1"`) {
			t.Fatalf("publish: %d %s", code, body)
		}
		for _, c := range []struct {
			name, token, path, body string
			code                    int
			want                    string
		}{
			{"no token", "", "/v1/topics/orders.rest/messages", `{"text": "a"}`, 401, "Authorization: Bearer"},
			{"wrong token", "nope-nope-nope-nope", "/v1/topics/orders.rest/messages", `{"text": "a"}`, 401, "not one of this hub's tokens"},
			{"forbidden topic", pubToken, "/v1/topics/payments.rest/messages", `{"text": "a"}`, 403, "may not publish"},
			{"malformed JSON", pubToken, "/v1/topics/orders.rest/messages", `{"text": `, 400, "invalid JSON"},
			{"unknown field", pubToken, "/v1/topics/orders.rest/messages", `{"txt": "a"}`, 400, "txt"},
			{"payload over the limit", pubToken, "/v1/topics/orders.rest/messages", `{"text": "` + strings.Repeat("x", 65<<10) + `"}`, 400, "exceeds the limit"},
		} {
			code, _, body := rest(t, addr, c.token, "POST", c.path, c.body)
			if code != c.code || !strings.Contains(body, c.want) {
				t.Errorf("%s: %d %s; want %d mentioning %q", c.name, code, body, c.code, c.want)
			}
		}
		// The slow token gets one request, then 429 with Retry-After.
		rest(t, addr, slowToken, "POST", "/v1/topics/any/messages", `{"text": "a"}`)
		code, hdr, body := rest(t, addr, slowToken, "POST", "/v1/topics/any/messages", `{"text": "a"}`)
		if code != 429 || hdr.Get("Retry-After") == "" || !strings.Contains(body, "rate limit") {
			t.Errorf("rate limit: %d %v %s", code, hdr, body)
		}
		code, _, body = rest(t, addr, "", "GET", "/healthz", "")
		if code != 200 {
			t.Errorf("/healthz: %d %s", code, body)
		}
		code, _, body = rest(t, addr, adminToken, "GET", "/metrics", "")
		if code != 200 || !strings.Contains(body, "switchboard_hub_requests_total") || !strings.Contains(body, "switchboard_embedded_fsyncs_total") {
			t.Errorf("/metrics: %d %.300s", code, body)
		}
	})

	t.Run("grpc", func(t *testing.T) {
		// Find the service through reflection, as grpcurl does.
		rc := grpcreflect.NewClient(h2c(), "http://"+addr, connect.WithGRPC())
		stream := rc.NewStream(ctx)
		names, err := stream.ListServices()
		_, _ = stream.Close()
		if err != nil || !strings.Contains(fmt.Sprint(names), "switchboard.v1.SwitchboardService") {
			t.Fatalf("reflection: %v %v", names, err)
		}
		c := switchboardv1connect.NewSwitchboardServiceClient(h2c(), "http://"+addr, connect.WithGRPC())
		req := connect.NewRequest(&v1.PublishBatchRequest{Topic: "orders.grpc", Messages: []*v1.Message{
			{Body: &v1.Message_Text{Text: "a"}}, {Body: &v1.Message_Text{Text: "b"}},
		}})
		req.Header().Set("Authorization", "Bearer "+pubToken)
		resp, err := c.PublishBatch(ctx, req)
		if err != nil || len(resp.Msg.GetResults()) != 2 {
			t.Fatalf("gRPC PublishBatch: %v %v", resp, err)
		}
		_, err = c.PublishBatch(ctx, connect.NewRequest(req.Msg))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("gRPC without token: %v", err)
		}
	})

	t.Run("go client and CLI", func(t *testing.T) {
		b, err := broker.Open(ctx, "switchboard://"+addr+"?token="+pubToken)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := b.Publish(ctx, &broker.PublishParams{Topic: "orders.cli", Messages: []*message.Message{{ID: "go-1", Payload: []byte("from go")}}}); err != nil {
			t.Fatal(err)
		}
		if _, stderr, err := cli(t, bin, addr, pubToken, "publish", "orders.cli", "from cli", "--key", "k1"); err != nil {
			t.Fatalf("cli publish: %v %s", err, stderr)
		}
		out, stderr, err := cli(t, bin, addr, pubToken, "consume", "orders.cli", "--group", "cli", "--from", "earliest", "--max", "2")
		if err != nil || !strings.Contains(out, "from go") || !strings.Contains(out, "from cli") {
			t.Fatalf("cli consume: %v %q %s", err, out, stderr)
		}
		_, stderr, err = cli(t, bin, addr, pubToken, "publish", "payments.cli", "x")
		if err == nil || !strings.Contains(stderr, "may not publish") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Fatalf("cli publish to a forbidden topic: %v %q", err, stderr)
		}
		_, stderr, err = cli(t, bin, addr, "", "topics")
		if err == nil || !strings.Contains(stderr, "bearer token") {
			t.Fatalf("cli without token: %v %q", err, stderr)
		}
		out, _, err = cli(t, bin, addr, adminToken, "groups")
		if err != nil || !strings.Contains(out, "cli") {
			t.Fatalf("cli groups: %v %q", err, out)
		}
	})

	// Deliveries in flight at a graceful shutdown come back after restart.
	a, err := client.New(ctx, "http://"+addr, client.WithToken(adminToken))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctx, &broker.PublishParams{Topic: "orders.inflight", Messages: []*message.Message{
		{ID: "if-1", Payload: []byte("1")}, {ID: "if-2", Payload: []byte("2")}, {ID: "if-3", Payload: []byte("3")},
	}}); err != nil {
		t.Fatal(err)
	}
	sub, err := a.Subscribe(ctx, &broker.SubscribeParams{Topic: "orders.inflight", Group: "inflight", Start: broker.StartPosition{Kind: broker.StartEarliest}, AckDeadline: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // received, never acked
		select {
		case <-sub.Deliveries():
		case <-ctx.Done():
			t.Fatal("no delivery before SIGTERM")
		}
	}
	srv.stop(t)
	_ = a.Close()

	srv = startServer(t, bin, addr, dir, config)
	b, err := client.New(ctx, "http://"+addr, client.WithToken(adminToken))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := consumeIDs(t, ctx, b, "orders.inflight", "inflight", 3)
	for _, id := range []string{"if-1", "if-2", "if-3"} {
		if got[id] < 2 {
			t.Errorf("in-flight message %s after SIGTERM and restart: attempt %d, want a redelivery (>= 2)", id, got[id])
		}
	}

	// SIGKILL while publishers publish; every acknowledged message survives.
	var (
		acked   sync.Map
		nAcked  atomic.Int64
		stopPub = make(chan struct{})
		wg      sync.WaitGroup
	)
	for p := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stopPub:
					return
				default:
				}
				var ms []*message.Message
				n := 1 + i%10 // singles and batches
				for j := range n {
					ms = append(ms, &message.Message{ID: fmt.Sprintf("p%d-%d-%d", p, i, j), Key: fmt.Sprint(p), Payload: []byte("crash")})
				}
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := b.Publish(pctx, &broker.PublishParams{Topic: "orders.crash", Messages: ms})
				pcancel()
				if err != nil {
					continue // the server is gone; keep trying until told to stop
				}
				for _, m := range ms {
					acked.Store(m.ID, true)
				}
				nAcked.Add(int64(n))
			}
		})
	}
	deadline := time.Now().Add(60 * time.Second)
	for nAcked.Load() < 2000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	srv.kill() // SIGKILL, publishers still running
	time.Sleep(100 * time.Millisecond)
	close(stopPub)
	wg.Wait()
	want := int(nAcked.Load())
	if want == 0 {
		t.Fatalf("no publish was acknowledged before the kill:\n%s", srv.out)
	}

	srv = startServer(t, bin, addr, dir, config)
	c, err := client.New(ctx, "http://"+addr, client.WithToken(adminToken))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen := consumeAll(t, ctx, c, "orders.crash", "crash-check", func(seen map[string]int) bool {
		missing := 0
		acked.Range(func(k, _ any) bool {
			if seen[k.(string)] == 0 {
				missing++
			}
			return missing == 0
		})
		return missing == 0
	})
	missing := 0
	acked.Range(func(k, _ any) bool {
		if seen[k.(string)] == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged message %s lost after SIGKILL", k)
			}
		}
		return true
	})
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged messages lost", missing, want)
	}
	t.Logf("%d acknowledged messages before SIGKILL, all consumed after restart (%d stored in all)", want, len(seen))
	srv.stop(t)
}

// consumeIDs consumes n messages of group and returns their attempt numbers.
func consumeIDs(t *testing.T, ctx context.Context, b broker.Broker, topic, group string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	consumeAll(t, ctx, b, topic, group, func(seen map[string]int) bool {
		got = seen
		return len(seen) >= n
	})
	return got
}

// consumeAll acks deliveries of group until done says so (bounded by ctx
// and 2 minutes), and returns the attempt of each message ID.
func consumeAll(t *testing.T, ctx context.Context, b broker.Broker, topic, group string, done func(map[string]int) bool) map[string]int {
	t.Helper()
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: group, Start: broker.StartPosition{Kind: broker.StartEarliest}, MaxInFlight: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	return ackUntil(t, ctx, sub, topic, done)
}

// ackUntil acks deliveries of sub until done says so (bounded by ctx and 2
// minutes), and returns the attempt of each message ID.
func ackUntil(t *testing.T, ctx context.Context, sub broker.Subscription, topic string, done func(map[string]int) bool) map[string]int {
	t.Helper()
	seen := map[string]int{}
	timeout := time.After(2 * time.Minute)
	check := time.NewTicker(200 * time.Millisecond)
	defer check.Stop()
	for n := 0; ; n++ {
		select {
		case d, ok := <-sub.Deliveries():
			if !ok {
				t.Fatalf("subscription ended: %v", sub.Err())
			}
			seen[d.Message.ID] = max(seen[d.Message.ID], d.Info.Attempt)
			if err := d.Ack(ctx); err != nil {
				t.Fatalf("ack: %v", err)
			}
			if n%256 != 0 && len(seen) > 16 {
				continue // check done now and then, and on idle ticks
			}
		case <-check.C:
		case <-timeout:
			t.Fatalf("consumed %d messages of %s in 2 minutes and still not done", len(seen), topic)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		if done(seen) {
			return seen
		}
	}
}

// serve refuses to listen beyond loopback without tokens.
func TestServeRefusesUnauthenticatedPublicAddress(t *testing.T) {
	bin := binary(t)
	cmd := exec.Command(bin, "serve", "--addr", "0.0.0.0:0", "--data", t.TempDir())
	cmd.Env = env()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to listen on 0.0.0.0:0 without authentication") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("serve on 0.0.0.0 without tokens: %v\n%s", err, out)
	}
}
