package awshttp_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/internal/awshttp"
)

// closingBody is a request body like the SDK's: once closed, WriteTo
// reports io.EOF.
type closingBody struct {
	r      *strings.Reader
	closed bool
}

func (b *closingBody) Read(p []byte) (int, error) {
	if b.closed {
		return 0, io.EOF
	}
	return b.r.Read(p)
}

func (b *closingBody) WriteTo(w io.Writer) (int64, error) {
	if b.closed {
		return 0, io.EOF
	}
	return b.r.WriteTo(w)
}

func (b *closingBody) Close() error { b.closed = true; return nil }

type capture struct{ req *http.Request }

func (c *capture) RoundTrip(r *http.Request) (*http.Response, error) {
	c.req = r
	return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
}

func (c *capture) Do(r *http.Request) (*http.Response, error) { return c.RoundTrip(r) }

// TestOwnBodySurvivesCallerClose: the body the transport writes is not the
// caller's, so the caller closing its body once the response arrived (as
// the SDK does) leaves the transport's body whole.
func TestOwnBodySurvivesCallerClose(t *testing.T) {
	t.Run("RoundTripper", func(t *testing.T) {
		checkOwnBody(t, func(next *capture, r *http.Request) error {
			_, err := (awshttp.OwnBody{Next: next}).RoundTrip(r)
			return err
		})
	})
	t.Run("Wrap", func(t *testing.T) {
		checkOwnBody(t, func(next *capture, r *http.Request) error {
			_, err := awshttp.Wrap(next).Do(r)
			return err
		})
	})
}

func checkOwnBody(t *testing.T, send func(next *capture, r *http.Request) error) {
	body := &closingBody{r: strings.NewReader(`{"QueueUrl":"q"}`)}
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(body.r.Len())
	next := &capture{}
	if err := send(next, req); err != nil {
		t.Fatal(err)
	}
	_ = body.Close() // what the SDK does when client.Do returns
	if next.req.Body == req.Body {
		t.Fatal("the transport got the caller's body")
	}
	got, err := io.ReadAll(next.req.Body)
	if err != nil || string(got) != `{"QueueUrl":"q"}` {
		t.Fatalf("transport's body = %q, %v; want the whole request", got, err)
	}
	if n, err := io.Copy(io.Discard, next.req.Body); n != 0 || err != nil {
		t.Fatalf("extra read after the body = %d, %v; want 0, nil (net/http checks for excess bytes)", n, err)
	}
	if next.req.ContentLength != int64(len(got)) {
		t.Errorf("ContentLength = %d, want %d", next.req.ContentLength, len(got))
	}
	if rc, err := next.req.GetBody(); err != nil {
		t.Errorf("GetBody: %v", err)
	} else if again, _ := io.ReadAll(rc); string(again) != string(got) {
		t.Errorf("GetBody gives %q, want %q", again, got)
	}
}
