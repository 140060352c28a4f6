package call

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strings"

	"connectrpc.com/connect"
)

// errPanic is what a client learns of a handler panic: the code Internal
// and this message, in every protocol. The panic value and the stack go to
// the server's log only.
var errPanic = errors.New("internal error (see the server log)")

// guard is a mounted service's handler as every protocol reaches it:
// behind the server's default deadline and panic recovery.
//
// A unary call that arrives without a deadline (no Grpc-Timeout or
// Connect-Timeout-Ms header, and no deadline on its context: every REST,
// GraphQL and SOAP call) gets the server's default timeout. Vanguard hands
// REST calls to the handler at their RPC path, so one guard covers every
// protocol.
//
// A panic of the handler becomes an Internal error written in the
// request's protocol (gRPC, gRPC-Web or Connect, as the handler was
// called: vanguard, GraphQL, SOAP and ServeTopic call it the same way, so
// every protocol maps the same error), and is logged with its stack. A
// panic after the response has started cannot be answered: the response is
// aborted (http.ErrAbortHandler), which the net/http server, the
// in-process transport and ServeTopic all handle.
type guard struct {
	s  *Server
	h  http.Handler
	ew *connect.ErrorWriter
}

func newGuard(s *Server, h http.Handler) *guard {
	return &guard{s: s, h: h, ew: connect.NewErrorWriter()}
}

// ServeHTTP serves a call of any method of the service (or of none).
func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.serve(w, r, g.s.byProc[r.URL.Path])
}

// serve serves a call of m (nil: not a method of the service). Headers are
// read by their canonical keys, as Header.Get would.
func (g *guard) serve(w http.ResponseWriter, r *http.Request, m *method) {
	if !g.limitBody(w, r, m) {
		return
	}
	ww := watch(w)
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if p == http.ErrAbortHandler {
			panic(p)
		}
		g.s.cfg.logger.Error("call: handler panic", "procedure", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		if ww.started() {
			panic(http.ErrAbortHandler)
		}
		_ = g.ew.Write(w, r, connect.NewError(connect.CodeInternal, errPanic))
	}()
	if d := g.s.cfg.defaultTimeout; d > 0 && m != nil && !m.streaming() &&
		first(r.Header["Grpc-Timeout"]) == "" && first(r.Header["Connect-Timeout-Ms"]) == "" {
		if _, ok := r.Context().Deadline(); !ok {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			r = r.WithContext(ctx)
		}
	}
	g.h.ServeHTTP(ww, r)
}

// limitBody applies WithMaxBodyBytes to the request body of a call of m
// (nil: not a method of the service), and reports false when it answered
// the call itself. Every protocol reaches the handler here: the fast path
// with the client's own body, vanguard, GraphQL and SOAP with the body
// they made from the client's (which they limited themselves).
//
// A call with one request message (unary or server-streaming) is limited
// by its body: a declared Content-Length over the limit is refused before
// anything is read, in the call's protocol; a body of unknown length is cut
// at the limit, and the handler's read fails with the same error (connect
// returns a *connect.Error read error as is). A declared length within the
// limit needs nothing: net/http never delivers more than it (HTTP/1.1 and
// HTTP/2 alike), so the fast path's usual call allocates nothing here.
//
// A client or bidi stream is limited per message, by the length prefix of
// each message (the same in gRPC, gRPC-Web and the Connect protocol's
// streams): a stream may run for hours and carry any number of messages,
// and fails at the first one over the limit, before it is read.
func (g *guard) limitBody(w http.ResponseWriter, r *http.Request, m *method) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	limit := max(g.s.cfg.maxBodyBytes, 0)
	if m != nil && m.desc.IsStreamingClient() {
		r.Body = &messageLimit{ReadCloser: r.Body, limit: limit}
		return true
	}
	switch n := r.ContentLength; {
	case n > limit:
		_ = g.ew.Write(w, r, bodyTooLarge(n, limit))
		return false
	case n <= 0: // unknown (0 with a body: a client request passed in process)
		r.Body = &limitedBody{ReadCloser: r.Body, left: limit, limit: limit}
	}
	return true
}

// limitedBody is a request body of unknown length cut at limit bytes:
// reading past it fails with bodyTooLarge, as a *connect.Error, which
// connect handlers return as is (unlike *http.MaxBytesError, which they
// report in their own words).
type limitedBody struct {
	io.ReadCloser
	left, limit int64
	err         error
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left+1] // one byte more tells a body of exactly limit bytes from a longer one
	}
	n, err := b.ReadCloser.Read(p)
	if int64(n) <= b.left {
		b.left -= int64(n)
		return n, err
	}
	n, b.left = int(b.left), 0
	b.err = bodyTooLarge(-1, b.limit)
	return n, b.err
}

// messageLimit is the request body of a client or bidi stream: enveloped
// messages (a flags byte and a 4-byte big-endian length, then the message)
// passed through unchanged while each message is at most limit bytes. At
// the first prefix announcing a longer message, reading fails with
// messageTooLarge; the bytes before that prefix are still delivered.
type messageLimit struct {
	io.ReadCloser
	limit  int64
	prefix [5]byte
	have   int   // bytes of the current prefix read so far
	left   int64 // bytes of the current message still to pass
	err    error
}

func (b *messageLimit) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.ReadCloser.Read(p)
	for i := 0; i < n; {
		if b.left > 0 {
			k := min(b.left, int64(n-i))
			i += int(k)
			b.left -= k
			continue
		}
		start := i - b.have // where the prefix starts in p (< 0: in an earlier read)
		k := copy(b.prefix[b.have:], p[i:n])
		b.have += k
		i += k
		if b.have < len(b.prefix) {
			break
		}
		b.have = 0
		size := int64(binary.BigEndian.Uint32(b.prefix[1:]))
		if size > b.limit {
			b.err = messageTooLarge(size, b.limit)
			return max(start, 0), b.err
		}
		b.left = size
	}
	return n, err
}

// readBody reads the body of a GraphQL or SOAP request, at most
// WithMaxBodyBytes: a declared length over the limit is refused before
// anything is read, and a body cut at it fails, both with bodyTooLarge (a
// *connect.Error); other read errors are returned as they are.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := max(s.cfg.maxBodyBytes, 0)
	if r.ContentLength > limit {
		return nil, bodyTooLarge(r.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return nil, bodyTooLarge(-1, limit)
	}
	return body, err
}

// watchedWriter reports whether a response has started.
type watchedWriter interface {
	http.ResponseWriter
	started() bool
}

// watch wraps w, keeping http.Flusher only if w has it (connect checks
// for it to serve streams) and Unwrap for http.ResponseController.
func watch(w http.ResponseWriter) watchedWriter {
	if _, ok := w.(http.Flusher); ok {
		return &flushWatchWriter{watchWriter{ResponseWriter: w}}
	}
	return &watchWriter{ResponseWriter: w}
}

type watchWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *watchWriter) WriteHeader(code int) { w.wrote = true; w.ResponseWriter.WriteHeader(code) }

func (w *watchWriter) Write(p []byte) (int, error) { w.wrote = true; return w.ResponseWriter.Write(p) }

func (w *watchWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *watchWriter) started() bool { return w.wrote }

// flushWatchWriter holds its watchWriter by value: one allocation per call.
type flushWatchWriter struct{ watchWriter }

func (w *flushWatchWriter) Flush() {
	w.wrote = true
	w.ResponseWriter.(http.Flusher).Flush()
}

// unknownMethod answers a request that matches no route. An RPC (gRPC,
// gRPC-Web, Connect: see isRPC) and any request to the RPC path of a
// mounted service ("/pkg.Svc/Nope", the REST default route of a method that
// does not exist) get Unimplemented in the request's protocol: a gRPC
// status, or a Connect error with HTTP 501, as the error table says.
// Everything else (an unknown REST route) goes to next, 404 by default.
func (s *Server) unknownMethod(next http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ew, ok := w.(*edgeWriter); ok {
			ew.bypass(r)
		}
		var svc *service
		for _, sv := range s.services {
			if strings.HasPrefix(r.URL.Path, sv.path) {
				svc = sv
			}
		}
		if svc == nil && !isRPC(r) {
			next.ServeHTTP(w, r)
			return
		}
		var err error
		if svc != nil {
			name := strings.TrimPrefix(r.URL.Path, svc.path)
			err = fmt.Errorf("%s has no method %q; its methods are %s", svc.desc.FullName(), name, methodNames(svc))
		} else {
			err = fmt.Errorf("no service serves %s; RPC paths are /{package}.{Service}/{Method}", r.URL.Path)
		}
		_ = ew.Write(w, r, connect.NewError(connect.CodeUnimplemented, err))
	})
}

func methodNames(svc *service) string {
	names := make([]string, len(svc.methods))
	for i, m := range svc.methods {
		names[i] = string(m.desc.Name())
	}
	return strings.Join(names, ", ")
}

// serveRecovered runs h and reports whether it aborted its response (a
// panic that the guard could not answer, or http.ErrAbortHandler).
func serveRecovered(h http.Handler, w http.ResponseWriter, r *http.Request) (aborted bool) {
	defer func() {
		if p := recover(); p != nil {
			aborted = true
		}
	}()
	h.ServeHTTP(w, r)
	return false
}
