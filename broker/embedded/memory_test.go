package embedded

import (
	"context"
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// TestMemoryIndependentOfStoredCount: what the engine keeps in memory per
// topic (sparse index, dedup index) grows with bytes/64 KiB and with
// caller-chosen IDs, not with the number of stored messages; a group holds at
// most its configured working set.
func TestMemoryIndependentOfStoredCount(t *testing.T) {
	b, err := OpenMemory(WithSegmentBytes(1<<20), WithGroupMaxQueued(100))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	const n = 50000
	batch := make([]*message.Message, 500)
	for i := 0; i < n; i += len(batch) {
		for j := range batch {
			batch[j] = &message.Message{Payload: make([]byte, 100)}
		}
		if _, err := b.Publish(ctx, &broker.PublishParams{Topic: "mem", Messages: batch}); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: "mem", Group: "g", Start: broker.StartPosition{Kind: broker.StartEarliest}, MaxInFlight: 10})
	if err != nil {
		t.Fatal(err)
	}
	<-sub.Deliveries()
	tp := b.topics["mem"]
	tp.mu.RLock()
	entries := 0
	for _, s := range tp.segs {
		entries += len(s.index)
	}
	tp.mu.RUnlock()
	if entries > n/50 {
		t.Fatalf("sparse index has %d entries for %d messages", entries, n)
	}
	if len(tp.dedup.byID) != 0 {
		t.Fatalf("dedup index holds %d generated IDs; only caller-chosen IDs need it", len(tp.dedup.byID))
	}
	g := b.groups["g"]
	g.mu.Lock()
	held := g.held
	g.mu.Unlock()
	if held > 100 {
		t.Fatalf("group holds %d messages in memory, limit 100", held)
	}
}
