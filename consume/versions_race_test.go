package consume_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/consume/inbox/redisinbox"
	"github.com/switchboard-dev/switchboard/consume/inbox/sqlinbox"
	"github.com/switchboard-dev/switchboard/message"
)

// TestDropStaleOvertaken: without OrderedByKey two versions of a key can be
// in handlers at once. v3 starts first and finishes after v4 was recorded:
// its effect is not undone, but the record keeps v4 (a later copy of v4 is
// stale) and the race is counted as Overtaken.
func TestDropStaleOvertaken(t *testing.T) {
	for _, sc := range staleCases(true) {
		t.Run(sc.name, func(t *testing.T) {
			var s, checker consume.VersionStore
			if sc.open != nil {
				env := sc.open(t)
				s, checker = env.handle(), env.handle()
			}
			b := openEmbedded(t)
			rt, logs := newRuntime(t, b)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			v3Started := make(chan struct{})
			v4Returned := make(chan struct{})
			var got payloads
			handle(t, rt, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
				switch string(m.Payload) {
				case `{"id":"sku-v3"}`:
					close(v3Started)
					<-v4Returned
					// v4 is recorded before it is acked.
					for deadline := time.Now().Add(wait); rt.Stats()[0].Acked < 1 && time.Now().Before(deadline); {
						time.Sleep(time.Millisecond)
					}
				case `{"id":"sku-v4"}`:
					<-v3Started
					defer close(v4Returned)
				}
				got.add(m)
				return nil
			}), consume.Concurrency(2), sc.option(s))
			publish(t, b, topic, vmsg("sku", 3, ""), vmsg("sku", 4, ""))
			start(t, rt)
			eventually(t, "both settled", func() bool { return stats(t, rt).Acked == 2 })
			publish(t, b, topic, vmsg("sku", 4, "-copy"))
			eventually(t, "the copy settled", func() bool { return stats(t, rt).Acked == 3 })
			if st := stats(t, rt); st.Overtaken != 1 || st.Stale != 1 {
				t.Fatalf("stats %+v; want 1 overtaken (v3), 1 stale (the copy of v4); handled %s", st, got.String())
			}
			if checker != nil {
				if v, _, err := checker.Version(context.Background(), group, "sku"); err != nil || v != 4 {
					t.Fatalf("recorded %d, %v; want 4", v, err)
				}
			}
			if !strings.Contains(logs.String(), "its effect may have overwritten a newer one") {
				t.Fatalf("overtaken handler not logged:\n%s", logs.String())
			}
		})
	}
}

// TestDropStaleTxSerializes: with TxFunc and the SQL stores the version is
// recorded in the handler's transaction before the handler runs, which
// locks the key's record until the transaction ends. Two runtimes (own
// connection pools, as two processes) with 4 workers each and no
// OrderedByKey handle interleaved versions of 4 keys: every handler finds
// the key's row, written in the same transactions, below its own version,
// and the row ends at the highest version.
func TestDropStaleTxSerializes(t *testing.T) {
	const n = 30
	keys := []string{"k0", "k1", "k2", "k3"}
	for _, c := range sqlCases {
		t.Run(c.name, func(t *testing.T) {
			open := c.opener(t)
			db := open()
			tables := tempTables(t, db, 3) // inbox, versions, inventory
			inv := tables[2]
			if _, err := db.Exec("CREATE TABLE " + inv + " (k TEXT PRIMARY KEY, v BIGINT NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			b := openNoDedup(t)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			var violations atomic.Int32
			var rts []*consume.Runtime
			for range 2 {
				x, vs := txStores(t, open(), c.dialect, tables[0], tables[1])
				rt, _ := newRuntime(t, b)
				handle(t, rt, topic, group, consume.TxFunc(func(ctx context.Context, tx *sql.Tx, o *order) error {
					m := consume.DeliveryFrom(ctx).Message
					v := int64(versionOf(t, m))
					var cur int64
					err := tx.QueryRowContext(ctx, "SELECT v FROM "+inv+" WHERE k = "+c.ph(1), m.Key).Scan(&cur)
					if err != nil && !errors.Is(err, sql.ErrNoRows) {
						return err
					}
					if cur >= v {
						violations.Add(1)
						t.Errorf("handler of %s v%d found v%d applied", m.Key, v, cur)
					}
					_, err = tx.ExecContext(ctx, "INSERT INTO "+inv+" (k, v) VALUES ("+c.ph(1)+", "+c.ph(2)+") ON CONFLICT (k) DO UPDATE SET v = excluded.v", m.Key, v)
					return err
				}), consume.Concurrency(4), consume.Idempotent(x, time.Hour), consume.DropStale(consume.VersionsIn(vs, time.Hour)))
				start(t, rt)
				rts = append(rts, rt)
			}
			publishInterleaved(t, func(m *message.Message) { publish(t, b, topic, m) }, keys, n)
			eventually(t, "all settled", func() bool {
				return stats(t, rts[0]).Acked+stats(t, rts[1]).Acked == int64(n*len(keys))
			})
			for _, k := range keys {
				var v int64
				if err := db.QueryRow("SELECT v FROM "+inv+" WHERE k = "+c.ph(1), k).Scan(&v); err != nil || v != n {
					t.Errorf("inventory %s at v%d, %v; want v%d", k, v, err, n)
				}
			}
			s0, s1 := stats(t, rts[0]), stats(t, rts[1])
			if violations.Load() != 0 || s0.Overtaken+s1.Overtaken != 0 {
				t.Errorf("%d handlers saw a version at or above theirs applied; stats %+v, %+v", violations.Load(), s0, s1)
			}
			t.Logf("handled %d and %d, stale %d, retried %d", s0.Handled, s1.Handled, s0.Stale+s1.Stale, s0.Retried+s1.Retried)
		})
	}
}

// TestDropStaleHandleChecks: VersionsIn needs a store, and a TxFunc's SQL
// version store must be in the inbox's database (its version commits in the
// handler's transaction).
func TestDropStaleHandleChecks(t *testing.T) {
	rt, _ := newRuntime(t, openEmbedded(t))
	raw := consume.Raw(func(context.Context, *message.Message) error { return nil })
	if err := rt.Handle("t", "g", raw, consume.DropStale(consume.VersionsIn(nil, 0))); !errors.Is(err, message.ErrInvalid) {
		t.Fatalf("VersionsIn(nil): %v", err)
	}
	if err := rt.Handle("t", "g", raw, consume.DropStale(consume.VersionsIn(boltVersions(t).handle(), -time.Second))); !errors.Is(err, message.ErrInvalid) {
		t.Fatalf("negative version TTL: %v", err)
	}
	open := sqliteOpener(t)
	tables := []string{"sbtest_" + randomName(), "sbtest_" + randomName()}
	x, _ := txStores(t, open(), sqlinbox.SQLite, tables[0], tables[1])
	_, other := txStores(t, open(), sqlinbox.SQLite, tables[0], tables[1])
	tx := consume.TxFunc(func(context.Context, *sql.Tx, *order) error { return nil })
	err := rt.Handle("t", "g", tx, consume.Idempotent(x, 0), consume.DropStale(consume.VersionsIn(other, 0)))
	if !errors.Is(err, message.ErrInvalid) || !strings.Contains(err.Error(), "different databases") {
		t.Fatalf("TxFunc with the versions in another *sql.DB: %v", err)
	}
	_, same := txStores(t, x.DB(), sqlinbox.SQLite, tables[0], tables[1])
	if err := rt.Handle("t", "g", tx, consume.Idempotent(x, 0), consume.DropStale(consume.VersionsIn(same, 0))); err != nil {
		t.Fatalf("TxFunc with inbox and versions on one *sql.DB: %v", err)
	}
}

// TestVersionStoreDownNoLoss: when the version store cannot be reached a
// versioned message is neither handled nor acked, and the failure is
// logged and counted; a message without a version is handled.
func TestVersionStoreDownNoLoss(t *testing.T) {
	cl := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { cl.Close() })
	b := openEmbedded(t)
	rt, logs := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var calls atomic.Int32
	handle(t, rt, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		calls.Add(1)
		return nil
	}), consume.OrderedByKey(), consume.DropStale(consume.VersionsIn(redisinbox.NewVersions(cl, ""), 0)),
		consume.Retry(consume.Constant(20*time.Millisecond), 2))
	publish(t, b, topic, vmsg("sku", 1, ""), &message.Message{Key: "other", Payload: []byte("no version")})
	stop := start(t, rt)
	eventually(t, "several version store failures", func() bool { return stats(t, rt).VersionErrors >= 3 })
	eventually(t, "the unversioned message handled", func() bool { return stats(t, rt).Acked == 1 })
	stop()
	if calls.Load() != 1 {
		t.Fatalf("handler ran %d times; want once (the unversioned message)", calls.Load())
	}
	if s := stats(t, rt); s.DeadLettered != 0 || s.InboxErrors != 0 {
		t.Fatalf("stats %+v: the versioned message must stay unacked and not dead-lettered", s)
	}
	if n := lag(t, b, group); n != 1 {
		t.Fatalf("group lag %d, want the versioned message kept", n)
	}
	if !strings.Contains(logs.String(), "version store unavailable") {
		t.Fatalf("version store failure not logged:\n%s", logs.String())
	}
}
