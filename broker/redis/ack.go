package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/broker"
)

// ackReq is one settlement waiting in the broker's batcher: XACK the
// entry, and HDEL its due time when it has one.
type ackReq struct {
	request
	key, group, dueKey string
	id                 string
	due                bool
}

func (r *ackReq) req() *request { return &r.request }

// xack XACKs entry id of group on the stream key (and HDELs its due time
// when due is set) through the batcher. It returns when the server has
// answered for this entry, or ctx ended (which abandons the wait, not
// necessarily the XACK).
func (b *Broker) xack(ctx context.Context, key, group, dueKey, id string, due bool) error {
	r := &ackReq{request: newRequest(ctx), key: key, group: group, dueKey: dueKey, id: id, due: due}
	if !b.ops.do(r) {
		return broker.ErrClosed
	}
	return r.wait()
}

// xackAsync is xack without the wait: the outcome goes to then, from the
// batch that sends it.
func (b *Broker) xackAsync(ctx context.Context, key, group, dueKey, id string, due bool, then func(error)) {
	r := &ackReq{request: newAsyncRequest(ctx, then), key: key, group: group, dueKey: dueKey, id: id, due: due}
	if !b.ops.do(r) {
		then(broker.ErrClosed)
	}
}

// ackBatch is the acks of one batch: one XACK per group with every entry
// acked meanwhile, and one HDEL per group for those with a due time.
type ackBatch struct {
	calls []*ackCall
}

// ackCall is the XACK (and HDEL) of the acks of one group in a batch.
type ackCall struct {
	key, group, dueKey string
	ids, dues          []string
	reqs               []*ackReq
	ack, hdel          *goredis.IntCmd
}

func (a *ackBatch) add(r *ackReq) {
	var c *ackCall
	for _, x := range a.calls {
		if x.key == r.key && x.group == r.group {
			c = x
			break
		}
	}
	if c == nil {
		c = &ackCall{key: r.key, group: r.group, dueKey: r.dueKey}
		a.calls = append(a.calls, c)
	}
	c.reqs = append(c.reqs, r)
	c.ids = append(c.ids, r.id)
	if r.due {
		c.dues = append(c.dues, r.id)
	}
}

// queue adds the commands to pipe.
func (a *ackBatch) queue(ctx context.Context, pipe goredis.Pipeliner) {
	for _, c := range a.calls {
		c.ack = pipe.XAck(ctx, c.key, c.group, c.ids...)
		if len(c.dues) > 0 {
			c.hdel = pipe.HDel(ctx, c.dueKey, c.dues...)
		}
	}
}

// finish gives each request the error of its own commands.
func (a *ackBatch) finish() {
	for _, c := range a.calls {
		ackErr := c.ack.Err()
		var dueErr error
		if c.hdel != nil {
			dueErr = c.hdel.Err()
		}
		for _, r := range c.reqs {
			err := ackErr
			if err == nil && r.due {
				err = dueErr
			}
			r.finish(err)
		}
	}
}
