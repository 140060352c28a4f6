package rabbitmq

import (
	"context"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

var _ broker.DeadLetterAdmin = (*Broker)(nil)

// ReplayDeadLetters implements broker.DeadLetterAdmin: it takes dead
// letters from the group's dead-letter queue "<exchange>.dlq.<group>"
// (basic.get), republishes each to its original topic for group only
// (sb-replay-for), waits for the confirm and then acks it.
func (b *Broker) ReplayDeadLetters(ctx context.Context, group string, max int) (int, error) {
	if err := message.ValidateGroup(group); err != nil {
		return 0, err
	}
	n := 0
	err := b.withChannel(ctx, func(ch *amqp.Channel) error {
		for max <= 0 || n < max {
			d, ok, err := ch.Get(b.dlqQueue(group), false)
			if err != nil {
				return b.opErr(ctx, "read dead letters of "+group, err)
			}
			if !ok {
				return nil
			}
			dl, _, _ := fromDelivery(&d)
			m, topic, ok := brokerutil.Replay(dl, group)
			if !ok {
				_ = d.Nack(false, true)
				return fmt.Errorf("%s: a dead letter of group %s has no %s header; cannot tell where to replay it", backendName, group, message.HeaderDLQTopic)
			}
			if err := b.publish(ctx, b.exchangeFor(topic), topic, false, []amqp.Publishing{publishing(m, b.nextSeq())}); err != nil {
				_ = d.Nack(false, true)
				return err
			}
			if err := d.Ack(false); err != nil {
				return b.opErr(ctx, "remove replayed dead letter", err)
			}
			n++
		}
		return nil
	})
	return n, err
}

// PurgeDeadLetters implements broker.DeadLetterAdmin with queue.purge on
// the group's dead-letter queue.
func (b *Broker) PurgeDeadLetters(ctx context.Context, group string) (int, error) {
	if err := message.ValidateGroup(group); err != nil {
		return 0, err
	}
	var n int
	err := b.withChannel(ctx, func(ch *amqp.Channel) error {
		var err error
		n, err = ch.QueuePurge(b.dlqQueue(group), false)
		if err != nil {
			return b.opErr(ctx, "purge dead letters of "+group, err)
		}
		return nil
	})
	return n, err
}
