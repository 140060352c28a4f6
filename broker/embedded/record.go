package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

// Record layout on disk (little endian):
//
//	u32 length of body
//	u32 CRC-32C of body
//	body:
//	  u64 seq
//	  i64 published (unix ns)
//	  i64 deliver-at (unix ns, 0 = none)
//	  i64 expires-at (unix ns, 0 = none)
//	  u8  flags
//	  uvarint-prefixed id, key, content type
//	  uvarint header count, then uvarint-prefixed name and value each
//	  payload (the rest of the body)
//
// A batch is a run of records whose last one has flagBatchEnd; recovery cuts
// any trailing records after the last complete batch, which makes batches
// atomic across a crash.
const (
	recHeaderLen = 8
	recFixedLen  = 8 + 8 + 8 + 8 + 1
	// maxRecordLen bounds a record so that a corrupt length cannot make the
	// reader allocate gigabytes.
	maxRecordLen = message.HardMaxPayload + 1<<20
)

const (
	flagBatchEnd   byte = 1 << 0 // last record of an atomic batch
	flagExplicitID byte = 1 << 1 // the publisher chose the ID: index it for dedup
	flagPromoted   byte = 1 << 2 // moved from the delay schedule
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt is wrapped by every decoding error.
var errCorrupt = errors.New("corrupt record")

// errShort means the buffer ends inside a record (a torn tail, or more bytes
// needed).
var errShort = errors.New("short record")

type record struct {
	seq   uint64
	flags byte
	msg   message.Message
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// appendRecord encodes one record onto buf.
func appendRecord(buf []byte, seq uint64, m *message.Message, flags byte) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, recHeaderLen)...)
	buf = binary.LittleEndian.AppendUint64(buf, seq)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(nanos(m.PublishedAt)))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(nanos(m.DeliverAt)))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(nanos(m.ExpiresAt)))
	buf = append(buf, flags)
	buf = appendString(buf, m.ID)
	buf = appendString(buf, m.Key)
	buf = appendString(buf, m.ContentType)
	buf = binary.AppendUvarint(buf, uint64(len(m.Headers)))
	for k, v := range m.Headers {
		buf = appendString(buf, k)
		buf = appendString(buf, v)
	}
	buf = append(buf, m.Payload...)
	body := buf[start+recHeaderLen:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(body, crcTable))
	return buf
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// peekRecord validates the record at the start of b and returns its total
// length. It returns errShort when b holds only part of it, and an error
// wrapping errCorrupt when the length or CRC is wrong.
func peekRecord(b []byte) (int, error) {
	if len(b) < recHeaderLen {
		return 0, errShort
	}
	n := binary.LittleEndian.Uint32(b)
	if n < recFixedLen+3 || n > maxRecordLen {
		return 0, fmt.Errorf("%w: impossible length %d", errCorrupt, n)
	}
	total := recHeaderLen + int(n)
	if len(b) < total {
		return total, errShort
	}
	if crc32.Checksum(b[recHeaderLen:total], crcTable) != binary.LittleEndian.Uint32(b[4:]) {
		return 0, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	return total, nil
}

// peekSeqFlags returns seq and flags of a record already validated by
// peekRecord.
func peekSeqFlags(b []byte) (seq uint64, published int64, flags byte) {
	body := b[recHeaderLen:]
	return binary.LittleEndian.Uint64(body), int64(binary.LittleEndian.Uint64(body[8:])), body[32]
}

// decodeRecord decodes the record at the start of b (validating it) and
// returns it and its total length. Strings and payload are copied, so b may
// be reused.
func decodeRecord(b []byte) (record, int, error) {
	total, err := peekRecord(b)
	if err != nil {
		return record{}, total, err
	}
	body := b[recHeaderLen:total]
	var r record
	r.seq = binary.LittleEndian.Uint64(body)
	r.msg.PublishedAt = fromNanos(int64(binary.LittleEndian.Uint64(body[8:])))
	r.msg.DeliverAt = fromNanos(int64(binary.LittleEndian.Uint64(body[16:])))
	r.msg.ExpiresAt = fromNanos(int64(binary.LittleEndian.Uint64(body[24:])))
	r.flags = body[32]
	p := body[recFixedLen:]
	var ok bool
	if r.msg.ID, p, ok = readString(p); !ok {
		return record{}, 0, fmt.Errorf("%w: bad id field", errCorrupt)
	}
	if r.msg.Key, p, ok = readString(p); !ok {
		return record{}, 0, fmt.Errorf("%w: bad key field", errCorrupt)
	}
	if r.msg.ContentType, p, ok = readString(p); !ok {
		return record{}, 0, fmt.Errorf("%w: bad content type field", errCorrupt)
	}
	nh, k := binary.Uvarint(p)
	if k <= 0 || nh > uint64(len(p)) {
		return record{}, 0, fmt.Errorf("%w: bad header count", errCorrupt)
	}
	p = p[k:]
	if nh > 0 {
		r.msg.Headers = make(map[string]string, nh)
		for i := uint64(0); i < nh; i++ {
			var name, val string
			if name, p, ok = readString(p); !ok {
				return record{}, 0, fmt.Errorf("%w: bad header name", errCorrupt)
			}
			if val, p, ok = readString(p); !ok {
				return record{}, 0, fmt.Errorf("%w: bad header value", errCorrupt)
			}
			r.msg.Headers[name] = val
		}
	}
	r.msg.Payload = append([]byte{}, p...)
	return r, total, nil
}

func readString(p []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return "", p, false
	}
	return string(p[k : k+int(n)]), p[k+int(n):], true
}
