// Package client is the Go client of a Switchboard hub, and a backend: a blank
// import registers the URL scheme "switchboard", so that
//
//	sb, err := switchboard.Open(ctx, "switchboard://127.0.0.1:7420")
//
// runs the same user code against a remote hub as against an in-process
// backend. The client implements broker.Broker, broker.Requester,
// broker.TopicAdmin, broker.GroupAdmin and broker.DeadLetterAdmin over the
// hub's Connect API (cleartext HTTP/2); deliveries settle through the hub's
// Settle call, which the client batches: the settlements of many goroutines
// share calls, and a lone one is sent at once. Errors match the broker sentinels with
// errors.Is, as they would in process.
//
// URL form: switchboard://host:port[?token=T&tls=1&ca=FILE]. token is sent
// as a bearer token; tls=1 uses HTTPS instead of cleartext HTTP/2; ca names
// a PEM file of certificate authorities to trust besides the system's (a
// private CA or a self-signed hub certificate; implies tls=1).
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
	"github.com/switchboard-dev/switchboard/message"
)

func init() {
	broker.Register("switchboard", func(ctx context.Context, u *url.URL) (broker.Broker, error) {
		return openURL(ctx, u)
	})
}

// DefaultAddr is where `switchboard serve` listens by default.
const DefaultAddr = "127.0.0.1:7420"

// Broker is a hub seen as a backend. It is safe for concurrent use.
type Broker struct {
	base   string
	rpc    switchboardv1connect.SwitchboardServiceClient
	hc     *http.Client
	caps   broker.Capabilities
	admin  map[string]bool
	hubVer string

	settler settler // batches Ack, Nack, Term and Extend into Settle calls

	mu     sync.Mutex
	closed bool
	subs   map[*subscription]struct{}
}

var (
	_ broker.Broker          = (*Broker)(nil)
	_ broker.Requester       = (*Broker)(nil)
	_ broker.TopicAdmin      = (*Broker)(nil)
	_ broker.GroupAdmin      = (*Broker)(nil)
	_ broker.DeadLetterAdmin = (*Broker)(nil)
)

// Option configures New.
type Option interface{ apply(*options) }

type options struct {
	token string
	hc    *http.Client
	tls   *tls.Config
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithToken sends token as a bearer token on every call.
func WithToken(token string) Option { return optionFunc(func(o *options) { o.token = token }) }

// WithHTTPClient uses hc instead of the default cleartext HTTP/2 client.
func WithHTTPClient(hc *http.Client) Option { return optionFunc(func(o *options) { o.hc = hc }) }

// WithTLSConfig uses cfg for https:// hubs (e.g. with RootCAs holding a
// private CA). Ignored with WithHTTPClient.
func WithTLSConfig(cfg *tls.Config) Option { return optionFunc(func(o *options) { o.tls = cfg }) }

// LoadCA returns a TLS config that trusts the system's authorities and
// those in the PEM file at path.
func LoadCA(path string) (*tls.Config, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

func openURL(ctx context.Context, u *url.URL) (*Broker, error) {
	host := u.Host
	if host == "" {
		host = DefaultAddr
	}
	scheme := "http"
	var opts []Option
	q := u.Query()
	for k := range q {
		switch k {
		case "token":
			opts = append(opts, WithToken(q.Get("token")))
		case "tls":
			if v := q.Get("tls"); v == "1" || v == "true" {
				scheme = "https"
			}
		case "ca":
			cfg, err := LoadCA(q.Get("ca"))
			if err != nil {
				return nil, fmt.Errorf("%w: switchboard://%s: %v", broker.ErrBadURL, host, err)
			}
			scheme = "https"
			opts = append(opts, WithTLSConfig(cfg))
		default:
			return nil, fmt.Errorf("%w: switchboard://%s: unknown parameter %q; use token, tls or ca", broker.ErrBadURL, host, k)
		}
	}
	return New(ctx, scheme+"://"+host, opts...)
}

// New connects to the hub at baseURL (e.g. "http://127.0.0.1:7420") and
// fetches its capabilities. ctx bounds that first call only.
func New(ctx context.Context, baseURL string, opts ...Option) (*Broker, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	baseURL = strings.TrimRight(baseURL, "/")
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: hub address %q: use http://host:port (or https://)", broker.ErrBadURL, baseURL)
	}
	hc := o.hc
	if hc == nil {
		hc = defaultHTTPClient(u.Scheme == "https", o.tls)
	}
	// No gzip: on the networks a hub serves (loopback, a data center) it
	// costs more CPU than the bytes it saves, on every delivery batch.
	copts := []connect.ClientOption{connect.WithAcceptCompression("gzip", nil, nil)}
	if o.token != "" {
		copts = append(copts, connect.WithInterceptors(bearer(o.token)))
	}
	b := &Broker{
		base: baseURL,
		rpc:  switchboardv1connect.NewSwitchboardServiceClient(hc, baseURL, copts...),
		hc:   hc,
		subs: map[*subscription]struct{}{},
	}
	b.settler.b = b
	resp, err := b.rpc.GetCapabilities(ctx, connect.NewRequest(&v1.GetCapabilitiesRequest{}))
	if err != nil {
		return nil, fmt.Errorf("connect to hub %s: %w", baseURL, apiconv.FromConnect(err))
	}
	b.caps = apiconv.CapsFromProto(resp.Msg)
	b.hubVer = resp.Msg.GetHubVersion()
	b.settler.maxBatch = maxSettleBatch
	if n := int(resp.Msg.GetMaxBatch()); n > 0 {
		b.settler.maxBatch = min(n, maxSettleBatch)
	}
	b.admin = map[string]bool{}
	for _, a := range resp.Msg.GetAdmin() {
		b.admin[a] = true
	}
	return b, nil
}

// defaultHTTPClient speaks HTTP/2: cleartext (h2c, prior knowledge) for
// http://, negotiated for https://. Many calls share one connection.
func defaultHTTPClient(secure bool, tlsCfg *tls.Config) *http.Client {
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	var p http.Protocols
	if secure {
		p.SetHTTP2(true)
		p.SetHTTP1(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{
		Protocols:           &p,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsCfg,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: tr}
}

func bearer(token string) connect.Interceptor {
	return &bearerInterceptor{value: "Bearer " + token}
}

type bearerInterceptor struct{ value string }

func (b *bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", b.value)
		return next(ctx, req)
	}
}

func (b *bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", b.value)
		return conn
	}
}

func (b *bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Addr returns the hub's base URL.
func (b *Broker) Addr() string { return b.base }

// HubVersion returns the version the hub reported.
func (b *Broker) HubVersion() string { return b.hubVer }

// Capabilities reports the capabilities of the hub's backend.
func (b *Broker) Capabilities() broker.Capabilities { return b.caps }

func (b *Broker) checkOpen() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("hub client %s: %w", b.base, broker.ErrClosed)
	}
	return nil
}

// Close ends every subscription made through b (their unsettled deliveries
// are redelivered by the hub) and releases idle connections.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		_ = s.Close()
	}
	b.hc.CloseIdleConnections()
	return nil
}

// Publish sends the messages to the hub, which returns once they are durable.
func (b *Broker) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	if len(p.Messages) == 0 {
		return nil, &message.ValidationError{Field: "batch", Reason: "no messages to publish"}
	}
	msgs := make([]*v1.Message, len(p.Messages))
	for i, m := range p.Messages {
		if m == nil {
			return nil, &message.ValidationError{Field: "batch", Reason: fmt.Sprintf("message %d is nil", i)}
		}
		if err := checkUTF8(m); err != nil {
			if len(p.Messages) > 1 {
				return nil, fmt.Errorf("message %d of batch: %w", i, err)
			}
			return nil, err
		}
		msgs[i] = apiconv.MessageToProto(m, false)
	}
	var results []*v1.MessageResult
	if len(msgs) == 1 {
		resp, err := b.rpc.Publish(ctx, connect.NewRequest(&v1.PublishRequest{Topic: p.Topic, Message: msgs[0]}))
		if err != nil {
			return nil, apiconv.FromConnect(err)
		}
		results = []*v1.MessageResult{resp.Msg.GetResult()}
	} else {
		resp, err := b.rpc.PublishBatch(ctx, connect.NewRequest(&v1.PublishBatchRequest{Topic: p.Topic, Messages: msgs}))
		if err != nil {
			return nil, apiconv.FromConnect(err)
		}
		results = resp.Msg.GetResults()
	}
	if len(results) != len(p.Messages) {
		return nil, fmt.Errorf("hub %s answered %d results for %d messages; is the hub the same version as this client?", b.base, len(results), len(p.Messages))
	}
	out := &broker.PublishResult{Results: make([]broker.MessageResult, len(results))}
	for i, r := range results {
		out.Results[i] = broker.MessageResult{ID: r.GetId(), Seq: r.GetSeq(), Duplicate: r.GetDuplicate()}
		if p.Messages[i].ID == "" {
			p.Messages[i].ID = r.GetId()
		}
		p.Messages[i].Topic = p.Topic
	}
	return out, nil
}

// Request publishes req and waits for a reply (see broker.Requester).
func (b *Broker) Request(ctx context.Context, topic string, req *message.Message, timeout time.Duration) (*message.Message, error) {
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	if timeout <= 0 {
		return nil, &message.ValidationError{Field: "timeout", Reason: "a timeout is required (fail fast instead of waiting forever)"}
	}
	if err := checkUTF8(req); err != nil {
		return nil, err
	}
	resp, err := b.rpc.Request(ctx, connect.NewRequest(&v1.RequestRequest{
		Topic: topic, Message: apiconv.MessageToProto(req, false), Timeout: apiconv.Duration(timeout),
	}))
	if err != nil {
		return nil, apiconv.FromConnect(err)
	}
	return apiconv.MessageFromProto(resp.Msg.GetMessage()), nil
}

// checkUTF8 refuses, as invalid, text fields that are not UTF-8: the API
// carries them as protobuf strings, which must be valid UTF-8.
func checkUTF8(m *message.Message) error {
	bad := func(field string) error {
		return &message.ValidationError{Field: field, Reason: "not valid UTF-8"}
	}
	switch {
	case !utf8.ValidString(m.ID):
		return bad("id")
	case !utf8.ValidString(m.Key):
		return bad("key")
	case !utf8.ValidString(m.ContentType):
		return bad("content type")
	}
	for k, v := range m.Headers {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return bad(fmt.Sprintf("header %q", k))
		}
	}
	return nil
}
