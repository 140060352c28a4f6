package call

import (
	"slices"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// REST calls go through vanguard, which turns each into a Connect call
// inside the process (for a method without side effects, a GET with the
// message base64'd into the query string), runs the handler, decodes its
// protobuf answer and prints it as JSON. That round trip costs about three
// times a bare connect-go call. For the common REST shape (a route of
// literal segments and whole-segment string variables, no query string,
// no body or a JSON body of the whole message or of one message field, no
// response_body) Server serves the call itself, as vanguard would: the same codec reads and prints
// JSON, path variables are set after the body, the handler gets a Connect
// unary call in binary protobuf (its interceptors, deadlines and errors
// apply unchanged), and the answer has vanguard's status, headers and body
// (rest_serve.go). Whatever the fast path is not sure of goes to vanguard
// untouched: a route another route could shadow, a query string, an
// escaped or unusual path, a header vanguard interprets, a body it cannot
// parse (vanguard then reads the same bytes and reports the error its own
// way). The equivalence is tested request by request against vanguard
// (rest_fast_test.go).

// WithoutRESTFastPath makes the Server send every REST call through
// vanguard, as it did before the fast path existed: to compare the two,
// or should a REST call ever be answered differently by them (please
// report it).
func WithoutRESTFastPath() Option { return optionFunc(func(c *config) { c.slowREST = true }) }

// restRoute is one google.api.http binding the fast path serves.
type restRoute struct {
	m    *method
	verb string                         // HTTP method
	segs []string                       // literal segments; "" where a variable is
	vars []protoreflect.FieldDescriptor // the fields of the variables, in path order
	body bool                           // the route has a body: "*" or bodyField
	// bodyField is the message field a body: "field" route reads the body
	// into (nil: body "*", the whole message).
	bodyField protoreflect.FieldDescriptor
	codec     StrictJSON // reads and prints JSON as vanguard's codec does
	// printer prints responses as codec would, faster (restjson.go).
	printer *jsonPrinter
}

// restRoutes are the fast path's routes by HTTP method.
type restRoutes map[string][]*restRoute

// template is a parsed path template: literal segments, "*" (one
// segment) and "**" (the rest); verb is the ":verb" suffix.
type template struct {
	segs []string
	vars map[int]string // segment index → field path, for {field} variables
	verb string
	ok   bool // only literals and {field} variables
}

// parseTemplate parses a google.api.http path template. A malformed one
// gives nil (vanguard refuses it when the server is built).
func parseTemplate(path string) *template {
	if !strings.HasPrefix(path, "/") {
		return nil
	}
	t := &template{vars: map[int]string{}, ok: true}
	rest := path[1:]
	// The verb follows the last ':' outside braces.
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.ContainsRune(rest[i:], '}') {
		t.verb, rest = rest[i+1:], rest[:i]
		t.ok = false
	}
	for len(rest) > 0 || len(t.segs) == 0 {
		if strings.HasPrefix(rest, "{") {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return nil
			}
			v := rest[1:end]
			rest = strings.TrimPrefix(rest[end+1:], "/")
			if _, pattern, found := strings.Cut(v, "="); found {
				t.ok = false
				for p := range strings.SplitSeq(pattern, "/") {
					t.segs = append(t.segs, p)
				}
				continue
			}
			if strings.Contains(v, ".") {
				t.ok = false
			}
			t.vars[len(t.segs)] = v
			t.segs = append(t.segs, "*")
			continue
		}
		seg, after, _ := strings.Cut(rest, "/")
		if seg == "*" || seg == "**" {
			t.ok = false
		}
		t.segs = append(t.segs, seg)
		rest = after
		if len(rest) == 0 {
			break
		}
	}
	return t
}

// overlaps reports whether some request path could match both templates.
func overlaps(a, b []string) bool {
	for len(a) > 0 && len(b) > 0 {
		if a[0] == "**" || b[0] == "**" {
			return true
		}
		if a[0] != "*" && b[0] != "*" && a[0] != b[0] {
			return false
		}
		a, b = a[1:], b[1:]
	}
	return (len(a) == 0 || a[0] == "**") && (len(b) == 0 || b[0] == "**")
}

// httpRules returns a method's google.api.http binding and its additional
// bindings.
func httpRules(md protoreflect.MethodDescriptor) []*annotations.HttpRule {
	opts := md.Options()
	if opts == nil {
		return nil
	}
	rule, ok := proto.GetExtension(opts, annotations.E_Http).(*annotations.HttpRule)
	if !ok || rule == nil {
		return nil
	}
	return append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...)
}

// ruleVerb returns the HTTP method and path of a rule ("" for custom).
func ruleVerb(r *annotations.HttpRule) (string, string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return "GET", p.Get
	case *annotations.HttpRule_Put:
		return "PUT", p.Put
	case *annotations.HttpRule_Post:
		return "POST", p.Post
	case *annotations.HttpRule_Delete:
		return "DELETE", p.Delete
	case *annotations.HttpRule_Patch:
		return "PATCH", p.Patch
	case *annotations.HttpRule_Custom:
		return "", p.Custom.GetPath()
	}
	return "", ""
}

// buildRESTRoutes returns the routes the fast path may serve: bindings of
// unary methods whose messages are generated types, with only literal
// segments and {field} variables of singular string fields, body "", "*"
// or a singular message field, no response_body, and no other binding (of
// any HTTP method) that could match a path of this one and has other
// segments.
func buildRESTRoutes(services []*service) restRoutes {
	type binding struct {
		m    *method
		rule *annotations.HttpRule
		verb string // "" for a custom method
		t    *template
	}
	var all []binding
	for _, svc := range services {
		for _, m := range svc.methods {
			for _, rule := range httpRules(m.desc) {
				verb, path := ruleVerb(rule)
				t := parseTemplate(path)
				if t == nil {
					continue
				}
				all = append(all, binding{m, rule, verb, t})
			}
		}
	}
	codec := NewStrictJSONCodec(protoregistry.GlobalTypes).(StrictJSON)
	printer := newJSONPrinter(codec.MarshalOptions)
	out := restRoutes{}
	for i, b := range all {
		verb := b.verb
		if verb == "" || !b.t.ok || b.m.streaming() || b.rule.GetResponseBody() != "" ||
			!generated(b.m.desc.Input()) || !generated(b.m.desc.Output()) {
			continue
		}
		// Vanguard routes by a tree of segments, literal before variable,
		// without coming back once a node matched the path: only routes
		// with the very same segments (another HTTP method) can share
		// paths with this one without possibly taking them from it.
		shadowed := false
		for j, o := range all {
			if i != j && o.t.verb == "" && overlaps(b.t.segs, o.t.segs) && !slices.Equal(b.t.segs, o.t.segs) {
				shadowed = true
				break
			}
		}
		if shadowed {
			continue
		}
		fields := b.m.desc.Input().Fields()
		rt := &restRoute{m: b.m, verb: verb, codec: codec, printer: printer}
		switch body := b.rule.GetBody(); body {
		case "":
		case "*":
			rt.body = true
		default:
			// A singular message field (not google.api.HttpBody) at the top.
			fd := fields.ByName(protoreflect.Name(body))
			if fd == nil || fd.Kind() != protoreflect.MessageKind || fd.Cardinality() == protoreflect.Repeated ||
				fd.Message().FullName() == "google.api.HttpBody" {
				continue
			}
			rt.body, rt.bodyField = true, fd
		}
		ok := true
		for k, seg := range b.t.segs {
			name, isVar := b.t.vars[k]
			if !isVar {
				rt.segs = append(rt.segs, seg)
				continue
			}
			fd := fields.ByName(protoreflect.Name(name))
			if fd == nil || fd.Kind() != protoreflect.StringKind || fd.Cardinality() == protoreflect.Repeated {
				ok = false
				break
			}
			rt.segs = append(rt.segs, "")
			rt.vars = append(rt.vars, fd)
		}
		if ok {
			out[verb] = append(out[verb], rt)
		}
	}
	return out
}

// generated reports a message whose generated type is registered globally
// (vanguard then resolves with the global types, as the fast path's codec
// does).
func generated(md protoreflect.MessageDescriptor) bool {
	_, ok := generatedType(md)
	return ok
}

// match returns the route of a request path and the values of its
// variables, or nil. The path must be plain: "/"-separated non-empty
// segments of unreserved characters (RFC 3986), so that vanguard would
// read the same segments from it.
func (rs restRoutes) match(verb, path string, vals []string) (*restRoute, []string) {
	routes := rs[verb]
	if len(routes) == 0 || len(path) < 2 || path[0] != '/' {
		return nil, nil
	}
	for i := 1; i < len(path); i++ {
		c := path[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' ||
			c == '/' && path[i-1] != '/') {
			return nil, nil
		}
	}
	if path[len(path)-1] == '/' {
		return nil, nil
	}
	p := path[1:]
	n := strings.Count(p, "/") + 1
next:
	for _, rt := range routes {
		if len(rt.segs) != n {
			continue
		}
		vals = vals[:0]
		rest := p
		for _, lit := range rt.segs {
			seg, after, _ := strings.Cut(rest, "/")
			rest = after
			if lit == "" {
				vals = append(vals, seg)
			} else if lit != seg {
				continue next
			}
		}
		return rt, vals
	}
	return nil, nil
}
