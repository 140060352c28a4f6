package consume

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"math/rand/v2"

	"github.com/switchboard-dev/switchboard/message"
)

// HeaderTraceParent is the W3C Trace Context header carried in message
// headers from publisher to handler.
const HeaderTraceParent = "traceparent"

// HeaderTraceState is the W3C tracestate header, forwarded unchanged.
const HeaderTraceState = "tracestate"

type traceKey struct{}

// TraceParent returns the traceparent of the span a handler runs in (a child
// of the message's traceparent, or a new trace when the message had none),
// or "" outside a handler or a context made by WithTraceParent.
func TraceParent(ctx context.Context) string {
	s, _ := ctx.Value(traceKey{}).(string)
	return s
}

// WithTraceParent returns ctx carrying traceparent tp, for publishers that
// start their own trace (an HTTP handler forwarding its request's header).
func WithTraceParent(ctx context.Context, tp string) context.Context {
	if !validTraceParent(tp) {
		return ctx
	}
	return context.WithValue(ctx, traceKey{}, tp)
}

// InjectTrace sets m's traceparent header from ctx unless m has one. It
// copies the header map before writing, so a map shared with the caller is
// never modified.
func InjectTrace(ctx context.Context, m *message.Message) {
	tp := TraceParent(ctx)
	if tp == "" || m.Header(HeaderTraceParent) != "" {
		return
	}
	m.Headers = maps.Clone(m.Headers)
	m.SetHeader(HeaderTraceParent, tp)
}

// childTraceParent returns a traceparent for a new span under parent (same
// trace ID and flags, new span ID), or a new sampled trace when parent is
// missing or malformed.
func childTraceParent(parent string) string {
	var span [8]byte
	binary.LittleEndian.PutUint64(span[:], rand.Uint64()|1)
	if validTraceParent(parent) {
		return parent[:36] + hex.EncodeToString(span[:]) + parent[52:]
	}
	var trace [16]byte
	binary.LittleEndian.PutUint64(trace[:8], rand.Uint64()|1)
	binary.LittleEndian.PutUint64(trace[8:], rand.Uint64())
	return "00-" + hex.EncodeToString(trace[:]) + "-" + hex.EncodeToString(span[:]) + "-01"
}

// validTraceParent checks the version-00 layout:
// 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, IDs not all zero.
func validTraceParent(s string) bool {
	if len(s) != 55 || s[0:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return false
	}
	if !isHex(s[3:35]) || !isHex(s[36:52]) || !isHex(s[53:55]) {
		return false
	}
	return s[3:35] != "00000000000000000000000000000000" && s[36:52] != "0000000000000000"
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
