package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// subscribeEphemeral reads kt without a group, from the end offsets of its
// partitions at the time of the call: every message published after
// Subscribe returns is seen; nothing is committed. Partitions added later
// are not followed. A subscriber that does not read falls behind (Kafka
// keeps the records); it never blocks publishers.
func (b *Broker) subscribeEphemeral(ctx context.Context, kt string, p *broker.SubscribeParams) (broker.Subscription, error) {
	ends, err := b.adm.ListEndOffsets(ctx, kt)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, b.opErr(ctx, "list the end offsets of "+p.Topic, err)
	}
	start := map[int32]kgo.Offset{}
	for part, l := range ends[kt] {
		start[part] = kgo.NewOffset().At(l.Offset)
	}
	batch := p.MaxInFlight
	if batch <= 0 {
		batch = brokerutil.DefaultMaxInFlight
	}
	cl, err := kgo.NewClient(append(b.baseOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{kt: start}),
		kgo.FetchMaxWait(time.Second),
		kgo.FetchMaxPartitionBytes(int32(max(b.maxMessageBytes, 1<<20))),
	)...)
	if err != nil {
		return nil, fmt.Errorf("%s: subscribe to %s: %w", backendName, p.Topic, err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	s := brokerutil.NewSub(func() { cancel(); cl.Close() })
	if err := b.subs.Track(s, backendName); err != nil {
		cancel()
		cl.Close()
		return nil, err
	}
	s.Run(func() error {
		defer b.subs.Untrack(s)
		go func() { <-s.Done(); cancel() }()
		for {
			fs := cl.PollRecords(lctx, batch)
			if lctx.Err() != nil || fs.IsClientClosed() {
				return nil
			}
			for _, r := range fs.Records() {
				m := fromRecord(r)
				if m.Expired(time.Now()) {
					continue // never hand an expired message to a handler
				}
				info := message.Info{Seq: seqOf(r.Partition, r.Offset), Attempt: 1}
				if !s.Send(broker.NewDelivery(m, info, nil, nil)) {
					return nil
				}
			}
		}
	})
	return s, nil
}
