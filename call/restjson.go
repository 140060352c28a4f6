package call

import (
	"encoding/base64"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// jsonPrinter prints a message exactly as protojson does with opts
// (EmitUnpopulated, the options of vanguard's JSON codec), several times
// faster: protojson sorts the fields of every message it prints through
// an interface, and allocates as it goes. Its rules, from protojson:
//
//   - fields in declaration order; a field of a oneof (proto3 optional
//     included) only when set; another unset field with presence is
//     null, any other unset field its zero value;
//   - field names are JSON names; strings escape '"', '\\' and control
//     characters only; 64-bit integers are strings; floating point
//     numbers as encoding/json prints them, NaN and the infinities as
//     strings; bytes standard base64; enums their value names (numbers
//     when unknown; google.protobuf.NullValue null); maps objects with
//     sorted keys;
//   - a comma is followed by a space or not, as protojson decided for
//     this binary (it varies its output on purpose; see spaceAfterComma).
//
// Messages that protojson prints its own way (the well-known types of
// package google.protobuf) or that may hold extensions are printed by
// protojson itself, in place. Invalid UTF-8 makes the printer give up, so
// that protojson reports its own error.
type jsonPrinter struct {
	opts  protojson.MarshalOptions
	comma string
}

func newJSONPrinter(opts protojson.MarshalOptions) *jsonPrinter {
	return &jsonPrinter{opts: opts, comma: spaceAfterComma()}
}

// spaceAfterComma returns the separator protojson writes between values
// in this binary: "," or ", ".
func spaceAfterComma() string {
	lv, _ := structpb.NewList([]any{1, 2})
	b, _ := protojson.Marshal(lv)
	if strings.Contains(string(b), ", ") {
		return ", "
	}
	return ","
}

// appendMessage appends m's JSON to b, or reports false (b is then to be
// discarded).
func (p *jsonPrinter) appendMessage(b []byte, m protoreflect.Message) ([]byte, bool) {
	md := m.Descriptor()
	if md.ParentFile() != nil && md.ParentFile().Package() == wktPackage || md.ExtensionRanges().Len() > 0 {
		out, err := p.opts.MarshalAppend(b, m.Interface())
		return out, err == nil
	}
	b = append(b, '{')
	fds := md.Fields()
	n := 0
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		has := m.Has(fd)
		if !has && fd.ContainingOneof() != nil {
			continue
		}
		if n > 0 {
			b = append(b, p.comma...)
		}
		n++
		var ok bool
		if b, ok = appendJSONString(b, fd.JSONName()); !ok {
			return b, false
		}
		b = append(b, ':')
		if !has && fd.HasPresence() {
			b = append(b, "null"...)
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			b, ok = p.appendList(b, fd, v.List())
		case fd.IsMap():
			b, ok = p.appendMap(b, fd, v.Map())
		default:
			b, ok = p.appendSingular(b, fd, v)
		}
		if !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

func (p *jsonPrinter) appendList(b []byte, fd protoreflect.FieldDescriptor, l protoreflect.List) ([]byte, bool) {
	b = append(b, '[')
	for i := 0; i < l.Len(); i++ {
		if i > 0 {
			b = append(b, p.comma...)
		}
		var ok bool
		if b, ok = p.appendSingular(b, fd, l.Get(i)); !ok {
			return b, false
		}
	}
	return append(b, ']'), true
}

func (p *jsonPrinter) appendMap(b []byte, fd protoreflect.FieldDescriptor, mp protoreflect.Map) ([]byte, bool) {
	keys := make([]protoreflect.MapKey, 0, mp.Len())
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, compareMapKeys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, p.comma...)
		}
		var ok bool
		if b, ok = appendJSONString(b, k.String()); !ok {
			return b, false
		}
		b = append(b, ':')
		if b, ok = p.appendSingular(b, fd.MapValue(), mp.Get(k)); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

// compareMapKeys orders keys as protojson does: false before true,
// numbers ascending, strings by bytes.
func compareMapKeys(x, y protoreflect.MapKey) int {
	switch xv := x.Interface().(type) {
	case bool:
		yv := y.Bool()
		switch {
		case xv == yv:
			return 0
		case !xv:
			return -1
		}
		return 1
	case int32, int64:
		xi, yi := x.Int(), y.Int()
		switch {
		case xi < yi:
			return -1
		case xi > yi:
			return 1
		}
		return 0
	case uint32, uint64:
		xu, yu := x.Uint(), y.Uint()
		switch {
		case xu < yu:
			return -1
		case xu > yu:
			return 1
		}
		return 0
	}
	return strings.Compare(x.String(), y.String())
}

func (p *jsonPrinter) appendSingular(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), true
	case protoreflect.StringKind:
		return appendJSONString(b, v.String())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendInt(b, v.Int(), 10), '"'), true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendUint(b, v.Uint(), 10), '"'), true
	case protoreflect.FloatKind:
		return appendJSONFloat(b, v.Float(), 32), true
	case protoreflect.DoubleKind:
		return appendJSONFloat(b, v.Float(), 64), true
	case protoreflect.BytesKind:
		raw := v.Bytes()
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, raw)
		return append(b, '"'), true
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return append(b, "null"...), true
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendJSONString(b, string(ev.Name()))
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), true
	case protoreflect.MessageKind:
		return p.appendMessage(b, v.Message())
	}
	return b, false // groups: protojson's own way
}

// appendJSONString appends s quoted as protojson quotes it, or reports
// false for invalid UTF-8 (protojson refuses it).
func appendJSONString(b []byte, s string) ([]byte, bool) {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return b, false
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\')
		switch c {
		case '"', '\\':
			b = append(b, c)
		case '\b':
			b = append(b, 'b')
		case '\f':
			b = append(b, 'f')
		case '\n':
			b = append(b, 'n')
		case '\r':
			b = append(b, 'r')
		case '\t':
			b = append(b, 't')
		default:
			b = append(b, 'u')
			b = append(b, "0000"[1+(bits.Len32(uint32(c))-1)/4:]...)
			b = strconv.AppendUint(b, uint64(c), 16)
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"'), true
}

// appendJSONFloat appends n as protojson prints it.
func appendJSONFloat(b []byte, n float64, bitSize int) []byte {
	switch {
	case math.IsNaN(n):
		return append(b, `"NaN"`...)
	case math.IsInf(n, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(n, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(n); abs != 0 {
		if bitSize == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bitSize == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, n, format, -1, bitSize)
	if format == 'e' {
		// "1e-07" → "1e-7", as encoding/json writes it.
		if k := len(b); k >= 4 && b[k-4] == 'e' && b[k-3] == '-' && b[k-2] == '0' {
			b[k-2] = b[k-1]
			b = b[:k-1]
		}
	}
	return b
}
