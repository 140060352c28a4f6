package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/cli"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveWith runs serve with args and environment env; it returns the
// address once listening (or the exit code and output if serve failed).
func serveWith(t *testing.T, env map[string]string, args ...string) (addr string, code int, out *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	out = &lockedBuffer{}
	done := make(chan int, 1)
	cfg := &cli.Config{Stdout: out, Stderr: out, Getenv: func(k string) string { return env[k] }, Ready: func(a string) { ready <- a }}
	go func() { done <- cli.Run(ctx, cfg, append([]string{"serve"}, args...)) }()
	select {
	case addr = <-ready:
	case code = <-done:
		cancel()
		return "", code, out
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("serve neither started nor failed")
	}
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, out)
		}
	})
	return addr, 0, out
}

func writeFile(t *testing.T, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hub.json")
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// Flags beat environment variables, which beat the config file.
func TestServeSettingsPrecedence(t *testing.T) {
	fileData, envData := t.TempDir(), t.TempDir()
	config := writeFile(t, `{"addr": "127.0.0.1:1", "data": "`+fileData+`", "log_level": "nonsense-overridden",
		"tokens": [{"name": "ci", "token": "ci-token-0123456789abcdef", "admin": [">"]}]}`, 0o600)
	env := map[string]string{"SWITCHBOARD_DATA": envData, "SWITCHBOARD_LOG_LEVEL": "warn"}
	addr, code, out := serveWith(t, env, "--config", config, "--addr", "127.0.0.1:0")
	if code != 0 {
		t.Fatalf("serve exited %d: %s", code, out)
	}
	if !strings.Contains(out.String(), "data in "+envData) {
		t.Fatalf("the env data dir did not beat the file's:\n%s", out)
	}
	if strings.HasSuffix(addr, ":1") {
		t.Fatalf("the --addr flag did not beat the file's: %s", addr)
	}
	if !strings.Contains(out.String(), "auth on: 1 tokens") {
		t.Fatalf("serve does not say auth is on:\n%s", out)
	}
	code, _, errOut := run(t, addr, "", "topics")
	if code != 1 || !strings.Contains(errOut, "bearer token") {
		t.Fatalf("topics without token: %d %q", code, errOut)
	}
	code, _, errOut = run(t, addr, "", "topics", "--token", "ci-token-0123456789abcdef")
	if code != 0 {
		t.Fatalf("topics with --token: %d %q", code, errOut)
	}
}

func TestServeRefusals(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"public address without tokens", nil, []string{"--addr", "0.0.0.0:0"}, 1, "refusing to listen on 0.0.0.0:0 without authentication"},
		{"public address from env", map[string]string{"SWITCHBOARD_ADDR": "0.0.0.0:0"}, nil, 1, "refusing"},
		{"cert without key", nil, []string{"--addr", "127.0.0.1:0", "--tls-cert", "x.crt"}, 2, "--tls-key"},
		{"missing cert files", nil, []string{"--addr", "127.0.0.1:0", "--tls-cert", "x.crt", "--tls-key", "x.key"}, 1, "x.crt"},
		{"unknown setting in file", nil, []string{"--config", writeFile(t, `{"adress": "x"}`, 0o600)}, 1, `unknown field "adress"`},
		{"world-readable secrets", nil, []string{"--config", writeFile(t, `{"tokens": [{"name": "a", "token": "aaaaaaaaaaaaaaaaaaaa"}]}`, 0o644)}, 1, "chmod 600"},
		{"bad token in file", nil, []string{"--addr", "127.0.0.1:0", "--config", writeFile(t, `{"tokens": [{"name": "a", "token": "short"}]}`, 0o600)}, 1, "at least 16"},
		{"bad env value", map[string]string{"SWITCHBOARD_MAX_PAYLOAD": "big"}, []string{"--addr", "127.0.0.1:0"}, 2, "SWITCHBOARD_MAX_PAYLOAD"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, code, out := serveWith(t, c.env, append(c.args, "--data", t.TempDir())...)
			if code != c.code || !strings.Contains(out.String(), c.want) {
				t.Fatalf("exit %d, output %q; want exit %d mentioning %q", code, out, c.code, c.want)
			}
			if n := strings.Count(strings.TrimSpace(out.String()), "\n"); n != 0 {
				t.Fatalf("the error is not one line: %q", out)
			}
		})
	}
	// --insecure allows it, and says so.
	_, code, out := serveWith(t, nil, "--addr", "0.0.0.0:0", "--insecure", "--data", t.TempDir())
	if code != 0 || !strings.Contains(out.String(), "auth OFF") {
		t.Fatalf("--insecure: exit %d\n%s", code, out)
	}
}
