package embedded

import "time"

// dedupIndex remembers caller-chosen message IDs published inside the window.
// Memory is bounded by maxEntries: when full, the oldest entries go first,
// which shortens the effective window (counted in evicted).
type dedupIndex struct {
	window     time.Duration
	maxEntries int
	byID       map[string]uint64 // id → seq
	fifo       []dedupEntry      // insertion order, for expiry
	head       int
	evicted    int64
}

type dedupEntry struct {
	id string
	at int64
}

func newDedupIndex(window time.Duration, maxEntries int) *dedupIndex {
	return &dedupIndex{window: window, maxEntries: maxEntries, byID: make(map[string]uint64)}
}

func (d *dedupIndex) lookup(id string, now int64) (uint64, bool) {
	d.expire(now)
	seq, ok := d.byID[id]
	return seq, ok
}

func (d *dedupIndex) add(id string, seq uint64, at int64) {
	if d.window <= 0 {
		return
	}
	if _, ok := d.byID[id]; ok {
		return
	}
	if len(d.byID) >= d.maxEntries {
		d.evictOne()
		d.evicted++
	}
	d.byID[id] = seq
	d.fifo = append(d.fifo, dedupEntry{id: id, at: at})
}

func (d *dedupIndex) evictOne() {
	for d.head < len(d.fifo) {
		e := d.fifo[d.head]
		d.fifo[d.head] = dedupEntry{}
		d.head++
		if _, ok := d.byID[e.id]; ok {
			delete(d.byID, e.id)
			break
		}
	}
	d.compact()
}

func (d *dedupIndex) expire(now int64) {
	cut := now - int64(d.window)
	for d.head < len(d.fifo) && d.fifo[d.head].at < cut {
		delete(d.byID, d.fifo[d.head].id)
		d.fifo[d.head] = dedupEntry{}
		d.head++
	}
	d.compact()
}

func (d *dedupIndex) compact() {
	if d.head > 1024 && d.head > len(d.fifo)/2 {
		n := copy(d.fifo, d.fifo[d.head:])
		d.fifo = d.fifo[:n]
		d.head = 0
	}
}
