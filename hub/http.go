package hub

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// compressMinBytes is the smallest response message the hub compresses.
const compressMinBytes = 8 << 10

// routes builds the one handler of every protocol.
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

	// REST+JSON from the google.api.http annotations; gRPC, gRPC-Web and
	// Connect pass through to the connect handler. REST bodies are parsed
	// strictly: an unknown field is an error, not silently dropped.
	tc, err := vanguard.NewTranscoder(
		// Always hand the handler binary protobuf, so REST JSON is parsed
		// (strictly) and printed (with every field) by the codec below.
		[]*vanguard.Service{vanguard.NewService(path, svc, vanguard.WithTargetCodecs(vanguard.CodecProto))},
		vanguard.WithCodec(newStrictJSON),
		vanguard.WithUnknownHandler(http.HandlerFunc(notFound)),
	)
	if err != nil {
		return nil, fmt.Errorf("hub: REST routes: %w", err)
	}

	s.health = newHealthState(switchboardv1connect.SwitchboardServiceName)
	mux := http.NewServeMux()
	mux.Handle("/", tc)
	// gRPC, gRPC-Web and Connect calls with the protobuf codec need no
	// transcoding: they go to the connect handler directly, which saves
	// vanguard's per-call work. Other codecs (JSON) still go through
	// vanguard, which parses them strictly.
	mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isProtoRPC(r) {
			svc.ServeHTTP(w, r)
			return
		}
		tc.ServeHTTP(w, r)
	}))
	mux.Handle(grpchealth.NewHandler(s.health.checker))
	reflector := grpcreflect.NewStaticReflector(switchboardv1connect.SwitchboardServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /v1/topics/{topic}/groups/{group}/events", s.serveEvents)
	mux.HandleFunc("GET /v1/topics/{topic}/events", s.serveEvents)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn)}))
	return s.guard(s.limitBody(mux)), nil
}

// strictJSON is vanguard's JSON codec with unknown fields refused, and
// decoding errors reported as InvalidArgument (400) rather than Unknown (500).
type strictJSON struct{ *vanguard.JSONCodec }

func newStrictJSON(res vanguard.TypeResolver) vanguard.Codec {
	c := vanguard.NewJSONCodec(res)
	c.UnmarshalOptions.DiscardUnknown = false
	return strictJSON{c}
}

func badJSON(err error) error {
	if err == nil {
		return nil
	}
	msg := strings.TrimPrefix(err.Error(), "proto: ")
	return apiconv.NewError(connect.CodeInvalidArgument, apiconv.ReasonMalformedRequest, "invalid JSON body: "+msg)
}

func (c strictJSON) Unmarshal(data []byte, msg proto.Message) error {
	return badJSON(c.JSONCodec.Unmarshal(data, msg))
}

func (c strictJSON) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	return badJSON(c.JSONCodec.UnmarshalField(data, msg, field))
}

// limitBody refuses bodies above MaxRequestBytes: with 413 and a JSON
// problem at once when the length is declared, and by cutting the read
// otherwise.
func (s *Server) limitBody(next http.Handler) http.Handler {
	limit := s.cfg.MaxRequestBytes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			// Say so in the protocol the client speaks: gRPC and Connect
			// clients read codes, REST clients read the status.
			msg := fmt.Sprintf("request body of %d bytes exceeds the hub's limit of %d bytes; split the batch or raise the hub's max request size", r.ContentLength, limit)
			if isRPC(r) {
				next.ServeHTTP(w, r) // connect's read limit answers in protocol
				return
			}
			writeProblem(w, http.StatusRequestEntityTooLarge, connect.CodeInvalidArgument, apiconv.ReasonRequestTooLarge, msg)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			// curl -d sends a form content type; REST bodies are JSON.
			if ct := r.Header.Get("Content-Type"); !isRPC(r) && (ct == "" || strings.HasPrefix(ct, "application/x-www-form-urlencoded")) {
				r.Header.Set("Content-Type", "application/json")
			}
		}
		if !isRPC(r) {
			w = &restErrorType{ResponseWriter: w}
		}
		next.ServeHTTP(w, r)
	})
}

// restErrorType corrects the Content-Type of REST error bodies: the REST
// transcoder answers a body it cannot decode with a JSON google.rpc.Status
// labelled application/proto.
type restErrorType struct {
	http.ResponseWriter
}

func (w *restErrorType) WriteHeader(code int) {
	if code >= 400 && w.Header().Get("Content-Type") == "application/proto" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.ResponseWriter.WriteHeader(code)
}

// Flush keeps Server-Sent Events streaming through the wrapper.
func (w *restErrorType) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *restErrorType) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// isRPC tells gRPC, gRPC-Web and Connect requests from REST ones.
func isRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/grpc") ||
		strings.HasPrefix(ct, "application/connect+") ||
		r.Header.Get("Connect-Protocol-Version") != ""
}

// isProtoRPC tells gRPC, gRPC-Web and Connect requests with the protobuf
// codec (binary) from others.
func isProtoRPC(r *http.Request) bool {
	switch r.Header.Get("Content-Type") {
	case "application/grpc", "application/grpc+proto",
		"application/grpc-web", "application/grpc-web+proto",
		"application/proto", "application/connect+proto":
		return r.Method == http.MethodPost
	}
	return false
}

// writeProblem writes a JSON error body shaped like the REST errors of the
// API (a google.rpc.Status): {"code": 3, "message": "...", "details": [...]}.
func writeProblem(w http.ResponseWriter, httpStatus int, code connect.Code, reason, msg string) {
	st := &status.Status{Code: int32(code), Message: msg}
	if d, err := anypb.New(&errdetails.ErrorInfo{Reason: reason, Domain: apiconv.ErrorDomain}); err == nil {
		st.Details = append(st.Details, d)
	}
	body, err := protojson.Marshal(st)
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

// healthState is the hub's health, for grpchealth and /readyz.
type healthState struct {
	checker *grpchealth.StaticChecker
	service string
}

func newHealthState(service string) *healthState {
	return &healthState{checker: grpchealth.NewStaticChecker(service), service: service}
}

func (h *healthState) setServing(ok bool) {
	st := grpchealth.StatusServing
	if !ok {
		st = grpchealth.StatusNotServing
	}
	h.checker.SetStatus("", st)
	h.checker.SetStatus(h.service, st)
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
