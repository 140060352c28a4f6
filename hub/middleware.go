package hub

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// reqInfo is filled in while a request is handled, for its log line.
type reqInfo struct {
	mu        sync.Mutex
	procedure string
	code      string
	principal string
}

type reqInfoKey struct{}

func reqInfoFrom(ctx context.Context) *reqInfo {
	ri, _ := ctx.Value(reqInfoKey{}).(*reqInfo)
	return ri
}

func (ri *reqInfo) set(procedure string, err error) {
	if ri == nil {
		return
	}
	ri.mu.Lock()
	ri.procedure, ri.code = procedure, codeName(err)
	ri.mu.Unlock()
}

// statusWriter remembers the status and size of a response. It keeps
// Flush and Unwrap so streaming (gRPC, SSE) works through it.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// apiPrefixRPC is the path prefix of the service's gRPC, gRPC-Web and
// Connect procedures.
var apiPrefixRPC = "/" + switchboardv1connect.SwitchboardServiceName + "/"

// needsToken reports whether a request reaches the API (and so needs a
// token when auth is on): RPC, REST, SSE, GraphQL (including
// introspection) and SOAP (including the WSDL). Health, reflection and,
// with PublicMetrics, /metrics stay open. a is the token set in use.
func needsToken(r *http.Request, a *authn) bool {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, apiPrefixRPC), strings.HasPrefix(p, "/v1/"),
		p == "/graphql", strings.HasPrefix(p, "/soap/"):
		return true
	case p == "/metrics":
		return !a.publicMetrics
	}
	return false
}

// guard authenticates, rate-limits and logs every request. Each request
// loads the token set once (one atomic load): SetAuth may replace it at any
// time, and a request in progress keeps the principal it started with.
func (s *Server) guard(next http.Handler) http.Handler {
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &reqInfo{}
		sw := &statusWriter{ResponseWriter: w}
		ctx := context.WithValue(r.Context(), reqInfoKey{}, ri)
		defer func() { s.logRequest(r, sw, ri, time.Since(start)) }()

		if a := s.auth.Load(); a != nil && needsToken(r, a) {
			p, ce := s.authenticate(r, a)
			if p != nil {
				ri.principal = p.name
			}
			if ce == nil && p.limiter != nil {
				if ok, wait := p.limiter.take(time.Now()); !ok {
					secs := int(math.Ceil(wait.Seconds()))
					sw.Header().Set("Retry-After", strconv.Itoa(max(1, secs)))
					ce = apiconv.NewError(connect.CodeResourceExhausted, apiconv.ReasonRateLimited,
						fmt.Sprintf("token %q exceeded its rate limit of %g requests/s (burst %d); retry after %d s (see Retry-After), slow down, or raise the token's rate in the hub's config file",
							p.name, p.limiter.rate, int(p.limiter.burst), max(1, secs)))
					s.metrics.rejected.WithLabelValues("rate_limited").Inc()
				}
			}
			if ce != nil {
				s.reject(errw, sw, r, ri, ce)
				return
			}
			ctx = withPrincipal(ctx, p)
		}
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}

// authenticate finds the principal of the request's bearer token in a.
func (s *Server) authenticate(r *http.Request, a *authn) (*principal, *connect.Error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		s.metrics.rejected.WithLabelValues("unauthenticated").Inc()
		return nil, errUnauthenticated("this hub needs a bearer token and the request has none")
	}
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
		s.metrics.rejected.WithLabelValues("unauthenticated").Inc()
		return nil, errUnauthenticated("the Authorization header is not \"Bearer <token>\"")
	}
	p := a.lookup(strings.TrimSpace(secret))
	if p == nil {
		s.metrics.rejected.WithLabelValues("unauthenticated").Inc()
		return nil, errUnauthenticated("the bearer token is not one of this hub's tokens (revoked, mistyped, or meant for another hub)")
	}
	return p, nil
}

// reject answers a refused request in the protocol the client speaks:
// gRPC, gRPC-Web and Connect clients get their error format, others (REST,
// GraphQL, SOAP) a JSON problem body with the HTTP status.
func (s *Server) reject(errw *connect.ErrorWriter, w http.ResponseWriter, r *http.Request, ri *reqInfo, ce *connect.Error) {
	if ce.Code() == connect.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard"`)
	}
	proc := "REST"
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, apiPrefixRPC), p == "/metrics", p == "/graphql":
		proc = p
	case strings.HasPrefix(p, "/soap/"):
		proc = "SOAP"
	}
	ri.set(proc, ce)
	s.metrics.observe(proc, ce, 0)
	if errw.IsSupported(r) && strings.HasPrefix(r.URL.Path, apiPrefixRPC) {
		_ = errw.Write(w, r, ce)
		return
	}
	reason := apiconv.ReasonInternal
	if re, ok := apiconv.FromConnect(ce).(*apiconv.RemoteError); ok && re.Reason != "" {
		reason = re.Reason
	}
	writeProblem(w, apiconv.HTTPStatus(ce), ce.Code(), reason, ce.Message())
}

// logRequest writes one structured line per request: successful requests
// at debug level, client errors (4xx, or a gRPC error code from a caller's
// mistake) at info, server errors at error.
func (s *Server) logRequest(r *http.Request, sw *statusWriter, ri *reqInfo, d time.Duration) {
	ri.mu.Lock()
	proc, code, who := ri.procedure, ri.code, ri.principal
	ri.mu.Unlock()
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	level := slog.LevelDebug
	switch {
	case status >= 500 || code == connect.CodeInternal.String() || code == connect.CodeDataLoss.String() || code == connect.CodeUnknown.String():
		level = slog.LevelError
	case status >= 400 || (code != "" && code != "ok" && code != connect.CodeCanceled.String()):
		level = slog.LevelInfo
	}
	log := s.cfg.Logger
	if !log.Enabled(r.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.Int64("bytes_out", sw.bytes),
		slog.String("remote", r.RemoteAddr),
	}
	if proc != "" {
		attrs = append(attrs, slog.String("procedure", proc), slog.String("code", code))
	}
	if who != "" {
		attrs = append(attrs, slog.String("token", who))
	}
	log.LogAttrs(r.Context(), level, "request", attrs...)
}

// observer is the connect interceptor that records metrics and the
// procedure and code for the request log. REST, GraphQL and SOAP requests
// pass through it too (call.Server turns them into calls of the same
// handler).
type observer struct{ s *Server }

func (o observer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		proc := req.Spec().Procedure
		o.s.metrics.observe(proc, err, time.Since(start))
		reqInfoFrom(ctx).set(proc, err)
		return resp, err
	}
}

func (o observer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (o observer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		proc := conn.Spec().Procedure
		o.s.metrics.observe(proc, err, time.Since(start))
		reqInfoFrom(ctx).set(proc, err)
		return err
	}
}
