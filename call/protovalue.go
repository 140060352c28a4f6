package call

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// GraphQL and SOAP read a response as the value protojson prints
// (EmitUnpopulated) and encoding/json reads back, maps as entry lists (see
// protojson.go). Printing and parsing that JSON cost more than the call
// itself, so objectValue builds the same value from the message directly:
//
//   - every field of the message by JSON name; an unset field that is in
//     a oneof (or is proto3 optional) is left out, another unset field
//     with presence is nil, any other takes its zero value;
//   - 32-bit integers and floating point numbers are float64 (a float is
//     the float64 its shortest decimal form parses to; NaN and the
//     infinities are the strings "NaN", "Infinity", "-Infinity"), 64-bit
//     integers decimal strings, bytes base64 strings, enums their value
//     names (numbers when unknown; google.protobuf.NullValue nil);
//   - lists are []any, maps lists of {key, value} sorted by key;
//   - a message of package google.protobuf is printed and read back
//     (protojson gives the well-known types their own JSON forms, and
//     such messages are not rewritten to entry lists).
//
// Anything else protojson could print differently or refuse (extensions,
// invalid UTF-8, a well-known type at the top) makes objectValue report
// false, and messageValue takes the JSON path.

// wktPackage is the package whose messages keep protojson's own printing.
const wktPackage = "google.protobuf"

// objectValue returns m as messageValue would, or false.
func objectValue(m protoreflect.Message) (map[string]any, bool) {
	md := m.Descriptor()
	if md.ParentFile() != nil && md.ParentFile().Package() == wktPackage || md.ExtensionRanges().Len() > 0 {
		return nil, false
	}
	fds := md.Fields()
	out := make(map[string]any, fds.Len())
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		if !m.Has(fd) {
			if fd.ContainingOneof() != nil {
				continue
			}
			if fd.HasPresence() {
				out[fd.JSONName()] = nil
				continue
			}
		}
		v, ok := fieldValue(fd, m.Get(fd))
		if !ok {
			return nil, false
		}
		out[fd.JSONName()] = v
	}
	return out, true
}

// fieldValue is the value of a field: a list, a map (as entries) or one
// value.
func fieldValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (any, bool) {
	switch {
	case fd.IsMap():
		mp := v.Map()
		keys := make([]string, 0, mp.Len())
		vals := make(map[string]protoreflect.Value, mp.Len())
		ok := true
		mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			ks := k.String()
			if ok = utf8.ValidString(ks); ok {
				keys = append(keys, ks)
				vals[ks] = v
			}
			return ok
		})
		if !ok {
			return nil, false
		}
		sort.Strings(keys)
		list := make([]any, 0, len(keys))
		for _, k := range keys {
			ev, ok := singularValue(fd.MapValue(), vals[k])
			if !ok {
				return nil, false
			}
			list = append(list, map[string]any{"key": k, "value": ev})
		}
		return list, true
	case fd.IsList():
		l := v.List()
		list := make([]any, 0, l.Len())
		for i := 0; i < l.Len(); i++ {
			ev, ok := singularValue(fd, l.Get(i))
			if !ok {
				return nil, false
			}
			list = append(list, ev)
		}
		return list, true
	}
	return singularValue(fd, v)
}

// singularValue is one value of fd's kind.
func singularValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (any, bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return v.Bool(), true
	case protoreflect.StringKind:
		s := v.String()
		return s, utf8.ValidString(s)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return float64(v.Int()), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return float64(v.Uint()), true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.FormatInt(v.Int(), 10), true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.FormatUint(v.Uint(), 10), true
	case protoreflect.FloatKind:
		return floatValue(v.Float(), 32), true
	case protoreflect.DoubleKind:
		return floatValue(v.Float(), 64), true
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes()), true
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return nil, true
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name()), true
		}
		return float64(v.Enum()), true
	case protoreflect.MessageKind, protoreflect.GroupKind:
		m := v.Message()
		if md := m.Descriptor(); md.ParentFile() != nil && md.ParentFile().Package() == wktPackage {
			return printedValue(m)
		}
		return objectValue(m)
	}
	return nil, false
}

// floatValue is the number protojson prints for f, as encoding/json reads
// it back.
func floatValue(f float64, bitSize int) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case bitSize == 64:
		return f
	}
	g, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'g', -1, 32), 64)
	return g
}

// printedValue prints m with protojson and reads it back.
func printedValue(m protoreflect.Message) (any, bool) {
	data, err := marshalAll.Marshal(m.Interface())
	if err != nil {
		return nil, false
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, false
	}
	return v, true
}
