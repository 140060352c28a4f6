package call

import (
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
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
	return connect.NewError(connect.CodeInvalidArgument, errors.New("invalid JSON body: "+trimProto(err)))
}

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
