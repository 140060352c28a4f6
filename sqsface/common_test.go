package sqsface_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/switchboard-dev/switchboard/broker"
	_ "github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/internal/awshttp"
	"github.com/switchboard-dev/switchboard/sqsface"
)

// server is a face over a fresh embedded engine behind an httptest server.
type server struct {
	*httptest.Server
	face *sqsface.Face
	dir  string

	mu     sync.Mutex
	protos map[string]int // "json" / "query" → requests seen
}

// newServer starts the face. The engine keeps IDs for 5 minutes, as SQS
// FIFO deduplication needs.
func newServer(t *testing.T, cfg *sqsface.Config) *server {
	t.Helper()
	dir := t.TempDir()
	b, err := broker.Open(context.Background(), "embedded://"+dir+"/engine?dedup_window=5m&durability=none")
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil {
		cfg = &sqsface.Config{}
	}
	if cfg.Dir == "" {
		cfg.Dir = dir + "/sqs"
	}
	f, err := sqsface.NewFace(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{face: f, dir: dir, protos: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := "query"
		if r.Header.Get("X-Amz-Target") != "" {
			p = "json"
		}
		s.mu.Lock()
		s.protos[p]++
		s.mu.Unlock()
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		s.Close()
		_ = f.Close()
		_ = b.Close()
	})
	return s
}

func (s *server) requests(proto string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.protos[proto]
}

// newClient is an aws-sdk-go-v2 SQS client (JSON protocol) for s.
func newClient(t *testing.T, url, key, secret string) *sqs.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(key, secret, "")),
		config.WithRetryMaxAttempts(1),
	)
	if err != nil {
		t.Fatal(err)
	}
	return sqs.NewFromConfig(cfg, func(o *sqs.Options) {
		o.BaseEndpoint = aws.String(url)
		// A copy of each request body: see internal/awshttp for the race
		// between the SDK and net/http that otherwise loses responses.
		o.HTTPClient = awshttp.NewClient(16)
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// needTool finds an external client or skips (fails when
// SWITCHBOARD_REQUIRE_SERVICES=1).
func needTool(t *testing.T, path, hint string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err == nil {
		return p
	}
	if os.Getenv("SWITCHBOARD_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s not found and SWITCHBOARD_REQUIRE_SERVICES=1: %s", path, hint)
	}
	t.Skipf("%s not found (%s); skipping", path, hint)
	return ""
}

func newHTTP(h http.Handler) *httptest.Server { return httptest.NewServer(h) }
