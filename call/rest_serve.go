package call

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// restRequestOK reports whether vanguard would read nothing from r but
// its route, its Content-Type and (for a body route) its body: no query
// string, JSON or no content type, no content encoding, no timeout header.
func (rt *restRoute) restRequestOK(r *http.Request) bool {
	if r.URL.RawQuery != "" || r.URL.ForceQuery || r.URL.RawPath != "" {
		return false
	}
	h := r.Header
	switch ct := first(h["Content-Type"]); ct {
	case "", "application/json", "application/json; charset=utf-8":
	default:
		return false
	}
	if len(h["Content-Encoding"]) > 0 || len(h["X-Server-Timeout"]) > 0 {
		return false
	}
	if !rt.body && r.ContentLength != 0 {
		return false // vanguard refuses a body here
	}
	return true
}

// serveREST serves a REST call of rt as vanguard would (see rest.go); it
// hands the request to vanguard (next) when it cannot tell it would.
func (s *Server) serveREST(w http.ResponseWriter, r *http.Request, rt *restRoute, vals []string, next http.Handler) {
	if !rt.restRequestOK(r) {
		next.ServeHTTP(w, r)
		return
	}
	msg := rt.m.in.New()
	if rt.body {
		in := bodyBuffers.Get().(*bytes.Buffer)
		defer putBuffer(in)
		if r.Body != nil {
			if _, err := in.ReadFrom(r.Body); err != nil {
				// vanguard reads the same bytes, then meets the same error.
				r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(in.Bytes()), errReader{err}))
				next.ServeHTTP(w, r)
				return
			}
		}
		into := msg
		if rt.bodyField != nil {
			into = msg.Mutable(rt.bodyField).Message() // set even when the body is empty, as vanguard does
		}
		if in.Len() > 0 {
			if err := rt.codec.Unmarshal(in.Bytes(), into.Interface()); err != nil {
				r.Body = io.NopCloser(bytes.NewReader(in.Bytes()))
				next.ServeHTTP(w, r)
				return
			}
		}
	}
	for i, fd := range rt.vars {
		msg.Set(fd, protoreflect.ValueOfString(vals[i]))
	}
	body := bodyBuffers.Get().(*bytes.Buffer)
	defer putBuffer(body)
	b, err := proto.MarshalOptions{}.MarshalAppend(body.Bytes()[:0], msg.Interface())
	if err != nil {
		writeRESTError(w, connect.NewError(connect.CodeInternal, err), false)
		return
	}

	// The handler's call: Connect unary, binary protobuf, the client's
	// other headers. It writes its headers into w's, as under vanguard.
	h := r.Header
	delete(h, "Content-Type")
	delete(h, "Content-Length")
	delete(h, "Accept-Encoding") // nothing compresses inside the process
	h["Content-Type"] = protoContentType
	h["Connect-Protocol-Version"] = connectV1
	cr := new(http.Request)
	*cr = *r
	cr.Method = http.MethodPost
	cr.URL = &url.URL{Path: rt.m.procedure}
	cr.RequestURI = rt.m.procedure
	cr.Body = io.NopCloser(bytes.NewReader(b))
	cr.ContentLength = int64(len(b))
	cr.GetBody = nil
	rec := &recorder{header: w.Header(), body: bodyBuffers.Get().(*bytes.Buffer)}
	defer putBuffer(rec.body)
	rt.m.svc.guard.serve(rec, cr, rt.m)
	if r.Method == http.MethodGet && rt.m.noSideEffects() && connectGetFits(rt.m.procedure, len(b)) {
		// vanguard would have made a Connect GET, whose answer connect
		// marks as varying with Accept-Encoding.
		rh := w.Header()
		rh["Vary"] = append(rh["Vary"], "Accept-Encoding")
	}
	s.finishREST(w, rt, rec)
}

// connectGetFits reports whether vanguard's Connect GET URL for a message
// of n bytes fits its default limit (else vanguard POSTs).
func connectGetFits(procedure string, n int) bool {
	const query = "base64=1&connect=v1&encoding=proto&message="
	return len(procedure)+len(query)+base64.RawURLEncoding.EncodedLen(n)+1 <= vanguard.DefaultMaxGetURLBytes
}

var (
	protoContentType = []string{"application/proto"}
	connectV1        = []string{"1"}
	jsonContentType  = []string{"application/json"}
	gzipOnly         = []string{"gzip"}
)

// errReader fails every read with err.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// finishREST turns the handler's Connect answer into vanguard's REST one.
func (s *Server) finishREST(w http.ResponseWriter, rt *restRoute, rec *recorder) {
	h := w.Header()
	ct, enc := first(h["Content-Type"]), first(h["Content-Encoding"])
	gz := acceptsGzip(h, "Accept-Encoding")
	for k := range h {
		switch {
		case k == "Content-Type", k == "Content-Encoding", k == "Accept-Encoding", k == "Content-Length", k == "Trailer",
			strings.HasPrefix(k, "Trailer-"):
			delete(h, k)
		}
	}
	code := rec.status
	if code == 0 {
		code = http.StatusOK
	}
	if code != http.StatusOK {
		writeRESTError(w, connectWireError(rec.body.Bytes()), gz)
		return
	}
	if ct != "application/proto" || (enc != "" && enc != "identity") {
		writeRESTError(w, connect.NewError(connect.CodeInternal,
			fmt.Errorf("response uses incorrect codec: expecting %q but instead got %q", "proto", strings.TrimPrefix(ct, "application/"))), gz)
		return
	}
	out := rt.m.out.New().Interface()
	if err := proto.Unmarshal(rec.body.Bytes(), out); err != nil {
		writeRESTError(w, connect.NewError(connect.CodeInternal, err), gz)
		return
	}
	js := bodyBuffers.Get().(*bytes.Buffer)
	defer putBuffer(js)
	b, ok := rt.printer.appendMessage(js.Bytes()[:0], out.ProtoReflect())
	if !ok { // protojson says why
		var err error
		if b, err = rt.codec.MarshalAppend(js.Bytes()[:0], out); err != nil {
			writeRESTError(w, connect.NewError(connect.CodeUnknown, err), gz)
			return
		}
	}
	h["Content-Type"] = jsonContentType
	if gz {
		h["Accept-Encoding"] = gzipOnly
	}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// connectWireError reads a Connect unary error body as vanguard does.
func connectWireError(body []byte) *connect.Error {
	var wire struct {
		Code    connect.Code `json:"code"`
		Message string       `json:"message"`
		Details []struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"details"`
	}
	if err := json.Unmarshal(body, &wire); err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	cerr := connect.NewError(wire.Code, errors.New(wire.Message))
	for _, d := range wire.Details {
		v, err := base64.RawStdEncoding.DecodeString(d.Value)
		if err != nil {
			continue
		}
		if ed, err := connect.NewErrorDetail(&anypb.Any{TypeUrl: "type.googleapis.com/" + d.Type, Value: v}); err == nil {
			cerr.AddDetail(ed)
		}
	}
	return cerr
}

// writeRESTError writes err as vanguard's REST error: the status of its
// code and a JSON google.rpc.Status.
func writeRESTError(w http.ResponseWriter, cerr *connect.Error, gz bool) {
	if gz {
		w.Header()["Accept-Encoding"] = gzipOnly
	}
	writeStatusError(w, MappingOf(cerr.Code()).HTTPStatus, cerr) // the table is vanguard's
}

// writeStatusError writes cerr as a REST error body with httpStatus: a
// google.rpc.Status with its details, printed as vanguard prints it.
func writeStatusError(w http.ResponseWriter, httpStatus int, cerr *connect.Error) {
	st := &status.Status{Code: int32(cerr.Code()), Message: cerr.Message()}
	for _, d := range cerr.Details() {
		st.Details = append(st.Details, &anypb.Any{TypeUrl: "type.googleapis.com/" + d.Type(), Value: d.Bytes()})
	}
	b, err := protojson.MarshalOptions{Resolver: protoregistry.GlobalTypes, EmitUnpopulated: true}.Marshal(st)
	if err != nil {
		b = []byte(`{"code":13,"message":"failed to marshal end error"}`)
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(httpStatus)
	_, _ = w.Write(b)
}

// restCall is the handler of one fast-path REST call.
type restCall struct {
	s    *Server
	rt   *restRoute
	vals []string
	next http.Handler // vanguard
}

func (c restCall) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.s.serveREST(w, r, c.rt, c.vals, c.next)
}
