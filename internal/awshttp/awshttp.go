// Package awshttp holds the HTTP client that Switchboard's SQS code gives
// the AWS SDK (aws-sdk-go-v2): the backend, the tests of the SQS face and
// the benchmarks.
package awshttp

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
)

// Doer is the HTTP client interface of the AWS SDK (aws.HTTPClient).
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// NewClient returns an HTTP client for the AWS SDK that keeps up to
// idlePerHost idle connections per host and sends its own copy of each
// request body (see OwnBody).
func NewClient(idlePerHost int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = idlePerHost
	return &http.Client{Transport: OwnBody{Next: tr}}
}

// Wrap returns a client that sends each request through c with its own
// copy of the request body (see OwnBody), keeping c's transport settings
// (a CA bundle from AWS_CA_BUNDLE, proxies).
func Wrap(c Doer) Doer { return wrapped{c} }

type wrapped struct{ next Doer }

func (w wrapped) Do(r *http.Request) (*http.Response, error) {
	c, err := copyBody(r)
	if err != nil {
		return nil, err
	}
	return w.next.Do(c)
}

// OwnBody is an http.RoundTripper that sends a copy of each request body.
//
// The SDK closes its request body as soon as the response headers arrive.
// net/http's writer, after sending Content-Length bytes, reads the body once
// more to check that nothing is left; when the server answered fast (a
// receive with messages ready), that read can come after the SDK's close,
// on a body whose WriteTo then returns io.EOF. net/http takes that for a
// write error and closes the connection under the response being read: the
// SDK reports "use of closed network connection" and retries, and on SQS the
// messages of the lost response stay invisible for their whole visibility
// timeout. A body the SDK does not own cannot be closed under the writer.
type OwnBody struct {
	// Next sends the copied request.
	Next http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t OwnBody) RoundTrip(r *http.Request) (*http.Response, error) {
	c, err := copyBody(r)
	if err != nil {
		return nil, err
	}
	return t.Next.RoundTrip(c)
}

// copyBody returns r with a body of its own, or r itself when it has none.
func copyBody(r *http.Request) (*http.Request, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return r, nil
	}
	b, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	c := r.Clone(r.Context())
	c.Body = io.NopCloser(bytes.NewReader(b))
	c.ContentLength = int64(len(b))
	c.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return c, nil
}
