package consume

import (
	"encoding/json"
	"fmt"
	"mime"
	"reflect"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-dev/switchboard/message"
)

// Content types the runtime decodes. A type's "+json" suffix
// (application/cloudevents+json) counts as JSON, and an empty content type
// is taken as JSON.
const (
	ContentTypeJSON     = "application/json"
	ContentTypeProtobuf = "application/protobuf"
)

// kind of a content type.
type codecKind int

const (
	codecUnknown codecKind = iota
	codecJSON
	codecProto
)

func kindOf(contentType string) codecKind {
	switch contentType { // the common exact spellings, without parsing
	case "", ContentTypeJSON:
		return codecJSON
	case ContentTypeProtobuf:
		return codecProto
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(contentType))
	}
	switch {
	case mt == "application/json", mt == "text/json", strings.HasSuffix(mt, "+json"):
		return codecJSON
	case mt == "application/protobuf", mt == "application/x-protobuf", mt == "application/vnd.google.protobuf", strings.HasSuffix(mt, "+proto"):
		return codecProto
	}
	return codecUnknown
}

// Decode decodes m's payload into v (a pointer) by m's content type: JSON
// (encoding/json, or protojson when v is a proto.Message) or protobuf (v must
// be a proto.Message). Errors are *DecodeError.
func Decode(m *message.Message, v any) error {
	fail := func(err error) error {
		return &DecodeError{ContentType: m.ContentType, Type: fmt.Sprintf("%T", v), Err: err}
	}
	pm, isProto := v.(proto.Message)
	switch kindOf(m.ContentType) {
	case codecJSON:
		var err error
		if isProto {
			err = protojson.Unmarshal(m.Payload, pm)
		} else {
			err = json.Unmarshal(m.Payload, v)
		}
		if err != nil {
			return fail(err)
		}
		return nil
	case codecProto:
		if !isProto {
			return fail(fmt.Errorf("the type is not a proto.Message"))
		}
		if err := proto.Unmarshal(m.Payload, pm); err != nil {
			return fail(err)
		}
		return nil
	}
	return fail(fmt.Errorf("unsupported content type; publish %s or %s", ContentTypeJSON, ContentTypeProtobuf))
}

// Encode encodes v as a message payload: protobuf when v is a proto.Message,
// JSON otherwise. It returns a message with Payload and ContentType set.
func Encode(v any) (message.Message, error) {
	if pm, ok := v.(proto.Message); ok {
		b, err := proto.Marshal(pm)
		if err != nil {
			return message.Message{}, fmt.Errorf("encode %T as protobuf: %w", v, err)
		}
		return message.Message{Payload: b, ContentType: ContentTypeProtobuf}, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return message.Message{}, fmt.Errorf("encode %T as JSON: %w", v, err)
	}
	return message.Message{Payload: b, ContentType: ContentTypeJSON}, nil
}

// decoderFor returns a function that allocates a new T and decodes into it.
func typeName(t reflect.Type) string { return t.String() }

func fmtAny(v any) string {
	if err, ok := v.(error); ok {
		return err.Error()
	}
	return fmt.Sprint(v)
}
