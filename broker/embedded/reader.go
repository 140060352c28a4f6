package embedded

import (
	"errors"
	"fmt"
	"io"
	"sort"
)

// reader reads committed records of a topic in sequence order. It is not
// safe for concurrent use.
type reader struct {
	t    *topic
	seg  *segment
	off  int64  // file offset of the next record in seg
	next uint64 // sequence wanted next

	buf    []byte
	bufOff int64 // file offset of buf[0]
}

func newReader(t *topic, from uint64) *reader { return &reader{t: t, next: from} }

// locate finds the segment holding r.next (or the first retained one after it)
// and an offset at or before it.
func (r *reader) locate() bool {
	r.t.mu.RLock()
	defer r.t.mu.RUnlock()
	segs := r.t.segs
	i := sort.Search(len(segs), func(i int) bool { return segs[i].last.Load() >= r.next })
	if i == len(segs) {
		return false // nothing at or after next yet
	}
	s := segs[i]
	if r.next < s.base {
		r.next = s.base // retention removed what we wanted: skip ahead
	}
	r.seg = s
	r.off, _ = s.seek(r.next)
	r.buf = r.buf[:0]
	return true
}

// read returns the next committed record, ok=false when there is none yet.
func (r *reader) read() (record, bool, error) {
	for {
		if r.next > r.t.committed.Load() {
			return record{}, false, nil
		}
		if r.seg == nil || r.next > r.seg.last.Load() || r.next < r.seg.base {
			if !r.locate() {
				return record{}, false, nil
			}
		}
		rec, ok, err := r.readInSegment()
		if err != nil {
			return record{}, false, err
		}
		if !ok {
			r.seg = nil // segment exhausted or deleted: relocate
			continue
		}
		if rec.seq < r.next {
			continue // skipping from a sparse index entry
		}
		r.next = rec.seq + 1
		rec.msg.Topic = r.t.name
		return rec, true, nil
	}
}

func (r *reader) readInSegment() (record, bool, error) {
	end := r.seg.size.Load()
	for {
		if r.off >= end {
			return record{}, false, nil
		}
		lo := r.off - r.bufOff
		if lo < 0 || lo > int64(len(r.buf)) {
			r.buf, r.bufOff, lo = r.buf[:0], r.off, 0
		}
		rest := r.buf[lo:]
		rec, n, err := decodeRecord(rest)
		if err == nil {
			r.off += int64(n)
			return rec, true, nil
		}
		if !errors.Is(err, errShort) {
			return record{}, false, &CorruptError{Path: r.seg.path, Offset: r.off, Reason: err.Error()}
		}
		// Refill from r.off, at least the needed length.
		want := max(n, 256<<10)
		if int64(want) > end-r.off {
			want = int(end - r.off)
		}
		if cap(r.buf) < want {
			r.buf = make([]byte, want)
		}
		r.buf = r.buf[:want]
		m, err := r.seg.f.ReadAt(r.buf, r.off)
		if err != nil && !(errors.Is(err, io.EOF) && m == want) {
			if m < want {
				return record{}, false, fmt.Errorf("%w: read %s at %d: %v", errStorage, r.seg.path, r.off, err)
			}
		}
		r.bufOff = r.off
		if m < n {
			return record{}, false, &CorruptError{Path: r.seg.path, Offset: r.off, Reason: "record extends past the committed end"}
		}
	}
}
