package sqsface

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// jsonInputs makes a fresh value of each input type jsonIn reads.
var jsonInputs = map[string]func() jsonReader{
	"SendMessage":        func() jsonReader { return new(sendInput) },
	"SendMessageBatch":   func() jsonReader { return new(sendBatchInput) },
	"ReceiveMessage":     func() jsonReader { return new(receiveInput) },
	"DeleteMessage":      func() jsonReader { return new(deleteInput) },
	"DeleteMessageBatch": func() jsonReader { return new(batchInput) },
}

// checkSameAsStd fails when request.decode answers a JSON body otherwise
// than encoding/json alone (value or error), or when jsonIn accepts a body
// that encoding/json refuses. It reports whether jsonIn accepted it.
func checkSameAsStd(t *testing.T, op string, body []byte) bool {
	t.Helper()
	data := bytes.TrimSpace(body)
	if len(data) == 0 {
		data = []byte("{}")
	}
	want := jsonInputs[op]()
	wantErr := decodeStd(data, want, true)
	ok := readJSON(data, jsonInputs[op]())
	got := jsonInputs[op]()
	gotErr := (&request{json: true, body: body}).decode(got)
	if !reflect.DeepEqual(gotErr, wantErr) || !reflect.DeepEqual(got, want) || ok && wantErr != nil {
		t.Fatalf("%s %q (fast path %v):\n got %+v, %v\nwant %+v, %v", op, data, ok, got, gotErr, want, wantErr)
	}
	return ok
}

// SDK-shaped bodies: each must take the fast path.
var plainBodies = map[string][]string{
	"SendMessageBatch": {
		`{"Entries":[{"Id":"0","MessageBody":"hello"},{"Id":"1","MessageBody":"x","DelaySeconds":0}],"QueueUrl":"http://h/000000000000/q"}`,
		`{"Entries":[{"Id":"0","MessageBody":"hello <&> \u2028 é \"q\" \\ \n"}],"QueueUrl":"q"}`,
		`{"Entries":[{"Id":"1","MessageAttributes":{"a":{"DataType":"String","StringValue":"v"},"b":{"BinaryValue":"AQID","DataType":"Binary"},"n":{"DataType":"Number.int","StringValue":"-1.5e3"}},"MessageBody":"x","MessageGroupId":"g","MessageDeduplicationId":"d"}],"QueueUrl":"q"}`,
		`{"Entries":[{"Id":"1","MessageBody":"x","MessageSystemAttributes":{"AWSTraceHeader":{"DataType":"String","StringValue":"Root=1"}}}],"QueueUrl":"q"}`,
		`{"Entries":[],"QueueUrl":"q"}`,
		` { "QueueUrl" : "q" , "Entries" : [ { "Id" : "a" , "MessageBody" : "日本語" , "DelaySeconds" : -0 } ] } `,
		`{"Entries":[{"Id":"0","MessageBody":"","MessageAttributes":{}}],"QueueUrl":"q"}`,
		`{"Entries":[{"Id":"0","MessageBody":"b","MessageAttributes":{"e":{"DataType":"Binary","BinaryValue":""}}}]}`,
		`{}`,
	},
	"SendMessage": {
		`{"MessageBody":"hello","QueueUrl":"q"}`,
		`{"DelaySeconds":900,"MessageBody":"hello","QueueUrl":"q","Id":"x"}`,
	},
	"ReceiveMessage": {
		`{"MaxNumberOfMessages":10,"MessageAttributeNames":["All"],"QueueUrl":"q","VisibilityTimeout":120,"WaitTimeSeconds":1}`,
		`{"AttributeNames":[],"MessageSystemAttributeNames":["All","SentTimestamp"],"QueueUrl":"q","ReceiveRequestAttemptId":"a-1"}`,
		`{"QueueUrl":"q","MaxNumberOfMessages":9223372036854775807}`,
	},
	"DeleteMessage": {
		`{"QueueUrl":"q","ReceiptHandle":"SB1.cQ.abc"}`,
	},
	"DeleteMessageBatch": {
		`{"Entries":[{"Id":"0","ReceiptHandle":"SB1.YmVuY2g.XbnIWgEK2C9h1Fu4cwtcVnD3"},{"Id":"1","ReceiptHandle":"h","VisibilityTimeout":30}],"QueueUrl":"q"}`,
	},
}

// Bodies the fast path leaves to encoding/json (or that are wrong): the
// answer must still be what it was.
var otherBodies = []string{
	``, `null`, `[]`, `"x"`, `{`, `}`, `{}}`, `{} x`, `{}{}`, `{"QueueUrl":"q"} `,
	`{"queueurl":"q"}`, `{"QUEUEURL":"q","QueueUrl":"r"}`, `{"QueueUrl":"q","QueueUrl":"r"}`,
	`{"QueueUrl":null}`, `{"QueueUrl":1}`, `{"QueueUrl":"\u0071"}`, `{"QueueUrl":"\ud800x"}`, `{"QueueUrl":"\x"}`,
	"{\"QueueUrl\":\"a\x01b\"}", "{\"QueueUrl\":\"a\xffb\"}", "{\"QueueUrl\":\"\xe2\x80\"}",
	`{"Unknown":1,"QueueUrl":"q"}`, `{"Qu\u0065ueUrl":"q"}`,
	`{"Entries":null}`, `{"Entries":{}}`, `{"Entries":[null]}`, `{"Entries":[1]}`, `{"Entries":[{"Id":1}]}`,
	`{"Entries":[{"Id":"0","MessageBody":null}]}`, `{"Entries":[{"Id":"0","MessageBody":5}]}`,
	`{"Entries":[{"Id":"0","DelaySeconds":1.0}]}`, `{"Entries":[{"Id":"0","DelaySeconds":1e2}]}`,
	`{"Entries":[{"Id":"0","DelaySeconds":"1"}]}`, `{"Entries":[{"Id":"0","DelaySeconds":01}]}`,
	`{"Entries":[{"Id":"0","DelaySeconds":99999999999999999999}]}`, `{"Entries":[{"Id":"0","DelaySeconds":-}]}`,
	`{"Entries":[{"Id":"0","VisibilityTimeout":true}]}`,
	`{"Entries":[{"Id":"0","MessageAttributes":{"a":{"DataType":"String","StringValue":"v"},"a":{"DataType":"Number","StringValue":"1"}}}]}`,
	`{"Entries":[{"Id":"0","MessageAttributes":{"a":{"DataType":"Binary","BinaryValue":"!!"}}}]}`,
	`{"Entries":[{"Id":"0","MessageAttributes":{"a":{"DataType":"Binary","BinaryValue":"AQ\nID"}}}]}`,
	`{"Entries":[{"Id":"0","MessageAttributes":{"a":{"DataType":"String","StringListValues":["x"]}}}]}`,
	`{"Entries":[{"Id":"0","MessageAttributes":{"a":null}}]}`, `{"Entries":[{"Id":"0","MessageAttributes":[]}]}`,
	`{"Entries":[{"Id":"0"},]}`, `{"Entries":[{"Id":"0",}]}`, `{"Entries":[{"Id":"0"}],}`, `{"Entries":[{"Id":"0"}`,
	`{"MessageAttributeNames":["All",1]}`, `{"MessageAttributeNames":"All"}`, `{"AttributeNames":[null]}`,
	`{"MaxNumberOfMessages":-1}`, `{"MaxNumberOfMessages":null}`, `{"WaitTimeSeconds":2.5}`,
}

func TestReadJSONSameAsEncodingJSON(t *testing.T) {
	for op, bodies := range plainBodies {
		for _, b := range bodies {
			if !checkSameAsStd(t, op, []byte(b)) {
				t.Errorf("%s %s: not read by the fast path", op, b)
			}
		}
	}
	for op := range jsonInputs {
		for _, b := range otherBodies {
			checkSameAsStd(t, op, []byte(b))
		}
		for _, bodies := range plainBodies {
			for _, b := range bodies {
				checkSameAsStd(t, op, []byte(b))
			}
		}
	}
}

func FuzzReadJSON(f *testing.F) {
	for _, bodies := range plainBodies {
		for _, b := range bodies {
			f.Add(b)
		}
	}
	for _, b := range otherBodies {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for op := range jsonInputs {
			checkSameAsStd(t, op, []byte(body))
		}
	})
}

// tricky strings for the encoder: HTML, controls, quotes, invalid UTF-8,
// line separators, astral plane.
var trickyStrings = []string{
	"", "plain", `<a href="x">&amp;</a>`, "tab\tnl\nr\rb\bf\f\x00\x1f\x7f", `back\slash "quote"`,
	"\xff\xfe bad \xe2\x80 utf8", "line\u2028para\u2029", "é日本語😀", strings.Repeat("abc", 400),
}

func TestAppendJSONSameAsMarshal(t *testing.T) {
	s := func(v string) *string { return &v }
	var results []jsonAppender
	for _, x := range trickyStrings {
		av := attrValue{DataType: x, StringValue: s(x)}
		results = append(results,
			sendResult{ID: x, MessageID: x, MD5OfMessageBody: x, MD5OfMessageAttributes: x, MD5OfMessageSystemAttributes: x, SequenceNumber: x},
			sendResult{MessageID: x},
			sendBatchResult{Successful: []sendResult{{ID: x}, {MessageID: x}}, Failed: []batchFailure{{ID: x, SenderFault: true, Code: x, Message: x}, {ID: x}}},
			receiveResult{Messages: []msgOut{
				{MessageID: x, ReceiptHandle: x, MD5OfBody: x, Body: x},
				{Body: x, Attributes: attrMap{x: x, "SentTimestamp": "1"}, MD5OfMessageAttributes: x, MessageAttributes: msgAttrMap{
					x: av, "b": {DataType: "Binary", BinaryValue: []byte(x)}, "e": {DataType: "String", StringValue: s("")},
					"l": {DataType: "String", StringListValues: []string{x, ""}, BinaryListValues: [][]byte{[]byte(x), nil}},
				}},
				{Attributes: attrMap{}, MessageAttributes: msgAttrMap{}},
			}},
			deleteBatchResult{Successful: []idResult{{x}, {"1"}}, Failed: []batchFailure{{ID: x, Code: x}}},
			visibilityBatchResult{Successful: []idResult{{x}}, Failed: []batchFailure{}},
		)
	}
	results = append(results, sendBatchResult{}, sendBatchResult{Successful: []sendResult{}, Failed: []batchFailure{}},
		receiveResult{}, receiveResult{Messages: []msgOut{}}, deleteBatchResult{}, visibilityBatchResult{})
	for _, r := range results {
		checkAppendJSON(t, r)
	}
}

// TestAppendStringEveryByte puts each byte value at each offset of a word.
func TestAppendStringEveryByte(t *testing.T) {
	for c := range 256 {
		for p := range 17 {
			b := []byte(strings.Repeat("abcdefgh", 3))
			b[p] = byte(c)
			want, _ := json.Marshal(string(b))
			if got := appendString(nil, string(b)); string(got) != string(want) {
				t.Fatalf("appendString(%q) = %s, want %s", b, got, want)
			}
		}
	}
}

func checkAppendJSON(t *testing.T, r jsonAppender) {
	t.Helper()
	want, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.appendJSON([]byte("prefix")); string(got) != "prefix"+string(want) {
		t.Fatalf("%T %+v:\n got %s\nwant %s", r, r, got[len("prefix"):], want)
	}
}

func FuzzAppendJSON(f *testing.F) {
	for _, x := range trickyStrings {
		f.Add(x)
	}
	f.Fuzz(func(t *testing.T, x string) {
		checkAppendJSON(t, receiveResult{Messages: []msgOut{{MessageID: x, Body: x, Attributes: attrMap{x: x},
			MessageAttributes: msgAttrMap{x: {DataType: x, StringValue: &x, BinaryValue: []byte(x)}}}}})
		checkAppendJSON(t, sendBatchResult{Successful: []sendResult{{ID: x, MessageID: x}}, Failed: []batchFailure{{ID: x, Message: x}}})
	})
}

func TestPlainWord(t *testing.T) {
	check := func(b [8]byte) {
		want := true
		for _, c := range b {
			want = want && plainByte[c]
		}
		if got := plainWord(binary.LittleEndian.Uint64(b[:])); got != want {
			t.Fatalf("plainWord(%q) = %v, want %v", b, got, want)
		}
	}
	for c := range 256 {
		for p := range 8 {
			b := [8]byte{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'}
			b[p] = byte(c)
			check(b)
			b = [8]byte{0x7f, ' ', '!', '#', '[', ']', '~', 0x1f}
			b[p] = byte(c)
			check(b)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], rng.Uint64())
		check(b)
		for i := range b {
			b[i] &= 0x7f
		}
		check(b)
	}
}

func BenchmarkDecodeSendBatch(b *testing.B) {
	body := []byte(`{"Entries":[` + strings.TrimSuffix(strings.Repeat(`{"Id":"0","MessageBody":"`+strings.Repeat("abcdefghijklmnopqrstuvwxyz", 40)+`"},`, 10), ",") + `],"QueueUrl":"http://127.0.0.1:9324/000000000000/bench"}`)
	b.Run("jsonIn", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var in sendBatchInput
			if !readJSON(body, &in) {
				b.Fatal("not read")
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var in sendBatchInput
			if err := decodeStd(body, &in, true); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestValidBodyEveryByte checks validBody's word loop against the rune
// check it shortcuts.
func TestValidBodyEveryByte(t *testing.T) {
	for c := range 256 {
		for p := range 17 {
			b := []byte(strings.Repeat("abc\tdef\n", 3))
			b[p] = byte(c)
			for _, s := range []string{string(b), string(b) + "é", string(b) + "\uFFFE"} {
				if got, want := validBody(s), validRunes(s); got != want {
					t.Fatalf("validBody(%q) = %v, want %v", s, got, want)
				}
			}
		}
	}
}
