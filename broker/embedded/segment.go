package embedded

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

// indexEvery is the spacing of sparse index entries in bytes: memory per
// segment is size/indexEvery entries, independent of the message count.
const indexEvery = 64 << 10

type indexEntry struct {
	seq  uint64
	off  int64
	time int64 // publish time of that record
}

// segment is one append-only file of a topic. Records in it have sequences
// base, base+1, ... without gaps.
type segment struct {
	base  uint64
	path  string
	f     *os.File
	index []indexEntry // sparse, ascending; guarded by the topic's mu

	size      atomic.Int64  // committed (readable) bytes
	last      atomic.Uint64 // last committed seq, base-1 when empty
	firstTime atomic.Int64
	lastTime  atomic.Int64
}

func segmentName(base uint64) string { return fmt.Sprintf("%020d.log", base) }

// listSegments returns the bases of the segment files in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var bases []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok || e.IsDir() {
			continue
		}
		b, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		bases = append(bases, b)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, nil
}

// CorruptError reports a damaged segment file. It matches broker.ErrStorage.
type CorruptError struct {
	Path   string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("segment %s is corrupt at byte %d (%s); the records after it cannot be read: restore the file from a backup, or open with ?repair=truncate to cut the segment there and lose the records after it", e.Path, e.Offset, e.Reason)
}

func (e *CorruptError) Unwrap() error { return errStorage }

// scanResult is what a recovery scan learns about a segment.
type scanFunc func(seq uint64, published int64, flags byte, rec []byte)

// openSegment opens (creating when needed) the segment with base in dir and
// scans it: it validates every record, builds the sparse index and calls fn
// for each record. A torn tail (an incomplete record or batch at the end)
// is cut when tail is true (the newest segment); elsewhere it is a
// CorruptError unless repair is set.
func openSegment(dir string, base uint64, tail, repair bool, fn scanFunc) (*segment, error) {
	path := filepath.Join(dir, segmentName(base))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: open segment: %v", errStorage, err)
	}
	s := &segment{base: base, path: path, f: f}
	s.last.Store(base - 1)
	good, err := s.scan(fn)
	if err != nil {
		var ce *CorruptError
		if !errors.As(err, &ce) || !(tail || repair) {
			f.Close()
			return nil, err
		}
		// Torn tail (or repair requested): cut at the last complete batch.
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: cut torn tail of %s: %v", errStorage, path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: sync %s: %v", errStorage, path, err)
		}
	}
	s.size.Store(good)
	return s, nil
}

// scan reads the whole file, returns the offset after the last complete
// batch, and a CorruptError if anything after that offset is not a complete
// batch of valid records.
func (s *segment) scan(fn scanFunc) (int64, error) {
	const chunk = 1 << 20
	buf := make([]byte, 0, chunk)
	var off, batchEnd int64 // file offset of buf[0]; end of last complete batch
	var pending []pendingRec
	next := s.base
	var lastIdx int64 = -indexEvery
	eof := false
	for {
		// fill
		if !eof && len(buf) < chunk {
			if cap(buf)-len(buf) < chunk/2 {
				nb := make([]byte, len(buf), max(2*cap(buf), len(buf)+chunk))
				copy(nb, buf)
				buf = nb
			}
			n, err := s.f.ReadAt(buf[len(buf):cap(buf)], off+int64(len(buf)))
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				eof = true
			} else if err != nil {
				return batchEnd, fmt.Errorf("%w: read %s: %v", errStorage, s.path, err)
			}
		}
		if len(buf) == 0 {
			return batchEnd, nil
		}
		total, err := peekRecord(buf)
		if errors.Is(err, errShort) {
			if eof {
				return batchEnd, &CorruptError{Path: s.path, Offset: off, Reason: "incomplete record at end of file"}
			}
			if total > cap(buf) {
				nb := make([]byte, len(buf), total+chunk)
				copy(nb, buf)
				buf = nb
			}
			continue
		}
		if err != nil {
			return batchEnd, &CorruptError{Path: s.path, Offset: off, Reason: err.Error()}
		}
		seq, pub, flags := peekSeqFlags(buf)
		if seq != next {
			return batchEnd, &CorruptError{Path: s.path, Offset: off, Reason: fmt.Sprintf("sequence %d where %d was expected", seq, next)}
		}
		next++
		pending = append(pending, pendingRec{seq: seq, off: off, pub: pub, flags: flags})
		if fn != nil {
			fn(seq, pub, flags, buf[:total])
		}
		off += int64(total)
		buf = buf[total:]
		if flags&flagBatchEnd != 0 {
			for _, p := range pending {
				if p.off-lastIdx >= indexEvery {
					s.index = append(s.index, indexEntry{seq: p.seq, off: p.off, time: p.pub})
					lastIdx = p.off
				}
				if s.firstTime.Load() == 0 {
					s.firstTime.Store(p.pub)
				}
				s.lastTime.Store(p.pub)
				s.last.Store(p.seq)
			}
			pending = pending[:0]
			batchEnd = off
		}
		if len(buf) == 0 && cap(buf) > 4*chunk {
			buf = make([]byte, 0, chunk)
		}
	}
}

type pendingRec struct {
	seq   uint64
	off   int64
	pub   int64
	flags byte
}

// noteAppended records committed records (called by the writer after sync).
func (s *segment) noteAppended(first uint64, offs []int64, times []int64, end int64) {
	lastIdx := int64(-indexEvery)
	if n := len(s.index); n > 0 {
		lastIdx = s.index[n-1].off
	}
	for i, off := range offs {
		if off-lastIdx >= indexEvery {
			s.index = append(s.index, indexEntry{seq: first + uint64(i), off: off, time: times[i]})
			lastIdx = off
		}
	}
	if len(times) > 0 {
		if s.firstTime.Load() == 0 {
			s.firstTime.Store(times[0])
		}
		s.lastTime.Store(times[len(times)-1])
		s.last.Store(first + uint64(len(offs)) - 1)
	}
	s.size.Store(end)
}

// seek returns the offset of a record at or before seq from the sparse index.
func (s *segment) seek(seq uint64) (int64, uint64) {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].seq > seq })
	if i == 0 {
		return 0, s.base
	}
	return s.index[i-1].off, s.index[i-1].seq
}

// seekTime returns an offset and seq at or before the first record published
// at or after t.
func (s *segment) seekTime(t int64) (int64, uint64) {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].time >= t })
	if i == 0 {
		return 0, s.base
	}
	return s.index[i-1].off, s.index[i-1].seq
}

func (s *segment) count() int64 { return int64(s.last.Load() + 1 - s.base) }
