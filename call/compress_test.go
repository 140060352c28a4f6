package call_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/call"
)

// raw sends a request without transparent decompression and returns the
// response and its body as sent.
func raw(t *testing.T, method, url, ctype, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, cancel := newRequest(t, method, url, ctype, body, hdr...)
	defer cancel()
	ctx := req.Context()
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	res, err := c.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

// REST and Connect unary responses are gzipped once, at the edge, when the
// client and the handler accept gzip, as vanguard did with the handler's
// own compression.
func TestResponseCompression(t *testing.T) {
	var unknownSaw string
	f := newFixture(t, call.WithUnknownHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		unknownSaw = r.Header.Get("Accept-Encoding")
		http.NotFound(w, r)
	})))
	f.charge(t)
	get := f.base + "/v1/charges/ch_1"
	for _, tc := range []struct {
		name, method, url, ctype, body, accept string
		status                                 int
		gzipped                                bool
	}{
		{"rest gzip", "GET", get, "", "", "gzip", 200, true},
		{"rest gzip among others", "GET", get, "", "", "br, gzip", 200, true},
		{"rest identity", "GET", get, "", "", "", 200, false},
		{"rest br", "GET", get, "", "", "br", 200, false},
		{"rest gzip with a quality", "GET", get, "", "", "gzip;q=0.5", 200, false},
		{"rest error", "GET", f.base + "/v1/charges/ch_404", "", "", "gzip", 404, false},
		{"default route", "POST", f.base + "/payments.v1.PaymentService/GetCharge", "application/json", `{"id":"ch_1"}`, "gzip", 200, true},
		{"connect json", "POST", f.base + "/payments.v1.PaymentService/GetCharge", "application/json", `{"id":"ch_1"}`, "gzip", 200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{"Connect-Protocol-Version", "1"}
			if tc.accept != "" {
				hdr = append(hdr, "Accept-Encoding", tc.accept)
			}
			if strings.HasPrefix(tc.name, "rest") {
				hdr = hdr[2:]
			}
			res, body := raw(t, tc.method, tc.url, tc.ctype, tc.body, hdr...)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %q", res.StatusCode, tc.status, body)
			}
			if got := res.Header.Get("Content-Encoding") == "gzip"; got != tc.gzipped {
				t.Fatalf("gzipped %v, want %v", got, tc.gzipped)
			}
			if tc.gzipped {
				if n, _ := strconv.Atoi(res.Header.Get("Content-Length")); n != len(body) {
					t.Errorf("Content-Length %d for %d bytes", n, len(body))
				}
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			if tc.status == 200 {
				mustContain(t, tc.name, string(body), `"id":`, `ch_1`)
			}
			mustContain(t, tc.name+" content type", res.Header.Get("Content-Type"), "application/json")
		})
	}
	// A handler that is not a service's sees the request as it was sent.
	if res, _ := raw(t, "GET", f.base+"/v1/nope", "", "", "Accept-Encoding", "gzip"); res.StatusCode != 404 || unknownSaw != "gzip" {
		t.Errorf("unknown route: %d, its handler saw Accept-Encoding %q", res.StatusCode, unknownSaw)
	}
}
