package message

import (
	"encoding/hex"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// idClock holds the last (unix ms << 12 | counter) handed out, so that IDs
// made by one process are strictly increasing (RFC 9562 §6.2, method 1: a
// 12-bit counter in rand_a). It is lock-free: a process-wide clock, not
// configuration.
var idClock atomic.Uint64

// NewID returns a new UUIDv7 in its canonical 36-character text form. IDs made
// by one process sort in creation order. The 62 random bits come from the
// runtime's per-thread generator: unique, not meant to be unguessable.
func NewID() string {
	now := uint64(time.Now().UnixMilli()) << 12
	var v uint64
	for {
		last := idClock.Load()
		v = now
		if v <= last {
			v = last + 1 // same millisecond (or clock went back): count up
		}
		if idClock.CompareAndSwap(last, v) {
			break
		}
	}
	ms, seq := v>>12, v&0x0fff
	r := rand.Uint64()
	var b [16]byte
	b[0] = byte(ms >> 40)
	b[1] = byte(ms >> 32)
	b[2] = byte(ms >> 24)
	b[3] = byte(ms >> 16)
	b[4] = byte(ms >> 8)
	b[5] = byte(ms)
	b[6] = 0x70 | byte(seq>>8)&0x0f
	b[7] = byte(seq)
	b[8] = 0x80 | byte(r>>56)&0x3f // RFC 9562 variant
	for i := 9; i < 16; i++ {
		b[i] = byte(r >> (8 * (i - 9)))
	}
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
