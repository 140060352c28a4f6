package hub

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// compressMinBytes is the smallest response message the hub compresses.
const compressMinBytes = 8 << 10

// routes builds the one handler of every protocol. The API is the hub's
// connect handler served by call.Server, as any service built on package
// call is: gRPC, gRPC-Web and Connect, REST+JSON from the google.api.http
// annotations (bodies parsed strictly), GraphQL at /graphql, SOAP at
// /soap/switchboard.v1.SwitchboardService, gRPC reflection and health. The
// hub's own routes sit next to it, and authentication and rate limits in
// front of everything.
func (s *Server) routes() (http.Handler, error) {
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(int(s.cfg.MaxRequestBytes)),
		connect.WithInterceptors(observer{s}),
		// Compress (when the client accepts it) only large messages: gzip
		// costs far more CPU than it saves for small ones, on every
		// delivery of a stream.
		connect.WithCompressMinBytes(compressMinBytes),
	}
	path, svc := switchboardv1connect.NewSwitchboardServiceHandler(&service{s: s}, opts...)
	metricsLog := slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn)
	api, err := call.NewServer(
		call.WithService(path, svc),
		// No server deadline: a Request waits for its own timeout (up to
		// MaxRequestTimeout, 5 minutes by default) and a publish until the
		// backend has stored it; the client's deadline, when it sends one,
		// still applies. (Streams never get call's default deadline.)
		call.WithDefaultTimeout(0),
		// Every protocol's body limit: over it, resource_exhausted with
		// the reason REQUEST_TOO_LARGE (REST: 413).
		call.WithMaxBodyBytes(s.cfg.MaxRequestBytes),
		call.WithCompressMinBytes(compressMinBytes),
		call.WithLogger(s.cfg.Logger),
		call.WithUnknownHandler(http.HandlerFunc(notFound)),
		call.WithRoute("GET /healthz", http.HandlerFunc(s.healthz)),
		call.WithRoute("GET /readyz", http.HandlerFunc(s.readyz)),
		call.WithRoute("GET /v1/topics/{topic}/groups/{group}/events", http.HandlerFunc(s.serveEvents)),
		call.WithRoute("GET /v1/topics/{topic}/events", http.HandlerFunc(s.serveEvents)),
		call.WithRoute("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorLog: metricsLog})),
	)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	s.api = api
	return s.guard(api), nil
}

// withReason adds the hub's ErrorInfo detail to st.
func withReason(st *status.Status, reason string) *status.Status {
	if d, err := anypb.New(&errdetails.ErrorInfo{Reason: reason, Domain: apiconv.ErrorDomain}); err == nil {
		st.Details = append(st.Details, d)
	}
	return st
}

// writeProblem writes a JSON error body shaped like the REST errors of the
// API (a google.rpc.Status): {"code": 3, "message": "...", "details": [...]}.
func writeProblem(w http.ResponseWriter, httpStatus int, code connect.Code, reason, msg string) {
	body, err := protojson.Marshal(withReason(&status.Status{Code: int32(code), Message: msg}, reason))
	if err != nil {
		body = []byte(`{"code":13,"message":"failed to encode the error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// writeError writes err (a broker or connect error) as a JSON problem.
func writeError(w http.ResponseWriter, err error) {
	ce := apiconv.ToConnect(err).(*connect.Error)
	reason := apiconv.ReasonInternal
	if re, ok := apiconv.FromConnect(ce).(*apiconv.RemoteError); ok && re.Reason != "" {
		reason = re.Reason
	}
	writeProblem(w, apiconv.HTTPStatus(ce), ce.Code(), reason, ce.Message())
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeProblem(w, http.StatusNotFound, connect.CodeNotFound, "NO_ROUTE",
		fmt.Sprintf("no route for %s %s; see docs/hub.md for the REST routes (e.g. POST /v1/topics/{topic}/messages)", r.Method, r.URL.Path))
}

// healthz answers while the process runs (liveness).
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "version": s.cfg.Version})
}

// readyz answers 200 while the hub accepts work, 503 once it shuts down
// (readiness: a load balancer stops sending traffic).
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.closing() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "shutting down"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "backend": s.b.Capabilities().Name})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
