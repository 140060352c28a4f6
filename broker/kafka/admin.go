package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// ReplayDeadLetters implements broker.DeadLetterAdmin. The dead letters of
// group are the records of the Kafka topic "_sb.dlq.<group>" between its log
// start and end offsets. Each is republished to its original topic with
// sb-replay-for: <group> (the topic's other groups skip it), and then the
// replayed records are deleted with DeleteRecords (which moves the log
// start offset; Kafka cannot delete single records).
func (b *Broker) ReplayDeadLetters(ctx context.Context, group string, max int) (int, error) {
	n := 0
	err := b.eachDeadLetter(ctx, group, max, func(r *kgo.Record) error {
		m, topic, ok := brokerutil.Replay(fromRecord(r), group)
		if !ok {
			return nil // not a dead letter (no original topic): dropped with the rest
		}
		kt, err := kafkaTopic(topic)
		if err != nil {
			return err
		}
		if err := b.ensureTopic(ctx, kt); err != nil {
			return err
		}
		if err := b.cl.ProduceSync(ctx, toRecord(kt, m)).FirstErr(); err != nil {
			return b.opErr(ctx, "replay "+m.ID+" to "+topic, err)
		}
		n++
		return nil
	})
	return n, err
}

// PurgeDeadLetters implements broker.DeadLetterAdmin by deleting every
// record of the group's dead-letter topic.
func (b *Broker) PurgeDeadLetters(ctx context.Context, group string) (int, error) {
	n := 0
	err := b.eachDeadLetter(ctx, group, 0, func(*kgo.Record) error { n++; return nil })
	return n, err
}

// eachDeadLetter calls f for up to max (0: all) dead letters of group, in
// offset order per partition, and deletes the records f accepted.
func (b *Broker) eachDeadLetter(ctx context.Context, group string, max int, f func(r *kgo.Record) error) error {
	if err := message.ValidateGroup(group); err != nil {
		return err
	}
	kt, err := kafkaTopic(message.DLQTopic(group))
	if err != nil {
		return err
	}
	if err := b.ensureTopic(ctx, kt); err != nil {
		return err
	}
	starts, err := b.adm.ListStartOffsets(ctx, kt)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return b.opErr(ctx, "list the dead letters of "+group, err)
	}
	ends, err := b.adm.ListEndOffsets(ctx, kt)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return b.opErr(ctx, "list the dead letters of "+group, err)
	}
	seen := 0
	for part, end := range ends[kt] {
		start, _ := starts.Lookup(kt, part)
		if start.Offset >= end.Offset || (max > 0 && seen >= max) {
			continue
		}
		cl, err := kgo.NewClient(append(b.baseOpts(),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{kt: {part: kgo.NewOffset().At(start.Offset)}}),
			kgo.FetchMaxWait(200*time.Millisecond))...)
		if err != nil {
			return fmt.Errorf("%s: %w", backendName, err)
		}
		next := start.Offset
		var ferr error
		for next < end.Offset && ferr == nil && (max <= 0 || seen < max) {
			fs := cl.PollRecords(ctx, 1)
			if ctx.Err() != nil {
				ferr = b.opErr(ctx, "read the dead letters of "+group, ctx.Err())
				break
			}
			for _, r := range fs.Records() {
				if r.Offset < next || r.Offset >= end.Offset || ferr != nil || (max > 0 && seen >= max) {
					continue
				}
				if ferr = f(r); ferr == nil {
					next = r.Offset + 1
					seen++
				}
			}
		}
		cl.Close()
		if next > start.Offset {
			offs := kadm.Offsets{}
			offs.Add(kadm.Offset{Topic: kt, Partition: part, At: next, LeaderEpoch: -1})
			resp, err := b.adm.DeleteRecords(ctx, offs)
			if err == nil {
				err = resp.Error()
			}
			if err != nil && ferr == nil {
				ferr = b.opErr(ctx, "delete the replayed dead letters of "+group, err)
			}
		}
		if ferr != nil {
			return ferr
		}
	}
	return nil
}
