package call

import (
	"fmt"
	"strings"

	"github.com/graphql-go/graphql"
	"github.com/graphql-go/graphql/language/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The GraphQL schema is built at run time from the service descriptors:
//
//   - a unary method with idempotency_level = NO_SIDE_EFFECTS is a Query
//     field, any other unary method a Mutation field, a server-streaming
//     method a Subscription field (client and bidi streams are not served);
//   - the field is named {package}_{Method} with dots as underscores
//     (payments_v1_GetCharge), or {package}_{Service}_{Method} when two
//     services of one package share a method name;
//   - each field of the request message is an argument; the result is the
//     response message;
//   - a message is an object type (and an input type "…Input") named by
//     its full name with dots as underscores; fields keep their JSON names.
//
// Scalars follow the protobuf JSON mapping: 32-bit integers are Int, 64-bit
// ones String (JSON numbers lose precision above 2^53), floats Float, bytes
// base64 String. Enums are GraphQL enums with the proto value names. A oneof
// is its member fields, all nullable; setting two members is an error. A
// map is a list of {key, value} entries. Well-known types: Timestamp is the
// scalar Timestamp (RFC 3339), Duration the scalar Duration ("1.5s"),
// wrappers their nullable inner scalar, Struct, Value, ListValue and Any the
// scalar JSON, FieldMask a String, Empty an object with one field _empty.

// schemaBuilder turns descriptors into GraphQL types, once per message.
type schemaBuilder struct {
	outputs map[protoreflect.FullName]graphql.Output
	inputs  map[protoreflect.FullName]graphql.Input
	enums   map[protoreflect.FullName]*graphql.Enum
}

func typeName(n protoreflect.FullName) string { return strings.ReplaceAll(string(n), ".", "_") }

var (
	timestampScalar = stringScalar("Timestamp", "An instant as an RFC 3339 string (google.protobuf.Timestamp), e.g. \"2026-01-02T15:04:05Z\".")
	durationScalar  = stringScalar("Duration", "A duration as seconds with an \"s\" suffix (google.protobuf.Duration), e.g. \"1.5s\".")
	jsonScalar      = graphql.NewScalar(graphql.ScalarConfig{
		Name:         "JSON",
		Description:  "Any JSON value (google.protobuf.Struct, Value, ListValue, Any).",
		Serialize:    func(v any) any { return v },
		ParseValue:   func(v any) any { return v },
		ParseLiteral: astValue,
	})
)

func stringScalar(name, desc string) *graphql.Scalar {
	return graphql.NewScalar(graphql.ScalarConfig{
		Name:        name,
		Description: desc,
		Serialize:   func(v any) any { return v },
		ParseValue: func(v any) any {
			if s, ok := v.(string); ok {
				return s
			}
			return nil
		},
		ParseLiteral: func(v ast.Value) any {
			if s, ok := v.(*ast.StringValue); ok {
				return s.Value
			}
			return nil
		},
	})
}

// astValue turns a literal into a plain Go value (for the JSON scalar).
func astValue(v ast.Value) any {
	switch v := v.(type) {
	case *ast.StringValue:
		return v.Value
	case *ast.BooleanValue:
		return v.Value
	case *ast.IntValue:
		return jsonNumber(v.Value)
	case *ast.FloatValue:
		return jsonNumber(v.Value)
	case *ast.EnumValue:
		return v.Value
	case *ast.ListValue:
		out := make([]any, 0, len(v.Values))
		for _, e := range v.Values {
			out = append(out, astValue(e))
		}
		return out
	case *ast.ObjectValue:
		out := make(map[string]any, len(v.Fields))
		for _, f := range v.Fields {
			out[f.Name.Value] = astValue(f.Value)
		}
		return out
	}
	return nil
}

// wktScalar maps a well-known type to its scalar, if it is one.
func wktScalar(md protoreflect.MessageDescriptor) graphql.Output {
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		return timestampScalar
	case "google.protobuf.Duration":
		return durationScalar
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any":
		return jsonScalar
	case "google.protobuf.FieldMask", "google.protobuf.StringValue", "google.protobuf.BytesValue",
		"google.protobuf.Int64Value", "google.protobuf.UInt64Value":
		return graphql.String
	case "google.protobuf.Int32Value", "google.protobuf.UInt32Value":
		return graphql.Int
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue":
		return graphql.Float
	case "google.protobuf.BoolValue":
		return graphql.Boolean
	}
	return nil
}

func (b *schemaBuilder) enum(ed protoreflect.EnumDescriptor) *graphql.Enum {
	if e, ok := b.enums[ed.FullName()]; ok {
		return e
	}
	vals := graphql.EnumValueConfigMap{}
	for i := 0; i < ed.Values().Len(); i++ {
		n := string(ed.Values().Get(i).Name())
		vals[n] = &graphql.EnumValueConfig{Value: n}
	}
	e := graphql.NewEnum(graphql.EnumConfig{Name: typeName(ed.FullName()), Values: vals,
		Description: fmt.Sprintf("The protobuf enum %s.", ed.FullName())})
	b.enums[ed.FullName()] = e
	return e
}

// scalarOf is the GraphQL type of a non-message, non-list field kind.
func (b *schemaBuilder) scalarOf(fd protoreflect.FieldDescriptor) graphql.Output {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return graphql.Boolean
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return graphql.Int
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return graphql.Float
	case protoreflect.EnumKind:
		return b.enum(fd.Enum())
	}
	return graphql.String // strings, bytes (base64), 64-bit integers (decimal)
}

// output is the output type of one value of fd (a list element for a
// repeated field).
func (b *schemaBuilder) outputValue(fd protoreflect.FieldDescriptor) graphql.Output {
	if fd.Message() != nil {
		if s := wktScalar(fd.Message()); s != nil {
			return s
		}
		return b.object(fd.Message())
	}
	return b.scalarOf(fd)
}

func (b *schemaBuilder) outputField(fd protoreflect.FieldDescriptor) graphql.Output {
	if fd.IsMap() {
		return graphql.NewList(graphql.NewNonNull(b.object(fd.Message())))
	}
	t := b.outputValue(fd)
	if fd.IsList() {
		return graphql.NewList(graphql.NewNonNull(t))
	}
	return t
}

// object is the output type of a message.
func (b *schemaBuilder) object(md protoreflect.MessageDescriptor) graphql.Output {
	if o, ok := b.outputs[md.FullName()]; ok {
		return o
	}
	obj := graphql.NewObject(graphql.ObjectConfig{
		Name:        typeName(md.FullName()),
		Description: fmt.Sprintf("The protobuf message %s.", md.FullName()),
		Fields: graphql.FieldsThunk(func() graphql.Fields {
			fs := graphql.Fields{}
			for i := 0; i < md.Fields().Len(); i++ {
				fd := md.Fields().Get(i)
				fs[fd.JSONName()] = &graphql.Field{Type: b.outputField(fd), Description: fieldDoc(fd)}
			}
			if len(fs) == 0 {
				fs["_empty"] = &graphql.Field{Type: graphql.Boolean, Description: "Always null: the message has no fields.",
					Resolve: func(graphql.ResolveParams) (any, error) { return nil, nil }}
			}
			return fs
		}),
	})
	b.outputs[md.FullName()] = obj
	return obj
}

func fieldDoc(fd protoreflect.FieldDescriptor) string {
	if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
		return fmt.Sprintf("Member of oneof %s: set at most one.", od.Name())
	}
	if fd.IsMap() {
		return "A protobuf map, as a list of {key, value} entries."
	}
	return ""
}

// inputField is the input type of fd, or nil when it has none (a message
// without fields).
func (b *schemaBuilder) inputField(fd protoreflect.FieldDescriptor) graphql.Input {
	var t graphql.Input
	switch {
	case fd.IsMap():
		return graphql.NewList(graphql.NewNonNull(b.input(fd.Message())))
	case fd.Message() != nil:
		if s := wktScalar(fd.Message()); s != nil {
			t = s.(graphql.Input)
		} else if fd.Message().Fields().Len() == 0 {
			return nil
		} else {
			t = b.input(fd.Message())
		}
	default:
		t = b.scalarOf(fd).(graphql.Input)
	}
	if fd.IsList() {
		return graphql.NewList(graphql.NewNonNull(t))
	}
	return t
}

// input is the input type of a message.
func (b *schemaBuilder) input(md protoreflect.MessageDescriptor) graphql.Input {
	if in, ok := b.inputs[md.FullName()]; ok {
		return in
	}
	in := graphql.NewInputObject(graphql.InputObjectConfig{
		Name:        typeName(md.FullName()) + "Input",
		Description: fmt.Sprintf("The protobuf message %s, as input.", md.FullName()),
		Fields: graphql.InputObjectConfigFieldMapThunk(func() graphql.InputObjectConfigFieldMap {
			fs := graphql.InputObjectConfigFieldMap{}
			for i := 0; i < md.Fields().Len(); i++ {
				fd := md.Fields().Get(i)
				if t := b.inputField(fd); t != nil {
					fs[fd.JSONName()] = &graphql.InputObjectFieldConfig{Type: t, Description: fieldDoc(fd)}
				}
			}
			return fs
		}),
	})
	b.inputs[md.FullName()] = in
	return in
}

// args are the arguments of a method: the fields of its request.
func (b *schemaBuilder) args(md protoreflect.MessageDescriptor) graphql.FieldConfigArgument {
	args := graphql.FieldConfigArgument{}
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		if t := b.inputField(fd); t != nil {
			args[fd.JSONName()] = &graphql.ArgumentConfig{Type: t, Description: fieldDoc(fd)}
		}
	}
	return args
}

// fieldNames picks the GraphQL field name of every served method.
func fieldNames(svcs []*service) map[*method]string {
	count := map[string]int{}
	short := func(m *method) string {
		return typeName(m.svc.desc.ParentFile().Package()) + "_" + string(m.desc.Name())
	}
	for _, svc := range svcs {
		for _, m := range svc.methods {
			count[short(m)]++
		}
	}
	out := map[*method]string{}
	for _, svc := range svcs {
		for _, m := range svc.methods {
			n := short(m)
			if count[n] > 1 {
				n = typeName(svc.desc.FullName()) + "_" + string(m.desc.Name())
			}
			out[m] = n
		}
	}
	return out
}

// buildSchema makes the schema of every mounted service.
func buildSchema(s *Server, g *graphqlHandler) (graphql.Schema, error) {
	b := &schemaBuilder{
		outputs: map[protoreflect.FullName]graphql.Output{},
		inputs:  map[protoreflect.FullName]graphql.Input{},
		enums:   map[protoreflect.FullName]*graphql.Enum{},
	}
	query, mutation, subscription := graphql.Fields{}, graphql.Fields{}, graphql.Fields{}
	names := fieldNames(s.services)
	for _, svc := range s.services {
		for _, m := range svc.methods {
			md := m.desc
			desc := fmt.Sprintf("%s (%s)", m.procedure, idempotencyLabel(md))
			f := &graphql.Field{Type: b.object(md.Output()), Args: b.args(md.Input()), Description: desc}
			switch {
			case md.IsStreamingClient():
				continue
			case md.IsStreamingServer():
				f.Subscribe = g.subscribeFn(m)
				f.Resolve = func(p graphql.ResolveParams) (any, error) {
					if err, ok := p.Source.(error); ok {
						return nil, err
					}
					return p.Source, nil
				}
				subscription[names[m]] = f
			case m.noSideEffects():
				f.Resolve = g.resolveFn(m)
				query[names[m]] = f
			default:
				f.Resolve = g.resolveFn(m)
				mutation[names[m]] = f
			}
		}
	}
	cfg := graphql.SchemaConfig{}
	if len(query) == 0 {
		// A schema needs a Query type.
		query["_services"] = &graphql.Field{Type: graphql.NewList(graphql.String),
			Resolve: func(graphql.ResolveParams) (any, error) { return serviceNames(s), nil }}
	}
	cfg.Query = graphql.NewObject(graphql.ObjectConfig{Name: "Query", Fields: query})
	if len(mutation) > 0 {
		cfg.Mutation = graphql.NewObject(graphql.ObjectConfig{Name: "Mutation", Fields: mutation})
	}
	if len(subscription) > 0 {
		cfg.Subscription = graphql.NewObject(graphql.ObjectConfig{Name: "Subscription", Fields: subscription})
	}
	schema, err := graphql.NewSchema(cfg)
	if err != nil {
		return graphql.Schema{}, fmt.Errorf("call: GraphQL schema: %w", err)
	}
	return schema, nil
}

func serviceNames(s *Server) []any {
	out := make([]any, 0, len(s.services))
	for _, svc := range s.services {
		out = append(out, string(svc.desc.FullName()))
	}
	return out
}

func idempotencyLabel(md protoreflect.MethodDescriptor) string {
	switch idempotencyOf(md) {
	case idempotencyNoSideEffects:
		return "no side effects"
	case idempotencyIdempotent:
		return "idempotent"
	}
	return "not idempotent"
}
