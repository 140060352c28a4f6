package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/cli"
)

// serve runs `switchboard serve` in process on a random port and returns the
// --hub flag to reach it.
func serve(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	var out bytes.Buffer
	done := make(chan int, 1)
	cfg := &cli.Config{Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }, Ready: func(a string) { ready <- a }}
	go func() { done <- cli.Run(ctx, cfg, []string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir()}) }()
	var addr string
	select {
	case addr = <-ready:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, out.String())
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start")
	}
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, out.String())
		}
		if !strings.Contains(out.String(), "auth off") || !strings.Contains(out.String(), "data in ") {
			t.Errorf("serve did not say where data lives and whether auth is on:\n%s", out.String())
		}
	})
	return addr
}

// run runs one command against hub and returns its exit code, stdout and
// stderr.
func run(t *testing.T, hub, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cfg := &cli.Config{Stdin: strings.NewReader(stdin), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := cli.Run(ctx, cfg, append(args, "--hub", hub))
	return code, stdout.String(), stderr.String()
}

func TestCLIPublishConsume(t *testing.T) {
	hub := serve(t)
	code, out, errOut := run(t, hub, "", "publish", "orders.placed", `{"order": 1}`, "--key", "c7", "--header", "src=web")
	if code != 0 {
		t.Fatalf("publish: %d %s", code, errOut)
	}
	var res struct {
		ID  string `json:"id"`
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.ID == "" || res.Seq != 1 {
		t.Fatalf("publish printed %q (%v)", out, err)
	}
	var lines strings.Builder
	for i := range 250 {
		fmt.Fprintf(&lines, "line %d\n", i)
	}
	code, _, errOut = run(t, hub, lines.String(), "publish", "numbers", "--batch", "100")
	if code != 0 || !strings.Contains(errOut, "published 250 messages") {
		t.Fatalf("publish from stdin: %d %q", code, errOut)
	}
	code, _, errOut = run(t, hub, `{"id": "j1", "text": "a"}`+"\n"+`{"id": "j1", "text": "a"}`+"\n", "publish", "jsonl", "--jsonl")
	if code != 0 || !strings.Contains(errOut, "published 2 messages (1 duplicates)") {
		t.Fatalf("publish --jsonl: %d %q", code, errOut)
	}
	code, out, errOut = run(t, hub, "", "consume", "numbers", "--group", "g", "--from", "earliest", "--max", "250")
	if code != 0 {
		t.Fatalf("consume: %d %s", code, errOut)
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	if len(got) != 250 || !strings.Contains(got[0], `"text":"line 0"`) || !strings.Contains(got[249], `"text":"line 249"`) {
		t.Fatalf("consume printed %d lines, first %q", len(got), got[0])
	}
	code, out, _ = run(t, hub, "", "groups")
	if code != 0 || !strings.Contains(out, "LAG") || !strings.Contains(out, "numbers") {
		t.Fatalf("groups: %d %q", code, out)
	}
	code, out, _ = run(t, hub, "", "topics")
	if code != 0 || !strings.Contains(out, "orders.placed") {
		t.Fatalf("topics: %d %q", code, out)
	}
	code, _, errOut = run(t, hub, "", "dlq", "list", "g")
	if code != 0 || !strings.Contains(errOut, "0 dead letters") {
		t.Fatalf("dlq list: %d %q", code, errOut)
	}
	code, out, _ = run(t, hub, "", "dlq", "purge", "g")
	if code != 0 || !strings.Contains(out, "purged 0") {
		t.Fatalf("dlq purge: %d %q", code, out)
	}
}

func TestCLIErrors(t *testing.T) {
	hub := serve(t)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"groups", "describe", "nope"}, 1, "not found"},
		{[]string{"consume", "x", "--group", "g", "--from", "yesterday"}, 2, "--from"},
		{[]string{"publish", "bad..topic", "x"}, 1, "empty segment"},
		{[]string{"request", "nobody", "hi"}, 1, "no responders"},
		{[]string{"topics", "--bogus"}, 2, "unknown flag"},
	}
	for _, c := range cases {
		code, _, errOut := run(t, hub, "", c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errOut, c.code, c.want)
		}
		if strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.HasPrefix(errOut, "switchboard: ") {
			t.Errorf("%v: error is not one line starting with \"switchboard: \": %q", c.args, errOut)
		}
	}
	// No hub at that address.
	code, _, errOut := run(t, "127.0.0.1:1", "", "topics")
	if code != 1 || !strings.Contains(errOut, "127.0.0.1:1") {
		t.Errorf("unreachable hub: exit %d, %q", code, errOut)
	}
}

func TestCLIHelpHasExamples(t *testing.T) {
	for _, c := range [][]string{{"serve"}, {"publish"}, {"consume"}, {"tail"}, {"request"}, {"topics"}, {"groups"}, {"dlq"}, {"dlq", "replay"}, {"version"}} {
		code, out, _ := run(t, "127.0.0.1:1", "", append(c, "--help")...)
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--hub") {
			t.Errorf("%v --help: exit %d, no Examples or --hub:\n%s", c, code, out)
		}
	}
}
