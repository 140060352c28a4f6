package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	reloadOldToken  = "reload-old-token-0123456789abcdef"
	reloadKeptToken = "reload-kept-token-0123456789abcde"
	reloadNewToken  = "reload-new-token-0123456789abcdef"
)

// writeTokens writes a config file holding tokens, as an operator would
// edit it: a new file renamed over the old one, mode 600.
func writeTokens(t *testing.T, path string, tokens ...map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"tokens": tokens})
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// hup sends SIGHUP to the hub and waits until its log has one more line
// containing want than before.
func (h *hubProc) hup(t *testing.T, want string) {
	t.Helper()
	before := strings.Count(h.out.String(), want)
	if err := h.run.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(h.out.String(), want) == before {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q within 20 s of SIGHUP", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SIGHUP reloads the tokens of the config file: the removed token gets 401
// at once (and its open event stream ends), the new one works, and a file
// with invalid tokens is refused with the old tokens kept. Without a config
// file SIGHUP only logs that there is nothing to reload.
func TestServeReloadsTokensOnSIGHUP(t *testing.T) {
	bin := binary(t)
	config := filepath.Join(t.TempDir(), "hub.json")
	kept := map[string]any{"name": "kept", "token": reloadKeptToken, "publish": []string{"orders.>"}}
	writeTokens(t, config,
		map[string]any{"name": "old", "token": reloadOldToken, "publish": []string{"orders.>"}, "consume": []string{"orders.>"}},
		kept)
	h := startHub(t, bin, "--data", t.TempDir(), "--config", config)
	publish := "/v1/topics/orders.placed/messages"
	if code, _, body := rest(t, h.addr, reloadOldToken, "POST", publish, `{"text": "before"}`); code != 200 {
		t.Fatalf("old token before the reload: %d %s", code, body)
	}
	if code, _, _ := rest(t, h.addr, reloadNewToken, "POST", publish, `{"text": "before"}`); code != 401 {
		t.Fatalf("new token before the reload: %d, want 401", code)
	}
	// An event stream of the old token, open across the reload (curl -N).
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+h.addr+"/v1/topics/orders.placed/groups/audit/events", nil)
	req.Header.Set("Authorization", "Bearer "+reloadOldToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("events with the old token: %d", resp.StatusCode)
	}
	events := bufio.NewScanner(resp.Body)
	if !events.Scan() || events.Text() != "event: subscribed" {
		t.Fatalf("first event line %q (%v), want the subscribed event", events.Text(), events.Err())
	}

	writeTokens(t, config, kept,
		map[string]any{"name": "new", "token": reloadNewToken, "publish": []string{"orders.>"}})
	h.hup(t, "tokens reloaded from "+config+": 2 tokens")

	code, hdr, body := rest(t, h.addr, reloadOldToken, "POST", publish, `{"text": "after"}`)
	if code != 401 || !strings.Contains(body, "not one of this hub's tokens") || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("old token after the reload: %d %s, want 401", code, body)
	}
	for _, tok := range []string{reloadNewToken, reloadKeptToken} {
		if code, _, body := rest(t, h.addr, tok, "POST", publish, `{"text": "after"}`); code != 200 {
			t.Fatalf("token after the reload: %d %s", code, body)
		}
	}
	var last string
	for events.Scan() {
		if l := events.Text(); strings.HasPrefix(l, "data: ") {
			last = l
		}
	}
	if !strings.Contains(last, `"code":16`) || !strings.Contains(last, "revoked") {
		t.Fatalf("event stream of the old token ended with %q (%v), want an unauthenticated error event", last, events.Err())
	}

	// A file with an invalid token is refused whole: the tokens stay.
	writeTokens(t, config, kept, map[string]any{"name": "bad", "token": "too-short"})
	h.hup(t, "tokens not reloaded from "+config+", the old tokens stay")
	if !strings.Contains(h.out.String(), "at least 16") {
		t.Fatalf("the refusal does not say why:\n%s", h.out)
	}
	if code, _, body := rest(t, h.addr, reloadNewToken, "POST", publish, `{"text": "still"}`); code != 200 {
		t.Fatalf("new token after a refused reload: %d %s", code, body)
	}
	if code, _, _ := rest(t, h.addr, reloadOldToken, "POST", publish, `{"text": "still"}`); code != 401 {
		t.Fatalf("old token after a refused reload: %d, want 401", code)
	}

	// Without --config there is nothing to reload; the hub keeps serving.
	open := startHub(t, bin, "--data", t.TempDir())
	open.hup(t, "no tokens to reload")
	if code, _, body := rest(t, open.addr, "", "POST", publish, `{"text": "open"}`); code != 200 {
		t.Fatalf("hub without config after SIGHUP: %d %s", code, body)
	}
}
