package embedded

import (
	"os"
	"time"
)

func (b *Broker) janitorLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(b.opts.janitor)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			b.applyRetention(time.Now())
		}
	}
}

// applyRetention removes whole sealed segments that every configured limit
// allows to go. The active segment is never removed.
func (b *Broker) applyRetention(now time.Time) {
	b.mu.RLock()
	topics := make([]*topic, 0, len(b.topics))
	for _, t := range b.topics {
		topics = append(topics, t)
	}
	b.mu.RUnlock()
	for _, t := range topics {
		t.mu.RLock()
		r := t.cfg.Retention
		t.mu.RUnlock()
		if r.MaxAge == 0 && r.MaxBytes == 0 && r.MaxCount == 0 && !r.WorkQueue {
			continue
		}
		floor := uint64(0)
		if r.WorkQueue {
			floor = b.groupsFloor(t)
		}
		t.trim(now, floor)
	}
}

// groupsFloor is the lowest unfinished sequence over every group following t
// (0 when no group follows it: work-queue retention then keeps everything).
func (b *Broker) groupsFloor(t *topic) uint64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	floor, any := uint64(0), false
	for _, g := range b.groups {
		if !g.follows(t.name) {
			continue
		}
		g.mu.Lock()
		if c, ok := g.cursors[t.name]; ok {
			f := c.floor()
			if !any || f < floor {
				floor = f
			}
			any = true
		}
		g.mu.Unlock()
	}
	return floor
}

// trim drops the oldest sealed segments while every limit allows it.
func (t *topic) trim(now time.Time, wqFloor uint64) {
	t.mu.Lock()
	r := t.cfg.Retention
	var drop []*segment
	for len(t.segs) > 1 {
		s := t.segs[0]
		var total, count int64
		for _, x := range t.segs {
			total += x.size.Load()
			count += x.count()
		}
		ok := false
		if r.MaxAge > 0 && s.lastTime.Load() < now.Add(-r.MaxAge).UnixNano() {
			ok = true
		}
		if r.MaxBytes > 0 && total-s.size.Load() >= r.MaxBytes {
			ok = true
		}
		if r.MaxCount > 0 && count-s.count() >= r.MaxCount {
			ok = true
		}
		if r.WorkQueue && wqFloor > s.last.Load() {
			ok = true
		}
		if !ok {
			break
		}
		drop = append(drop, s)
		t.segs = t.segs[1:]
	}
	t.mu.Unlock()
	for _, s := range drop {
		t.bytes.Add(-s.size.Load())
		os.Remove(s.path)
		f := s.f
		// Readers may still hold the segment; the unlinked file stays
		// readable until closed.
		time.AfterFunc(time.Minute, func() { f.Close() })
	}
}
