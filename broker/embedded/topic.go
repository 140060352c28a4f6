package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// topic is one durable topic: a directory of segments, a writer goroutine
// that group-commits appends, and a dedup index.
type topic struct {
	b    *Broker
	name string
	dir  string

	mu   sync.RWMutex // guards segs, segment indexes, cfg
	segs []*segment
	cfg  broker.TopicConfig

	reqs    chan *appendReq
	wmu     sync.Mutex   // held while committing: by the writer goroutine or a leader publisher
	sendMu  sync.RWMutex // see appendAsync
	stop    chan struct{}
	stopped chan struct{}

	// writer-owned
	nextSeq  uint64
	lastTime int64
	dedup    *dedupIndex
	buf      []byte
	broken   error

	committed atomic.Uint64 // last committed seq
	bytes     atomic.Int64
}

type appendReq struct {
	msgs     []*message.Message
	explicit []bool // caller chose the ID: dedup applies
	internal bool   // dead letters and promotions: no dedup lookups
	res      []broker.MessageResult
	done     chan error  // synchronous callers wait here
	cb       func(error) // asynchronous callers are called back instead
}

// reply answers the request exactly once.
func (r *appendReq) reply(err error) {
	if r.cb != nil {
		r.cb(err)
		return
	}
	r.done <- err
}

func topicDirName(name string) string { return name } // validated names are safe path elements

// openTopic opens (creating when needed) a topic directory and recovers it.
func (b *Broker) openTopic(name string, cfg broker.TopicConfig) (*topic, error) {
	dir := filepath.Join(b.dir, "topics", topicDirName(name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: create topic directory: %v", errStorage, err)
	}
	t := &topic{
		b: b, name: name, dir: dir, cfg: cfg,
		reqs:    make(chan *appendReq, 1024),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		dedup:   newDedupIndex(b.opts.dedupWindow, b.opts.dedupMax),
		nextSeq: 1,
	}
	bases, err := listSegments(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: list segments of %q: %v", errStorage, name, err)
	}
	if len(bases) == 0 {
		bases = []uint64{1}
	}
	cut := time.Now().Add(-b.opts.dedupWindow).UnixNano()
	for i, base := range bases {
		tail := i == len(bases)-1
		s, err := openSegment(dir, base, tail, b.opts.repair, func(seq uint64, pub int64, flags byte, rec []byte) {
			if flags&(flagExplicitID|flagPromoted) != 0 && pub >= cut {
				r, _, err := decodeRecord(rec)
				if err == nil {
					t.dedup.add(r.msg.ID, seq, pub)
				}
			}
		})
		if err != nil {
			t.closeSegments()
			return nil, fmt.Errorf("topic %q: %w", name, err)
		}
		if len(t.segs) > 0 && s.base != t.segs[len(t.segs)-1].last.Load()+1 {
			prev := t.segs[len(t.segs)-1]
			if prev.count() > 0 || s.count() > 0 {
				t.closeSegments()
				s.f.Close()
				return nil, &CorruptError{Path: s.path, Offset: 0, Reason: fmt.Sprintf("segment starts at sequence %d but the previous one ends at %d", s.base, prev.last.Load())}
			}
		}
		t.segs = append(t.segs, s)
		t.bytes.Add(s.size.Load())
	}
	act := t.segs[len(t.segs)-1]
	t.nextSeq = act.last.Load() + 1
	t.lastTime = act.lastTime.Load()
	t.committed.Store(act.last.Load())
	go t.writeLoop()
	return t, nil
}

func (t *topic) closeSegments() {
	for _, s := range t.segs {
		s.f.Close()
	}
}

// close stops the writer (failing queued appends with ErrClosed) and closes
// the files.
func (t *topic) close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	<-t.stopped
	t.sendMu.Lock() // no sender is between its stop check and its send
	t.failQueued()
	t.sendMu.Unlock()
	t.wmu.Lock() // a publisher committing on the leader path finishes first
	defer t.wmu.Unlock()
	t.mu.Lock()
	t.closeSegments()
	t.mu.Unlock()
}

var donePool = sync.Pool{New: func() any { return make(chan error, 1) }}

// appendAsync queues req for the writer; req.cb is called when it is
// committed or failed.
func (t *topic) appendAsync(ctx context.Context, req *appendReq) error {
	req.res = make([]broker.MessageResult, len(req.msgs))
	// The read lock keeps close from draining the queue for the last time
	// while this request is being queued: every queued request is answered.
	t.sendMu.RLock()
	defer t.sendMu.RUnlock()
	select {
	case <-t.stop:
		return fmt.Errorf("topic %q: %w", t.name, broker.ErrClosed)
	default:
	}
	select {
	case t.reqs <- req:
		return nil
	case <-t.stop:
		return fmt.Errorf("topic %q: %w", t.name, broker.ErrClosed)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// append queues msgs for the writer and waits until they are committed.
func (t *topic) append(ctx context.Context, req *appendReq) error {
	done := donePool.Get().(chan error)
	req.done = done
	req.res = make([]broker.MessageResult, len(req.msgs))
	// Leader path: when no commit is running and nothing is queued, this
	// goroutine writes and syncs its own request (and whatever arrives in
	// the meantime is queued for the writer goroutine, which batches it).
	// That spares a lone publisher two goroutine hand-offs per publish.
	if len(t.reqs) == 0 && t.wmu.TryLock() {
		select {
		case <-t.stop:
			t.wmu.Unlock()
			donePool.Put(done)
			return fmt.Errorf("topic %q: %w", t.name, broker.ErrClosed)
		default:
		}
		t.commit([]*appendReq{req})
		t.wmu.Unlock()
		err := <-done // answered by commit, exactly once
		donePool.Put(done)
		return err
	}
	cancel := ctx.Done()
	select {
	case t.reqs <- req:
	case <-t.stop:
		donePool.Put(done)
		return fmt.Errorf("topic %q: %w", t.name, broker.ErrClosed)
	case <-cancel:
		donePool.Put(done)
		return ctx.Err()
	}
	select {
	case err := <-done:
		donePool.Put(done) // answered exactly once: safe to reuse
		return err
	case <-t.stopped:
		select {
		case err := <-done:
			return err
		default:
			return fmt.Errorf("topic %q: %w before the write was confirmed", t.name, broker.ErrClosed)
		}
	case <-cancel:
		// The write may still complete; the caller was told nothing was
		// acknowledged, which at-least-once publishers handle by retrying
		// with the same ID (deduplicated). The channel is not reused.
		return ctx.Err()
	}
}

const (
	maxCommitReqs  = 4096
	maxCommitBytes = 8 << 20
)

func (t *topic) writeLoop() {
	defer close(t.stopped)
	batch := make([]*appendReq, 0, 256)
	for {
		select {
		case r := <-t.reqs:
			batch = append(batch[:0], r)
		case <-t.stop:
			t.failQueued()
			return
		}
		size := 0
	drain:
		for len(batch) < maxCommitReqs && size < maxCommitBytes {
			select {
			case r := <-t.reqs:
				batch = append(batch, r)
				size += len(r.msgs) * 64
			default:
				break drain
			}
		}
		t.wmu.Lock() // a publisher may be committing on the leader path
		t.commit(batch)
		t.wmu.Unlock()
		for i := range batch {
			batch[i] = nil
		}
	}
}

func (t *topic) failQueued() {
	for {
		select {
		case r := <-t.reqs:
			r.reply(fmt.Errorf("topic %q: %w", t.name, broker.ErrClosed))
		default:
			return
		}
	}
}

// commit writes one group of requests with a single write and a single
// fdatasync, then answers them.
func (t *topic) commit(batch []*appendReq) {
	if t.broken != nil {
		for _, r := range batch {
			r.reply(t.broken)
		}
		return
	}
	now := time.Now().UnixNano()
	if now <= t.lastTime {
		now = t.lastTime // publish times never go backwards inside a topic
	}
	t.mu.RLock()
	seg := t.segs[len(t.segs)-1]
	t.mu.RUnlock()
	if seg.size.Load() >= t.b.opts.segmentBytes && seg.count() > 0 {
		if err := t.roll(); err != nil {
			for _, r := range batch {
				r.reply(err)
			}
			return
		}
		t.mu.RLock()
		seg = t.segs[len(t.segs)-1]
		t.mu.RUnlock()
	}
	startOff := seg.size.Load()
	startSeq := t.nextSeq
	buf := t.buf[:0]
	var offs, times []int64
	seen := map[string]uint64{}
	for _, r := range batch {
		// Decide duplicates first so that the batch-end flag lands on the
		// last stored record of the request.
		last := -1
		for i, m := range r.msgs {
			if r.explicit != nil && r.explicit[i] && t.b.opts.dedupWindow > 0 {
				if seq, ok := seen[m.ID]; ok {
					r.res[i] = broker.MessageResult{ID: m.ID, Seq: seq, Duplicate: true}
					continue
				}
				if seq, ok := t.dedup.lookup(m.ID, now); ok {
					r.res[i] = broker.MessageResult{ID: m.ID, Seq: seq, Duplicate: true}
					continue
				}
				seen[m.ID] = t.nextSeq + uint64(i) // provisional, fixed below
			}
			last = i
		}
		for i, m := range r.msgs {
			if r.res[i].Duplicate {
				continue
			}
			seq := t.nextSeq
			t.nextSeq++
			m.PublishedAt = time.Unix(0, now)
			m.Topic = t.name
			var flags byte
			if r.explicit != nil && r.explicit[i] {
				flags |= flagExplicitID
				seen[m.ID] = seq
			}
			if r.internal && !m.DeliverAt.IsZero() {
				flags |= flagPromoted
			}
			if i == last {
				flags |= flagBatchEnd
			}
			offs = append(offs, startOff+int64(len(buf)))
			times = append(times, now)
			buf = appendRecord(buf, seq, m, flags)
			r.res[i] = broker.MessageResult{ID: m.ID, Seq: seq}
		}
		for i, m := range r.msgs { // duplicates inside one request: point at the stored copy
			if r.res[i].Duplicate {
				if seq, ok := seen[m.ID]; ok {
					r.res[i].Seq = seq
				}
			}
		}
	}
	t.buf = buf
	if len(buf) > 0 {
		err := t.write(seg, buf, startOff)
		if err != nil {
			t.nextSeq = startSeq
			for _, r := range batch {
				r.reply(err)
			}
			return
		}
		for id, seq := range seen {
			t.dedup.add(id, seq, now)
		}
		t.lastTime = now
		t.mu.Lock()
		seg.noteAppended(startSeq, offs, times, startOff+int64(len(buf)))
		t.mu.Unlock()
		t.bytes.Add(int64(len(buf)))
		t.committed.Store(t.nextSeq - 1)
	}
	if cap(t.buf) > 16<<20 {
		t.buf = nil
	}
	if len(buf) > 0 {
		// Fan out before acknowledging: a subscription made after Publish
		// returned is live-only and must not see this group.
		t.b.committed(t, batch)
	}
	for _, r := range batch {
		r.reply(nil)
	}
}

// write appends buf at off and syncs it. On failure it cuts the file back to
// off so that no partial batch remains.
func (t *topic) write(seg *segment, buf []byte, off int64) error {
	_, err := seg.f.WriteAt(buf, off)
	if err == nil && t.b.opts.durability == DurabilityFsync {
		start := time.Now()
		err = unix.Fdatasync(int(seg.f.Fd()))
		t.b.metrics.observeSync(time.Since(start))
	}
	if err == nil {
		return nil
	}
	werr := fmt.Errorf("%w: write to topic %q (%s): %v; nothing of this publish was acknowledged", errStorage, t.name, seg.path, err)
	if errors.Is(err, unix.ENOSPC) {
		werr = fmt.Errorf("%w: disk full writing topic %q (%s); free space or lower retention, nothing of this publish was acknowledged", errStorage, t.name, seg.path)
	}
	if terr := seg.f.Truncate(off); terr != nil {
		t.broken = fmt.Errorf("%w: topic %q is read-only after a failed write could not be undone (%v); restart the broker", errStorage, t.name, terr)
	}
	return werr
}

// roll seals the active segment and starts a new one.
func (t *topic) roll() error {
	s, err := openSegment(t.dir, t.nextSeq, true, false, nil)
	if err != nil {
		return fmt.Errorf("topic %q: roll segment: %w", t.name, err)
	}
	if d, err := os.Open(t.dir); err == nil {
		_ = d.Sync() // make the new file's directory entry durable
		d.Close()
	}
	t.mu.Lock()
	t.segs = append(t.segs, s)
	t.mu.Unlock()
	return nil
}

// firstSeq returns the oldest retained sequence (nextSeq when empty).
func (t *topic) firstSeq() uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, s := range t.segs {
		if s.count() > 0 {
			return s.base
		}
	}
	return t.committed.Load() + 1
}

// seqAtTime returns the first sequence published at or after ts.
func (t *topic) seqAtTime(ts time.Time) uint64 {
	want := ts.UnixNano()
	t.mu.RLock()
	var seg *segment
	for _, s := range t.segs {
		if s.count() > 0 && s.lastTime.Load() >= want {
			seg = s
			break
		}
	}
	if seg == nil {
		t.mu.RUnlock()
		return t.committed.Load() + 1
	}
	off, seq := seg.seekTime(want)
	t.mu.RUnlock()
	r := &reader{t: t, seg: seg, off: off, next: seq}
	for {
		rec, ok, err := r.read()
		if err != nil || !ok {
			return t.committed.Load() + 1
		}
		if !rec.msg.PublishedAt.Before(ts) {
			return rec.seq
		}
	}
}
