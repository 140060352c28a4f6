package nats

import (
	"encoding/json"
	"fmt"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pubAckResponse is the server's answer to a JetStream publish.
type pubAckResponse struct {
	jetstream.PubAck
	Error *jetstream.APIError `json:"error,omitempty"`
}

// parsePubAck reads the server's answer to a publish as jetstream's
// PublishMsg does. The usual answer (see scanPubAck) is read directly, which
// costs a fraction of encoding/json; anything else, errors included, goes
// through encoding/json.
func parsePubAck(resp *natsgo.Msg) (*jetstream.PubAck, error) {
	if ack, ok := scanPubAck(resp.Data); ok {
		return &ack, nil
	}
	var r pubAckResponse
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, jetstream.ErrInvalidJSAck
	}
	if r.Error != nil {
		return nil, fmt.Errorf("nats: %w", r.Error)
	}
	if r.Stream == "" {
		return nil, jetstream.ErrInvalidJSAck
	}
	return &r.PubAck, nil
}

// scanPubAck reads a publish ack made only of the members "stream",
// "domain" and "val" (plain ASCII strings), "seq" (an unsigned integer)
// and "duplicate" (a boolean), with or without spaces, as the server writes
// it ({"stream":"S", "seq":7} or {"stream":"S", "seq":7,"duplicate": true}).
// ok is false for anything else, which is then left to encoding/json.
func scanPubAck(b []byte) (ack jetstream.PubAck, ok bool) {
	s := ackScanner{b: b}
	if !s.skip('{') {
		return ack, false
	}
	for n := 0; ; n++ {
		if s.skip('}') {
			return ack, n > 0 && ack.Stream != "" && s.end()
		}
		if n > 0 && !s.skip(',') {
			return ack, false
		}
		key, ok := s.str()
		if !ok || !s.skip(':') {
			return ack, false
		}
		switch key {
		case "stream":
			ack.Stream, ok = s.str()
		case "domain":
			ack.Domain, ok = s.str()
		case "val":
			ack.Value, ok = s.str()
		case "seq":
			ack.Sequence, ok = s.num()
		case "duplicate":
			ack.Duplicate, ok = s.boolean()
		default:
			return ack, false
		}
		if !ok {
			return ack, false
		}
	}
}

// ackScanner reads the few JSON forms of a publish ack.
type ackScanner struct {
	b []byte
	i int
}

func (s *ackScanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\r' || s.b[s.i] == '\n') {
		s.i++
	}
}

// skip consumes c after optional spaces.
func (s *ackScanner) skip(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only spaces are left.
func (s *ackScanner) end() bool {
	s.space()
	return s.i == len(s.b)
}

// str reads an ASCII string without escapes or control characters.
func (s *ackScanner) str() (string, bool) {
	if !s.skip('"') {
		return "", false
	}
	for j := s.i; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := string(s.b[s.i:j])
			s.i = j + 1
			return v, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", false // escapes, control characters, non-ASCII: left to encoding/json
		}
	}
	return "", false
}

// num reads an unsigned decimal integer that fits in 64 bits.
func (s *ackScanner) num() (uint64, bool) {
	s.space()
	start := s.i
	var v uint64
	for ; s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9'; s.i++ {
		d := uint64(s.b[s.i] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, s.i > start && (s.i-start == 1 || s.b[start] != '0')
}

// boolean reads true or false.
func (s *ackScanner) boolean() (bool, bool) {
	s.space()
	for _, w := range []string{"true", "false"} {
		if len(s.b)-s.i >= len(w) && string(s.b[s.i:s.i+len(w)]) == w {
			s.i += len(w)
			return w == "true", true
		}
	}
	return false, false
}
