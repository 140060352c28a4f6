package sqsface

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// xmlNS is the namespace of every Query protocol response.
const xmlNS = "http://queue.amazonaws.com/doc/2012-11-05/"

// maxRequestBytes bounds a request body: a batch of ten 1 MiB messages is
// refused by size checks long before, and nothing larger is read.
const maxRequestBytes = 12 << 20

// Face answers the Amazon SQS API over HTTP, backed by a Switchboard broker.
// It is safe for concurrent use. Close it to release its subscriptions.
type Face struct {
	cfg    *Config
	b      broker.Broker
	topics broker.TopicAdmin
	groups broker.GroupAdmin
	log    *slog.Logger
	meta   *metaStore

	mu     sync.Mutex
	queues map[string]*queue // by queue name
	closed atomic.Bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns the SQS face of b as an http.Handler (a *Face: close it with
// Close when the server stops). b must manage topics and groups
// (broker.TopicAdmin and broker.GroupAdmin), as the embedded engine does.
func New(b broker.Broker, cfg *Config) (http.Handler, error) {
	return NewFace(b, cfg)
}

// NewFace is New with the concrete type.
func NewFace(b broker.Broker, cfg *Config) (*Face, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ta, ok1 := b.(broker.TopicAdmin)
	ga, ok2 := b.(broker.GroupAdmin)
	caps := b.Capabilities()
	if !ok1 || !ok2 || !caps.Groups || !caps.Ack || !caps.Extend {
		return nil, fmt.Errorf("sqsface: backend %q cannot serve SQS (needs topic and group admin, groups, acks and deadline extension): %w", caps.Name, broker.ErrNotSupported)
	}
	ms, err := openMetaStore(cfg.Dir)
	if err != nil {
		return nil, err
	}
	f := &Face{cfg: cfg, b: b, topics: ta, groups: ga, log: cfg.Logger, meta: ms, queues: map[string]*queue{}}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	for _, qm := range ms.load() {
		f.queues[qm.Name] = newQueue(f, qm)
	}
	f.wg.Add(1)
	go f.janitor()
	return f, nil
}

// Close releases every queue's subscription (messages in flight become
// visible again) and stops background work. Requests after Close fail.
func (f *Face) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	f.mu.Lock()
	qs := make([]*queue, 0, len(f.queues))
	for _, q := range f.queues {
		qs = append(qs, q)
	}
	f.mu.Unlock()
	f.cancel()
	for _, q := range qs {
		q.release()
	}
	f.wg.Wait()
	return nil
}

// request is one decoded API call, whichever protocol carried it.
type request struct {
	op    string
	json  bool
	body  []byte
	form  url.Values
	path  string // path after PathPrefix: "/<account>/<queue>" for Query calls to a queue URL
	base  string // base of queue URLs
	reqID string
}

// decode fills v (a pointer to an input struct with JSON tags) from the
// request. An input that reads itself (jsonReader) takes the fast path;
// what that path does not accept is decoded by encoding/json into a zeroed
// v, with the same result.
func (r *request) decode(v any) *apiError {
	var data []byte
	if r.json {
		data = bytes.TrimSpace(r.body)
		if len(data) == 0 {
			data = []byte("{}")
		}
	} else {
		tree, err := formTree(r.form)
		if err != nil {
			return err
		}
		data, _ = json.Marshal(tree)
	}
	if jr, ok := v.(jsonReader); ok {
		if readJSON(data, jr) {
			return nil
		}
		reflect.ValueOf(v).Elem().SetZero()
	}
	return decodeStd(data, v, r.json)
}

// decodeStd decodes data into v with encoding/json and answers errors as
// the JSON protocol (jsonProto) or the Query protocol does.
func decodeStd(data []byte, v any, jsonProto bool) *apiError {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errInvalidParameterValue("Value for parameter %s is invalid. Reason: must be of type %s.", te.Field, te.Type)
		}
		if jsonProto {
			return errMalformedJSON("Start of structure or map found where not expected, or body is not valid JSON: %v", err)
		}
		return errMalformedQuery("%v", err)
	}
	if jsonProto && dec.More() {
		return errMalformedJSON("unexpected data after the JSON object")
	}
	return nil
}

type handlerFunc func(f *Face, ctx context.Context, r *request) (any, *apiError)

// ServeHTTP implements http.Handler: it answers both the AWS JSON 1.0
// protocol (X-Amz-Target: AmazonSQS.<Operation>) and the Query protocol
// (form-encoded Action=<Operation>, XML answers).
func (f *Face) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	r := &request{reqID: message.NewID()}
	path := hr.URL.Path
	if f.cfg.PathPrefix != "" {
		if path != f.cfg.PathPrefix && !strings.HasPrefix(path, f.cfg.PathPrefix+"/") {
			http.NotFound(w, hr)
			return
		}
		path = strings.TrimPrefix(path, f.cfg.PathPrefix)
	}
	r.path = path
	r.base = f.baseURL(hr)
	target := hr.Header.Get("X-Amz-Target")
	r.json = target != ""
	if !r.json {
		ct, _, _ := mime.ParseMediaType(hr.Header.Get("Content-Type"))
		r.json = strings.HasPrefix(ct, "application/x-amz-json")
	}
	defer func() {
		if p := recover(); p != nil {
			f.log.Error("sqsface: panic serving request", "op", r.op, "panic", p)
			f.writeError(w, r, errInternal(fmt.Errorf("%v", p)))
		}
	}()
	bp := getBuffer()
	defer putBuffer(bp)
	body, err := readBody(*bp, http.MaxBytesReader(w, hr.Body, maxRequestBytes), hr.ContentLength)
	*bp = body
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			f.writeError(w, r, errBatchRequestTooLong(int(hr.ContentLength), maxRequestBytes))
			return
		}
		f.writeError(w, r, errMalformedQuery("cannot read the request body: %v", err))
		return
	}
	r.body = body
	if r.json {
		op, ok := strings.CutPrefix(target, "AmazonSQS.")
		if !ok || handlers[op] == nil {
			f.writeError(w, r, errUnknownOperation(target))
			return
		}
		r.op = op
	} else {
		if hr.Method != http.MethodPost && hr.Method != http.MethodGet {
			f.writeError(w, r, errInvalidAction(hr.Method))
			return
		}
		form, err := url.ParseQuery(hr.URL.RawQuery)
		if err != nil {
			f.writeError(w, r, errMalformedQuery("the query string is malformed: %v", err))
			return
		}
		if len(body) > 0 {
			bf, err := url.ParseQuery(string(body))
			if err != nil {
				f.writeError(w, r, errMalformedQuery("the form body is malformed: %v", err))
				return
			}
			for k, vs := range bf {
				form[k] = append(form[k], vs...)
			}
		}
		r.form = form
		r.op = form.Get("Action")
		if r.op == "" {
			f.writeError(w, r, errMissingParameter("Action"))
			return
		}
		if handlers[r.op] == nil {
			f.writeError(w, r, errInvalidAction(r.op))
			return
		}
	}
	if aerr := f.authenticate(hr, body); aerr != nil {
		f.writeError(w, r, aerr)
		return
	}
	if f.closed.Load() {
		f.writeError(w, r, errUnavailable(broker.ErrClosed))
		return
	}
	res, aerr := handlers[r.op](f, hr.Context(), r)
	if aerr != nil {
		f.writeError(w, r, aerr)
		return
	}
	f.writeResult(w, r, res)
}

func (f *Face) baseURL(hr *http.Request) string {
	if f.cfg.BaseURL != "" {
		return f.cfg.BaseURL
	}
	scheme := "http"
	if hr.TLS != nil || hr.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + hr.Host + f.cfg.PathPrefix
}

// getBuffer and putBuffer recycle the buffers of request bodies and JSON
// answers. Nothing decoded from a body refers to its bytes (strings and
// slices are copied out), so a buffer is reused once ServeHTTP returns.
var bufferPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBuffer: larger buffers are left to the garbage collector.
const maxPooledBuffer = 1 << 20

func getBuffer() *[]byte { return bufferPool.Get().(*[]byte) }

func putBuffer(bp *[]byte) {
	if cap(*bp) <= maxPooledBuffer {
		*bp = (*bp)[:0]
		bufferPool.Put(bp)
	}
}

// readBody reads all of rd into buf (from its start), sized at once from
// the request's Content-Length when known.
func readBody(buf []byte, rd io.Reader, contentLength int64) ([]byte, error) {
	buf = buf[:0]
	if contentLength > int64(cap(buf)) && contentLength <= maxRequestBytes {
		buf = make([]byte, 0, contentLength)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (f *Face) writeResult(w http.ResponseWriter, r *request, res any) {
	w.Header().Set("x-amzn-RequestId", r.reqID)
	if r.json {
		bp := getBuffer()
		defer putBuffer(bp)
		b := *bp
		switch v := res.(type) {
		case nil:
			b = append(b, "{}"...)
		case jsonAppender:
			b = v.appendJSON(b)
		default:
			var err error
			if b, err = json.Marshal(res); err != nil {
				f.writeError(w, r, errInternal(err))
				return
			}
		}
		*bp = b
		h := w.Header()
		h.Set("Content-Type", "application/x-amz-json-1.0")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
		return
	}
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(&buf)
	resp := xml.StartElement{Name: xml.Name{Local: r.op + "Response"}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: xmlNS}}}
	err := enc.EncodeToken(resp)
	if err == nil && res != nil {
		err = enc.EncodeElement(res, xml.StartElement{Name: xml.Name{Local: r.op + "Result"}})
	}
	if err == nil {
		err = enc.EncodeElement(struct {
			RequestID string `xml:"RequestId"`
		}{r.reqID}, xml.StartElement{Name: xml.Name{Local: "ResponseMetadata"}})
	}
	if err == nil {
		err = enc.EncodeToken(resp.End())
	}
	if err == nil {
		err = enc.Flush()
	}
	if err != nil {
		f.writeError(w, r, errInternal(err))
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = w.Write(buf.Bytes())
}

func (f *Face) writeError(w http.ResponseWriter, r *request, e *apiError) {
	if e.Status >= 500 {
		f.log.Warn("sqsface: request failed", "op", r.op, "code", e.Code, "err", e.Message)
	}
	h := w.Header()
	h.Set("x-amzn-RequestId", r.reqID)
	fault := "Receiver"
	if e.Sender {
		fault = "Sender"
	}
	if r.json {
		h.Set("Content-Type", "application/x-amz-json-1.0")
		h.Set("x-amzn-query-error", e.Code+";"+fault)
		w.WriteHeader(e.Status)
		b, _ := json.Marshal(map[string]string{"__type": "com.amazonaws.sqs#" + e.Shape, "message": e.Message})
		_, _ = w.Write(b)
		return
	}
	h.Set("Content-Type", "text/xml")
	w.WriteHeader(e.Status)
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	type errorBody struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
		Detail  string `xml:"Detail"`
	}
	_ = xml.NewEncoder(&buf).Encode(struct {
		XMLName   xml.Name  `xml:"ErrorResponse"`
		NS        string    `xml:"xmlns,attr"`
		Error     errorBody `xml:"Error"`
		RequestID string    `xml:"RequestId"`
	}{NS: xmlNS, Error: errorBody{Type: fault, Code: e.Code, Message: e.Message}, RequestID: r.reqID})
	_, _ = w.Write(buf.Bytes())
}
