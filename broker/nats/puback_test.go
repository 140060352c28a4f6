package nats

import (
	"encoding/json"
	"errors"
	"testing"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestScanPubAck: the direct reading of a publish ack agrees with
// encoding/json wherever it accepts the input, and accepts what the server
// writes.
func TestScanPubAck(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool // read directly
	}{
		{`{"stream":"SB_orders", "seq":42}`, true}, // nats-server 2.9
		{`{"stream":"SB_orders", "seq":42,"duplicate": true}`, true},
		{`{"stream":"SB_orders", "domain":"hub", "seq":1}`, true},
		{`{"stream":"S","seq":18446744073709551615,"duplicate":false}`, true},
		{` { "seq" : 7 , "stream" : "S" } `, true},
		{`{"stream":"S","seq":18446744073709551616}`, false}, // overflow
		{`{"stream":"S","seq":007}`, false},
		{`{"stream":"S","seq":-1}`, false},
		{`{"stream":"S\"x","seq":1}`, false},
		{`{"stream":"S","seq":1,"batch":"b"}`, false},
		{`{"error":{"code":503,"err_code":10039,"description":"jetstream not enabled"}}`, false},
		{`{"stream":"S","seq":1}x`, false},
		{`{"stream":"S","seq":1,}`, false},
		{`{"stream":"S","seq":1,"duplicate":truex}`, false},
		{`{"seq":1}`, false},
		{`{}`, false},
		{``, false},
		{`{"stream":"S","seq":1`, false},
	} {
		got, ok := scanPubAck([]byte(tc.in))
		if ok != tc.want {
			t.Errorf("scanPubAck(%s) ok = %v, want %v", tc.in, ok, tc.want)
		}
		if !ok {
			continue
		}
		var want jetstream.PubAck
		if err := json.Unmarshal([]byte(tc.in), &want); err != nil {
			t.Errorf("scanPubAck(%s) accepted what encoding/json refuses: %v", tc.in, err)
		} else if got != want {
			t.Errorf("scanPubAck(%s) = %+v, encoding/json %+v", tc.in, got, want)
		}
	}
	// The slow path still reports the server's errors.
	_, err := parsePubAck(&natsgo.Msg{Data: []byte(`{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}`)})
	var apiErr *jetstream.APIError
	if !asAPIError(err, &apiErr) || apiErr.ErrorCode != 10060 {
		t.Errorf("parsePubAck of an error = %v, want the APIError", err)
	}
}

func FuzzScanPubAck(f *testing.F) {
	f.Add([]byte(`{"stream":"SB_orders", "seq":42,"duplicate": true}`))
	f.Add([]byte(`{"stream":"S", "domain":"d", "seq":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := scanPubAck(b)
		if !ok {
			return
		}
		var want jetstream.PubAck
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("scanPubAck(%q) accepted what encoding/json refuses: %v", b, err)
		}
		if got != want {
			t.Fatalf("scanPubAck(%q) = %+v, encoding/json %+v", b, got, want)
		}
	})
}

func asAPIError(err error, target **jetstream.APIError) bool { return errors.As(err, target) }
