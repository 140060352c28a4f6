package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/internal/testenv"
	"github.com/switchboard-dev/switchboard/message"
	"github.com/switchboard-dev/switchboard/outbox"
)

// wait bounds every wait for something that should happen (generous: the
// suite runs with -race on a loaded 2-core machine).
const wait = 30 * time.Second

const pgEnv, pgDefault = "SWITCHBOARD_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// store is one database under test.
type store struct {
	name    string
	dialect outbox.Dialect
	open    func(t *testing.T) *sql.DB
}

var stores = []store{
	{"sqlite", outbox.SQLite, openSQLite},
	{"postgres", outbox.Postgres, openPostgres},
}

// eachStore runs f as a parallel subtest per database, with a migrated
// outbox (default table) in a database (SQLite file, PostgreSQL schema) of
// its own.
func eachStore(t *testing.T, f func(t *testing.T, db *sql.DB, d outbox.Dialect)) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			db := s.open(t)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			if err := outbox.Migrate(ctx, db, s.dialect); err != nil {
				t.Fatal(err)
			}
			f(t, db, s.dialect)
		})
	}
}

func openSQLite(t *testing.T) *sql.DB {
	t.Helper()
	dsn := "file:" + filepath.Join(t.TempDir(), "app.db") + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var schemaSeq atomic.Int64

// openPostgres returns a pool whose search_path is a fresh schema, dropped
// at the end of the test, so that parallel tests never share a table.
func openPostgres(t *testing.T) *sql.DB {
	t.Helper()
	url := testenv.NeedServer(t, "PostgreSQL", pgEnv, pgDefault)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	admin, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	schema := fmt.Sprintf("sbtest_outbox_%d_%d_%d", time.Now().UnixNano()%1e9, schemaSeq.Add(1), rand.IntN(1e6))
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		admin.Close()
	})
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	db, err := sql.Open("pgx", url+sep+"search_path="+schema)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(20)
	t.Cleanup(func() { db.Close() })
	return db
}

func openBroker(t *testing.T) *embedded.Broker {
	t.Helper()
	b, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// quietLogger returns a logger into a buffer (printed on failure).
func quietLogger(t *testing.T) *slog.Logger {
	buf := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fastOpts are relay options for tests: short polls and backoffs.
func fastOpts(t *testing.T, more ...outbox.Option) []outbox.Option {
	return append([]outbox.Option{
		outbox.PollInterval(10 * time.Millisecond), outbox.StandbyInterval(20 * time.Millisecond),
		outbox.Backoff(10*time.Millisecond, 50*time.Millisecond), outbox.WithLogger(quietLogger(t)),
	}, more...)
}

// startRelay runs r until the returned stop is called (or the test ends);
// stop waits for Run to return and fails the test on an error.
func startRelay(t *testing.T, r *outbox.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("relay Run: %v", err)
				}
			case <-time.After(wait):
				t.Errorf("relay Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// collector consumes topics (a pattern) in a group from the earliest
// message and records every delivery.
type collector struct {
	mu   sync.Mutex
	msgs []*message.Message
}

func collect(t *testing.T, b broker.Broker, topic string) *collector {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: "test",
		Start: broker.StartPosition{Kind: broker.StartEarliest}, MaxInFlight: 1024})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range sub.Deliveries() {
			c.mu.Lock()
			c.msgs = append(c.msgs, d.Message)
			c.mu.Unlock()
			_ = d.Ack(context.Background())
		}
	}()
	t.Cleanup(func() { sub.Close(); <-done })
	return c
}

func (c *collector) snapshot() []*message.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*message.Message(nil), c.msgs...)
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// waitFor polls cond until it holds or wait passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// publishTx publishes msgs in one transaction and commits (or rolls back).
func publishTx(t *testing.T, db *sql.DB, commit bool, msgs ...message.Message) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := outbox.PublishBatch(ctx, tx, msgs)
	if err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	if commit {
		err = tx.Commit()
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func lag(t *testing.T, r *outbox.Relay) outbox.Lag {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	l, err := r.Lag(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// metric returns the value of the named counter or gauge gathered from reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("metric %s not gathered", name)
	return 0
}

// flaky wraps a broker: while down, Publish fails with ErrUnavailable;
// refuse, when set, refuses messages it matches for good; calls counts
// Publish calls.
type flaky struct {
	broker.Broker
	down   atomic.Bool
	calls  atomic.Int64
	delay  time.Duration
	refuse func(m *message.Message) bool
	// after, when set, runs after a successful publish; a non-nil error
	// replaces the result (the publish is stored but reported failed).
	after func() error
}

func (f *flaky) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return nil, fmt.Errorf("test backend: %w", broker.ErrUnavailable)
	}
	if f.refuse != nil {
		for i, m := range p.Messages {
			if f.refuse(m) {
				return nil, fmt.Errorf("message %d of batch: %w", i, &message.ValidationError{Field: "payload", Reason: "refused by the test"})
			}
		}
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	res, err := f.Broker.Publish(ctx, p)
	if err == nil && f.after != nil {
		if e := f.after(); e != nil {
			return nil, e
		}
	}
	return res, err
}
