package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

var (
	bucketSchedule = []byte("schedule")     // be64(deliver-at) | topic | 0 | id → record
	bucketSchedIDs = []byte("schedule-ids") // topic | 0 | id → schedule key
)

// scheduler keeps delayed messages on disk (in the metadata store, ordered by
// due time) and moves them to their topic when due. Memory does not grow with
// the number of delayed messages.
type scheduler struct {
	b    *Broker
	wake chan struct{}
}

func newScheduler(b *Broker) *scheduler { return &scheduler{b: b, wake: make(chan struct{}, 1)} }

func schedKey(at time.Time, topic, id string) []byte {
	k := binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano()))
	k = append(k, topic...)
	k = append(k, 0)
	return append(k, id...)
}

// publish stores the delayed messages of a batch durably (one fsync for the
// batch, shared with concurrent callers) and appends the others to the topic.
// A batch that mixes delayed and immediate messages is not atomic across a
// crash: the delayed part may be stored without the immediate part.
func (s *scheduler) publish(ctx context.Context, t *topic, msgs []*message.Message, explicit []bool, delayed []int) (*broker.PublishResult, error) {
	res := make([]broker.MessageResult, len(msgs))
	isDelayed := make([]bool, len(msgs))
	now := time.Now()
	err := s.b.meta.Batch(func(tx *bolt.Tx) error {
		sb, ids := tx.Bucket(bucketSchedule), tx.Bucket(bucketSchedIDs)
		for _, i := range delayed {
			m := msgs[i]
			isDelayed[i] = true
			idk := append(append([]byte(t.name), 0), m.ID...)
			res[i] = broker.MessageResult{ID: m.ID}
			if explicit[i] && ids.Get(idk) != nil {
				res[i].Duplicate = true
				continue
			}
			m.Topic = t.name
			m.PublishedAt = now
			var flags byte
			if explicit[i] {
				flags = flagExplicitID
			}
			k := schedKey(m.DeliverAt, t.name, m.ID)
			if err := sb.Put(k, appendRecord(nil, 0, m, flags|flagBatchEnd)); err != nil {
				return err
			}
			if err := ids.Put(idk, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: store delayed messages of topic %q: %v", errStorage, t.name, err)
	}
	s.signal()
	var now2 []*message.Message
	var idx []int
	var exp []bool
	for i, m := range msgs {
		if !isDelayed[i] {
			now2 = append(now2, m)
			idx = append(idx, i)
			exp = append(exp, explicit[i])
		}
	}
	if len(now2) > 0 {
		req := &appendReq{msgs: now2, explicit: exp}
		if err := t.append(ctx, req); err != nil {
			return nil, err
		}
		for j, i := range idx {
			res[i] = req.res[j]
		}
	}
	return &broker.PublishResult{Results: res}, nil
}

func (s *scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) run() {
	defer s.b.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-s.b.stop:
			return
		case <-s.wake:
		case <-timer.C:
		}
		next, err := s.promoteDue()
		if err != nil {
			s.b.log.Error("promoting delayed messages failed; retrying", "err", err)
			next = time.Second
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// promoteDue appends due messages to their topics, then removes them from
// the schedule. A crash in between is undone by dedup: promoted messages are
// indexed by ID, so a second promotion is recognised as a duplicate.
func (s *scheduler) promoteDue() (time.Duration, error) {
	for {
		now := time.Now()
		type due struct {
			key   []byte
			topic string
			rec   record
		}
		var batch []due
		wait := time.Hour
		err := s.b.meta.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketSchedule).Cursor()
			for k, v := c.First(); k != nil && len(batch) < 512; k, v = c.Next() {
				at := time.Unix(0, int64(binary.BigEndian.Uint64(k)))
				if at.After(now) {
					wait = at.Sub(now)
					break
				}
				rest := k[8:]
				z := bytes.IndexByte(rest, 0)
				if z < 0 {
					continue
				}
				rec, _, err := decodeRecord(v)
				if err != nil {
					s.b.log.Error("skipping corrupt delayed message", "key", fmt.Sprintf("%x", k), "err", err)
					continue
				}
				batch = append(batch, due{key: append([]byte(nil), k...), topic: string(rest[:z]), rec: rec})
			}
			return nil
		})
		if err != nil || len(batch) == 0 {
			return wait, err
		}
		for _, d := range batch {
			t, err := s.b.topic(d.topic, true)
			if err != nil {
				return time.Second, err
			}
			m := d.rec.msg
			if err := t.append(context.Background(), &appendReq{msgs: []*message.Message{&m}, explicit: []bool{true}, internal: true}); err != nil {
				return time.Second, err
			}
		}
		err = s.b.meta.Update(func(tx *bolt.Tx) error {
			sb, ids := tx.Bucket(bucketSchedule), tx.Bucket(bucketSchedIDs)
			for _, d := range batch {
				if err := sb.Delete(d.key); err != nil {
					return err
				}
				if err := ids.Delete(append(append([]byte(d.topic), 0), d.rec.msg.ID...)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return time.Second, err
		}
	}
}
