package embedded

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

var (
	bucketTopics    = []byte("topics")     // name → TopicConfig JSON
	bucketGroups    = []byte("groups")     // name → groupRecord JSON
	bucketDLQFloors = []byte("dlq-floors") // group → first dead letter not yet replayed or purged
)

// groupRecord is a group's persisted state. Deliveries are at least once
// across a crash: acks after the last checkpoint (every 100 ms) may be
// redelivered, nothing acknowledged-as-published is skipped.
type groupRecord struct {
	Settings groupSettings          `json:"settings"`
	Cursors  map[string]cursorState `json:"cursors"`
}

type cursorState struct {
	Next uint64 `json:"next"` // read position
	// Pending lists unfinished sequences and the attempts made, packed by
	// packPending (JSON carries it as base64): a checkpoint of thousands
	// of messages in flight costs a few bytes each.
	Pending []byte `json:"pending,omitempty"`
}

func (b *Broker) saveTopicConfig(cfg broker.TopicConfig) error {
	data, _ := json.Marshal(cfg)
	err := b.meta.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTopics).Put([]byte(cfg.Name), data) })
	if err != nil {
		return fmt.Errorf("%w: save topic %q: %v", errStorage, cfg.Name, err)
	}
	return nil
}

// recover opens every topic and restores every group.
func (b *Broker) recover() error {
	configs := map[string]broker.TopicConfig{}
	records := map[string]groupRecord{}
	err := b.meta.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketTopics, bucketGroups, bucketDLQFloors, bucketSchedule, bucketSchedIDs} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketTopics).ForEach(func(k, v []byte) error {
			var c broker.TopicConfig
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("topic %q config: %w", k, err)
			}
			configs[string(k)] = c
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketGroups).ForEach(func(k, v []byte) error {
			var r groupRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("group %q state: %w", k, err)
			}
			records[string(k)] = r
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("%w: read metadata in %s: %v", errStorage, b.dir, err)
	}
	ents, err := os.ReadDir(filepath.Join(b.dir, "topics"))
	if err != nil {
		return fmt.Errorf("%w: list topics: %v", errStorage, err)
	}
	for _, e := range ents {
		if !e.IsDir() || message.ValidateTopic(e.Name()) != nil {
			continue
		}
		cfg, ok := configs[e.Name()]
		if !ok {
			cfg = broker.TopicConfig{Name: e.Name()}
		}
		t, err := b.openTopic(e.Name(), cfg)
		if err != nil {
			for _, t := range b.topics {
				t.close()
			}
			return err
		}
		b.topics[e.Name()] = t
	}
	for name, r := range records {
		g := newGroup(b, name, r.Settings)
		if g.settings.AckDeadline <= 0 {
			g.settings.AckDeadline = b.opts.ackDeadline
		}
		for tn, cs := range r.Cursors {
			t, ok := b.topics[tn]
			if !ok {
				continue // topic deleted
			}
			pending, err := unpackPending(cs.Pending)
			if err != nil {
				return fmt.Errorf("%w: group %q position in topic %q: %v", errStorage, name, tn, err)
			}
			from := cs.Next
			for seq := range pending {
				from = min(from, seq)
			}
			c := &cursor{t: t, r: newReader(t, from), pending: map[uint64]*pend{}}
			if len(pending) > 0 || from < cs.Next {
				c.recoverUntil, c.recoverPending = cs.Next, pending
			}
			g.cursors[tn] = c
			g.order = append(g.order, tn)
		}
		for tn, t := range b.topics { // topics created while the group was not loaded
			if _, ok := g.cursors[tn]; !ok && g.follows(tn) {
				g.attachLocked(t, broker.StartPosition{Kind: broker.StartEarliest})
			}
		}
		slices.Sort(g.order)
		b.groups[name] = g
		g.start()
	}
	return nil
}

// snapshot returns the group's state to persist, or nil when unchanged.
func (g *group) snapshot(force bool) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.dirty && !force {
		return nil
	}
	g.dirty = false
	r := groupRecord{Settings: g.settings, Cursors: make(map[string]cursorState, len(g.cursors))}
	for name, c := range g.cursors {
		cs := cursorState{Next: c.r.next}
		if len(c.pending) > 0 || len(c.recoverPending) > 0 {
			seqs := make([]uint64, 0, len(c.pending)+len(c.recoverPending))
			attempts := make(map[uint64]int, cap(seqs))
			for seq, a := range c.recoverPending {
				seqs = append(seqs, seq)
				attempts[seq] = a
			}
			for seq, p := range c.pending {
				seqs = append(seqs, seq)
				attempts[seq] = p.attempt
			}
			cs.Pending = packPending(seqs, attempts)
		}
		if c.recoverUntil > cs.Next {
			// Still replaying after a restart: everything from the read
			// position up to recoverUntil that is not pending is done.
			cs.Next = c.recoverUntil
		}
		r.Cursors[name] = cs
	}
	data, _ := json.Marshal(r)
	return data
}

// checkpoint saves the state of every changed group in one transaction.
func (b *Broker) checkpoint() error {
	b.mu.RLock()
	snaps := map[string][]byte{}
	for name, g := range b.groups {
		if s := g.snapshot(false); s != nil {
			snaps[name] = s
		}
	}
	b.mu.RUnlock()
	if len(snaps) == 0 {
		return nil
	}
	err := b.meta.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketGroups)
		for name, s := range snaps {
			if err := bk.Put([]byte(name), s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: save group positions: %v", errStorage, err)
	}
	return nil
}

func (b *Broker) checkpointLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(b.opts.checkpoint)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			if err := b.checkpoint(); err != nil {
				b.log.Error("checkpoint failed; group positions since the last checkpoint would be redelivered after a crash", "err", err)
			}
		}
	}
}

// packPending encodes sequences (sorted here) and their attempts as uvarint
// pairs: the gap from the previous sequence, then the attempts.
func packPending(seqs []uint64, attempts map[uint64]int) []byte {
	slices.Sort(seqs)
	buf := make([]byte, 0, 3*len(seqs))
	prev := uint64(0)
	for _, seq := range seqs {
		buf = binary.AppendUvarint(buf, seq-prev)
		buf = binary.AppendUvarint(buf, uint64(attempts[seq]))
		prev = seq
	}
	return buf
}

func unpackPending(b []byte) (map[uint64]int, error) {
	out := map[uint64]int{}
	prev := uint64(0)
	for len(b) > 0 {
		gap, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("corrupt pending list")
		}
		b = b[n:]
		a, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("corrupt pending list")
		}
		b = b[n:]
		prev += gap
		out[prev] = int(a)
	}
	return out, nil
}
