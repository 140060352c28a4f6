package call

import (
	"fmt"
	"io"
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// StrictJSON is vanguard's JSON codec with unknown fields refused and
// decoding errors reported as InvalidArgument (HTTP 400) rather than
// Unknown (500). NewServer uses it for REST and Connect JSON; the hub can
// pass NewStrictJSONCodec to vanguard.WithCodec for the same behaviour.
type StrictJSON struct{ *vanguard.JSONCodec }

// NewStrictJSONCodec is a vanguard codec constructor (vanguard.WithCodec).
func NewStrictJSONCodec(res vanguard.TypeResolver) vanguard.Codec {
	c := vanguard.NewJSONCodec(res)
	c.UnmarshalOptions.DiscardUnknown = false
	return StrictJSON{c}
}

func badJSON(err error) error {
	if err == nil {
		return nil
	}
	return apiconv.NewError(connect.CodeInvalidArgument, ReasonMalformedRequest, "invalid JSON body: "+trimProto(err))
}

// ReasonMalformedRequest is the google.rpc.ErrorInfo reason of a request
// body that could not be decoded (malformed JSON, an unknown field, a
// value of the wrong type): code invalid_argument.
const ReasonMalformedRequest = apiconv.ReasonMalformedRequest

// Unmarshal parses JSON strictly.
func (c StrictJSON) Unmarshal(data []byte, msg proto.Message) error {
	return badJSON(c.JSONCodec.Unmarshal(data, msg))
}

// UnmarshalField parses the JSON of one field (a REST body: "field") strictly.
func (c StrictJSON) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	return badJSON(c.JSONCodec.UnmarshalField(data, msg, field))
}

// WriteStatus writes a REST error body shaped like vanguard's (a
// google.rpc.Status): {"code": 3, "message": "..."}.
func WriteStatus(w http.ResponseWriter, httpStatus int, code connect.Code, msg string) {
	body, err := protojson.Marshal(&status.Status{Code: int32(code), Message: msg})
	if err != nil {
		body = []byte(`{"code":13,"message":"failed to encode the error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// restTooLarge answers a REST request whose declared body is over
// WithMaxBodyBytes, before anything is read: 413 and a google.rpc.Status
// with ResourceExhausted, or on the default route of m (POST
// /pkg.Svc/Method, a Connect unary call) a Connect error, as that route
// answers a body cut while reading.
func restTooLarge(w http.ResponseWriter, r *http.Request, m *method, limit int64) {
	err := bodyTooLarge(r.ContentLength, limit)
	if m == nil || r.Method != http.MethodPost || m.streaming() {
		writeStatusError(w, http.StatusRequestEntityTooLarge, err)
		return
	}
	// connect's own error writer, as for a body cut while reading (with
	// its REQUEST_TOO_LARGE detail); restLimitWriter makes its 429 a 413.
	_ = connect.NewErrorWriter().Write(&restLimitWriter{ResponseWriter: w, body: &limitedBody{err: err}}, r, err)
}

// limitREST cuts a REST body of any length at limit bytes, and returns the
// body and ResponseWriter to serve the request with. Reading past the limit
// fails with bodyTooLarge; the handler returns that error, vanguard (or the
// REST fast path) answers it with the error table's status for
// ResourceExhausted, 429, and the returned writer makes it 413, as for a
// declared length: one allocation, like the http.MaxBytesReader it
// replaces.
func limitREST(w http.ResponseWriter, body io.ReadCloser, limit int64) (io.ReadCloser, http.ResponseWriter) {
	limit = max(limit, 0)
	l := &restLimit{body: limitedBody{ReadCloser: body, left: limit, limit: limit}}
	l.w.ResponseWriter, l.w.body = w, &l.body
	return &l.body, &l.w
}

type restLimit struct {
	body limitedBody
	w    restLimitWriter
}

// restLimitWriter answers 413 for the 429 of a body cut at the limit.
type restLimitWriter struct {
	http.ResponseWriter
	body *limitedBody
}

func (w *restLimitWriter) WriteHeader(code int) {
	if code == http.StatusTooManyRequests && w.body.err != nil {
		code = http.StatusRequestEntityTooLarge
	}
	w.ResponseWriter.WriteHeader(code)
}

// Flush keeps vanguard's streaming responses (it needs an http.Flusher).
func (w *restLimitWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *restLimitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func notFound(w http.ResponseWriter, r *http.Request) {
	WriteStatus(w, http.StatusNotFound, connect.CodeNotFound,
		fmt.Sprintf("no route for %s %s; REST routes come from google.api.http annotations, and every unary method answers POST /{package}.{Service}/{Method} with a JSON body", r.Method, r.URL.Path))
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

type idempotency int

const (
	idempotencyUnknown       = idempotency(descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN)
	idempotencyNoSideEffects = idempotency(descriptorpb.MethodOptions_NO_SIDE_EFFECTS)
	idempotencyIdempotent    = idempotency(descriptorpb.MethodOptions_IDEMPOTENT)
)

func idempotencyOf(md protoreflect.MethodDescriptor) idempotency {
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil {
		return idempotencyUnknown
	}
	return idempotency(opts.GetIdempotencyLevel())
}
