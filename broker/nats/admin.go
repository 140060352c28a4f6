package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

var _ broker.DeadLetterAdmin = (*Broker)(nil)

// eachDeadLetter calls f for up to max (0: all) dead letters of group, in
// order, with their stream sequence; f's error stops the walk.
func (b *Broker) eachDeadLetter(ctx context.Context, group string, max int, f func(st jetstream.Stream, seq uint64, m *message.Message) error) (int, error) {
	if err := message.ValidateGroup(group); err != nil {
		return 0, err
	}
	subj := subject(message.DLQTopic(group))
	name, err := b.streamFor(ctx, subj)
	if err != nil {
		return 0, err
	}
	st, err := b.js.Stream(ctx, name)
	if err != nil {
		return 0, b.opErr(ctx, "open stream "+name, err)
	}
	n := 0
	for seq := uint64(1); max <= 0 || n < max; {
		raw, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return n, b.opErr(ctx, "read dead letters of "+group, err)
		}
		m := fromNATS(&natsgo.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data}, raw.Time)
		if err := f(st, raw.Sequence, m); err != nil {
			return n, err
		}
		n++
		seq = raw.Sequence + 1
	}
	return n, nil
}

// ReplayDeadLetters implements broker.DeadLetterAdmin: each dead letter is
// republished to its original topic for group only (sb-replay-for) and then
// deleted from the dead-letter stream.
func (b *Broker) ReplayDeadLetters(ctx context.Context, group string, max int) (int, error) {
	return b.eachDeadLetter(ctx, group, max, func(st jetstream.Stream, seq uint64, dl *message.Message) error {
		m, topic, ok := brokerutil.Replay(dl, group)
		if !ok {
			return fmt.Errorf("%s: dead letter %d of group %s has no %s header; cannot tell where to replay it", backendName, seq, group, message.HeaderDLQTopic)
		}
		tsubj := subject(topic)
		if _, err := b.streamFor(ctx, tsubj); err != nil {
			return err
		}
		// A replay is a new message for the dedup window.
		id := dedupID(topic, m.ID) + fmt.Sprintf("/replay/%s/%d", group, seq)
		if _, err := b.js.PublishMsg(ctx, toNATS(tsubj, m, id)); err != nil {
			return b.opErr(ctx, "replay "+m.ID+" to "+topic, err)
		}
		if err := st.DeleteMsg(ctx, seq); err != nil && !strings.Contains(err.Error(), "not found") {
			return b.opErr(ctx, "delete replayed dead letter", err)
		}
		return nil
	})
}

// PurgeDeadLetters implements broker.DeadLetterAdmin.
func (b *Broker) PurgeDeadLetters(ctx context.Context, group string) (int, error) {
	return b.eachDeadLetter(ctx, group, 0, func(st jetstream.Stream, seq uint64, _ *message.Message) error {
		if err := st.DeleteMsg(ctx, seq); err != nil && !strings.Contains(err.Error(), "not found") {
			return b.opErr(ctx, "delete dead letter", err)
		}
		return nil
	})
}
