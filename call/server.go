package call

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Server serves connect-go handlers on one port as gRPC, gRPC-Web, Connect,
// REST+JSON, GraphQL and SOAP, with gRPC server reflection and health. It is
// an http.Handler; Serve runs it with HTTP/1.1 and cleartext HTTP/2 (h2c).
//
// A Server is safe for concurrent use. Its routes are fixed by NewServer.
type Server struct {
	cfg      config
	services []*service
	byProc   map[string]*method // "/pkg.Svc/Method" → method
	direct   map[string]*method // byProc entries the fast path may serve (passthrough.go)
	rest     restRoutes         // REST routes served without vanguard (rest.go)
	health   *grpchealth.StaticChecker
	handler  http.Handler
	gql      *graphqlHandler
	// away is closed by GoingAway: long-lived connections (GraphQL
	// WebSockets, which net/http's Shutdown does not track) end.
	away     chan struct{}
	awayOnce sync.Once
}

// service is one mounted connect handler and its descriptor.
type service struct {
	desc    protoreflect.ServiceDescriptor
	path    string // "/pkg.Svc/"
	guard   *guard // the connect handler behind the default deadline and recovery
	invoker *invoker
	methods []*method
}

// method is one RPC of a mounted service.
type method struct {
	svc       *service
	desc      protoreflect.MethodDescriptor
	procedure string                   // "/pkg.Svc/Method"
	in, out   protoreflect.MessageType // request and response (messageType)
}

func (m *method) streaming() bool { return m.desc.IsStreamingClient() || m.desc.IsStreamingServer() }

// noSideEffects reports idempotency_level = NO_SIDE_EFFECTS.
func (m *method) noSideEffects() bool {
	return idempotencyOf(m.desc) == idempotencyNoSideEffects
}

// Option configures a Server.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	services       []serviceEntry
	routes         []route
	resolver       *protoregistry.Files
	defaultTimeout time.Duration
	maxBodyBytes   int64
	graphql        bool
	soap           bool
	limits         GraphQLLimits
	logger         *slog.Logger
	unknown        http.Handler
	shutdownGrace  time.Duration
	slowREST       bool  // WithoutRESTFastPath
	compressMin    int64 // WithCompressMinBytes
	// ServeTopic settings (topic.go).
	topicGroup       string
	topicGroupSet    bool
	topicConcurrency int
}

type serviceEntry struct {
	path    string
	handler http.Handler
}

type route struct {
	pattern string
	handler http.Handler
}

// WithService mounts a connect-go handler, as returned by a generated
// NewXServiceHandler: call.WithService(paymentsv1connect.NewPaymentServiceHandler(impl)).
// The service's descriptor is found in the global registry by its path,
// which the generated package registers when it is imported.
func WithService(path string, handler http.Handler) Option {
	return optionFunc(func(c *config) { c.services = append(c.services, serviceEntry{path, handler}) })
}

// WithRoute adds a plain HTTP route (a net/http ServeMux pattern such as
// "GET /healthz") next to the generated ones.
func WithRoute(pattern string, h http.Handler) Option {
	return optionFunc(func(c *config) { c.routes = append(c.routes, route{pattern, h}) })
}

// WithDefaultTimeout sets the deadline of a unary call whose client sent
// none (no Grpc-Timeout or Connect-Timeout-Ms header, every REST, GraphQL
// and SOAP call). Default 30 s; 0 or less: no server default.
func WithDefaultTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.defaultTimeout = d })
}

// WithMaxBodyBytes limits every request body, as sent (compressed bytes
// count), in every protocol, and each message of a client or bidi stream.
// A request over it fails with resource_exhausted and the ErrorInfo
// reason REQUEST_TOO_LARGE (REST and GraphQL: HTTP 413); a declared
// Content-Length over it is refused before anything is read. Default 4 MiB.
func WithMaxBodyBytes(n int64) Option {
	return optionFunc(func(c *config) { c.maxBodyBytes = n })
}

// WithoutGraphQL does not mount /graphql.
func WithoutGraphQL() Option { return optionFunc(func(c *config) { c.graphql = false }) }

// WithoutSOAP does not mount /soap/.
func WithoutSOAP() Option { return optionFunc(func(c *config) { c.soap = false }) }

// WithGraphQLLimits sets the depth and cost limits of GraphQL operations.
func WithGraphQLLimits(l GraphQLLimits) Option {
	return optionFunc(func(c *config) { c.limits = l })
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return optionFunc(func(c *config) { c.logger = l }) }

// WithUnknownHandler answers requests no route matches (default: a JSON
// google.rpc.Status with code NOT_FOUND and HTTP 404). It does not see
// calls of unknown methods: a gRPC, gRPC-Web or Connect request to an
// unknown path, and any request to /{package}.{Service}/{Method} of a
// mounted service without that method, are answered UNIMPLEMENTED in the
// caller's protocol (HTTP 501 for Connect and the REST default route).
func WithUnknownHandler(h http.Handler) Option {
	return optionFunc(func(c *config) { c.unknown = h })
}

// WithShutdownGrace bounds how long Serve waits for calls in progress after
// its ctx is done (default 10 s).
func WithShutdownGrace(d time.Duration) Option {
	return optionFunc(func(c *config) { c.shutdownGrace = d })
}

// WithCompressMinBytes sets the smallest REST or Connect unary response
// body that is gzipped for a client that accepts gzip (default 0: every
// one). gzip costs more CPU than it saves on small bodies; gRPC and
// streaming calls follow the handler's own connect.WithCompressMinBytes.
func WithCompressMinBytes(n int64) Option {
	return optionFunc(func(c *config) { c.compressMin = n })
}

// NewServer builds a Server from options. At least one WithService is
// required.
func NewServer(opts ...Option) (*Server, error) {
	c := config{
		resolver:       protoregistry.GlobalFiles,
		defaultTimeout: 30 * time.Second,
		maxBodyBytes:   4 << 20,
		graphql:        true,
		soap:           true,
		limits:         DefaultGraphQLLimits,
		logger:         slog.Default(),
		shutdownGrace:  10 * time.Second,
	}
	for _, o := range opts {
		o.apply(&c)
	}
	if len(c.services) == 0 {
		return nil, fmt.Errorf("call: NewServer needs at least one WithService")
	}
	if c.unknown == nil {
		c.unknown = http.HandlerFunc(notFound)
	}
	s := &Server{cfg: c, byProc: map[string]*method{}, away: make(chan struct{})}
	var vsvcs []*vanguard.Service
	var names []string
	for _, e := range c.services {
		name := strings.Trim(e.path, "/")
		d, err := c.resolver.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("call: service %q: %w (import its generated package)", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("call: %q is not a service", name)
		}
		svc := &service{desc: sd, path: e.path, guard: newGuard(s, e.handler)}
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			m := &method{svc: svc, desc: md, procedure: "/" + string(sd.FullName()) + "/" + string(md.Name()),
				in: messageType(md.Input()), out: messageType(md.Output())}
			svc.methods = append(svc.methods, m)
			s.byProc[m.procedure] = m
		}
		svc.invoker = newInvoker(svc)
		s.services = append(s.services, svc)
		names = append(names, name)
		vsvcs = append(vsvcs, vanguard.NewService(e.path, svc.guard, vanguard.WithTargetCodecs(vanguard.CodecProto)))
	}
	sort.Strings(names)

	// REST+JSON from google.api.http annotations; gRPC, gRPC-Web and
	// Connect pass through. Handlers always get binary protobuf, so JSON is
	// parsed (strictly) and printed by one codec for REST and Connect JSON.
	tc, err := vanguard.NewTranscoder(vsvcs,
		vanguard.WithCodec(NewStrictJSONCodec),
		vanguard.WithUnknownHandler(s.unknownMethod(c.unknown)),
	)
	if err != nil {
		return nil, fmt.Errorf("call: REST routes: %w", err)
	}
	s.health = grpchealth.NewStaticChecker(names...)
	mux := http.NewServeMux()
	mux.Handle("/", s.restDefaults(tc))
	mux.Handle(grpchealth.NewHandler(s.health))
	reflector := grpcreflect.NewStaticReflector(append(names, grpchealth.HealthV1ServiceName)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	if c.graphql {
		g, err := newGraphQLHandler(s)
		if err != nil {
			return nil, err
		}
		s.gql = g
		mux.Handle("/graphql", g)
	}
	if c.soap {
		mux.Handle("/soap/", &soapHandler{s: s})
	}
	for _, r := range c.routes {
		mux.Handle(r.pattern, r.handler)
	}
	s.handler = mux
	s.direct = directProcedures(mux, s.byProc, c.routes)
	s.rest = buildRESTRoutes(s.services)
	return s, nil
}

// ServeHTTP serves every protocol. gRPC, gRPC-Web and Connect calls in
// binary protobuf go straight to their service's handler (passthrough.go).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if m := s.passThrough(r, s.direct); m != nil {
		m.svc.guard.serve(w, r, m)
		return
	}
	s.handler.ServeHTTP(w, r)
}

// GoingAway ends the connections that outlive their HTTP request: each
// GraphQL WebSocket is closed with status 1001 (going away) and its
// subscriptions end, as http.Server.Shutdown does not do for connections
// it no longer tracks. Serve calls it when it shuts down; with an
// http.Server of your own, register it: srv.RegisterOnShutdown(s.GoingAway).
// It is safe to call more than once.
func (s *Server) GoingAway() { s.awayOnce.Do(func() { close(s.away) }) }

// SetServing sets the gRPC health status of every service (and of the
// server, ""). A Server starts serving.
func (s *Server) SetServing(ok bool) {
	st := grpchealth.StatusServing
	if !ok {
		st = grpchealth.StatusNotServing
	}
	s.health.SetStatus("", st)
	for _, svc := range s.services {
		s.health.SetStatus(string(svc.desc.FullName()), st)
	}
}

// restDefaults limits REST bodies and lets `curl -d` (a form content type)
// reach the JSON routes, including the default POST /pkg.Svc/Method route
// (the Connect protocol's unary JSON call) of unannotated methods. It is
// the catch-all route: gRPC, gRPC-Web and Connect calls that the transcoder
// would pass through unchanged go straight to their handler, and REST and
// Connect unary responses are compressed at the edge (compress.go).
func (s *Server) restDefaults(next http.Handler) http.Handler {
	limit := s.cfg.maxBodyBytes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isRPC(r) {
			if m := s.passThrough(r, s.byProc); m != nil {
				m.svc.guard.serve(w, r, m)
				return
			}
			// Other codecs (JSON) are transcoded by vanguard, which reads
			// a whole message before the handler's guard sees it: the
			// limit applies to the bytes on the wire here too.
			if m := s.byProc[r.URL.Path]; m != nil && !m.svc.guard.limitBody(w, r, m) {
				return
			}
			if ct := first(r.Header["Content-Type"]); strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+") {
				next.ServeHTTP(w, r) // compressed per message, by the handler
				return
			}
			s.serveEdge(next, w, r, false) // Connect unary
			return
		}
		if r.ContentLength > limit {
			restTooLarge(w, r, s.byProc[r.URL.Path], limit) // 413, resource_exhausted (codec.go)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body, w = limitREST(w, r.Body, limit) // over the limit: 413, resource_exhausted
			if ct := r.Header.Get("Content-Type"); ct == "" || strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
				r.Header.Set("Content-Type", "application/json")
			}
		}
		if m := s.byProc[r.URL.Path]; m != nil && r.Method == http.MethodPost && !m.streaming() {
			// The default route of a method: a Connect unary JSON call.
			r.Header.Set("Connect-Protocol-Version", "1")
			s.serveEdge(next, w, r, false)
			return
		}
		if !s.cfg.slowREST {
			var buf [4]string
			if rt, vals := s.rest.match(r.Method, r.URL.Path, buf[:0]); rt != nil {
				s.serveEdge(restCall{s, rt, vals, next}, w, r, true)
				return
			}
		}
		s.serveEdge(next, w, r, true)
	})
}

// isRPC tells gRPC, gRPC-Web and Connect streaming requests from REST ones.
// (Headers are read by their canonical keys, as Header.Get would.)
func isRPC(r *http.Request) bool {
	ct := first(r.Header["Content-Type"])
	return strings.HasPrefix(ct, "application/grpc") ||
		strings.HasPrefix(ct, "application/connect+") ||
		first(r.Header["Connect-Protocol-Version"]) != ""
}

// Serve serves on ln until ctx is done, then shuts down gracefully (at most
// WithShutdownGrace) and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: s, Protocols: &protos, ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(s.GoingAway)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("call: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.SetServing(false)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.cfg.logger.Warn("call: graceful shutdown incomplete; closing connections", "err", err)
		_ = srv.Close()
	}
	<-errc
	return nil
}

// ListenAndServe listens on addr (host:port) and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("call: listen on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}
