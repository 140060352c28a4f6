package sqsface

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Reading the JSON bodies of the message operations without reflection.
//
// encoding/json scans a body twice and builds every value through
// reflection; for SendMessageBatch, ReceiveMessage and DeleteMessageBatch
// that was the face's largest cost per request. jsonIn reads the plain
// subset of JSON that SDKs send: objects with known member names spelled
// exactly, each at most once, strings, integers, arrays of these, and no
// null. On anything else (an unknown, differently cased or repeated name,
// null, a fraction or exponent, a type mismatch, malformed JSON, trailing
// data) it gives up, and request.decode starts over with encoding/json,
// which then yields exactly the value or error it always did. Whatever
// jsonIn accepts, it decodes to the value encoding/json would produce
// (strings with escapes or invalid UTF-8 are unquoted by encoding/json
// itself), so a request means the same on either path.

// jsonReader is an input struct that jsonIn can fill. readMember reads the
// value of member name, or returns false for a name it does not know.
type jsonReader interface {
	readMember(d *jsonIn, name []byte) bool
}

// readJSON fills v from data (a whole request body) and reports whether it
// could; on false v may be partly filled.
func readJSON(data []byte, v jsonReader) bool {
	d := jsonIn{data: data}
	d.object(v.readMember)
	d.space()
	return !d.bad && d.pos == len(d.data)
}

// jsonIn is a cursor over a JSON text. After the first failure bad is set
// and every method returns zero values.
type jsonIn struct {
	data []byte
	pos  int
	bad  bool
}

// plainByte marks the bytes a string may contain as they are: not '"',
// '\\', a control character or the start of a multi-byte UTF-8 sequence.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Word tests from "Bit Twiddling Hacks", on 8 bytes at once: (x-ones*n)&^x
// has the high bit of some byte set iff some byte of x is below n (n <=
// 0x80), and a byte equal to c is a zero byte of x^(ones*c).
const ones, highs = 0x0101010101010101, 0x8080808080808080

// below has a high bit set iff some byte of w is below n.
func below(w, n uint64) uint64 { return (w - ones*n) &^ w }

// equal has a high bit set iff some byte of w is c.
func equal(w uint64, c byte) uint64 { return below(w^(ones*uint64(c)), 1) }

// load64 reads the first 8 bytes of s as a little-endian word.
func load64(s string) uint64 {
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// plainWord reports whether all 8 bytes of w are plain (plainByte).
func plainWord(w uint64) bool {
	return (below(w, 0x20)|equal(w, '"')|equal(w, '\\')|w)&highs == 0
}

func (d *jsonIn) fail() { d.bad = true }

func (d *jsonIn) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek returns the next byte after white space (0 at the end).
func (d *jsonIn) peek() byte {
	d.space()
	if d.bad || d.pos >= len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

// consume reads byte c after white space.
func (d *jsonIn) consume(c byte) bool {
	if d.peek() != c || d.bad {
		d.fail()
		return false
	}
	d.pos++
	return true
}

// rawString reads a string and returns its contents between the quotes
// and whether encoding/json must unquote them (escapes, invalid UTF-8).
func (d *jsonIn) rawString() (raw []byte, slow bool) {
	if !d.consume('"') {
		return nil, false
	}
	start, ascii := d.pos, true
	for d.pos < len(d.data) {
		for d.pos+8 <= len(d.data) && plainWord(binary.LittleEndian.Uint64(d.data[d.pos:])) {
			d.pos += 8
		}
		if d.pos == len(d.data) {
			break
		}
		c := d.data[d.pos]
		if plainByte[c] {
			d.pos++
			continue
		}
		switch {
		case c == '"':
			raw = d.data[start:d.pos]
			d.pos++
			return raw, slow || !ascii && !utf8.Valid(raw)
		case c == '\\':
			slow = true
			d.pos += 2
		case c < 0x20:
			d.fail() // not JSON: encoding/json reports it
			return nil, false
		default:
			ascii = false
			d.pos++
		}
	}
	d.fail()
	return nil, false
}

// str reads a string value.
func (d *jsonIn) str() string {
	start := d.pos
	raw, slow := d.rawString()
	if d.bad {
		return ""
	}
	if !slow {
		return string(raw)
	}
	var s string
	if json.Unmarshal(d.data[start:d.pos], &s) != nil {
		d.fail()
	}
	return s
}

// strPtr reads a string value into a new string.
func (d *jsonIn) strPtr() *string {
	s := d.str()
	return &s
}

// intPtr reads an integer (no fraction or exponent) into a new int, as
// encoding/json reads a JSON number into an *int.
func (d *jsonIn) intPtr() *int {
	d.space()
	start := d.pos
	if d.pos < len(d.data) && d.data[d.pos] == '-' {
		d.pos++
	}
	digits := d.pos
	for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
		d.pos++
	}
	n := d.pos - digits
	fraction := d.pos < len(d.data) && (d.data[d.pos] == '.' || d.data[d.pos] == 'e' || d.data[d.pos] == 'E')
	if n == 0 || n > 1 && d.data[digits] == '0' || fraction {
		d.fail()
		return nil
	}
	v, err := strconv.ParseInt(string(d.data[start:d.pos]), 10, 64)
	if err != nil || int64(int(v)) != v {
		d.fail()
		return nil
	}
	i := int(v)
	return &i
}

// bytesB64 reads a string holding base64, as encoding/json reads a []byte.
func (d *jsonIn) bytesB64() []byte {
	s := d.str()
	if d.bad {
		return nil
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(b, []byte(s))
	if err != nil {
		d.fail()
		return nil
	}
	return b[:n]
}

// object reads an object, calling member for each member with the cursor
// at its value. Names with escapes and repeated names fail.
func (d *jsonIn) object(member func(d *jsonIn, name []byte) bool) {
	if !d.consume('{') {
		return
	}
	if d.peek() == '}' {
		d.pos++
		return
	}
	var seenBuf [12][]byte
	seen := seenBuf[:0]
	for !d.bad {
		name, slow := d.rawString()
		if slow {
			d.fail()
		}
		for _, s := range seen {
			if bytes.Equal(s, name) {
				d.fail()
			}
		}
		seen = append(seen, name)
		if !d.consume(':') || d.bad || !member(d, name) {
			d.fail()
			return
		}
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return
		default:
			d.fail()
		}
	}
}

// array reads an array, calling elem for each element with the cursor at
// it.
func (d *jsonIn) array(elem func()) {
	if !d.consume('[') {
		return
	}
	if d.peek() == ']' {
		d.pos++
		return
	}
	for !d.bad {
		elem()
		switch d.peek() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			return
		default:
			d.fail()
		}
	}
}

// strList reads an array of strings (empty, not nil, for []).
func (d *jsonIn) strList() []string {
	out := []string{}
	d.array(func() { out = append(out, d.str()) })
	return out
}

// attributes reads message attributes (StringListValues and
// BinaryListValues, which the face refuses, are left to encoding/json).
func (d *jsonIn) attributes() map[string]attrValue {
	out := map[string]attrValue{}
	d.object(func(d *jsonIn, name []byte) bool {
		var v attrValue
		d.object(func(d *jsonIn, field []byte) bool {
			switch string(field) {
			case "DataType":
				v.DataType = d.str()
			case "StringValue":
				v.StringValue = d.strPtr()
			case "BinaryValue":
				v.BinaryValue = d.bytesB64()
			default:
				return false
			}
			return true
		})
		out[string(name)] = v
		return true
	})
	return out
}

func (e *sendEntry) readMember(d *jsonIn, name []byte) bool {
	switch string(name) {
	case "Id":
		e.ID = d.str()
	case "MessageBody":
		e.MessageBody = d.strPtr()
	case "DelaySeconds":
		e.DelaySeconds = d.intPtr()
	case "MessageAttributes":
		e.MessageAttributes = d.attributes()
	case "MessageSystemAttributes":
		e.MessageSystemAttributes = d.attributes()
	case "MessageDeduplicationId":
		e.MessageDeduplicationID = d.str()
	case "MessageGroupId":
		e.MessageGroupID = d.str()
	default:
		return false
	}
	return true
}

func (in *sendInput) readMember(d *jsonIn, name []byte) bool {
	if string(name) == "QueueUrl" {
		in.QueueURL = d.str()
		return true
	}
	return in.sendEntry.readMember(d, name)
}

func (in *sendBatchInput) readMember(d *jsonIn, name []byte) bool {
	switch string(name) {
	case "QueueUrl":
		in.QueueURL = d.str()
	case "Entries":
		in.Entries = []sendEntry{}
		d.array(func() {
			in.Entries = append(in.Entries, sendEntry{})
			d.object(in.Entries[len(in.Entries)-1].readMember)
		})
	default:
		return false
	}
	return true
}

func (in *receiveInput) readMember(d *jsonIn, name []byte) bool {
	switch string(name) {
	case "QueueUrl":
		in.QueueURL = d.str()
	case "AttributeNames":
		in.AttributeNames = d.strList()
	case "MessageSystemAttributeNames":
		in.MessageSystemAttributeNames = d.strList()
	case "MessageAttributeNames":
		in.MessageAttributeNames = d.strList()
	case "MaxNumberOfMessages":
		in.MaxNumberOfMessages = d.intPtr()
	case "VisibilityTimeout":
		in.VisibilityTimeout = d.intPtr()
	case "WaitTimeSeconds":
		in.WaitTimeSeconds = d.intPtr()
	case "ReceiveRequestAttemptId":
		in.ReceiveRequestAttemptID = d.str()
	default:
		return false
	}
	return true
}

func (in *deleteInput) readMember(d *jsonIn, name []byte) bool {
	switch string(name) {
	case "QueueUrl":
		in.QueueURL = d.str()
	case "ReceiptHandle":
		in.ReceiptHandle = d.str()
	default:
		return false
	}
	return true
}

func (e *batchEntry) readMember(d *jsonIn, name []byte) bool {
	switch string(name) {
	case "Id":
		e.ID = d.str()
	case "ReceiptHandle":
		e.ReceiptHandle = d.str()
	case "VisibilityTimeout":
		e.VisibilityTimeout = d.intPtr()
	default:
		return false
	}
	return true
}

func (in *batchInput) readMember(d *jsonIn, name []byte) bool {
	switch string(name) {
	case "QueueUrl":
		in.QueueURL = d.str()
	case "Entries":
		in.Entries = []batchEntry{}
		d.array(func() {
			in.Entries = append(in.Entries, batchEntry{})
			d.object(in.Entries[len(in.Entries)-1].readMember)
		})
	default:
		return false
	}
	return true
}
