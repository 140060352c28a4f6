package call

import (
	"math"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/typepb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	sbv1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
)

// The printer must print exactly what protojson prints (vanguard's JSON
// codec options), byte for byte.
func checkPrinter(t *testing.T, m proto.Message) {
	t.Helper()
	opts := NewStrictJSONCodec(protoregistry.GlobalTypes).(StrictJSON).MarshalOptions
	want, werr := opts.Marshal(m)
	got, ok := newJSONPrinter(opts).appendMessage(nil, m.ProtoReflect())
	if werr != nil {
		if ok {
			t.Fatalf("%T: protojson fails (%v) but the printer printed %s", m, werr, got)
		}
		return
	}
	if !ok {
		t.Fatalf("%T: the printer gave up; protojson printed %s", m, want)
	}
	if string(got) != string(want) {
		t.Fatalf("%T:\nprinter  %s\nprotojson %s", m, got, want)
	}
}

func printerCorpus(t testing.TB) []proto.Message {
	attrs, err := structpb.NewStruct(map[string]any{
		"n": 1.5, "tiny": 1e-7, "huge": 1e21, "neg": math.Copysign(0, -1), "s": "a\"b\\c\n\t\x01\x1f\u2028é😀<&>",
		"list": []any{true, nil, 3.0, "x", map[string]any{}}, "obj": map[string]any{"k": []any{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	detail, _ := anypb.New(&errdetails.ErrorInfo{Reason: "R", Domain: "d", Metadata: map[string]string{"b": "2", "a": "1"}})
	pfile := protodesc.ToFileDescriptorProto(paymentsv1.File_payments_v1_payments_proto)
	sfile := protodesc.ToFileDescriptorProto(sbv1.File_switchboard_v1_switchboard_proto)
	dfile := protodesc.ToFileDescriptorProto(descriptorpb.File_google_protobuf_descriptor_proto)
	return []proto.Message{
		&paymentsv1.Charge{},
		&paymentsv1.Charge{
			Id: "ch_1", Amount: &paymentsv1.Money{Currency: "USD", AmountMinor: -1250},
			Status: paymentsv1.ChargeStatus(2), CreatedAt: timestamppb.New(time.Unix(1700000000, 5)),
			Metadata:    map[string]string{"z": "last", "a": "first", "": "empty", "é": "\x00"},
			Source:      &paymentsv1.Charge_Card{Card: &paymentsv1.Card{Last4: "4242", ExpMonth: 12, ExpYear: 2030}},
			Description: wrapperspb.String("d"), Attributes: attrs, SettleAfter: durationpb.New(1500 * time.Millisecond),
			Tags: []string{"a", "", "c"},
		},
		&paymentsv1.Charge{Status: paymentsv1.ChargeStatus(99), Source: &paymentsv1.Charge_BankAccount{BankAccount: "DE00"}},
		&paymentsv1.ChargeResponse{Charge: &paymentsv1.Charge{Id: "x"}, Replayed: true},
		pfile, sfile, dfile,
		&descriptorpb.UninterpretedOption{DoubleValue: proto.Float64(math.Inf(-1)), PositiveIntValue: proto.Uint64(math.MaxUint64),
			NegativeIntValue: proto.Int64(math.MinInt64), StringValue: []byte{0, 1, 2, 250}},
		&descriptorpb.UninterpretedOption{DoubleValue: proto.Float64(math.NaN())},
		&descriptorpb.UninterpretedOption{DoubleValue: proto.Float64(123456789.125)},
		&typepb.Type{Name: "t", Fields: []*typepb.Field{{Kind: typepb.Field_TYPE_DOUBLE, Number: 3, Packed: true}}, Options: []*typepb.Option{{Name: "o", Value: detail}}},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "s"}, {Description: "d"}}},
		&sbv1.Message{},
		&paymentsv1.Charge{Tags: []string{"\xff"}}, // invalid UTF-8: protojson refuses
		&paymentsv1.Charge{Metadata: map[string]string{"\xfe": "x"}},
	}
}

func TestJSONPrinterMatchesProtojson(t *testing.T) {
	for _, m := range printerCorpus(t) {
		checkPrinter(t, m)
	}
}

// FuzzJSONPrinter decodes the input as several message types and checks
// the printer against protojson for each that decodes. The corpus seeds
// are the messages above.
func FuzzJSONPrinter(f *testing.F) {
	for _, m := range printerCorpus(f) {
		b, err := proto.Marshal(m)
		if err == nil {
			f.Add(b)
		}
	}
	types := []func() proto.Message{
		func() proto.Message { return &paymentsv1.Charge{} },
		func() proto.Message { return &descriptorpb.FileDescriptorProto{} },
		func() proto.Message { return &descriptorpb.UninterpretedOption{} },
		func() proto.Message { return &typepb.Type{} },
		func() proto.Message { return &sbv1.Message{} },
		func() proto.Message { return &structpb.Struct{} },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, nt := range types {
			m := nt()
			if proto.Unmarshal(data, m) != nil {
				continue
			}
			checkPrinter(t, m)
		}
	})
}

func TestSpaceAfterComma(t *testing.T) {
	b, _ := protojson.Marshal(&paymentsv1.Money{Currency: "X", AmountMinor: 1})
	want := ","
	if string(b) != `{"currency":"X","amountMinor":"1"}` {
		want = ", "
	}
	if got := spaceAfterComma(); got != want {
		t.Fatalf("spaceAfterComma() = %q; protojson printed %s", got, b)
	}
}
