package embedded

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

func sampleRecord(seq uint64, flags byte) []byte {
	m := &message.Message{ID: "id-1", Key: "k", ContentType: "text/plain", Headers: map[string]string{"a": "b"},
		Payload: []byte("hello"), PublishedAt: time.Unix(1, 2), ExpiresAt: time.Unix(3, 0)}
	return appendRecord(nil, seq, m, flags)
}

// FuzzDecodeRecord: the decoder never panics, and what it accepts encodes
// back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(sampleRecord(1, flagBatchEnd))
	f.Add(sampleRecord(7, flagExplicitID))
	f.Add(appendRecord(nil, 1, &message.Message{}, 0))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	bad := sampleRecord(1, 0)
	bad[len(bad)-1] ^= 1
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) && !errors.Is(err, errShort) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		if len(r.msg.Headers) > 1 {
			return // map order makes re-encoding differ
		}
		again := appendRecord(nil, r.seq, &r.msg, r.flags)
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b[:n])
		}
	})
}

// FuzzRecovery: whatever bytes follow valid records at the end of the newest
// segment (a torn or garbage tail), Open never panics, keeps every complete
// batch before the damage and cuts the rest.
func FuzzRecovery(f *testing.F) {
	f.Add([]byte{})
	f.Add(sampleRecord(3, flagBatchEnd)[:10])
	f.Add(sampleRecord(3, 0))            // a batch without its end: cut
	f.Add(sampleRecord(3, flagBatchEnd)) // a valid third record: kept
	f.Add(sampleRecord(9, flagBatchEnd)) // wrong sequence: cut
	f.Add(bytes.Repeat([]byte{0}, 64))
	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := t.TempDir()
		tdir := filepath.Join(dir, "topics", "fz")
		if err := os.MkdirAll(tdir, 0o755); err != nil {
			t.Fatal(err)
		}
		data := append(sampleRecord(1, flagBatchEnd), sampleRecord(2, flagBatchEnd)...)
		data = append(data, tail...)
		if err := os.WriteFile(filepath.Join(tdir, segmentName(1)), data, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := Open(dir, WithDedupWindow(0))
		if err != nil {
			t.Fatalf("open with damaged tail: %v", err)
		}
		defer b.Close()
		b.mu.RLock()
		tp := b.topics["fz"]
		b.mu.RUnlock()
		if last := tp.committed.Load(); last < 2 {
			t.Fatalf("lost complete records: last seq %d", last)
		}
		r := newReader(tp, 1)
		for i := uint64(1); i <= tp.committed.Load(); i++ {
			rec, ok, err := r.read()
			if err != nil || !ok || rec.seq != i {
				t.Fatalf("record %d unreadable after recovery: ok=%v err=%v", i, ok, err)
			}
		}
	})
}
