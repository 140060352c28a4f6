package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-dev/switchboard/message"
	"github.com/switchboard-dev/switchboard/outbox"
)

func TestCommitDeliveredRollbackNever(t *testing.T) {
	eachStore(t, func(t *testing.T, db *sql.DB, d outbox.Dialect) {
		b := openBroker(t)
		got := collect(t, b, "orders.>")
		committed := publishTx(t, db, true,
			message.Message{Topic: "orders.placed", Key: "o-1", Payload: []byte(`{"n":1}`), ContentType: "application/json",
				Headers: map[string]string{"tenant": "acme"}},
			message.Message{Topic: "orders.paid", ID: "my-own-id", Key: "o-1", Payload: []byte(`{"n":2}`)},
		)
		if committed[1] != "my-own-id" || len(committed[0]) != 36 {
			t.Fatalf("ids = %q: want a generated UUID and the caller's ID", committed)
		}
		rolledBack := publishTx(t, db, false, message.Message{Topic: "orders.placed", Key: "o-2", Payload: []byte("never")})

		r, err := outbox.NewRelay(db, d, b, fastOpts(t)...)
		if err != nil {
			t.Fatal(err)
		}
		if l := lag(t, r); l.Pending != 2 || l.Oldest.IsZero() {
			t.Fatalf("lag before the relay = %+v; want 2 pending", l)
		}
		startRelay(t, r)
		waitFor(t, "2 deliveries", func() bool { return got.len() >= 2 })
		waitFor(t, "an empty outbox", func() bool { return lag(t, r).Pending == 0 })
		// Another publish after the rolled-back one proves the relay went past it.
		publishTx(t, db, true, message.Message{Topic: "orders.placed", Key: "o-3", Payload: []byte("last")})
		waitFor(t, "3 deliveries", func() bool { return got.len() >= 3 })
		time.Sleep(50 * time.Millisecond)

		ms := got.snapshot()
		if len(ms) != 3 {
			t.Fatalf("got %d deliveries, want 3", len(ms))
		}
		byID := map[string]*message.Message{}
		for _, m := range ms {
			byID[m.ID] = m
			if m.ID == rolledBack[0] {
				t.Fatalf("rolled-back message %s was delivered", m.ID)
			}
		}
		m := byID[committed[0]]
		if m == nil || m.Topic != "orders.placed" || m.Key != "o-1" || string(m.Payload) != `{"n":1}` ||
			m.ContentType != "application/json" || m.Header("tenant") != "acme" {
			t.Fatalf("first message delivered as %+v", m)
		}
		if m := byID["my-own-id"]; m == nil || m.Topic != "orders.paid" || string(m.Payload) != `{"n":2}` {
			t.Fatalf("second message delivered as %+v", m)
		}
		// The consumer can see the last message before the relay, which
		// deletes a row once the backend acknowledged it, has done so.
		waitFor(t, "an empty outbox after the last publish", func() bool { return lag(t, r).Pending == 0 })
		if l := lag(t, r); l.Pending != 0 || l.Failed != 0 || l.Age() != 0 {
			t.Fatalf("lag after = %+v", l)
		}
	})
}

func TestPublishValidates(t *testing.T) {
	db := openSQLite(t)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db, outbox.SQLite); err != nil {
		t.Fatal(err)
	}
	if _, err := outbox.Publish(ctx, nil, message.Message{Topic: "a"}); err == nil {
		t.Fatal("nil tx accepted")
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, m := range []message.Message{
		{Topic: ""},
		{Topic: "bad topic"},
		{Topic: "ok", Headers: map[string]string{"bad name": "x"}},
		{Topic: "ok", Payload: make([]byte, 2<<20)},
	} {
		if _, err := outbox.Publish(ctx, tx, m); !errors.Is(err, message.ErrInvalid) {
			t.Errorf("Publish(topic %q) = %v, want ErrInvalid", m.Topic, err)
		}
	}
	if _, err := outbox.New("x; DROP TABLE y"); err == nil {
		t.Fatal("bad table name accepted")
	}
	if _, err := outbox.NewRelay(db, outbox.SQLite, openBroker(t), outbox.WithTable("1x")); err == nil {
		t.Fatal("bad table name accepted by NewRelay")
	}
}

// TestCustomTable: a named table, written with an Outbox and a large batch
// (several INSERT statements).
func TestCustomTable(t *testing.T) {
	eachStore(t, func(t *testing.T, db *sql.DB, d outbox.Dialect) {
		ctx := context.Background()
		if err := outbox.Migrate(ctx, db, d, outbox.WithTable("app_events")); err != nil {
			t.Fatal(err)
		}
		ob, err := outbox.New("app_events")
		if err != nil {
			t.Fatal(err)
		}
		b := openBroker(t)
		got := collect(t, b, "events")
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		msgs := make([]message.Message, 700)
		for i := range msgs {
			msgs[i] = message.Message{Topic: "events", Key: "k", Payload: []byte(strconv.Itoa(i))}
		}
		if _, err := ob.PublishBatch(ctx, tx, msgs); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		r, err := outbox.NewRelay(db, d, b, fastOpts(t, outbox.WithTable("app_events"), outbox.BatchSize(256))...)
		if err != nil {
			t.Fatal(err)
		}
		startRelay(t, r)
		waitFor(t, "700 deliveries", func() bool { return got.len() >= len(msgs) })
		for i, m := range got.snapshot() {
			if string(m.Payload) != strconv.Itoa(i) {
				t.Fatalf("delivery %d has payload %q: out of order", i, m.Payload)
			}
		}
	})
}

// TestOrderPerKeyConcurrentWriters: writers that serialize on the key's
// aggregate row (as applications do) while the relay runs: every key's
// messages arrive complete and in commit order.
func TestOrderPerKeyConcurrentWriters(t *testing.T) {
	eachStore(t, func(t *testing.T, db *sql.DB, d outbox.Dialect) {
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, `CREATE TABLE counters (k TEXT PRIMARY KEY, n BIGINT NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		const keys, writers, perWriter = 6, 8, 40
		for k := range keys {
			if _, err := db.ExecContext(ctx, `INSERT INTO counters (k, n) VALUES ($1, 0)`, "k"+strconv.Itoa(k)); err != nil {
				t.Fatal(err)
			}
		}
		b := openBroker(t)
		got := collect(t, b, "acct.>")
		r, err := outbox.NewRelay(db, d, b, fastOpts(t, outbox.BatchSize(16))...)
		if err != nil {
			t.Fatal(err)
		}
		startRelay(t, r)

		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					key := "k" + strconv.Itoa((w+i)%keys)
					topic := "acct.even"
					if (w+i)%keys%2 == 1 {
						topic = "acct.odd"
					}
					if err := func() error {
						tx, err := db.BeginTx(ctx, nil)
						if err != nil {
							return err
						}
						defer tx.Rollback()
						var n int64
						if err := tx.QueryRowContext(ctx, `UPDATE counters SET n = n + 1 WHERE k = $1 RETURNING n`, key).Scan(&n); err != nil {
							return err
						}
						if _, err := outbox.Publish(ctx, tx, message.Message{Topic: topic, Key: key, Payload: []byte(strconv.FormatInt(n, 10))}); err != nil {
							return err
						}
						if i%7 == 3 {
							return nil // roll back now and then: the counter and the message go together
						}
						return tx.Commit()
					}(); err != nil {
						errs <- fmt.Errorf("writer %d: %w", w, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var total int64
		if err := db.QueryRowContext(ctx, `SELECT SUM(n) FROM counters`).Scan(&total); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("%d deliveries", total), func() bool { return int64(got.len()) >= total })
		time.Sleep(50 * time.Millisecond)
		ms := got.snapshot()
		if int64(len(ms)) != total {
			t.Fatalf("%d deliveries, want %d", len(ms), total)
		}
		next := map[string]int64{}
		for _, m := range ms {
			n, _ := strconv.ParseInt(string(m.Payload), 10, 64)
			if n != next[m.Key]+1 {
				t.Fatalf("key %s: got %d after %d", m.Key, n, next[m.Key])
			}
			next[m.Key] = n
		}
	})
}

// TestRestart: the relay is stopped mid-run — once right after a publish the
// backend stored but before the relay could delete its rows — and a new
// relay finishes: every row delivered once, re-sends carry the same IDs and
// are dropped by the backend's dedup window.
func TestRestart(t *testing.T) {
	eachStore(t, func(t *testing.T, db *sql.DB, d outbox.Dialect) {
		b := openBroker(t)
		got := collect(t, b, "jobs")
		const n = 800
		want := map[string]bool{}
		for start := 0; start < n; start += 100 {
			msgs := make([]message.Message, 100)
			for i := range msgs {
				msgs[i] = message.Message{Topic: "jobs", Key: "k" + strconv.Itoa(i%5), Payload: []byte(strconv.Itoa(start + i))}
			}
			for _, id := range publishTx(t, db, true, msgs...) {
				want[id] = true
			}
		}

		var stop1 func()
		crash := make(chan struct{})
		var once sync.Once
		fb := &flaky{Broker: b, delay: time.Millisecond}
		fb.after = func() error {
			if fb.calls.Load() < 10 {
				return nil
			}
			// Stored, but the relay dies before it learns so.
			once.Do(func() { close(crash) })
			return context.Canceled
		}
		r1, err := outbox.NewRelay(db, d, fb, fastOpts(t, outbox.BatchSize(50))...)
		if err != nil {
			t.Fatal(err)
		}
		stop1 = startRelay(t, r1)
		select {
		case <-crash:
		case <-time.After(wait):
			t.Fatal("relay 1 never published 10 batches")
		}
		stop1()
		if l := lag(t, r1); l.Pending == 0 || l.Pending == n {
			t.Fatalf("after the crash lag = %+v; want part of the %d rows pending", l, n)
		}

		reg := prometheus.NewRegistry()
		r2, err := outbox.NewRelay(db, d, b, fastOpts(t, outbox.BatchSize(50))...)
		if err != nil {
			t.Fatal(err)
		}
		reg.MustRegister(r2.Collector())
		startRelay(t, r2)
		waitFor(t, "an empty outbox", func() bool { return lag(t, r2).Pending == 0 })
		waitFor(t, "all deliveries", func() bool { return got.len() >= n })
		time.Sleep(50 * time.Millisecond)
		ms := got.snapshot()
		seen := map[string]bool{}
		for _, m := range ms {
			if !want[m.ID] {
				t.Fatalf("unknown ID %s delivered", m.ID)
			}
			if seen[m.ID] {
				t.Fatalf("ID %s delivered twice (the dedup window should drop re-sends)", m.ID)
			}
			seen[m.ID] = true
		}
		if len(seen) != n {
			t.Fatalf("%d distinct messages delivered, want %d", len(seen), n)
		}
		if dup := metric(t, reg, "switchboard_outbox_duplicates_total"); dup < 1 {
			t.Fatalf("duplicates_total = %v; the batch stored before the crash should have been re-sent and reported duplicate", dup)
		}
		if v := metric(t, reg, "switchboard_outbox_pending_rows"); v != 0 {
			t.Fatalf("pending_rows = %v", v)
		}
	})
}

// TestStandbyTakesOver: two relays on one table; one is active at a time;
// stopping it hands over to the other.
func TestStandbyTakesOver(t *testing.T) {
	eachStore(t, func(t *testing.T, db *sql.DB, d outbox.Dialect) {
		b := openBroker(t)
		got := collect(t, b, "ha")
		regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
		stops := make([]func(), 2)
		for i := range 2 {
			r, err := outbox.NewRelay(db, d, b, fastOpts(t)...)
			if err != nil {
				t.Fatal(err)
			}
			prometheus.WrapRegistererWith(prometheus.Labels{"relay": strconv.Itoa(i)}, regs[i]).MustRegister(r.Collector())
			stops[i] = startRelay(t, r)
		}
		leaders := func() (int, int) {
			l0, l1 := metric(t, regs[0], "switchboard_outbox_leader"), metric(t, regs[1], "switchboard_outbox_leader")
			switch {
			case l0 == 1 && l1 == 0:
				return 0, 1
			case l1 == 1 && l0 == 0:
				return 1, 1
			case l0 == 1 && l1 == 1:
				return -1, 2
			}
			return -1, 0
		}
		waitFor(t, "an active relay", func() bool { _, n := leaders(); return n == 1 })
		for range 20 {
			if _, n := leaders(); n > 1 {
				t.Fatal("two relays active at once")
			}
			time.Sleep(2 * time.Millisecond)
		}
		publishTx(t, db, true, message.Message{Topic: "ha", Payload: []byte("1")})
		waitFor(t, "delivery 1", func() bool { return got.len() >= 1 })
		active, _ := leaders()
		stops[active]()
		other := 1 - active
		waitFor(t, "the standby to take over", func() bool {
			return metric(t, regs[other], "switchboard_outbox_leader") == 1
		})
		publishTx(t, db, true, message.Message{Topic: "ha", Payload: []byte("2")})
		waitFor(t, "delivery 2", func() bool { return got.len() >= 2 })
	})
}

// TestBrokerDown: while the backend fails, rows stay, the lag grows and is
// visible, the relay backs off instead of spinning; when it returns,
// everything is delivered.
func TestBrokerDown(t *testing.T) {
	eachStore(t, func(t *testing.T, db *sql.DB, d outbox.Dialect) {
		b := openBroker(t)
		got := collect(t, b, "pay.>")
		fb := &flaky{Broker: b}
		fb.down.Store(true)
		reg := prometheus.NewRegistry()
		r, err := outbox.NewRelay(db, d, fb, fastOpts(t, outbox.BatchSize(40))...)
		if err != nil {
			t.Fatal(err)
		}
		reg.MustRegister(r.Collector())
		var ids []string
		for i := range 5 {
			ids = append(ids, publishTx(t, db, true,
				message.Message{Topic: "pay.in", Key: "a", Payload: []byte(strconv.Itoa(i))},
				message.Message{Topic: "pay.out", Key: "b", Payload: []byte(strconv.Itoa(i))})...)
		}
		startRelay(t, r)
		waitFor(t, "failed publishes", func() bool { return fb.calls.Load() >= 3 })
		start, calls0 := time.Now(), fb.calls.Load()
		time.Sleep(400 * time.Millisecond)
		// Backoff is capped at 50 ms (±20 %) in tests: at most ~2 topic
		// publishes per 40 ms, not thousands.
		rate := float64(fb.calls.Load()-calls0) / time.Since(start).Seconds()
		if rate > 100 {
			t.Fatalf("%.0f publish attempts/s while the backend is down: busy loop", rate)
		}
		l := lag(t, r)
		if l.Pending != 10 || l.Age() < 400*time.Millisecond {
			t.Fatalf("lag while down = %+v (age %v); want 10 pending, older than 400ms", l, l.Age())
		}
		if got.len() != 0 {
			t.Fatalf("%d deliveries while the backend was down", got.len())
		}
		if v := metric(t, reg, "switchboard_outbox_pending_rows"); v != 10 {
			t.Fatalf("pending_rows gauge = %v, want 10", v)
		}
		if v := metric(t, reg, "switchboard_outbox_oldest_age_seconds"); v < 0.4 {
			t.Fatalf("oldest_age_seconds gauge = %v, want >= 0.4", v)
		}
		if v := metric(t, reg, "switchboard_outbox_publish_errors_total"); v < 3 {
			t.Fatalf("publish_errors_total = %v", v)
		}

		fb.down.Store(false)
		waitFor(t, "10 deliveries", func() bool { return got.len() >= 10 })
		waitFor(t, "an empty outbox", func() bool { return lag(t, r).Pending == 0 })
		seen := map[string]bool{}
		next := map[string]int{}
		for _, m := range got.snapshot() {
			seen[m.ID] = true
			if n, _ := strconv.Atoi(string(m.Payload)); n != next[m.Key] {
				t.Fatalf("key %s: got %d, want %d", m.Key, n, next[m.Key])
			}
			next[m.Key]++
		}
		for _, id := range ids {
			if !seen[id] {
				t.Fatalf("message %s lost", id)
			}
		}
		// The counter follows the DELETE's commit.
		waitFor(t, "relayed_total = 10", func() bool { return metric(t, reg, "switchboard_outbox_relayed_total") == 10 })
	})
}

// TestRefusedMessage: a message the backend refuses for good is marked
// failed and counted; the rest, of its key too, goes on.
func TestRefusedMessage(t *testing.T) {
	eachStore(t, func(t *testing.T, db *sql.DB, d outbox.Dialect) {
		b := openBroker(t)
		got := collect(t, b, "mail")
		fb := &flaky{Broker: b, refuse: func(m *message.Message) bool { return string(m.Payload) == "poison" }}
		publishTx(t, db, true,
			message.Message{Topic: "mail", Key: "k", Payload: []byte("1")},
			message.Message{Topic: "mail", Key: "k", Payload: []byte("poison")},
			message.Message{Topic: "mail", Key: "k", Payload: []byte("2")})
		r, err := outbox.NewRelay(db, d, fb, fastOpts(t)...)
		if err != nil {
			t.Fatal(err)
		}
		startRelay(t, r)
		waitFor(t, "2 deliveries", func() bool { return got.len() >= 2 })
		waitFor(t, "the failed row", func() bool { l := lag(t, r); return l.Pending == 0 && l.Failed == 1 })
		ms := got.snapshot()
		if string(ms[0].Payload) != "1" || string(ms[1].Payload) != "2" {
			t.Fatalf("delivered %q, %q", ms[0].Payload, ms[1].Payload)
		}
		var lastErr string
		if err := db.QueryRow(`SELECT last_error FROM sb_outbox WHERE failed_at IS NOT NULL`).Scan(&lastErr); err != nil {
			t.Fatal(err)
		}
		if lastErr == "" {
			t.Fatal("failed row has no last_error")
		}
	})
}
