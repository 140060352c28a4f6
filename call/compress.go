package call

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Vanguard answers a transcoded call (REST, the Connect protocol in JSON)
// in the compression the handler chose: when a client accepts gzip, the
// handler gzips its protobuf response, vanguard gunzips it, transcodes it
// and gzips the result again. Both compressions are the most expensive
// part of a small call, and the first never leaves the process. So for
// calls whose response encoding is HTTP's Content-Encoding (REST and
// Connect unary), the client's Accept-Encoding is taken away before
// vanguard sees it, and the finished response is gzipped once, here, when
// it would have been before: the client accepts gzip (by vanguard's rule:
// an Accept-Encoding item that is exactly "gzip"), the handler does (it
// lists gzip in its Accept-Encoding response header, as connect handlers
// do), and the response is a complete (unary, Content-Length) 200 body
// without a Content-Encoding, of at least WithCompressMinBytes. gzip.BestSpeed: the default level spends
// most of its time resetting its tables, for little gain on call-sized
// bodies.

// acceptsGzip reports an Accept-Encoding that lists gzip, split as
// vanguard splits it (comma-separated items; no quality values).
func acceptsGzip(h http.Header, key string) bool {
	for _, v := range h[key] {
		for item := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(item) == "gzip" {
				return true
			}
		}
	}
	return false
}

var (
	gzipWriters = sync.Pool{New: func() any {
		zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
		return zw
	}}
	// bodyBuffers hold bodies: compressed responses, and the request and
	// response bodies of fast-path REST calls. Give them back with
	// putBuffer.
	bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// maxPooledBuffer is the largest body buffer kept for reuse.
const maxPooledBuffer = 64 << 10

// putBuffer gives b back to bodyBuffers unless it grew too large.
func putBuffer(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBuffer {
		b.Reset()
		bodyBuffers.Put(b)
	}
}

// edgeWriter is the ResponseWriter of a transcoded call with HTTP content
// encoding. It gzips the response as described above, and for REST labels
// error bodies as JSON: vanguard writes a JSON google.rpc.Status but can
// leave the handler's application/proto type.
type edgeWriter struct {
	http.ResponseWriter
	restErrors bool         // label REST error bodies as JSON
	gzipOK     bool         // the client accepts gzip
	accept     []string     // the client's Accept-Encoding, taken from the request
	head       bool         // a HEAD request: no body to compress
	min        int64        // the smallest body to compress (WithCompressMinBytes)
	zw         *gzip.Writer // non-nil while the body is being compressed
	buf        *bytes.Buffer
}

// serveEdge serves r with next, compressing its response at the edge.
func (s *Server) serveEdge(next http.Handler, w http.ResponseWriter, r *http.Request, restErrors bool) {
	ew := &edgeWriter{ResponseWriter: w, restErrors: restErrors, head: r.Method == http.MethodHead, min: s.cfg.compressMin}
	if v, ok := r.Header["Accept-Encoding"]; ok {
		ew.gzipOK, ew.accept = acceptsGzip(r.Header, "Accept-Encoding"), v
		r.Header.Del("Accept-Encoding")
	}
	next.ServeHTTP(ew, r)
	ew.finish()
}

// bypass gives r back the client's Accept-Encoding and stops compressing:
// for a handler other than a mounted service's (an unknown route), which
// sees the request as the client sent it.
func (w *edgeWriter) bypass(r *http.Request) {
	w.gzipOK = false
	if w.accept != nil {
		r.Header["Accept-Encoding"] = w.accept
	}
}

func (w *edgeWriter) WriteHeader(code int) {
	if w.zw != nil {
		return // superfluous: finish sends the header
	}
	h := w.Header()
	if w.restErrors && code >= 400 && h.Get("Content-Type") == "application/proto" {
		h.Set("Content-Type", "application/json")
	}
	if w.compressible(code, h) {
		w.buf = bodyBuffers.Get().(*bytes.Buffer)
		w.zw = gzipWriters.Get().(*gzip.Writer)
		w.zw.Reset(w.buf)
		return // sent by finish, with the compressed length
	}
	w.ResponseWriter.WriteHeader(code)
}

// compressible reports a response to gzip: see above.
func (w *edgeWriter) compressible(code int, h http.Header) bool {
	if !w.gzipOK || w.head || code != http.StatusOK || h.Get("Content-Encoding") != "" || !acceptsGzip(h, "Accept-Encoding") {
		return false
	}
	n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	return err == nil && n >= 0 && n >= w.min
}

func (w *edgeWriter) Write(p []byte) (int, error) {
	if w.zw != nil {
		return w.zw.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

// Flush flushes an uncompressed response; a compressed one is sent whole
// by finish.
func (w *edgeWriter) Flush() {
	if w.zw != nil {
		return
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *edgeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish sends a compressed response.
func (w *edgeWriter) finish() {
	if w.zw == nil {
		return
	}
	zw, buf := w.zw, w.buf
	w.zw, w.buf = nil, nil
	err := zw.Close()
	zw.Reset(nil)
	gzipWriters.Put(zw)
	defer putBuffer(buf)
	if err != nil { // cannot happen writing to a bytes.Buffer
		http.Error(w.ResponseWriter, "call: compressing the response failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Encoding", "gzip")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.ResponseWriter.WriteHeader(http.StatusOK)
	_, _ = w.ResponseWriter.Write(buf.Bytes())
}
