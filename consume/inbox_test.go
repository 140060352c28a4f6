package consume_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/consume/inbox/boltinbox"
	"github.com/switchboard-dev/switchboard/consume/inbox/redisinbox"
	"github.com/switchboard-dev/switchboard/consume/inbox/sqlinbox"
	"github.com/switchboard-dev/switchboard/internal/testenv"
	"github.com/switchboard-dev/switchboard/message"
)

const (
	redisEnv, redisDefault       = "SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379/0"
	postgresEnv, postgresDefault = "SWITCHBOARD_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

func randomName() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func boltStore(t *testing.T) consume.Inbox {
	x, err := boltinbox.Open(filepath.Join(t.TempDir(), "inbox.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

func redisStore(t *testing.T) consume.Inbox {
	url := testenv.NeedServer(t, "Redis", redisEnv, redisDefault)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return redisinbox.New(c, "sbtest:inbox:"+randomName()+":")
}

// sqliteDB opens a SQLite file in a temp dir, set up for concurrent writers.
func sqliteDB(t *testing.T) *sql.DB {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "app.db")+"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func postgresDB(t *testing.T) *sql.DB {
	url := testenv.NeedServer(t, "PostgreSQL", postgresEnv, postgresDefault)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		msg := fmt.Sprintf("PostgreSQL at %s: %v", url, err)
		if testenv.Required() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// sqlStore makes an inbox with a table of its own, dropped at cleanup.
func sqlStore(t *testing.T, db *sql.DB, d sqlinbox.Dialect) *sqlinbox.Inbox {
	table := "sbtest_inbox_" + randomName()
	x, err := sqlinbox.New(context.Background(), db, d, &sqlinbox.Options{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DROP TABLE " + table) })
	return x
}

type storeCase struct {
	name string
	open func(t *testing.T) consume.Inbox
}

var stores = []storeCase{
	{"bolt", boltStore},
	{"redis", redisStore},
	{"sqlite", func(t *testing.T) consume.Inbox { return sqlStore(t, sqliteDB(t), sqlinbox.SQLite) }},
	{"postgres", func(t *testing.T) consume.Inbox { return sqlStore(t, postgresDB(t), sqlinbox.Postgres) }},
}

func TestInboxStores(t *testing.T) {
	for _, sc := range stores {
		t.Run(sc.name, func(t *testing.T) {
			x := sc.open(t)
			ctx := context.Background()
			claim := func(id string, lease time.Duration, want consume.ClaimState) {
				t.Helper()
				got, err := x.Claim(ctx, "g1", id, lease)
				if err != nil || got != want {
					t.Fatalf("Claim(%s) = %v, %v; want %v", id, got, err, want)
				}
			}
			claim("a", time.Minute, consume.Claimed)
			claim("a", time.Minute, consume.Busy)
			if got, err := x.Claim(ctx, "g2", "a", time.Minute); err != nil || got != consume.Claimed {
				t.Fatalf("another group's claim: %v, %v", got, err)
			}
			if err := x.Release(ctx, "g1", "a"); err != nil {
				t.Fatal(err)
			}
			claim("a", time.Minute, consume.Claimed)
			if err := x.Mark(ctx, "g1", "a", time.Hour); err != nil {
				t.Fatal(err)
			}
			claim("a", time.Minute, consume.Handled)
			if err := x.Release(ctx, "g1", "a"); err != nil {
				t.Fatal(err)
			}
			claim("a", time.Minute, consume.Handled) // release never undoes a mark

			claim("lease", 50*time.Millisecond, consume.Claimed)
			if err := x.Mark(ctx, "g1", "ttl", 50*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			time.Sleep(150 * time.Millisecond)
			claim("lease", time.Minute, consume.Claimed) // expired claim is taken over
			claim("ttl", time.Minute, consume.Claimed)   // expired mark is forgotten
			if s, ok := x.(consume.Sweeper); ok {
				if err := x.Mark(ctx, "g1", "gone", time.Millisecond); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
				if n, err := s.Sweep(ctx); err != nil || n < 1 {
					t.Fatalf("Sweep = %d, %v; want >= 1", n, err)
				}
			}
		})
	}
}

// openNoDedup opens an embedded broker that stores every publish, so the
// same message ID can be delivered many times (a redelivery storm).
func openNoDedup(t *testing.T) *embedded.Broker {
	b, err := embedded.OpenMemory(embedded.WithDedupWindow(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func sameID(id string, n int) []*message.Message {
	out := make([]*message.Message, n)
	for i := range out {
		out[i] = &message.Message{ID: id, Payload: []byte(`{"id":"` + id + `","total":1}`), ContentType: "application/json"}
	}
	return out
}

// TestIdempotentConcurrentDuplicates: one message ID delivered 40 times to
// 16 concurrent workers: the handler's side effect happens once per store.
func TestIdempotentConcurrentDuplicates(t *testing.T) {
	const copies = 40
	for _, sc := range stores {
		t.Run(sc.name, func(t *testing.T) {
			x := sc.open(t)
			b := openNoDedup(t)
			rt, _ := newRuntime(t, b)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			var effects atomic.Int32
			handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
				effects.Add(1)
				time.Sleep(20 * time.Millisecond) // keep the claim while copies arrive
				return nil
			}), consume.Concurrency(16), consume.Idempotent(x, time.Hour), consume.Retry(consume.Constant(20*time.Millisecond), 5))
			publish(t, b, topic, sameID("charge-1", copies)...)
			start(t, rt)
			eventually(t, "every copy settled", func() bool { return stats(t, rt).Acked == copies })
			if n := effects.Load(); n != 1 {
				t.Fatalf("side effect happened %d times, want 1", n)
			}
			if s := stats(t, rt); s.Duplicates != copies-1 {
				t.Fatalf("stats %+v: want %d duplicates", s, copies-1)
			}
		})
	}
}

// TestHandleTxExactlyOnce: with the SQL inbox, the handler's write and the
// inbox row commit together; 40 copies of one ID, 16 workers, and a first
// attempt that writes and then fails: exactly one row in the real table.
func TestHandleTxExactlyOnce(t *testing.T) {
	for _, c := range []struct {
		name    string
		db      func(*testing.T) *sql.DB
		dialect sqlinbox.Dialect
		ph      string
	}{
		{"sqlite", sqliteDB, sqlinbox.SQLite, "?"},
		{"postgres", postgresDB, sqlinbox.Postgres, "$1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			const copies = 40
			db := c.db(t)
			x := sqlStore(t, db, c.dialect)
			effects := "sbtest_effects_" + randomName()
			if _, err := db.Exec("CREATE TABLE " + effects + " (order_id TEXT NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Exec("DROP TABLE " + effects) })
			b := openNoDedup(t)
			rt, _ := newRuntime(t, b)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			var failedOnce atomic.Bool
			handle(t, rt, topic, group, consume.TxFunc(func(ctx context.Context, tx *sql.Tx, o *order) error {
				if _, err := tx.ExecContext(ctx, "INSERT INTO "+effects+" (order_id) VALUES ("+c.ph+")", o.ID); err != nil {
					return err
				}
				if failedOnce.CompareAndSwap(false, true) {
					return errors.New("fail after writing: must roll back")
				}
				return nil
			}), consume.Concurrency(16), consume.Idempotent(x, time.Hour), consume.Retry(consume.Constant(20*time.Millisecond), 5))
			publish(t, b, topic, sameID("order-7", copies)...)
			start(t, rt)
			eventually(t, "every copy settled", func() bool { return stats(t, rt).Acked == copies })
			var n int
			if err := db.QueryRow("SELECT COUNT(*) FROM " + effects).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("%d rows written by the handler, want exactly 1", n)
			}
			if s := stats(t, rt); s.Retried < 1 || s.DeadLettered != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestInboxDownNoLoss: when the inbox store is unreachable the message is
// neither handled nor acked, and the error is logged and counted.
func TestInboxDownNoLoss(t *testing.T) {
	for _, c := range []struct {
		name string
		open func(t *testing.T) consume.Inbox
	}{
		{"redis-unreachable", func(t *testing.T) consume.Inbox {
			cl := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
			t.Cleanup(func() { cl.Close() })
			return redisinbox.New(cl, "")
		}},
		{"sqlite-closed", func(t *testing.T) consume.Inbox {
			db := sqliteDB(t)
			x := sqlStore(t, db, sqlinbox.SQLite)
			db.Close()
			return x
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := c.open(t)
			b := openEmbedded(t)
			rt, logs := newRuntime(t, b)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			var calls atomic.Int32
			handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
				calls.Add(1)
				return nil
			}), consume.Idempotent(x, time.Hour), consume.Retry(consume.Constant(20*time.Millisecond), 2))
			publish(t, b, topic, jsonMsg(t, order{ID: "keep-me"}))
			stop := start(t, rt)
			eventually(t, "several inbox failures", func() bool { return stats(t, rt).InboxErrors >= 3 })
			stop()
			if calls.Load() != 0 {
				t.Fatalf("handler ran %d times without the inbox", calls.Load())
			}
			if s := stats(t, rt); s.Acked != 0 || s.DeadLettered != 0 {
				t.Fatalf("stats %+v: the message must stay unacked and not dead-lettered", s)
			}
			if n := lag(t, b, group); n != 1 {
				t.Fatalf("group lag %d, want the message kept", n)
			}
			if !strings.Contains(logs.String(), "inbox unavailable") {
				t.Fatalf("inbox failure not logged:\n%s", logs.String())
			}
		})
	}
}
