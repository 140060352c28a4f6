package call

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-dev/switchboard"
	"github.com/switchboard-dev/switchboard/message"
)

// Message headers of a call carried over a topic (see [Server.ServeTopic]).
// Any other header of a request reaches the handler as request metadata;
// any other header of a reply is response metadata (trailers keep
// connect's "trailer-" prefix).
const (
	// HeaderCallMethod names the method of a request:
	// "payments.v1.PaymentService/GetCharge" (a leading '/' is accepted).
	HeaderCallMethod = "sb-call-method"
	// HeaderCallTimeout is the caller's timeout in milliseconds; the
	// handler's ctx gets that deadline. Without it the server default
	// (WithDefaultTimeout) applies.
	HeaderCallTimeout = "sb-call-timeout-ms"
	// HeaderCallCode is set on an error reply only: the connect code
	// ("not_found"). A reply without it is a success.
	HeaderCallCode = "sb-call-code"
	// HeaderCallMessage is the error message of an error reply (at most
	// 1 KiB; the payload has it whole).
	HeaderCallMessage = "sb-call-message"
)

// DefaultTopicTimeout is the timeout of a call over a topic whose ctx has
// no deadline (the fail-fast rule: no call waits forever).
const DefaultTopicTimeout = 5 * time.Second

// WithTopicGroup sets the consumer group ServeTopic subscribes with.
// Default "call:{topic}": every replica of a service shares it, so each
// request is handled once, by one replica. "" subscribes ephemerally (every
// ephemeral subscriber gets every request: only for a single replica or
// for methods without side effects).
func WithTopicGroup(group string) Option {
	return optionFunc(func(c *config) { c.topicGroup, c.topicGroupSet = group, true })
}

// WithTopicConcurrency bounds the calls ServeTopic handles at once (default
// 64); more requests wait in the broker.
func WithTopicConcurrency(n int) Option {
	return optionFunc(func(c *config) { c.topicConcurrency = n })
}

// ServeTopic serves the connect handlers given with [WithService] from
// topic until ctx is done; see [Server.ServeTopic]. Options other than the
// services, timeouts, logger, shutdown grace and the WithTopic ones have no
// effect here.
//
//	err := call.ServeTopic(ctx, sb, "payments",
//		call.WithService(paymentsv1connect.NewPaymentServiceHandler(impl)))
func ServeTopic(ctx context.Context, sb *switchboard.Client, topic string, opts ...Option) error {
	s, err := NewServer(append(opts, WithoutGraphQL(), WithoutSOAP())...)
	if err != nil {
		return err
	}
	return s.ServeTopic(ctx, sb, topic)
}

// ServeTopic serves the server's unary methods from topic: a caller behind
// a queue makes the same typed call, with a timeout, through
// [TopicHTTPClient] (or any sb.Request that follows the wire contract
// below). It subscribes at once (an error if it cannot), then answers
// requests until ctx is done; calls in progress then get WithShutdownGrace
// to finish, and ServeTopic returns nil. It may run next to Serve.
//
// Wire contract. A request is a message sent with Request: header
// [HeaderCallMethod] names the method, the payload is the request message as
// protobuf binary (content type application/proto) or JSON
// (application/json; an empty content type means JSON when the payload
// starts with '{'), [HeaderCallTimeout] optionally carries the timeout, and
// other headers are request metadata. The handler is called exactly as over
// HTTP with the Connect protocol, so its interceptors, deadline and errors
// apply unchanged. The reply (Delivery.Reply) has the response in the
// request's encoding; an error reply has [HeaderCallCode] (the connect code
// of [ErrorTable]), [HeaderCallMessage], and the Connect protocol's JSON
// error as payload ({"code":"not_found","message":…,"details":[…]}).
//
// A request is handled at most once: a redelivered request (the broker
// handing it out again after a crash or a missed ack deadline) is
// acknowledged and dropped, so a lost one is the caller's timeout, never a
// second charge. Deliveries are acknowledged after the reply. Messages without a reply address (plain publishes) are
// dead-lettered with the reason "not a call request".
func (s *Server) ServeTopic(ctx context.Context, sb *switchboard.Client, topic string) error {
	group := "call:" + topic
	if s.cfg.topicGroupSet {
		group = s.cfg.topicGroup
	}
	var sopts []switchboard.SubscribeOption
	if group != "" {
		// A request is settled after its reply: give slow handlers room
		// before the broker would hand it out again (which is dropped).
		sopts = append(sopts, switchboard.AckDeadline(max(2*s.cfg.defaultTimeout, time.Minute)))
	}
	sub, err := sb.Subscribe(ctx, topic, group, sopts...)
	if err != nil {
		return fmt.Errorf("call: serve topic %q: %w", topic, err)
	}
	n := s.cfg.topicConcurrency
	if n <= 0 {
		n = 64
	}
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	stop := func() {
		_ = sub.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		t := time.NewTimer(s.cfg.shutdownGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			s.cfg.logger.Warn("call: topic calls still running after the shutdown grace; cancelling them", "topic", topic)
			hcancel()
			<-done
		}
	}
	for {
		select {
		case <-ctx.Done():
			stop()
			return nil
		case d, ok := <-sub.Deliveries():
			if !ok {
				stop()
				if ctx.Err() != nil {
					return nil
				}
				if err := sub.Err(); err != nil {
					return fmt.Errorf("call: serve topic %q: subscription ended: %w", topic, err)
				}
				return fmt.Errorf("call: serve topic %q: subscription ended: %w", topic, switchboard.ErrClosed)
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				stop()
				return nil
			}
			wg.Go(func() {
				defer func() { <-sem }()
				s.handleDelivery(hctx, topic, d)
			})
		}
	}
}

// handleDelivery answers one request delivery.
func (s *Server) handleDelivery(ctx context.Context, topic string, d *switchboard.Delivery) {
	log := s.cfg.logger
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if d.Message.Header(message.HeaderReplyTo) == "" {
		if err := d.Term(sctx, "not a call request: no reply address; send calls with Request (call.TopicHTTPClient)"); err != nil {
			log.Debug("call: term of a non-request message failed", "topic", topic, "id", d.Message.ID, "err", err)
		}
		return
	}
	defer func() {
		if err := d.Ack(sctx); err != nil {
			log.Debug("call: ack of a request failed", "topic", topic, "id", d.Message.ID, "err", err)
		}
	}()
	if d.Info.Redelivered || d.Info.Attempt > 1 {
		// At most once: the first delivery was (or is being) handled.
		log.Debug("call: redelivered request dropped", "topic", topic, "id", d.Message.ID, "attempt", d.Info.Attempt)
		return
	}
	resp := s.serveMessage(ctx, topic, d.Message)
	err := d.Reply(sctx, resp)
	if err != nil && (errors.Is(err, message.ErrInvalid) || errors.Is(err, message.ErrTooLarge)) {
		// The reply does not fit the broker's limits: say so instead.
		err = d.Reply(sctx, errorReply(connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("the reply of %s cannot be sent over topic %q: %v", d.Message.Header(HeaderCallMethod), topic, err))))
	}
	if err != nil {
		log.Debug("call: reply failed (the caller may have timed out)", "topic", topic, "id", d.Message.ID, "err", err)
	}
}

// serveMessage calls the handler of request m and returns the reply.
func (s *Server) serveMessage(ctx context.Context, topic string, m *message.Message) *message.Message {
	name := m.Header(HeaderCallMethod)
	if name == "" {
		return errorReply(invalid("the request has no %s header naming the method (e.g. %q)", HeaderCallMethod, s.exampleMethod()))
	}
	procedure := "/" + strings.TrimPrefix(name, "/")
	meth := s.byProc[procedure]
	if meth == nil {
		return errorReply(connect.NewError(connect.CodeUnimplemented, fmt.Errorf("no method %q on topic %q; it serves %s", name, topic, s.methodList())))
	}
	if meth.streaming() {
		return errorReply(connect.NewError(connect.CodeUnimplemented, fmt.Errorf("%s is a streaming method; only unary methods are served over a topic", name)))
	}
	ct, err := codecOf(m.ContentType, m.Payload)
	if err != nil {
		return errorReply(err)
	}
	// JSON is parsed here, strictly, as over HTTP (where vanguard hands the
	// handler binary protobuf): an unknown field is InvalidArgument.
	payload := m.Payload
	if ct == "application/json" {
		in := meth.in.New().Interface()
		if len(bytes.TrimSpace(payload)) > 0 {
			if err := unmarshalStrict.Unmarshal(payload, in); err != nil {
				return errorReply(badJSON(err))
			}
		}
		if payload, err = proto.Marshal(in); err != nil {
			return errorReply(connect.NewError(connect.CodeInternal, err))
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, inprocBase+procedure, bytes.NewReader(payload))
	if err != nil {
		return errorReply(connect.NewError(connect.CodeInternal, err))
	}
	req.RemoteAddr = "topic:" + topic
	req.RequestURI = procedure
	for k, v := range m.Headers {
		if !strings.HasPrefix(k, "sb-") {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Del("Accept-Encoding") // the reply payload stays readable
	req.Header.Del("Connect-Timeout-Ms")
	if t := m.Header(HeaderCallTimeout); t != "" {
		if _, err := strconv.ParseUint(t, 10, 32); err != nil || len(t) > 10 {
			return errorReply(invalid("%s %q is not a number of milliseconds", HeaderCallTimeout, t))
		}
		req.Header.Set("Connect-Timeout-Ms", t)
	}
	rec := &recorder{header: http.Header{}, body: new(bytes.Buffer)}
	if aborted := serveRecovered(meth.svc.guard, rec, req); aborted {
		return errorReply(connect.NewError(connect.CodeInternal, errPanic))
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	out := &message.Message{Payload: rec.body.Bytes(), ContentType: rec.header.Get("Content-Type")}
	if rec.status == http.StatusOK && ct == "application/json" {
		res := meth.out.New().Interface()
		if err := proto.Unmarshal(out.Payload, res); err != nil {
			return errorReply(connect.NewError(connect.CodeInternal, fmt.Errorf("the response of %s does not decode: %w", name, err)))
		}
		if out.Payload, err = protojson.Marshal(res); err != nil {
			return errorReply(connect.NewError(connect.CodeInternal, err))
		}
		out.ContentType = ct
	}
	for k, v := range rec.header {
		switch k {
		case "Content-Type", "Content-Length", "Date", "Accept-Encoding", "Connect-Accept-Encoding", "Vary":
			continue
		}
		out.SetHeader(strings.ToLower(k), strings.Join(v, ", "))
	}
	if rec.status != http.StatusOK {
		code, msg := parseConnectError(rec.status, out.Payload)
		out.SetHeader(HeaderCallCode, code.String())
		out.SetHeader(HeaderCallMessage, truncate(msg, 1024))
		if out.ContentType == "" {
			out.ContentType = "application/json"
		}
	}
	return out
}

func (s *Server) exampleMethod() string {
	for _, svc := range s.services {
		for _, m := range svc.methods {
			if !m.streaming() {
				return strings.TrimPrefix(m.procedure, "/")
			}
		}
	}
	return "package.Service/Method"
}

func (s *Server) methodList() string {
	var names []string
	for _, svc := range s.services {
		for _, m := range svc.methods {
			if !m.streaming() {
				names = append(names, strings.TrimPrefix(m.procedure, "/"))
			}
		}
	}
	return strings.Join(names, ", ")
}

// codecOf maps a message content type to the Connect unary content type.
func codecOf(ct string, payload []byte) (string, error) {
	base, _, _ := strings.Cut(ct, ";")
	switch strings.ToLower(strings.TrimSpace(base)) {
	case "application/proto", "application/protobuf", "application/x-protobuf", "application/vnd.google.protobuf":
		return "application/proto", nil
	case "application/json":
		return "application/json", nil
	case "":
		if t := bytes.TrimLeft(payload, " \t\r\n"); len(t) > 0 && t[0] == '{' {
			return "application/json", nil
		}
		return "application/proto", nil
	}
	return "", invalid("content type %q of a call request: use application/proto (protobuf binary) or application/json", ct)
}

// errorReply is the reply message of a call that failed.
func errorReply(err error) *message.Message {
	code := CodeOf(err)
	msg := messageOf(err)
	wire := struct {
		Code    string `json:"code"`
		Message string `json:"message,omitempty"`
	}{code.String(), msg}
	body, _ := json.Marshal(wire)
	return &message.Message{
		Payload:     body,
		ContentType: "application/json",
		Headers:     map[string]string{HeaderCallCode: code.String(), HeaderCallMessage: truncate(msg, 1024)},
	}
}

// parseConnectError reads the code and message of a Connect protocol error
// body; an unreadable body maps the HTTP status.
func parseConnectError(status int, body []byte) (connect.Code, string) {
	var wire struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	var code connect.Code
	if json.Unmarshal(body, &wire) == nil && code.UnmarshalText([]byte(wire.Code)) == nil {
		return code, wire.Message
	}
	for _, row := range ErrorTable {
		if row.HTTPStatus == status {
			return row.Code, http.StatusText(status)
		}
	}
	return connect.CodeUnknown, http.StatusText(status)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// recorder is a ResponseWriter that keeps the status and body of a call
// for the caller to answer with: a call served from a topic, or a REST
// fast-path call (whose Connect answer finishREST turns into REST).
type recorder struct {
	header http.Header
	status int
	body   *bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}

// Flush is a no-op: the answer is sent whole, by the caller.
func (r *recorder) Flush() {}
