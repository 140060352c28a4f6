package consume_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/consume/inbox/sqlinbox"
	"github.com/switchboard-dev/switchboard/message"
)

// vmsg is version v of key, a JSON payload naming it ("<key>-v<v>" plus
// tag).
func vmsg(key string, v int, tag string) *message.Message {
	return &message.Message{
		Key: key, ContentType: "application/json",
		Payload: fmt.Appendf(nil, `{"id":"%s-v%d%s"}`, key, v, tag),
		Headers: map[string]string{message.HeaderVersion: strconv.Itoa(v)},
	}
}

// versionOf reads the version header the test set.
func versionOf(t *testing.T, m *message.Message) uint64 {
	v, err := strconv.ParseUint(m.Header(message.HeaderVersion), 10, 64)
	if err != nil {
		t.Error(err)
	}
	return v
}

// staleCases are the version stores of the runtime tests, plus DropStale()
// in memory (env nil) where a test runs it too.
type staleCase struct {
	name string
	open func(t *testing.T) *versionsEnv // nil: in memory
}

func (c staleCase) option(s consume.VersionStore) consume.Option {
	if c.open == nil {
		return consume.DropStale()
	}
	return consume.DropStale(consume.VersionsIn(s, 0))
}

func staleCases(memory bool) []staleCase {
	var out []staleCase
	if memory {
		out = append(out, staleCase{name: "memory"})
	}
	for _, sc := range versionStores {
		out = append(out, staleCase(sc))
	}
	return out
}

// payloads collects handled payloads.
type payloads struct {
	mu  sync.Mutex
	got []string
}

func (p *payloads) add(m *message.Message) {
	p.mu.Lock()
	p.got = append(p.got, string(m.Payload))
	p.mu.Unlock()
}

func (p *payloads) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.got, " ")
}

// TestDropStaleSurvivesRestart: v1 and v3 handled by one runtime, which
// stops; a new runtime on the same store gets v2 and v4: v2 is dropped as
// stale, v4 applied. In memory (DropStale()) the versions die with the
// first runtime, and v2 is applied over v3: the bug a store prevents.
func TestDropStaleSurvivesRestart(t *testing.T) {
	for _, sc := range staleCases(true) {
		t.Run(sc.name, func(t *testing.T) {
			var env *versionsEnv
			if sc.open != nil {
				env = sc.open(t)
			}
			b := openEmbedded(t)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			run := func(s consume.VersionStore, msgs ...*message.Message) (string, consume.Stats) {
				rt, _ := newRuntime(t, b)
				var got payloads
				handle(t, rt, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
					got.add(m)
					return nil
				}), consume.OrderedByKey(), sc.option(s))
				publish(t, b, topic, msgs...)
				stop := start(t, rt)
				eventually(t, "all settled", func() bool { return stats(t, rt).Acked == int64(len(msgs)) })
				stop()
				return got.String(), stats(t, rt)
			}
			var s1, s2 consume.VersionStore
			if env != nil {
				s1 = env.handle()
			}
			if got, _ := run(s1, vmsg("sku", 1, ""), vmsg("sku", 3, "")); got != `{"id":"sku-v1"} {"id":"sku-v3"}` {
				t.Fatalf("first runtime handled %s", got)
			}
			if env != nil {
				s2 = env.restart()
			}
			got, st := run(s2, vmsg("sku", 2, ""), vmsg("sku", 4, ""))
			if env == nil {
				if got != `{"id":"sku-v2"} {"id":"sku-v4"}` || st.Stale != 0 {
					t.Fatalf("in memory after a restart: handled %s, %d stale; want v2 applied (versions are lost)", got, st.Stale)
				}
				return
			}
			if got != `{"id":"sku-v4"}` || st.Stale != 1 {
				t.Fatalf("after a restart: handled %s, %d stale; want v4 only, v2 dropped", got, st.Stale)
			}
			if v, ok, err := s2.Version(context.Background(), group, "sku"); err != nil || !ok || v != 4 {
				t.Fatalf("recorded %d, %v, %v; want 4", v, ok, err)
			}
		})
	}
}

// publishInterleaved publishes versions 1..n of every key from two
// goroutines at once, odd versions from one and even from the other, each
// in increasing order: versions of a key arrive interleaved, often an older
// one after a newer one.
func publishInterleaved(t *testing.T, pub func(*message.Message), keys []string, n int) {
	var wg sync.WaitGroup
	for first := 1; first <= 2; first++ {
		wg.Go(func() {
			for v := first; v <= n; v += 2 {
				for _, k := range keys {
					pub(vmsg(k, v, ""))
				}
			}
		})
	}
	wg.Wait()
}

// watchRecords polls s for keys until the test ends, failing it if a
// record ever goes down.
func watchRecords(t *testing.T, s consume.VersionStore, group string, keys []string) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		last := map[string]uint64{}
		for {
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
			for _, k := range keys {
				v, ok, err := s.Version(context.Background(), group, k)
				if err != nil {
					t.Errorf("Version: %v", err)
					return
				}
				if ok && v < last[k] {
					t.Errorf("record of %s went down from %d to %d", k, last[k], v)
				}
				last[k] = max(last[k], v)
			}
		}
	})
	t.Cleanup(func() { close(done); wg.Wait() })
}

// TestDropStaleSharedStore: two runtimes of one group share a store (as two
// processes would), with the backend's own per-key order across them, and
// versions of 4 keys published concurrently and interleaved. The record
// never goes down, no handler starts with a version at or below the
// record, the versions applied per key go up, and the highest of each key
// is what stays.
func TestDropStaleSharedStore(t *testing.T) {
	const n = 30
	keys := []string{"k0", "k1", "k2", "k3"}
	for _, sc := range staleCases(false) {
		t.Run(sc.name, func(t *testing.T) {
			env := sc.open(t)
			b := openEmbedded(t)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			checker := env.handle()
			watchRecords(t, checker, group, keys)
			var mu sync.Mutex
			applied := map[string][]uint64{}
			var rts []*consume.Runtime
			for range 2 {
				rt, _ := newRuntime(t, b)
				handle(t, rt, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
					v := versionOf(t, m)
					if cur, ok, err := checker.Version(ctx, group, m.Key); err != nil || ok && cur >= v {
						t.Errorf("handler of %s v%d started with %d recorded (%v)", m.Key, v, cur, err)
					}
					mu.Lock()
					applied[m.Key] = append(applied[m.Key], v)
					mu.Unlock()
					return nil
				}), consume.OrderedByKey(), consume.Concurrency(4), sc.option(env.handle()))
				start(t, rt)
				rts = append(rts, rt)
			}
			publishInterleaved(t, func(m *message.Message) { publish(t, b, topic, m) }, keys, n)
			total := func(f func(consume.Stats) int64) (sum int64) {
				for _, rt := range rts {
					sum += f(stats(t, rt))
				}
				return sum
			}
			eventually(t, "all settled", func() bool { return total(func(s consume.Stats) int64 { return s.Acked }) == int64(n*len(keys)) })
			mu.Lock()
			defer mu.Unlock()
			handled := 0
			for _, k := range keys {
				vs := applied[k]
				handled += len(vs)
				if !slices.IsSorted(vs) || len(slices.Compact(slices.Clone(vs))) != len(vs) || vs[len(vs)-1] != n {
					t.Errorf("key %s applied %v: want increasing, ending at %d", k, vs, n)
				}
				if v, ok, err := checker.Version(context.Background(), group, k); err != nil || !ok || v != n {
					t.Errorf("record of %s: %d, %v, %v; want %d", k, v, ok, err, n)
				}
			}
			stale := total(func(s consume.Stats) int64 { return s.Stale })
			if int(stale)+handled != n*len(keys) || total(func(s consume.Stats) int64 { return s.Overtaken + s.VersionErrors }) != 0 {
				t.Errorf("%d handled, %d stale; stats %+v, %+v", handled, stale, stats(t, rts[0]), stats(t, rts[1]))
			}
			t.Logf("%d applied (runtimes: %d and %d handler calls), %d stale", handled, stats(t, rts[0]).Handled, stats(t, rts[1]).Handled, stale)
		})
	}
}

// sqlCases are the SQL databases of the TxFunc tests.
var sqlCases = []struct {
	name    string
	opener  func(*testing.T) func() *sql.DB
	dialect sqlinbox.Dialect
	ph      func(n int) string // the nth placeholder
}{
	{"sqlite", sqliteOpener, sqlinbox.SQLite, func(int) string { return "?" }},
	{"postgres", postgresOpener, sqlinbox.Postgres, func(n int) string { return "$" + strconv.Itoa(n) }},
}

// txStores returns an inbox and a version store on db, in tables named by
// inboxTable and versionsTable.
func txStores(t *testing.T, db *sql.DB, d sqlinbox.Dialect, inboxTable, versionsTable string) (*sqlinbox.Inbox, *sqlinbox.Versions) {
	ctx := context.Background()
	x, err := sqlinbox.New(ctx, db, d, &sqlinbox.Options{Table: inboxTable})
	if err != nil {
		t.Fatal(err)
	}
	v, err := sqlinbox.NewVersions(ctx, db, d, &sqlinbox.Options{Table: versionsTable})
	if err != nil {
		t.Fatal(err)
	}
	return x, v
}

// tempTables names n tables dropped from db at cleanup.
func tempTables(t *testing.T, db *sql.DB, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "sbtest_" + randomName()
	}
	t.Cleanup(func() {
		for _, tb := range out {
			db.Exec("DROP TABLE IF EXISTS " + tb)
		}
	})
	return out
}

// TestDropStaleTxRollback: with TxFunc and the SQL stores the version is
// recorded in the handler's transaction. A handler that writes and fails
// rolls back its write and its version: the retry of v3 sees v1 recorded
// and is not stale; a v4 that failed for good records nothing, so another
// v4 is applied; v2 after v3 is stale.
func TestDropStaleTxRollback(t *testing.T) {
	for _, c := range sqlCases {
		t.Run(c.name, func(t *testing.T) {
			open := c.opener(t)
			db := open()
			tables := tempTables(t, db, 3) // inbox, versions, effects
			x, vs := txStores(t, db, c.dialect, tables[0], tables[1])
			if _, err := db.Exec("CREATE TABLE " + tables[2] + " (id TEXT NOT NULL)"); err != nil {
				t.Fatal(err)
			}
			b := openEmbedded(t)
			rt, _ := newRuntime(t, b)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			var failedV3 atomic.Bool
			var seenByRetry, seenByV4 atomic.Int64
			handle(t, rt, topic, group, consume.TxFunc(func(ctx context.Context, tx *sql.Tx, o *order) error {
				if _, err := tx.ExecContext(ctx, "INSERT INTO "+tables[2]+" (id) VALUES ("+c.ph(1)+")", o.ID); err != nil {
					return err
				}
				cur, _, err := vs.Version(ctx, group, "sku") // committed state, outside tx
				if err != nil {
					return err
				}
				switch o.ID {
				case "sku-v3":
					if failedV3.CompareAndSwap(false, true) {
						return errors.New("v3 fails once after writing")
					}
					seenByRetry.Store(int64(cur))
				case "sku-v4-bad":
					return consume.Permanent(errors.New("v4 fails for good"))
				case "sku-v4-ok":
					seenByV4.Store(int64(cur))
				}
				return nil
			}), consume.OrderedByKey(), consume.Idempotent(x, time.Hour), consume.DropStale(consume.VersionsIn(vs, 0)),
				consume.Retry(consume.Constant(20*time.Millisecond), 5))
			publish(t, b, topic, vmsg("sku", 1, ""), vmsg("sku", 3, ""), vmsg("sku", 2, ""), vmsg("sku", 4, "-bad"), vmsg("sku", 4, "-ok"))
			start(t, rt)
			eventually(t, "all settled", func() bool { s := stats(t, rt); return s.Acked+s.DeadLettered == 5 })
			rows, err := db.Query("SELECT id FROM " + tables[2] + " ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			var effects []string
			for rows.Next() {
				var id string
				rows.Scan(&id)
				effects = append(effects, id)
			}
			rows.Close()
			if strings.Join(effects, ",") != "sku-v1,sku-v3,sku-v4-ok" {
				t.Errorf("committed effects %v; want v1, v3 (its retry), v4-ok", effects)
			}
			if seenByRetry.Load() != 1 || seenByV4.Load() != 3 {
				t.Errorf("recorded version seen by v3's retry %d (want 1: the failed attempt recorded nothing), by v4-ok %d (want 3: v4-bad recorded nothing)", seenByRetry.Load(), seenByV4.Load())
			}
			if v, _, err := vs.Version(context.Background(), group, "sku"); err != nil || v != 4 {
				t.Errorf("recorded %d, %v; want 4", v, err)
			}
			if s := stats(t, rt); s.Stale != 1 || s.DeadLettered != 1 || s.Retried != 1 || s.Overtaken != 0 {
				t.Errorf("stats %+v; want 1 stale (v2), 1 dead letter (v4-bad), 1 retry (v3)", s)
			}
		})
	}
}
