package call

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"github.com/graphql-go/graphql"
	"github.com/graphql-go/graphql/gqlerrors"
	"github.com/graphql-go/graphql/language/ast"
	"github.com/graphql-go/graphql/language/parser"
	"github.com/graphql-go/graphql/language/source"
)

// GraphQLLimits bound what one GraphQL operation may ask for. An operation
// over a limit is refused before any method is called, with
// errors[].extensions.code QUERY_TOO_DEEP or QUERY_TOO_COSTLY.
//
// Depth counts nested selection sets (a root field is depth 1). Cost: each
// selected field costs 1, each root field (one method call) CallCost more,
// and the selection under a list field counts ListSize times. Fragments are
// expanded; @skip/@include are ignored (the cost is an upper bound).
// Introspection (__schema, __type) is not counted.
type GraphQLLimits struct {
	MaxDepth int // default 10
	MaxCost  int // default 1000
	ListSize int // default 10
	CallCost int // default 10
}

// DefaultGraphQLLimits are the limits of a Server without WithGraphQLLimits.
var DefaultGraphQLLimits = GraphQLLimits{MaxDepth: 10, MaxCost: 1000, ListSize: 10, CallCost: 10}

type graphqlHandler struct {
	s        *Server
	schema   graphql.Schema
	limits   GraphQLLimits
	prepared *preparedCache // accepted operations (graphql_cache.go)
}

func newGraphQLHandler(s *Server) (*graphqlHandler, error) {
	l := s.cfg.limits
	d := DefaultGraphQLLimits
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxCost <= 0 {
		l.MaxCost = d.MaxCost
	}
	if l.ListSize <= 0 {
		l.ListSize = d.ListSize
	}
	if l.CallCost < 0 {
		l.CallCost = 0
	}
	g := &graphqlHandler{s: s, limits: l, prepared: newPreparedCache()}
	schema, err := buildSchema(s, g)
	if err != nil {
		return nil, err
	}
	g.schema = schema
	return g, nil
}

// gqlError is an error with extensions.code, as GraphQL clients read it.
type gqlError struct {
	msg string
	ext map[string]any
}

func (e *gqlError) Error() string              { return e.msg }
func (e *gqlError) Extensions() map[string]any { return e.ext }
func newGQLError(code, msg string) *gqlError {
	return &gqlError{msg: msg, ext: map[string]any{"code": code}}
}
func (e *gqlError) with(k string, v any) *gqlError { e.ext[k] = v; return e }

// toGQLError maps a call error with the error table.
func toGQLError(err error) error {
	code := CodeOf(err)
	return newGQLError(MappingOf(code).GraphQL, messageOf(err)).with("connectCode", codeName(code))
}

func formatted(e *gqlError) gqlerrors.FormattedError {
	return gqlerrors.FormattedError{Message: e.msg, Extensions: e.ext, Locations: nil}
}

// gqlRequest is a GraphQL-over-HTTP (and graphql-transport-ws subscribe)
// payload.
type gqlRequest struct {
	Query         string          `json:"query"`
	OperationName string          `json:"operationName,omitempty"`
	Variables     map[string]any  `json:"variables,omitempty"`
	Extensions    json.RawMessage `json:"extensions,omitempty"`
}

// prepared is a parsed, validated, measured operation.
type prepared struct {
	doc    *ast.Document
	opType string // "query", "mutation", "subscription"
}

// prepare parses, validates and measures a request, or finds the operation
// it accepted before for the same query and operation name. The errors it
// returns are request errors: nothing was called.
func (g *graphqlHandler) prepare(req *gqlRequest) (*prepared, []gqlerrors.FormattedError) {
	k := preparedKey{req.Query, req.OperationName}
	if p := g.prepared.get(k); p != nil {
		return p, nil
	}
	p, errs := g.check(req)
	if errs == nil {
		g.prepared.put(k, p)
	}
	return p, errs
}

// check parses, validates and measures a request.
func (g *graphqlHandler) check(req *gqlRequest) (*prepared, []gqlerrors.FormattedError) {
	if strings.TrimSpace(req.Query) == "" {
		return nil, []gqlerrors.FormattedError{formatted(newGQLError(GraphQLBadRequest, "the request has no query"))}
	}
	doc, err := parser.Parse(parser.ParseParams{Source: source.NewSource(&source.Source{Body: []byte(req.Query), Name: "GraphQL request"})})
	if err != nil {
		fe := gqlerrors.FormatError(err)
		fe.Extensions = map[string]any{"code": GraphQLParseFailed}
		return nil, []gqlerrors.FormattedError{fe}
	}
	if vr := graphql.ValidateDocument(&g.schema, doc, nil); !vr.IsValid {
		for i := range vr.Errors {
			vr.Errors[i].Extensions = map[string]any{"code": GraphQLValidationFailed}
		}
		return nil, vr.Errors
	}
	op, frags := operation(doc, req.OperationName)
	if op == nil {
		return nil, []gqlerrors.FormattedError{formatted(newGQLError(GraphQLBadRequest,
			fmt.Sprintf("no operation named %q in the document", req.OperationName)))}
	}
	var root graphql.Type = g.schema.QueryType()
	switch op.Operation {
	case ast.OperationTypeMutation:
		root = g.schema.MutationType()
	case ast.OperationTypeSubscription:
		root = g.schema.SubscriptionType()
	}
	m := &meter{g: g, frags: frags}
	depth, cost := m.walk(op.SelectionSet, root, 0, true, 0)
	l := g.limits
	if depth > l.MaxDepth {
		return nil, []gqlerrors.FormattedError{formatted(newGQLError(GraphQLTooDeep,
			fmt.Sprintf("query depth %d exceeds the limit of %d; select less deeply nested fields or split the query", depth, l.MaxDepth)).
			with("depth", depth).with("limit", l.MaxDepth))}
	}
	if cost > l.MaxCost {
		return nil, []gqlerrors.FormattedError{formatted(newGQLError(GraphQLTooCostly,
			fmt.Sprintf("query cost %d exceeds the limit of %d (each field costs 1, each method call %d more, a list field's selection counts %d times); select fewer fields or split the query",
				cost, l.MaxCost, l.CallCost, l.ListSize)).with("cost", cost).with("limit", l.MaxCost))}
	}
	return &prepared{doc: doc, opType: op.Operation}, nil
}

func operation(doc *ast.Document, name string) (*ast.OperationDefinition, map[string]*ast.FragmentDefinition) {
	var op *ast.OperationDefinition
	frags := map[string]*ast.FragmentDefinition{}
	for _, d := range doc.Definitions {
		switch d := d.(type) {
		case *ast.OperationDefinition:
			if name == "" || (d.Name != nil && d.Name.Value == name) {
				if op == nil {
					op = d
				}
			}
		case *ast.FragmentDefinition:
			frags[d.Name.Value] = d
		}
	}
	return op, frags
}

// meter measures depth and cost.
type meter struct {
	g     *graphqlHandler
	frags map[string]*ast.FragmentDefinition
}

const costCap = 1 << 40

func (m *meter) walk(ss *ast.SelectionSet, parent graphql.Type, depth int, root bool, nest int) (maxDepth, cost int) {
	if ss == nil || nest > 64 {
		return depth, 0
	}
	maxDepth = depth
	for _, sel := range ss.Selections {
		switch sel := sel.(type) {
		case *ast.Field:
			name := sel.Name.Value
			if strings.HasPrefix(name, "__") {
				continue
			}
			d, c := depth+1, 1
			if root {
				c += m.g.limits.CallCost
			}
			var t graphql.Type
			if obj, ok := parent.(*graphql.Object); ok {
				if fd := obj.Fields()[name]; fd != nil {
					t = fd.Type
				}
			}
			isList := false
		unwrap:
			for {
				switch tt := t.(type) {
				case *graphql.List:
					isList, t = true, tt.OfType
				case *graphql.NonNull:
					t = tt.OfType
				default:
					break unwrap
				}
			}
			if sel.SelectionSet != nil {
				sd, sc := m.walk(sel.SelectionSet, t, d, false, nest+1)
				if isList {
					sc *= m.g.limits.ListSize
				}
				c += sc
				d = max(d, sd)
			}
			maxDepth, cost = max(maxDepth, d), min(cost+c, costCap)
		case *ast.InlineFragment:
			t := parent
			if sel.TypeCondition != nil {
				t = m.g.schema.Type(sel.TypeCondition.Name.Value)
			}
			sd, sc := m.walk(sel.SelectionSet, t, depth, root, nest+1)
			maxDepth, cost = max(maxDepth, sd), min(cost+sc, costCap)
		case *ast.FragmentSpread:
			f := m.frags[sel.Name.Value]
			if f == nil {
				continue
			}
			sd, sc := m.walk(f.SelectionSet, m.g.schema.Type(f.TypeCondition.Name.Value), depth, root, nest+1)
			maxDepth, cost = max(maxDepth, sd), min(cost+sc, costCap)
		}
	}
	return maxDepth, cost
}

type headerKey struct{}

// forwarded are the headers of a GraphQL or SOAP request that reach the
// handler: credentials, idempotency keys, tracing and custom X- headers.
func forwarded(h http.Header) http.Header {
	out := http.Header{}
	for k, v := range h {
		switch {
		case k == "Authorization", k == "Idempotency-Key", k == "Traceparent", k == "Tracestate",
			strings.HasPrefix(k, "X-"):
			out[k] = v
		}
	}
	return out
}

func headersFrom(ctx context.Context) http.Header {
	h, _ := ctx.Value(headerKey{}).(http.Header)
	return h
}

func (g *graphqlHandler) resolveFn(m *method) graphql.FieldResolveFn {
	return func(p graphql.ResolveParams) (any, error) {
		req, err := newMessage(m.in, p.Args)
		if err != nil {
			return nil, toGQLError(err)
		}
		res, err := m.svc.invoker.unary(p.Context, m.desc, req, headersFrom(p.Context))
		if err != nil {
			return nil, toGQLError(err)
		}
		v, err := messageValue(res)
		if err != nil {
			return nil, toGQLError(err)
		}
		return v, nil
	}
}

func (g *graphqlHandler) subscribeFn(m *method) graphql.FieldResolveFn {
	return func(p graphql.ResolveParams) (any, error) {
		req, err := newMessage(m.in, p.Args)
		if err != nil {
			return nil, toGQLError(err)
		}
		ctx := p.Context
		stream, err := m.svc.invoker.serverStream(ctx, m.desc, req, headersFrom(ctx))
		if err != nil {
			return nil, toGQLError(err)
		}
		ch := make(chan any)
		go func() {
			defer close(ch)
			defer stream.Close()
			for stream.Receive() {
				var ev any
				v, err := messageValue(stream.Msg().Message)
				if err != nil {
					ev = toGQLError(err)
				} else {
					ev = v
				}
				select {
				case ch <- ev:
				case <-ctx.Done():
					return
				}
			}
			if err := stream.Err(); err != nil && ctx.Err() == nil {
				select {
				case ch <- toGQLError(err):
				case <-ctx.Done():
				}
			}
		}()
		return ch, nil
	}
}

const gqlResponseType = "application/graphql-response+json"

// ServeHTTP serves GraphQL over HTTP (GET and POST) and, on a WebSocket
// upgrade, graphql-transport-ws.
func (g *graphqlHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		g.serveWS(w, r)
		return
	}
	var req gqlRequest
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		req.Query, req.OperationName = q.Get("query"), q.Get("operationName")
		if v := q.Get("variables"); v != "" {
			if err := json.Unmarshal([]byte(v), &req.Variables); err != nil {
				g.writeErrors(w, r, http.StatusBadRequest, formatted(newGQLError(GraphQLBadRequest, "variables is not a JSON object: "+err.Error())))
				return
			}
		}
	case http.MethodPost:
		body, err := g.s.readBody(w, r)
		if CodeOf(err) == connect.CodeResourceExhausted {
			// Over WithMaxBodyBytes: the error table's code, with 413.
			g.writeErrors(w, r, http.StatusRequestEntityTooLarge, formatted(toGQLError(err).(*gqlError)))
			return
		}
		if err != nil {
			g.writeErrors(w, r, http.StatusBadRequest, formatted(newGQLError(GraphQLBadRequest, "request body: "+err.Error())))
			return
		}
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/graphql") &&
			!strings.HasPrefix(r.Header.Get("Content-Type"), "application/graphql-response") {
			req.Query = string(body)
			break
		}
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			g.writeErrors(w, r, http.StatusBadRequest, formatted(newGQLError(GraphQLBadRequest,
				"malformed GraphQL request: "+err.Error()+`; send {"query": "...", "variables": {...}, "operationName": "..."}`)))
			return
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		g.writeErrors(w, r, http.StatusMethodNotAllowed, formatted(newGQLError(GraphQLBadRequest, "use GET or POST")))
		return
	}
	p, errs := g.prepare(&req)
	if errs != nil {
		status := http.StatusOK // GraphQL over HTTP: application/json answers 200
		if strings.Contains(r.Header.Get("Accept"), gqlResponseType) {
			status = http.StatusBadRequest
		}
		g.writeErrors(w, r, status, errs...)
		return
	}
	switch {
	case p.opType == ast.OperationTypeSubscription:
		g.writeErrors(w, r, http.StatusBadRequest, formatted(newGQLError(GraphQLBadRequest,
			"subscriptions are served over WebSocket (graphql-transport-ws) at /graphql")))
		return
	case p.opType == ast.OperationTypeMutation && r.Method == http.MethodGet:
		w.Header().Set("Allow", "POST")
		g.writeErrors(w, r, http.StatusMethodNotAllowed, formatted(newGQLError(GraphQLBadRequest, "mutations need POST")))
		return
	}
	ctx := context.WithValue(r.Context(), headerKey{}, forwarded(r.Header))
	res := graphql.Execute(graphql.ExecuteParams{Schema: g.schema, AST: p.doc, OperationName: req.OperationName, Args: req.Variables, Context: ctx})
	g.write(w, r, http.StatusOK, res)
}

func (g *graphqlHandler) writeErrors(w http.ResponseWriter, r *http.Request, status int, errs ...gqlerrors.FormattedError) {
	g.write(w, r, status, &graphql.Result{Errors: errs})
}

func (g *graphqlHandler) write(w http.ResponseWriter, r *http.Request, status int, res *graphql.Result) {
	ct := "application/json"
	if strings.Contains(r.Header.Get("Accept"), gqlResponseType) {
		ct = gqlResponseType
	}
	w.Header().Set("Content-Type", ct+"; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resultJSON(res))
}

// resultJSON drops "data": null of request errors (GraphQL over HTTP).
func resultJSON(res *graphql.Result) any {
	out := map[string]any{}
	if res.Data != nil {
		out["data"] = res.Data
	}
	if len(res.Errors) > 0 {
		out["errors"] = res.Errors
	}
	return out
}
