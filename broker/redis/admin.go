package redis

import (
	"context"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

var _ broker.DeadLetterAdmin = (*Broker)(nil)

func (b *Broker) needStreams(op string) error {
	if b.cfg.pubsub {
		return broker.NotSupported(b.caps.Name, op, "Redis Pub/Sub keeps no dead letters; use Streams (redis:// without mode=pubsub)")
	}
	return nil
}

// ReplayDeadLetters implements broker.DeadLetterAdmin: each entry of the
// stream "$dlq.<group>" is XADDed back to its original topic for group only
// (sb-replay-for) and then XDELed.
func (b *Broker) ReplayDeadLetters(ctx context.Context, group string, max int) (int, error) {
	if err := b.needStreams("dead-letter replay"); err != nil {
		return 0, err
	}
	if err := message.ValidateGroup(group); err != nil {
		return 0, err
	}
	dlq := message.DLQTopic(group)
	n := 0
	start := "-"
	for max <= 0 || n < max {
		count := int64(100)
		if max > 0 {
			count = int64(min(max-n, 100))
		}
		xs, err := b.rdb.XRangeN(ctx, b.key(dlq), start, "+", count).Result()
		if err != nil {
			return n, b.opErr(ctx, "read dead letters of "+group, err)
		}
		if len(xs) == 0 {
			break
		}
		for _, x := range xs {
			dl, _ := entryMessage(dlq, x)
			m, topic, ok := brokerutil.Replay(dl, group)
			if !ok {
				return n, fmt.Errorf("%s: dead letter %s of group %s has no %s field; cannot tell where to replay it", b.caps.Name, x.ID, group, message.HeaderDLQTopic)
			}
			dedup := "sb:dedup:" + topic + ":replay:" + group + ":" + x.ID
			if _, err := b.xadd(ctx, topic, []*message.Message{m}, func(*message.Message) string { return dedup }, nil); err != nil {
				return n, err
			}
			if err := b.rdb.XDel(ctx, b.key(dlq), x.ID).Err(); err != nil {
				return n, b.opErr(ctx, "delete replayed dead letter", err)
			}
			n++
			start = "(" + x.ID
		}
	}
	return n, nil
}

// PurgeDeadLetters implements broker.DeadLetterAdmin: it trims the stream
// "$dlq.<group>" to nothing (groups reading it keep existing).
func (b *Broker) PurgeDeadLetters(ctx context.Context, group string) (int, error) {
	if err := b.needStreams("dead-letter purge"); err != nil {
		return 0, err
	}
	if err := message.ValidateGroup(group); err != nil {
		return 0, err
	}
	n, err := b.rdb.XTrimMaxLen(ctx, b.key(message.DLQTopic(group)), 0).Result()
	if err != nil && err != goredis.Nil {
		return 0, b.opErr(ctx, "purge dead letters of "+group, err)
	}
	return int(n), nil
}
