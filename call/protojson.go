package call

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// GraphQL and SOAP values travel through the protobuf JSON mapping: a
// request is built as a JSON-shaped Go value, checked and parsed by
// protojson (strictly: unknown fields and bad values are InvalidArgument),
// and a response is printed by protojson and read back as plain Go values.
// The one difference from protojson's shape is a map, which GraphQL and
// SOAP see as a list of {key, value} entries.

var (
	unmarshalStrict = protojson.UnmarshalOptions{DiscardUnknown: false}
	marshalAll      = protojson.MarshalOptions{EmitUnpopulated: true}
)

func jsonNumber(s string) any { return json.Number(s) }

// isWKT reports a well-known type that protojson prints as a JSON scalar or
// free-form value (not an object of its fields).
func isWKT(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile() != nil && md.ParentFile().Package() == "google.protobuf" && md.FullName() != "google.protobuf.Empty"
}

// messageType is the type GraphQL, SOAP and topic calls build messages of
// md with: the generated one when it is registered for this very
// descriptor (reflection on generated messages, and their encoding and
// decoding, are several times faster), else a dynamic message type.
func messageType(md protoreflect.MessageDescriptor) protoreflect.MessageType {
	if mt, ok := generatedType(md); ok {
		return mt
	}
	return dynamicpb.NewMessageType(md)
}

// generatedType returns md's generated type when it is registered globally
// for this very descriptor.
func generatedType(md protoreflect.MessageDescriptor) (protoreflect.MessageType, bool) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	return mt, err == nil && mt.Descriptor() == md
}

// newMessage builds a request of type mt from a JSON-shaped value (maps as
// entry lists).
func newMessage(mt protoreflect.MessageType, v map[string]any) (proto.Message, error) {
	msg := mt.New().Interface()
	md := mt.Descriptor()
	if len(v) == 0 {
		return msg, nil
	}
	data, err := json.Marshal(entriesToObjects(md, v))
	if err != nil {
		return nil, invalid("request: %v", err)
	}
	if err := unmarshalStrict.Unmarshal(data, msg); err != nil {
		return nil, invalid("request for %s: %v", md.FullName(), trimProto(err))
	}
	return msg, nil
}

// messageValue prints a message as a JSON-shaped value (maps as entry
// lists): directly (objectValue, protovalue.go) when it can, else through
// protojson and encoding/json.
func messageValue(msg proto.Message) (map[string]any, error) {
	if v, ok := objectValue(msg.ProtoReflect()); ok {
		return v, nil
	}
	return printedMessageValue(msg)
}

// printedMessageValue prints a message as a JSON-shaped value through
// protojson and encoding/json.
func printedMessageValue(msg proto.Message) (map[string]any, error) {
	md := msg.ProtoReflect().Descriptor()
	data, err := marshalAll.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("call: print %s: %w", md.FullName(), err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return objectsToEntries(md, v), nil
}

// trimProto returns an error's message without protobuf-go's "proto:"
// prefix, which it follows with either a space or a no-break space (chosen
// per binary, so that no one matches its messages exactly).
func trimProto(err error) string {
	s := err.Error()
	if rest, ok := strings.CutPrefix(s, "proto:"); ok {
		if rest, ok := strings.CutPrefix(rest, " "); ok {
			return rest
		}
		if rest, ok := strings.CutPrefix(rest, "\u00a0"); ok {
			return rest
		}
	}
	return s
}

// entriesToObjects rewrites map fields from [{key, value}] to {key: value}.
func entriesToObjects(md protoreflect.MessageDescriptor, v map[string]any) map[string]any {
	out := make(map[string]any, len(v))
	for k, val := range v {
		fd := md.Fields().ByJSONName(k)
		if fd == nil || val == nil {
			out[k] = val
			continue
		}
		switch {
		case fd.IsMap():
			list, _ := val.([]any)
			obj := make(map[string]any, len(list))
			vd := fd.MapValue()
			for _, e := range list {
				em, _ := e.(map[string]any)
				key := fmt.Sprint(em["key"])
				ev := em["value"]
				if vd.Message() != nil && !isWKT(vd.Message()) {
					if m, ok := ev.(map[string]any); ok {
						ev = entriesToObjects(vd.Message(), m)
					}
				}
				obj[key] = ev
			}
			out[k] = obj
		case fd.Message() != nil && !isWKT(fd.Message()):
			out[k] = mapMessages(val, fd.IsList(), func(m map[string]any) map[string]any { return entriesToObjects(fd.Message(), m) })
		default:
			out[k] = val
		}
	}
	return out
}

// objectsToEntries rewrites map fields from {key: value} to [{key, value}],
// sorted by key.
func objectsToEntries(md protoreflect.MessageDescriptor, v map[string]any) map[string]any {
	for k, val := range v {
		fd := md.Fields().ByJSONName(k)
		if fd == nil || val == nil {
			continue
		}
		switch {
		case fd.IsMap():
			obj, _ := val.(map[string]any)
			keys := make([]string, 0, len(obj))
			for key := range obj {
				keys = append(keys, key)
			}
			sort.Strings(keys)
			list := make([]any, 0, len(obj))
			vd := fd.MapValue()
			for _, key := range keys {
				ev := obj[key]
				if vd.Message() != nil && !isWKT(vd.Message()) {
					if m, ok := ev.(map[string]any); ok {
						ev = objectsToEntries(vd.Message(), m)
					}
				}
				list = append(list, map[string]any{"key": key, "value": ev})
			}
			v[k] = list
		case fd.Message() != nil && !isWKT(fd.Message()):
			v[k] = mapMessages(val, fd.IsList(), func(m map[string]any) map[string]any { return objectsToEntries(fd.Message(), m) })
		}
	}
	return v
}

func mapMessages(val any, list bool, f func(map[string]any) map[string]any) any {
	if !list {
		if m, ok := val.(map[string]any); ok {
			return f(m)
		}
		return val
	}
	l, ok := val.([]any)
	if !ok {
		return val
	}
	out := make([]any, len(l))
	for i, e := range l {
		if m, ok := e.(map[string]any); ok {
			out[i] = f(m)
		} else {
			out[i] = e
		}
	}
	return out
}
