package sqsface

import (
	"encoding/base64"
	"maps"
	"slices"
	"unicode/utf8"
)

// Writing the JSON answers of the message operations without reflection.
//
// Each appendJSON below writes byte for byte what json.Marshal writes for
// the same value (member order, omitempty, sorted map keys, HTML-safe
// string escaping, base64 for []byte, null for nil slices); the tests
// compare the two. writeResult uses it for results that have it and
// json.Marshal for the others.

// jsonAppender is a result that appends its JSON encoding to b.
type jsonAppender interface {
	appendJSON(b []byte) []byte
}

const hexDigits = "0123456789abcdef"

// htmlSafe marks the ASCII bytes json.Marshal writes as they are.
var htmlSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// htmlSafeRun returns the length of the longest prefix of s made of whole
// 8-byte words of htmlSafe bytes (word tests as in plainWord).
func htmlSafeRun(s string) int {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := load64(s[i:])
		if (below(w, 0x20)|equal(w, '"')|equal(w, '\\')|equal(w, '<')|equal(w, '>')|equal(w, '&')|w)&highs != 0 {
			break
		}
	}
	return i
}

// appendString appends s as json.Marshal quotes a string (it mirrors
// encoding/json's appendString with HTML escaping).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if i += htmlSafeRun(s[i:]); i == len(s) {
			break
		}
		if c := s[i]; c < utf8.RuneSelf {
			if htmlSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		} else {
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendBase64 appends p as json.Marshal writes a []byte (null when nil).
func appendBase64(b, p []byte) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, p)
	return append(b, '"')
}

// appendValue appends v's JSON (to pass a result type to appendList).
func appendValue[T jsonAppender](b []byte, v T) []byte { return v.appendJSON(b) }

// appendList appends a slice as json.Marshal does (null when nil).
func appendList[T any](b []byte, list []T, elem func([]byte, T) []byte) []byte {
	if list == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, v := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = elem(b, v)
	}
	return append(b, ']')
}

// appendMap appends a map with string keys in key order, as json.Marshal
// does (null when nil).
func appendMap[V any](b []byte, m map[string]V, elem func([]byte, V) []byte) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = elem(b, m[k])
	}
	return append(b, '}')
}

func (r sendResult) appendJSON(b []byte) []byte {
	b = append(b, '{')
	if r.ID != "" {
		b = append(appendString(append(b, `"Id":`...), r.ID), ',')
	}
	b = appendString(append(b, `"MessageId":`...), r.MessageID)
	b = appendString(append(b, `,"MD5OfMessageBody":`...), r.MD5OfMessageBody)
	if r.MD5OfMessageAttributes != "" {
		b = appendString(append(b, `,"MD5OfMessageAttributes":`...), r.MD5OfMessageAttributes)
	}
	if r.MD5OfMessageSystemAttributes != "" {
		b = appendString(append(b, `,"MD5OfMessageSystemAttributes":`...), r.MD5OfMessageSystemAttributes)
	}
	if r.SequenceNumber != "" {
		b = appendString(append(b, `,"SequenceNumber":`...), r.SequenceNumber)
	}
	return append(b, '}')
}

func (f batchFailure) appendJSON(b []byte) []byte {
	b = appendString(append(b, `{"Id":`...), f.ID)
	if f.SenderFault {
		b = append(b, `,"SenderFault":true`...)
	} else {
		b = append(b, `,"SenderFault":false`...)
	}
	b = appendString(append(b, `,"Code":`...), f.Code)
	if f.Message != "" {
		b = appendString(append(b, `,"Message":`...), f.Message)
	}
	return append(b, '}')
}

func (r idResult) appendJSON(b []byte) []byte {
	return append(appendString(append(b, `{"Id":`...), r.ID), '}')
}

func (v attrValue) appendJSON(b []byte) []byte {
	b = appendString(append(b, `{"DataType":`...), v.DataType)
	if v.StringValue != nil {
		b = appendString(append(b, `,"StringValue":`...), *v.StringValue)
	}
	if len(v.BinaryValue) > 0 {
		b = appendBase64(append(b, `,"BinaryValue":`...), v.BinaryValue)
	}
	if len(v.StringListValues) > 0 {
		b = appendList(append(b, `,"StringListValues":`...), v.StringListValues, appendString)
	}
	if len(v.BinaryListValues) > 0 {
		b = appendList(append(b, `,"BinaryListValues":`...), v.BinaryListValues, appendBase64)
	}
	return append(b, '}')
}

func (m msgOut) appendJSON(b []byte) []byte {
	b = appendString(append(b, `{"MessageId":`...), m.MessageID)
	b = appendString(append(b, `,"ReceiptHandle":`...), m.ReceiptHandle)
	b = appendString(append(b, `,"MD5OfBody":`...), m.MD5OfBody)
	b = appendString(append(b, `,"Body":`...), m.Body)
	if len(m.Attributes) > 0 {
		b = appendMap(append(b, `,"Attributes":`...), m.Attributes, appendString)
	}
	if m.MD5OfMessageAttributes != "" {
		b = appendString(append(b, `,"MD5OfMessageAttributes":`...), m.MD5OfMessageAttributes)
	}
	if len(m.MessageAttributes) > 0 {
		b = appendMap(append(b, `,"MessageAttributes":`...), m.MessageAttributes, appendValue[attrValue])
	}
	return append(b, '}')
}

func (r sendBatchResult) appendJSON(b []byte) []byte {
	b = appendList(append(b, `{"Successful":`...), r.Successful, appendValue[sendResult])
	b = appendList(append(b, `,"Failed":`...), r.Failed, appendValue[batchFailure])
	return append(b, '}')
}

func (r receiveResult) appendJSON(b []byte) []byte {
	if len(r.Messages) == 0 {
		return append(b, "{}"...)
	}
	b = appendList(append(b, `{"Messages":`...), r.Messages, appendValue[msgOut])
	return append(b, '}')
}

// appendSettled appends the answer of DeleteMessageBatch and
// ChangeMessageVisibilityBatch.
func appendSettled(b []byte, ok []idResult, failed []batchFailure) []byte {
	b = appendList(append(b, `{"Successful":`...), ok, appendValue[idResult])
	b = appendList(append(b, `,"Failed":`...), failed, appendValue[batchFailure])
	return append(b, '}')
}

func (r deleteBatchResult) appendJSON(b []byte) []byte {
	return appendSettled(b, r.Successful, r.Failed)
}

func (r visibilityBatchResult) appendJSON(b []byte) []byte {
	return appendSettled(b, r.Successful, r.Failed)
}
