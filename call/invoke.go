package call

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// invoker calls the methods of one mounted service in process, through its
// connect handler (Connect protocol, binary protobuf), with messages of the
// methods' types (generated or dynamic: see messageType). GraphQL and SOAP
// use it, so they reach the handler exactly as a Connect client would: the
// handler's interceptors, deadlines and error codes apply unchanged.
type invoker struct {
	clients map[protoreflect.Name]*connect.Client[anyMessage, anyMessage]
}

// anyMessage carries a message of any type through a connect client: it is
// a proto.Message by its embedded one.
type anyMessage struct{ proto.Message }

// inprocBase is the base URL of in-process calls; no socket is opened.
const inprocBase = "http://call.inprocess"

func newInvoker(svc *service) *invoker {
	hc := &http.Client{Transport: inprocTransport{h: svc.guard}}
	inv := &invoker{clients: map[protoreflect.Name]*connect.Client[anyMessage, anyMessage]{}}
	for _, m := range svc.methods {
		md, out := m.desc, m.out
		inv.clients[md.Name()] = connect.NewClient[anyMessage, anyMessage](hc, inprocBase+m.procedure,
			connect.WithSchema(md),
			// Nothing crosses a network: a gzipped response would only be
			// compressed and decompressed in this process (the most
			// expensive part of a call).
			connect.WithAcceptCompression("gzip", nil, nil),
			connect.WithResponseInitializer(func(_ connect.Spec, msg any) error {
				am, ok := msg.(*anyMessage)
				if !ok {
					return errors.New("call: unexpected response holder")
				}
				am.Message = out.New().Interface()
				return nil
			}),
		)
	}
	return inv
}

// unary calls a unary method.
func (inv *invoker) unary(ctx context.Context, md protoreflect.MethodDescriptor, req proto.Message, hdr http.Header) (proto.Message, error) {
	r := connect.NewRequest(&anyMessage{req})
	for k, v := range hdr {
		r.Header()[k] = v
	}
	res, err := inv.clients[md.Name()].CallUnary(ctx, r)
	if err != nil {
		return nil, err
	}
	return res.Msg.Message, nil
}

// serverStream opens a server-streaming call.
func (inv *invoker) serverStream(ctx context.Context, md protoreflect.MethodDescriptor, req proto.Message, hdr http.Header) (*connect.ServerStreamForClient[anyMessage], error) {
	r := connect.NewRequest(&anyMessage{req})
	for k, v := range hdr {
		r.Header()[k] = v
	}
	return inv.clients[md.Name()].CallServerStream(ctx, r)
}

// inprocTransport runs an http.Handler for each request, streaming its
// response through a pipe.
type inprocTransport struct{ h http.Handler }

func (t inprocTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	sreq := req.Clone(req.Context())
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "in-process"
	sreq.Host = req.URL.Host
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	go func() {
		defer func() {
			// A handler that aborts its response (http.ErrAbortHandler, as
			// the guard does after a late panic) cuts the response off,
			// as a server closes the connection: there is no process-wide
			// recovery for this goroutine.
			if p := recover(); p != nil {
				w.abort(errAborted) // p may hold handler details: never shown
				return
			}
			w.finish()
		}()
		t.h.ServeHTTP(w, sreq)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		_ = pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	if w.err != nil {
		return nil, w.err
	}
	return &http.Response{
		Status:     http.StatusText(w.status),
		StatusCode: w.status,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        w.sent,
		Body:          pr,
		ContentLength: -1,
		Request:       req,
	}, nil
}

// errAborted is the transport error of an in-process call whose handler
// aborted its response.
var errAborted = errors.New("call: the handler aborted the response")

// pipeWriter is the ResponseWriter of an in-process call.
type pipeWriter struct {
	header http.Header
	sent   http.Header
	status int
	err    error // set, before ready closes, when the handler aborted before answering
	pw     *io.PipeWriter
	once   sync.Once
	ready  chan struct{}
}

// abort ends the response with err: RoundTrip returns err if nothing was
// answered yet, else reading the body fails with it.
func (w *pipeWriter) abort(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.ready)
	})
	_ = w.pw.CloseWithError(err)
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.sent = w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(p)
}

func (w *pipeWriter) Flush() { w.WriteHeader(http.StatusOK) }

func (w *pipeWriter) finish() {
	w.WriteHeader(http.StatusOK)
	_ = w.pw.Close()
}
