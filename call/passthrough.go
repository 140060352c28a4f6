package call

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// gRPC, gRPC-Web and Connect calls in binary protobuf need no transcoding:
// vanguard only checks them and hands them to the service's handler
// unchanged. That check (a header clone, protocol classification, header
// rewriting) and the ServeMux routing before it cost more than a third of
// a bare connect-go call, so Server.ServeHTTP hands such calls to the
// handler itself. It does so only when vanguard certainly would have
// passed the call through: everything else (JSON, other codecs, unknown
// compression, malformed timeouts, HTTP/1.1 gRPC, a stream type the
// protocol does not carry) still goes through the mux and vanguard, which
// transcode or refuse it exactly as before.

// directProcedures returns the methods whose RPC path mux routes to the
// catch-all "/" pattern (the transcoder) for both POST and GET: a WithRoute
// pattern that shadows a procedure keeps it off the fast path. It returns
// nil, disabling the fast path, when a route names a host, since routing
// then depends on the request's Host.
func directProcedures(mux *http.ServeMux, byProc map[string]*method, routes []route) map[string]*method {
	for _, r := range routes {
		p := r.pattern
		if i := strings.IndexAny(p, " \t"); i >= 0 {
			p = strings.TrimLeft(p[i:], " \t")
		}
		if !strings.HasPrefix(p, "/") {
			return nil
		}
	}
	out := make(map[string]*method, len(byProc))
	catchAll := func(method, path string) bool {
		_, pattern := mux.Handler(&http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}})
		return pattern == "/"
	}
	for proc, m := range byProc {
		if catchAll(http.MethodPost, proc) && catchAll(http.MethodGet, proc) {
			out[proc] = m
		}
	}
	return out
}

// passThrough returns the method of a request that vanguard would hand
// unchanged to the method's service handler, or nil; procs are the
// procedures it may return. Header lookups index the map with canonical
// keys, as vanguard's classification does.
func (s *Server) passThrough(r *http.Request, procs map[string]*method) *method {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return nil
	}
	m := procs[r.URL.Path]
	if m == nil {
		return nil
	}
	h := r.Header
	if r.Method == http.MethodGet {
		if connectGetPassThrough(r, m) {
			return m
		}
		return nil
	}
	ct := h["Content-Type"]
	if len(ct) != 1 {
		return nil
	}
	bidi := m.desc.IsStreamingClient() && m.desc.IsStreamingServer()
	if bidi && r.ProtoMajor < 2 {
		return nil
	}
	switch ct[0] {
	case "application/grpc", "application/grpc+proto":
		if r.ProtoMajor != 2 {
			return nil
		}
		fallthrough
	case "application/grpc-web", "application/grpc-web+proto":
		if passCompression(h["Grpc-Encoding"]) && identityOnly(h["Content-Encoding"]) && validGRPCTimeout(first(h["Grpc-Timeout"])) {
			return m
		}
	case "application/connect+proto":
		if m.streaming() && passCompression(h["Connect-Content-Encoding"]) && identityOnly(h["Content-Encoding"]) &&
			validConnectTimeout(first(h["Connect-Timeout-Ms"])) {
			return m
		}
	case "application/proto":
		if v := h["Connect-Protocol-Version"]; len(v) == 1 && v[0] == "1" && !m.streaming() &&
			passCompression(h["Content-Encoding"]) && validConnectTimeout(first(h["Connect-Timeout-Ms"])) {
			return m
		}
	}
	return nil
}

// connectGetPassThrough reports a Connect unary GET call in binary
// protobuf (without a Content-Type, as Connect clients send it) of a
// NO_SIDE_EFFECTS method, which vanguard passes through.
func connectGetPassThrough(r *http.Request, m *method) bool {
	h := r.Header
	if _, ok := h["Content-Type"]; ok || m.streaming() || !m.noSideEffects() || !identityOnly(h["Content-Encoding"]) ||
		!validConnectTimeout(first(h["Connect-Timeout-Ms"])) {
		return false
	}
	q := r.URL.Query()
	if v := h["Connect-Protocol-Version"]; !(len(v) == 1 && v[0] == "1") && q.Get("connect") != "v1" {
		return false
	}
	return q.Get("encoding") == "proto" && passCompression([]string{q.Get("compression")})
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// identityOnly reports an absent or identity encoding header.
func identityOnly(v []string) bool {
	e := first(v)
	return e == "" || e == "identity"
}

// passCompression reports a request compression that vanguard passes
// through: none, or gzip (its default, which every mounted service accepts).
func passCompression(v []string) bool {
	return identityOnly(v) || first(v) == "gzip"
}

// validConnectTimeout reports a Connect-Timeout-Ms value vanguard accepts.
func validConnectTimeout(v string) bool {
	if v == "" {
		return true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return err == nil && n >= 0
}

// validGRPCTimeout reports a Grpc-Timeout value vanguard accepts: at most
// eight digits and a unit, and at most 8 hours.
func validGRPCTimeout(v string) bool {
	if v == "" {
		return true
	}
	if len(v) < 2 || !strings.ContainsRune("HMSmun", rune(v[len(v)-1])) {
		return false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 || n > 99999999 {
		return false
	}
	return v[len(v)-1] != 'H' || n <= 8
}
