package call

import (
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"

	"connectrpc.com/connect"
)

// errPanic is what a client learns of a handler panic: the code Internal
// and this message, in every protocol. The panic value and the stack go to
// the server's log only.
var errPanic = errors.New("internal error (see the server log)")

// recoverPanics turns a panic of a mounted handler into an Internal error
// written in the request's protocol (gRPC, gRPC-Web or Connect, as the
// handler was called: vanguard, GraphQL, SOAP and ServeTopic call it the
// same way, so every protocol maps the same error), and logs the panic
// with its stack. A panic after the response has started cannot be
// answered: the response is aborted (http.ErrAbortHandler), which the
// net/http server, the in-process transport and ServeTopic all handle.
func (s *Server) recoverPanics(h http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := watch(w)
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.cfg.logger.Error("call: handler panic", "procedure", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if ww.started() {
				panic(http.ErrAbortHandler)
			}
			_ = ew.Write(w, r, connect.NewError(connect.CodeInternal, errPanic))
		}()
		h.ServeHTTP(ww, r)
	})
}

// watchedWriter reports whether a response has started.
type watchedWriter interface {
	http.ResponseWriter
	started() bool
}

// watch wraps w, keeping http.Flusher only if w has it (connect checks
// for it to serve streams) and Unwrap for http.ResponseController.
func watch(w http.ResponseWriter) watchedWriter {
	ww := &watchWriter{ResponseWriter: w}
	if _, ok := w.(http.Flusher); ok {
		return &flushWatchWriter{ww}
	}
	return ww
}

type watchWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *watchWriter) WriteHeader(code int) { w.wrote = true; w.ResponseWriter.WriteHeader(code) }

func (w *watchWriter) Write(p []byte) (int, error) { w.wrote = true; return w.ResponseWriter.Write(p) }

func (w *watchWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *watchWriter) started() bool { return w.wrote }

type flushWatchWriter struct{ *watchWriter }

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
// panic that recoverPanics could not answer, or http.ErrAbortHandler).
func serveRecovered(h http.Handler, w http.ResponseWriter, r *http.Request) (aborted bool) {
	defer func() {
		if p := recover(); p != nil {
			aborted = true
		}
	}()
	h.ServeHTTP(w, r)
	return false
}
