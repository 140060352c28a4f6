package call

import (
	"math"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/typepb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
)

// kindsProto has a field of every kind and shape messageValue handles.
const kindsProto = `
name: "calltest/kinds.proto" package: "calltest" syntax: "proto3"
dependency: ["google/protobuf/struct.proto", "google/protobuf/timestamp.proto", "google/protobuf/duration.proto",
  "google/protobuf/any.proto", "google/protobuf/field_mask.proto", "google/protobuf/empty.proto",
  "google/protobuf/wrappers.proto", "google/protobuf/type.proto"]
enum_type { name: "Color" value { name: "COLOR_UNSPECIFIED" number: 0 } value { name: "RED" number: 1 } }
message_type {
  name: "Child"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "name" }
  field { name: "tags" number: 2 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".calltest.Child.TagsEntry" json_name: "tags" }
  field { name: "kids" number: 3 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".calltest.Child" json_name: "kids" }
  nested_type { name: "TagsEntry" options { map_entry: true }
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "key" }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_INT64 json_name: "value" } }
}
message_type {
  name: "Kinds"
  field { name: "b" number: 1 label: LABEL_OPTIONAL type: TYPE_BOOL json_name: "b" }
  field { name: "s" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "s" }
  field { name: "i32" number: 3 label: LABEL_OPTIONAL type: TYPE_INT32 json_name: "i32" }
  field { name: "si32" number: 4 label: LABEL_OPTIONAL type: TYPE_SINT32 json_name: "si32" }
  field { name: "sf32" number: 5 label: LABEL_OPTIONAL type: TYPE_SFIXED32 json_name: "sf32" }
  field { name: "u32" number: 6 label: LABEL_OPTIONAL type: TYPE_UINT32 json_name: "u32" }
  field { name: "f32" number: 7 label: LABEL_OPTIONAL type: TYPE_FIXED32 json_name: "f32" }
  field { name: "i64" number: 8 label: LABEL_OPTIONAL type: TYPE_INT64 json_name: "i64" }
  field { name: "si64" number: 9 label: LABEL_OPTIONAL type: TYPE_SINT64 json_name: "si64" }
  field { name: "sf64" number: 10 label: LABEL_OPTIONAL type: TYPE_SFIXED64 json_name: "sf64" }
  field { name: "u64" number: 11 label: LABEL_OPTIONAL type: TYPE_UINT64 json_name: "u64" }
  field { name: "f64" number: 12 label: LABEL_OPTIONAL type: TYPE_FIXED64 json_name: "f64" }
  field { name: "fl" number: 13 label: LABEL_OPTIONAL type: TYPE_FLOAT json_name: "fl" }
  field { name: "db" number: 14 label: LABEL_OPTIONAL type: TYPE_DOUBLE json_name: "db" }
  field { name: "by" number: 15 label: LABEL_OPTIONAL type: TYPE_BYTES json_name: "by" }
  field { name: "en" number: 16 label: LABEL_OPTIONAL type: TYPE_ENUM type_name: ".calltest.Color" json_name: "en" }
  field { name: "nv" number: 17 label: LABEL_OPTIONAL type: TYPE_ENUM type_name: ".google.protobuf.NullValue" json_name: "nv" }
  field { name: "child" number: 18 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".calltest.Child" json_name: "child" }
  field { name: "rs" number: 19 label: LABEL_REPEATED type: TYPE_STRING json_name: "rs" }
  field { name: "rfl" number: 20 label: LABEL_REPEATED type: TYPE_FLOAT json_name: "rfl" }
  field { name: "rchild" number: 21 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".calltest.Child" json_name: "rchild" }
  field { name: "ren" number: 22 label: LABEL_REPEATED type: TYPE_ENUM type_name: ".calltest.Color" json_name: "ren" }
  field { name: "m_int" number: 23 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".calltest.Kinds.MIntEntry" json_name: "mInt" }
  field { name: "m_bool" number: 24 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".calltest.Kinds.MBoolEntry" json_name: "mBool" }
  field { name: "m_val" number: 25 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".calltest.Kinds.MValEntry" json_name: "mVal" }
  field { name: "ts" number: 26 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Timestamp" json_name: "ts" }
  field { name: "du" number: 27 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Duration" json_name: "du" }
  field { name: "st" number: 28 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Struct" json_name: "st" }
  field { name: "an" number: 29 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Any" json_name: "an" }
  field { name: "fm" number: 30 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.FieldMask" json_name: "fm" }
  field { name: "em" number: 31 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Empty" json_name: "em" }
  field { name: "wr" number: 32 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.StringValue" json_name: "wr" }
  field { name: "ty" number: 33 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Type" json_name: "ty" }
  field { name: "opt" number: 34 label: LABEL_OPTIONAL type: TYPE_INT32 json_name: "opt" oneof_index: 1 proto3_optional: true }
  field { name: "c_str" number: 35 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "cStr" oneof_index: 0 }
  field { name: "c_child" number: 36 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".calltest.Child" json_name: "cChild" oneof_index: 0 }
  field { name: "named" number: 37 label: LABEL_OPTIONAL type: TYPE_INT32 json_name: "customName" }
  field { name: "rts" number: 38 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".google.protobuf.Timestamp" json_name: "rts" }
  oneof_decl { name: "choice" }
  oneof_decl { name: "_opt" }
  nested_type { name: "MIntEntry" options { map_entry: true }
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_INT32 json_name: "key" }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".calltest.Child" json_name: "value" } }
  nested_type { name: "MBoolEntry" options { map_entry: true }
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_BOOL json_name: "key" }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "value" } }
  nested_type { name: "MValEntry" options { map_entry: true }
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING json_name: "key" }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Value" json_name: "value" } }
}
`

// kindsTypes builds the Kinds and Child message types.
func kindsTypes(t *testing.T) (kinds, child protoreflect.MessageDescriptor) {
	t.Helper()
	var fdp descriptorpb.FileDescriptorProto
	if err := prototext.Unmarshal([]byte(kindsProto), &fdp); err != nil {
		t.Fatal(err)
	}
	fd, err := protodesc.NewFile(&fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Kinds"), fd.Messages().ByName("Child")
}

// set sets fields of m by name from Go values (protoreflect.ValueOf).
func set(m *dynamicpb.Message, fields map[string]any) *dynamicpb.Message {
	for name, v := range fields {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		switch v := v.(type) {
		case proto.Message:
			m.Set(fd, protoreflect.ValueOfMessage(v.ProtoReflect()))
		case protoreflect.Value:
			m.Set(fd, v)
		default:
			m.Set(fd, protoreflect.ValueOf(v))
		}
	}
	return m
}

func TestObjectValueMatchesProtoJSON(t *testing.T) {
	kinds, childDesc := kindsTypes(t)
	child := func(name string) *dynamicpb.Message {
		c := set(dynamicpb.NewMessage(childDesc), map[string]any{"name": name})
		tags := c.Mutable(childDesc.Fields().ByName("tags")).Map()
		tags.Set(protoreflect.ValueOfString("b").MapKey(), protoreflect.ValueOfInt64(-2))
		tags.Set(protoreflect.ValueOfString("a").MapKey(), protoreflect.ValueOfInt64(math.MaxInt64))
		kids := c.Mutable(childDesc.Fields().ByName("kids")).List()
		kids.Append(protoreflect.ValueOfMessage(dynamicpb.NewMessage(childDesc)))
		return c
	}
	any1, err := anypb.New(timestamppb.New(time.Unix(1, 5)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := structpb.NewStruct(map[string]any{"a": 1.5, "b": []any{"x", nil, true}, "c": map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	full := set(dynamicpb.NewMessage(kinds), map[string]any{
		"b": true, "s": "héllo \u2028 \"q\"", "i32": int32(math.MinInt32), "si32": int32(-7), "sf32": int32(math.MaxInt32),
		"u32": uint32(math.MaxUint32), "f32": uint32(7), "i64": int64(math.MinInt64), "si64": int64(-1), "sf64": int64(1 << 60),
		"u64": uint64(math.MaxUint64), "f64": uint64(0), "fl": float32(0.1), "db": 1e21, "by": []byte{0, 1, 254, 255},
		"en": protoreflect.ValueOfEnum(99), "nv": protoreflect.ValueOfEnum(0), "child": child("c"),
		"ts": timestamppb.New(time.Unix(1700000000, 120000000)), "du": durationpb.New(-1500 * time.Millisecond),
		"st": st, "an": any1, "fm": &fieldmaskpb.FieldMask{Paths: []string{"a.b", "c"}}, "em": &emptypb.Empty{},
		"wr": wrapperspb.String("w"), "ty": &typepb.Type{Name: "t", Fields: []*typepb.Field{{Name: "f", Number: 3}}},
		"opt": int32(0), "c_child": child("oneof"), "named": int32(5),
	})
	lists := map[string][]protoreflect.Value{
		"rs":     {protoreflect.ValueOfString("x"), protoreflect.ValueOfString("")},
		"rfl":    {protoreflect.ValueOfFloat32(float32(math.NaN())), protoreflect.ValueOfFloat32(float32(math.Inf(1))), protoreflect.ValueOfFloat32(float32(math.Inf(-1))), protoreflect.ValueOfFloat32(float32(math.Copysign(0, -1))), protoreflect.ValueOfFloat32(1e-7), protoreflect.ValueOfFloat32(3.4e38), protoreflect.ValueOfFloat32(16777217)},
		"rchild": {protoreflect.ValueOfMessage(child("r1")), protoreflect.ValueOfMessage(dynamicpb.NewMessage(childDesc))},
		"ren":    {protoreflect.ValueOfEnum(1), protoreflect.ValueOfEnum(-3)},
		"rts":    {protoreflect.ValueOfMessage(timestamppb.New(time.Unix(0, 0)).ProtoReflect())},
	}
	for name, vals := range lists {
		l := full.Mutable(kinds.Fields().ByName(protoreflect.Name(name))).List()
		for _, v := range vals {
			l.Append(v)
		}
	}
	mInt := full.Mutable(kinds.Fields().ByName("m_int")).Map()
	for _, k := range []int32{10, -1, 2, 0} {
		mInt.Set(protoreflect.ValueOfInt32(k).MapKey(), protoreflect.ValueOfMessage(child("k")))
	}
	mBool := full.Mutable(kinds.Fields().ByName("m_bool")).Map()
	mBool.Set(protoreflect.ValueOfBool(true).MapKey(), protoreflect.ValueOfString("t"))
	mBool.Set(protoreflect.ValueOfBool(false).MapKey(), protoreflect.ValueOfString("f"))
	mVal := full.Mutable(kinds.Fields().ByName("m_val")).Map()
	mVal.Set(protoreflect.ValueOfString("n").MapKey(), protoreflect.ValueOfMessage(structpb.NewNullValue().ProtoReflect()))
	mVal.Set(protoreflect.ValueOfString("l").MapKey(), protoreflect.ValueOfMessage(structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(2)}}).ProtoReflect()))

	oneofStr := set(dynamicpb.NewMessage(kinds), map[string]any{"c_str": "", "db": math.Copysign(0, -1), "fl": float32(math.Inf(1))})
	charge := &paymentsv1.GetChargeResponse{Charge: &paymentsv1.Charge{
		Id: "ch_1", Amount: &paymentsv1.Money{Currency: "USD", AmountMinor: 1250}, Status: paymentsv1.ChargeStatus_CHARGE_STATUS_SUCCEEDED,
		CreatedAt: timestamppb.New(time.Unix(1700000000, 1)), Metadata: map[string]string{"z": "1", "a": "2"},
		Description: wrapperspb.String("d"), Attributes: st, SettleAfter: durationpb.New(time.Hour), Tags: []string{"t"},
		Source: &paymentsv1.Charge_Card{Card: &paymentsv1.Card{Last4: "4242", ExpMonth: 12, ExpYear: 2030}},
	}}
	for name, msg := range map[string]proto.Message{
		"kinds empty": dynamicpb.NewMessage(kinds), "kinds full": full, "kinds oneof string": oneofStr,
		"child empty": dynamicpb.NewMessage(childDesc), "charge": charge, "charge empty": &paymentsv1.GetChargeResponse{},
		"charge no source": &paymentsv1.Charge{Id: "x"},
	} {
		got, ok := objectValue(msg.ProtoReflect())
		if !ok {
			t.Errorf("%s: objectValue declined", name)
			continue
		}
		want, err := printedMessageValue(msg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %#v\nwant %#v", name, got, want)
		}
	}

	// What protojson refuses or prints its own way is left to it.
	badString := set(dynamicpb.NewMessage(kinds), map[string]any{"s": "\xff"})
	badKey := dynamicpb.NewMessage(childDesc)
	badKey.Mutable(childDesc.Fields().ByName("tags")).Map().Set(protoreflect.ValueOfString("\xff").MapKey(), protoreflect.ValueOfInt64(1))
	for name, msg := range map[string]proto.Message{
		"invalid UTF-8": badString, "invalid UTF-8 key": badKey, "well-known type": timestamppb.Now(),
		"extendable": &descriptorpb.FieldOptions{},
	} {
		if _, ok := objectValue(msg.ProtoReflect()); ok {
			t.Errorf("%s: objectValue did not decline", name)
		}
	}
	if _, err := messageValue(badString); err == nil {
		t.Error("invalid UTF-8: messageValue printed it")
	}
}

// Errors lose protobuf-go's "proto:" prefix whichever space follows it.
func TestTrimProto(t *testing.T) {
	for _, s := range []string{"proto: bad", "proto:\u00a0bad", "bad"} {
		if got := trimProto(errString(s)); got != "bad" {
			t.Errorf("trimProto(%q) = %q", s, got)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
