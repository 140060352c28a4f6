package call

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard"
	"github.com/switchboard-dev/switchboard/message"
)

// TopicTransport carries Connect unary calls over a topic: it turns each
// HTTP request a connect client makes into sb.Request on its topic and the
// reply of [Server.ServeTopic] back into the HTTP response the client
// expects. It is an http.RoundTripper and a connect.HTTPClient, so any
// generated client works unchanged:
//
//	client := paymentsv1connect.NewPaymentServiceClient(call.TopicHTTPClient(sb, "payments"), "topic://payments")
//	res, err := client.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "ch_1"}))
//
// The base URL is only a label: the transport always sends to its own topic
// and routes by the URL's last two path segments ("/pkg.Service/Method").
// Its host is the connect peer address, so [ClientInterceptor] keeps one
// breaker per topic when the URL is "topic://{topic}".
//
// Every call has a timeout: the caller's ctx deadline, capped by the
// transport's timeout (DefaultTopicTimeout when not set). Errors:
//   - nobody serves the topic: Unavailable at once (broker.ErrNoResponders;
//     fail fast, never a wait for the timeout);
//   - no reply in time: DeadlineExceeded;
//   - the handler's error: its connect code, message and details unchanged;
//   - gRPC, gRPC-Web and streaming calls: Unimplemented (use the default
//     Connect protocol; connect.WithProtoJSON and connect.WithHTTPGet work).
//
// A TopicTransport is safe for concurrent use.
type TopicTransport struct {
	sb      *switchboard.Client
	topic   string
	timeout time.Duration
}

// NewTopicTransport returns the transport for topic; timeout caps every
// call (≤ 0: DefaultTopicTimeout).
func NewTopicTransport(sb *switchboard.Client, topic string, timeout time.Duration) *TopicTransport {
	if timeout <= 0 {
		timeout = DefaultTopicTimeout
	}
	return &TopicTransport{sb: sb, topic: topic, timeout: timeout}
}

// TopicHTTPClient is an *http.Client over NewTopicTransport(sb, topic,
// DefaultTopicTimeout), for connect's generated New…Client functions. A
// shorter deadline on the call's ctx applies as usual.
func TopicHTTPClient(sb *switchboard.Client, topic string) *http.Client {
	return &http.Client{Transport: NewTopicTransport(sb, topic, 0)}
}

// Do implements connect.HTTPClient.
func (t *TopicTransport) Do(req *http.Request) (*http.Response, error) { return t.RoundTrip(req) }

// RoundTrip implements http.RoundTripper.
func (t *TopicTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	procedure, ok := procedureOf(req.URL.Path)
	if !ok {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("call: topic %q: URL path %q does not end in /package.Service/Method", t.topic, req.URL.Path))
	}
	m, err := t.requestMessage(req)
	if req.Body != nil {
		_ = req.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	timeout := t.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if ms, err := strconv.ParseInt(req.Header.Get("Connect-Timeout-Ms"), 10, 64); err == nil && ms > 0 {
		timeout = min(timeout, time.Duration(ms)*time.Millisecond)
	}
	if timeout <= 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, context.DeadlineExceeded
	}
	m.SetHeader(HeaderCallMethod, procedure)
	m.SetHeader(HeaderCallTimeout, strconv.FormatInt(max(timeout.Milliseconds(), 1), 10))

	reply, err := t.sb.Request(ctx, t.topic, *m, timeout)
	switch {
	case err == nil:
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return nil, ctx.Err() // connect maps it to Canceled / DeadlineExceeded
	case errors.Is(err, switchboard.ErrNoResponders):
		return connectError(req, connect.CodeUnavailable, fmt.Sprintf("no responder on topic %q for %s (is call.ServeTopic running?): %v", t.topic, procedure, err)), nil
	case errors.Is(err, switchboard.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return connectError(req, connect.CodeDeadlineExceeded, fmt.Sprintf("no reply on topic %q for %s within %s", t.topic, procedure, timeout.Round(time.Millisecond))), nil
	case errors.Is(err, message.ErrTooLarge):
		return connectError(req, connect.CodeResourceExhausted, err.Error()), nil
	case errors.Is(err, message.ErrInvalid):
		return connectError(req, connect.CodeInvalidArgument, err.Error()), nil
	case errors.Is(err, switchboard.ErrNotSupported):
		return connectError(req, connect.CodeUnimplemented, err.Error()), nil
	default:
		return connectError(req, connect.CodeUnavailable, err.Error()), nil
	}
	return t.response(req, m.ContentType, reply), nil
}

// requestMessage turns a Connect unary request (POST, or GET with
// connect.WithHTTPGet) into a message.
func (t *TopicTransport) requestMessage(req *http.Request) (*message.Message, error) {
	m := &message.Message{}
	for k, v := range req.Header {
		switch k {
		case "Content-Type", "Content-Length", "Content-Encoding", "Connect-Protocol-Version", "Connect-Timeout-Ms",
			"Accept-Encoding", "Connect-Accept-Encoding", "Host", "Connection", "Te", "Transfer-Encoding":
			continue
		}
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "sb-") {
			continue // reserved for Switchboard
		}
		m.SetHeader(lk, strings.Join(v, ", "))
	}
	if req.Method == http.MethodGet {
		q := req.URL.Query()
		enc := q.Get("encoding")
		if enc != "proto" && enc != "json" {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("call: GET request with encoding %q: want proto or json", enc))
		}
		m.ContentType = "application/" + enc
		m.Payload = []byte(q.Get("message"))
		if q.Get("base64") == "1" {
			b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(q.Get("message"), "="))
			if err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("call: GET request message: %w", err))
			}
			m.Payload = b
		}
		return m, decompress(m, q.Get("compression"))
	}
	if req.Method != http.MethodPost {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("call: topic transport: HTTP method %s (want POST or GET)", req.Method))
	}
	ct := req.Header.Get("Content-Type")
	base, _, _ := strings.Cut(ct, ";")
	switch strings.TrimSpace(base) {
	case "application/proto", "application/json":
		m.ContentType = strings.TrimSpace(base)
	default:
		return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf(
			"call: topic %q carries unary calls of the Connect protocol (application/proto or application/json), not %q: "+
				"do not use connect.WithGRPC or WithGRPCWeb with a topic client, and streaming methods are not served over topics", t.topic, ct))
	}
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		m.Payload = b
	}
	return m, decompress(m, req.Header.Get("Content-Encoding"))
}

// decompress undoes connect.WithSendCompression: payloads on the topic are
// plain protobuf or JSON.
func decompress(m *message.Message, encoding string) error {
	switch encoding {
	case "", "identity":
		return nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(m.Payload))
		if err != nil {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("call: gzip request body: %w", err))
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("call: gzip request body: %w", err))
		}
		m.Payload = b
		return nil
	}
	return connect.NewError(connect.CodeUnimplemented, fmt.Errorf("call: request compression %q over a topic: use gzip or none", encoding))
}

// response turns a reply into the Connect unary HTTP response.
func (t *TopicTransport) response(req *http.Request, reqType string, reply *message.Message) *http.Response {
	code := reply.Header(HeaderCallCode)
	if code != "" {
		var c connect.Code
		if err := c.UnmarshalText([]byte(code)); err != nil {
			c = connect.CodeUnknown
		}
		body := reply.Payload
		var wire struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(body, &wire) != nil || wire.Code != code {
			return connectError(req, c, reply.Header(HeaderCallMessage))
		}
		res := httpResponse(req, MappingOf(c).HTTPStatus, "application/json", body)
		copyReplyHeaders(res.Header, reply)
		return res
	}
	ct := reply.ContentType
	if ct == "" {
		ct = reqType
	}
	if ct != reqType {
		return connectError(req, connect.CodeInternal, fmt.Sprintf(
			"the reply on topic %q is not a call reply (content type %q, want %q): is its responder call.ServeTopic?", t.topic, reply.ContentType, reqType))
	}
	res := httpResponse(req, http.StatusOK, ct, reply.Payload)
	copyReplyHeaders(res.Header, reply)
	return res
}

func copyReplyHeaders(h http.Header, reply *message.Message) {
	for k, v := range reply.Headers {
		if !strings.HasPrefix(k, "sb-") {
			h.Set(k, v)
		}
	}
}

// connectError is a Connect protocol unary error response.
func connectError(req *http.Request, code connect.Code, msg string) *http.Response {
	body, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message,omitempty"`
	}{code.String(), msg})
	return httpResponse(req, MappingOf(code).HTTPStatus, "application/json", body)
}

func httpResponse(req *http.Request, status int, ct string, body []byte) *http.Response {
	return &http.Response{
		Status:     strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode: status,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {ct}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// procedureOf is "pkg.Service/Method" from a URL path ending in it.
func procedureOf(path string) (string, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) < 2 || parts[len(parts)-2] == "" || parts[len(parts)-1] == "" {
		return "", false
	}
	return parts[len(parts)-2] + "/" + parts[len(parts)-1], true
}
