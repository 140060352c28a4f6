package consume_test

import (
	"context"
	"database/sql"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/consume/inbox/boltinbox"
	"github.com/switchboard-dev/switchboard/consume/inbox/redisinbox"
	"github.com/switchboard-dev/switchboard/consume/inbox/sqlinbox"
	"github.com/switchboard-dev/switchboard/internal/testenv"
)

// versionsEnv is the data of one version store, opened as often as a test
// needs.
type versionsEnv struct {
	// handle returns a store on the data: on its own connection where the
	// store can be shared between processes (Redis, SQL), like another
	// process; the open file for bolt (one process).
	handle func() consume.VersionStore
	// restart closes the file where the store locks it (bolt) and returns
	// a store on the same data, as a restarted process would open it.
	restart func() consume.VersionStore
}

type versionsCase struct {
	name string
	open func(t *testing.T) *versionsEnv
}

var versionStores = []versionsCase{
	{"bolt", boltVersions},
	{"redis", redisVersions},
	{"sqlite", func(t *testing.T) *versionsEnv { return sqlVersions(t, sqliteOpener(t), sqlinbox.SQLite) }},
	{"postgres", func(t *testing.T) *versionsEnv { return sqlVersions(t, postgresOpener(t), sqlinbox.Postgres) }},
}

func boltVersions(t *testing.T) *versionsEnv {
	path := filepath.Join(t.TempDir(), "inbox.db")
	var cur *boltinbox.Inbox
	open := func() consume.VersionStore {
		x, err := boltinbox.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		cur = x
		return x.Versions()
	}
	open()
	t.Cleanup(func() { cur.Close() })
	return &versionsEnv{
		handle:  func() consume.VersionStore { return cur.Versions() },
		restart: func() consume.VersionStore { cur.Close(); return open() },
	}
}

func redisVersions(t *testing.T) *versionsEnv {
	opt, err := redis.ParseURL(testenv.NeedServer(t, "Redis", redisEnv, redisDefault))
	if err != nil {
		t.Fatal(err)
	}
	prefix := "sbtest:versions:" + randomName() + ":"
	t.Cleanup(func() { // registered first: runs after the stores' clients closed
		c := redis.NewClient(opt)
		defer c.Close()
		ctx := context.Background()
		keys, _ := c.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	h := func() consume.VersionStore {
		c := redis.NewClient(opt)
		t.Cleanup(func() { c.Close() })
		return redisinbox.NewVersions(c, prefix)
	}
	return &versionsEnv{handle: h, restart: h}
}

// sqliteOpener returns a function that opens one SQLite file in a temp
// dir, a new *sql.DB per call (like another process).
func sqliteOpener(t *testing.T) func() *sql.DB {
	path := filepath.Join(t.TempDir(), "app.db")
	return func() *sql.DB {
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
}

func postgresOpener(t *testing.T) func() *sql.DB {
	postgresDB(t).Close() // skips (or fails) the test when there is no server
	return func() *sql.DB { return postgresDB(t) }
}

// sqlVersions is a version store in a table of its own, dropped at cleanup.
func sqlVersions(t *testing.T, open func() *sql.DB, d sqlinbox.Dialect) *versionsEnv {
	table := "sbtest_versions_" + randomName()
	h := func() consume.VersionStore {
		s, err := sqlinbox.NewVersions(context.Background(), open(), d, &sqlinbox.Options{Table: table})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := h()
	t.Cleanup(func() { first.(*sqlinbox.Versions).DB().Exec("DROP TABLE " + table) })
	return &versionsEnv{handle: h, restart: h}
}

// TestVersionStores checks the VersionStore contract on every store:
// records only go up, per (group, key), large versions compare exactly,
// expired records are forgotten and swept, and records survive a restart.
func TestVersionStores(t *testing.T) {
	for _, sc := range versionStores {
		t.Run(sc.name, func(t *testing.T) {
			env := sc.open(t)
			s := env.handle()
			ctx := context.Background()
			record := func(group, key string, v uint64, ttl time.Duration, want bool) {
				t.Helper()
				if got, err := s.Record(ctx, group, key, v, ttl); err != nil || got != want {
					t.Fatalf("Record(%s, %s, %d) = %v, %v; want %v", group, key, v, got, err, want)
				}
			}
			version := func(group, key string, want uint64, wantOK bool) {
				t.Helper()
				if got, ok, err := s.Version(ctx, group, key); err != nil || ok != wantOK || got != want {
					t.Fatalf("Version(%s, %s) = %d, %v, %v; want %d, %v", group, key, got, ok, err, want, wantOK)
				}
			}
			version("g", "k", 0, false)
			record("g", "k", 5, time.Hour, true)
			version("g", "k", 5, true)
			record("g", "k", 5, time.Hour, false) // not above
			record("g", "k", 3, time.Hour, false) // older
			version("g", "k", 5, true)
			record("g", "k", 7, time.Hour, true)
			record("g2", "k", 1, time.Hour, true) // groups are apart
			version("g", "k", 7, true)
			record("a:b", "c", 1, time.Hour, true) // and cannot be confused by ':'
			record("a", "b:c", 2, time.Hour, true)
			version("a:b", "c", 1, true)
			version("a", "b:c", 2, true)

			// Exact above 2^53, up to the largest version.
			record("g", "big", 1<<53+1, time.Hour, true)
			record("g", "big", 1<<53, time.Hour, false)
			record("g", "big", 1<<53+2, time.Hour, true)
			record("g", "big", math.MaxInt64-1, time.Hour, true)
			record("g", "big", math.MaxInt64, time.Hour, true)
			record("g", "big", 999_999_999_999_999_999, time.Hour, false)
			version("g", "big", math.MaxInt64, true)

			// An expired record counts as none.
			record("g", "ttl", 9, 50*time.Millisecond, true)
			time.Sleep(150 * time.Millisecond)
			version("g", "ttl", 0, false)
			record("g", "ttl", 2, time.Hour, true)
			version("g", "ttl", 2, true)
			if sw, ok := s.(consume.Sweeper); ok {
				record("g", "gone", 1, time.Millisecond, true)
				time.Sleep(20 * time.Millisecond)
				if n, err := sw.Sweep(ctx); err != nil || n < 1 {
					t.Fatalf("Sweep = %d, %v; want >= 1", n, err)
				}
				version("g", "k", 7, true) // live records stay
			}

			s = env.restart()
			version("g", "k", 7, true)
			version("g", "big", math.MaxInt64, true)
		})
	}
}

// TestVersionStoreConcurrentRecords: 8 writers, each on its own connection
// where the store allows it (as 8 processes would), record random versions
// of one key while a reader watches. The record never goes down, a Record
// never succeeds with a version at or below one already seen recorded, and
// the highest version attempted is what stays.
func TestVersionStoreConcurrentRecords(t *testing.T) {
	const writers, each, maxVersion = 8, 60, 400
	for _, sc := range versionStores {
		t.Run(sc.name, func(t *testing.T) {
			env := sc.open(t)
			ctx := context.Background()
			reader := env.handle()
			stores := make([]consume.VersionStore, writers)
			for i := range stores {
				stores[i] = env.handle()
			}
			var seen atomic.Uint64 // highest version seen recorded
			raise := func(v uint64) {
				for cur := seen.Load(); v > cur && !seen.CompareAndSwap(cur, v); cur = seen.Load() {
				}
			}
			var top atomic.Uint64 // highest version attempted
			var wg sync.WaitGroup
			done := make(chan struct{})
			wg.Go(func() {
				var last uint64
				for {
					select {
					case <-done:
						return
					default:
					}
					v, ok, err := reader.Version(ctx, "g", "k")
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						if v < last {
							t.Errorf("record went down from %d to %d", last, v)
						}
						last = v
						raise(v)
					}
					time.Sleep(time.Millisecond)
				}
			})
			var writersWG sync.WaitGroup
			for _, s := range stores {
				writersWG.Go(func() {
					var mine uint64
					for range each {
						v := uint64(rand.IntN(maxVersion) + 1)
						for cur := top.Load(); v > cur && !top.CompareAndSwap(cur, v); cur = top.Load() {
						}
						before := seen.Load()
						ok, err := s.Record(ctx, "g", "k", v, time.Hour)
						if err != nil {
							t.Error(err)
							return
						}
						if ok {
							if v <= before {
								t.Errorf("Record(%d) succeeded though %d was recorded before it started", v, before)
							}
							if v <= mine {
								t.Errorf("Record(%d) succeeded after this writer recorded %d", v, mine)
							}
							mine = v
							raise(v)
						}
					}
				})
			}
			writersWG.Wait()
			close(done)
			wg.Wait()
			if v, ok, err := reader.Version(ctx, "g", "k"); err != nil || !ok || v != top.Load() {
				t.Fatalf("final record %d, %v, %v; want the highest attempted, %d", v, ok, err, top.Load())
			}
		})
	}
}
