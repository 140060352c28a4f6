package brokertest

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the outbox clause's database

	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
	"github.com/switchboard-dev/switchboard/outbox"
)

// rtOutboxOrder: messages saved in an SQLite outbox by ten transactions,
// three keys interleaved in each, reach an ordered handler exactly in
// insert order per key once the relay forwards them to the backend, and
// the relay leaves no row behind.
func (s *suite) rtOutboxOrder(t *testing.T) {
	// Native, or emulated by the runtime (which needs Extend).
	s.need(t, "OrderedByKey or Extend", s.caps.OrderedByKey || s.caps.Extend)
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	var mu sync.Mutex
	got := map[string][]string{}
	rt, _ := s.rtRun(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		got[m.Key] = append(got[m.Key], string(m.Payload))
		mu.Unlock()
		return nil
	}), consume.OrderedByKey(), consume.Concurrency(4))

	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "app.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := outbox.Migrate(ctx, db, outbox.SQLite); err != nil {
		t.Fatalf("outbox.Migrate: %v", err)
	}
	keys := []string{"a", "b", "c"}
	want := map[string][]string{}
	const txs = 10
	for i := range txs {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			p := fmt.Sprintf("%s%02d", k, i)
			if _, err := outbox.Publish(ctx, tx, message.Message{Topic: topic, Key: k, Payload: []byte(p)}); err != nil {
				t.Fatalf("outbox.Publish: %v", err)
			}
			want[k] = append(want[k], p)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}

	relay, err := outbox.NewRelay(db, outbox.SQLite, b, outbox.BatchSize(7), outbox.PollInterval(10*time.Millisecond))
	if err != nil {
		t.Fatalf("outbox.NewRelay: %v", err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("relay.Run: %v", err)
		}
	})
	s.eventually(t, "every outbox message handled", func() bool { return rtStats(rt).Acked == int64(txs*len(keys)) })
	mu.Lock()
	for _, k := range keys {
		if !slices.Equal(got[k], want[k]) {
			t.Errorf("key %s handled %v, want the insert order %v", k, got[k], want[k])
		}
	}
	mu.Unlock()
	s.eventually(t, "the relay deleted every row", func() bool {
		lag, err := relay.Lag(ctx)
		return err == nil && lag.Pending == 0
	})
}
