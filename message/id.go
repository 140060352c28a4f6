package message

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"
)

// idGen keeps UUIDv7s strictly increasing inside one process, even when many
// are made in the same millisecond (RFC 9562 §6.2, method 1: a 12-bit counter
// in rand_a, seeded randomly each millisecond).
type idGen struct {
	mu     sync.Mutex
	lastMS int64
	seq    uint16
}

var ids idGen // not configuration: a process-wide monotonic clock for IDs

// NewID returns a new UUIDv7 in its canonical 36-character text form. IDs made
// by one process sort in creation order.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	ms := time.Now().UnixMilli()
	ids.mu.Lock()
	if ms <= ids.lastMS {
		ms = ids.lastMS
		ids.seq++
		if ids.seq > 0x0fff { // counter overflow: borrow the next millisecond
			ms++
			ids.seq = binary.BigEndian.Uint16(b[6:8]) & 0x07ff
		}
	} else {
		ids.seq = binary.BigEndian.Uint16(b[6:8]) & 0x07ff // top bit clear: room to count
	}
	ids.lastMS = ms
	seq := ids.seq
	ids.mu.Unlock()

	b[0] = byte(ms >> 40)
	b[1] = byte(ms >> 32)
	b[2] = byte(ms >> 24)
	b[3] = byte(ms >> 16)
	b[4] = byte(ms >> 8)
	b[5] = byte(ms)
	b[6] = 0x70 | byte(seq>>8)&0x0f
	b[7] = byte(seq)
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}
