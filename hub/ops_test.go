package hub_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/broker"
)

// metricValue finds one sample in a Prometheus text exposition: name with
// labels (in the exposition's order, e.g. `x{a="1",b="2"}`).
func metricValue(t *testing.T, text, series string) (float64, bool) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return v, true
}

func scrape(t *testing.T, h *testHub) string {
	t.Helper()
	resp, err := http.Get(h.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

func TestMetrics(t *testing.T) {
	h := startHub(t, nil)
	topic := uniqueTopic(t)
	for i := range 3 {
		if code, body := h.call(t, "POST", "/v1/topics/"+topic+"/messages", fmt.Sprintf(`{"text": "m%d"}`, i)); code != 200 {
			t.Fatalf("publish: %d %v", code, body)
		}
	}
	h.call(t, "POST", "/v1/topics/"+topic+"/messages", `{"txt": "bad"}`)
	if code, body := h.call(t, "POST", "/v1/groups", map[string]any{"group": "mg", "topic": topic, "start": map[string]any{"earliest": true}}); code != 200 {
		t.Fatalf("create group: %d %v", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := switchboardv1connect.NewSwitchboardServiceClient(h2cClient(), h.URL, connect.WithGRPC())
	sub, err := c.Subscribe(ctx, connect.NewRequest(&v1.SubscribeRequest{Topic: topic, Group: "mg"}))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sub.Receive() // subscribed
	if !sub.Receive() {
		t.Fatal(sub.Err())
	}
	if _, err := c.Ack(ctx, connect.NewRequest(&v1.AckRequest{Token: sub.Msg().GetDelivery().GetToken()})); err != nil {
		t.Fatal(err)
	}

	want := map[string]func(float64) bool{
		`switchboard_hub_requests_total{code="ok",procedure="/switchboard.v1.SwitchboardService/Publish"}`:               func(v float64) bool { return v == 3 },
		`switchboard_hub_requests_total{code="invalid_argument",procedure="/switchboard.v1.SwitchboardService/Publish"}`: func(v float64) bool { return v == 1 },
		`switchboard_hub_requests_total{code="ok",procedure="/switchboard.v1.SwitchboardService/Ack"}`:                   func(v float64) bool { return v == 1 },
		`switchboard_hub_published_messages_total`:                                                                       func(v float64) bool { return v == 3 },
		`switchboard_hub_delivered_messages_total`:                                                                       func(v float64) bool { return v >= 1 },
		`switchboard_hub_settlements_total{op="ack"}`:                                                                    func(v float64) bool { return v == 1 },
		`switchboard_hub_subscriptions`:                                                                                  func(v float64) bool { return v == 1 },
		`switchboard_group_lag{group="mg",topic="` + topic + `"}`:                                                        func(v float64) bool { return v == 2 },
		`switchboard_group_consumers{group="mg",topic="` + topic + `"}`:                                                  func(v float64) bool { return v == 1 },
		`switchboard_groups_scrape_ok`:                                                                                   func(v float64) bool { return v == 1 },
		`switchboard_embedded_fsyncs_total`:                                                                              func(v float64) bool { return v >= 1 },
		`switchboard_embedded_fsync_seconds_total`:                                                                       func(v float64) bool { return v > 0 },
		`switchboard_embedded_events_total{event="published"}`:                                                           func(v float64) bool { return v == 3 },
		`switchboard_hub_request_duration_seconds_count{procedure="/switchboard.v1.SwitchboardService/Publish"}`:         func(v float64) bool { return v == 4 },
	}
	// Counters move just after the stream send the client already saw:
	// scrape until every series is right, for a bounded time.
	var text string
	var bad []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		text, bad = scrape(t, h), nil
		for series, ok := range want {
			if v, found := metricValue(t, text, series); !found || !ok(v) {
				bad = append(bad, fmt.Sprintf("%s = %v (found %v)", series, v, found))
			}
		}
		if len(bad) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, b := range bad {
		t.Error(b)
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", text)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
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

func TestRequestLogs(t *testing.T) {
	var buf syncBuffer
	cfg := authConfig()
	cfg.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := startHub(t, cfg)
	h.do(t, tokPub, "POST", "/v1/topics/orders.logged/messages", `{"text": "a"}`)
	h.do(t, "", "POST", "/v1/topics/orders.logged/messages", `{"text": "a"}`)

	type line struct {
		Level, Msg, Method, Path, Procedure, Code, Token string
		Status                                           int
	}
	find := func(pred func(line) bool) bool {
		for _, l := range strings.Split(buf.String(), "\n") {
			var v line
			if json.Unmarshal([]byte(l), &v) == nil && v.Msg == "request" && pred(v) {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second) // the line is written after the response
	for {
		ok := find(func(l line) bool {
			return l.Level == "DEBUG" && l.Procedure == "/switchboard.v1.SwitchboardService/Publish" && l.Code == "ok" && l.Token == "pub" && l.Status == 200
		}) && find(func(l line) bool {
			return l.Level == "INFO" && l.Status == 401 && l.Code == "unauthenticated" && l.Path == "/v1/topics/orders.logged/messages"
		})
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request log lines missing:\n%s", buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(buf.String(), tokPub) {
		t.Fatal("a token secret reached the log")
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "switchboard test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestTLS(t *testing.T) {
	certFile, keyFile := selfSigned(t, t.TempDir())
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := authConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	h := startHub(t, cfg)
	addr := strings.TrimPrefix(h.URL, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// The Go client over HTTPS (HTTP/2 by ALPN), trusting the test CA.
	b, err := broker.Open(ctx, "switchboard://"+addr+"?token="+tokPub+"&ca="+certFile)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Publish(ctx, &broker.PublishParams{Topic: "orders.tls", Messages: msgs("secret")}); err != nil {
		t.Fatalf("publish over TLS: %v", err)
	}
	// Without the CA the certificate is refused; cleartext gets nothing.
	if _, err := broker.Open(ctx, "switchboard://"+addr+"?token="+tokPub+"&tls=1"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("open without trusting the CA: %v", err)
	}
	resp, err := http.Get(h.URL + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("cleartext request to a TLS hub answered 200")
		}
	}
}

// A client that goes away in the middle of sending a batch stores nothing:
// the body is incomplete, so the batch never reaches the broker.
func TestDisconnectMidBatch(t *testing.T) {
	h := startHub(t, nil)
	topic := uniqueTopic(t)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(ctx, "POST", h.URL+"/v1/topics/"+topic+"/messages:batch", pr)
	req.Header.Set("Content-Type", "application/json")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	var first strings.Builder
	first.WriteString(`{"messages": [`)
	for i := range 100 {
		fmt.Fprintf(&first, `{"id": "half-%d", "text": "x"},`, i)
	}
	if _, err := io.WriteString(pw, first.String()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the hub is now reading the body
	cancel()
	_ = pw.CloseWithError(context.Canceled)
	<-done

	// Nothing of the batch is stored (the topic may not even exist), and
	// the hub still works.
	if code, body := h.call(t, "POST", "/v1/topics/"+topic+"/messages", `{"id": "after", "text": "y"}`); code != 200 {
		t.Fatalf("publish after the aborted batch: %d %v", code, body)
	}
	code, body := h.call(t, "GET", "/v1/topics/"+topic, nil)
	if code != 200 || body["topic"].(map[string]any)["messages"] != "1" {
		t.Fatalf("topic after an aborted batch and one publish: %d %v, want 1 message", code, body)
	}
}

// Batches whose requests are cancelled at arbitrary moments (before, during
// or after the broker stores them) are stored whole or not at all.
func TestCancelledBatchesAllOrNothing(t *testing.T) {
	h := startHub(t, nil)
	topic := uniqueTopic(t)
	c := switchboardv1connect.NewSwitchboardServiceClient(h2cClient(), h.URL, connect.WithGRPC())
	const batches, size = 40, 50
	var wg sync.WaitGroup
	for b := range batches {
		wg.Go(func() {
			ms := make([]*v1.Message, size)
			for i := range ms {
				ms[i] = &v1.Message{Id: fmt.Sprintf("b%d-%d", b, i), Body: &v1.Message_Text{Text: "x"}}
			}
			// Cancel after 0..24 ms: some before the hub reads, some while the
			// broker writes, some after; every tenth batch is not cancelled.
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b%10)*3*time.Millisecond)
			if b%10 == 9 {
				ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
			}
			defer cancel()
			_, _ = c.PublishBatch(ctx, connect.NewRequest(&v1.PublishBatchRequest{Topic: topic, Messages: ms}))
		})
	}
	wg.Wait()
	// Read back everything stored.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ta := h.Broker.(broker.TopicAdmin)
	ti, err := ta.DescribeTopic(ctx, topic)
	if err != nil {
		t.Fatalf("describe topic: %v (the uncancelled batches should be there)", err)
	}
	sub, err := h.Broker.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: "check", Start: broker.StartPosition{Kind: broker.StartEarliest}, MaxInFlight: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	per := map[string]int{}
	for n := int64(0); n < ti.Messages; n++ {
		select {
		case d := <-sub.Deliveries():
			b, _, _ := strings.Cut(d.Message.ID, "-")
			per[b]++
			_ = d.Ack(ctx)
		case <-ctx.Done():
			t.Fatalf("read %d of %d stored messages", n, ti.Messages)
		}
	}
	if per["b9"] != size || per["b19"] != size {
		t.Errorf("uncancelled batches b9, b19 stored %d, %d messages; want %d each", per["b9"], per["b19"], size)
	}
	for b, n := range per {
		if n != size {
			t.Errorf("batch %s: %d of %d messages stored", b, n, size)
		}
	}
	t.Logf("%d of %d batches stored whole, the rest not at all", len(per), batches)
}
