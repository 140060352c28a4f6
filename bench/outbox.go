package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/message"
	"github.com/switchboard-dev/switchboard/outbox"
)

// The outbox suite, on PostgreSQL, in one run:
//
//	insert-loop     the baseline: P producers each INSERT one row per
//	                transaction (autocommit) into a plain table with the
//	                same payload
//	tx-insert-loop  the same INSERT inside BEGIN ... COMMIT (what an
//	                application's transaction costs without the outbox)
//	outbox-publish  P producers each BEGIN; outbox.Publish; COMMIT
//	relay-drain     a backlog of N committed outbox rows forwarded by one
//	                relay to the embedded broker (durable: fsync per batch)
//	                until the table is empty
//	e2e             P producers publish through the outbox while the relay
//	                runs: first commit to the last row relayed and deleted
//
// Ratios: relay-drain / insert-loop (the relay must outpace writers that
// commit one row per transaction, or the backlog grows) and
// outbox-publish / tx-insert-loop (what the outbox row costs a writer
// whose transaction exists anyway).

const (
	sysPostgres    = "postgres"
	sysOutbox      = "switchboard-outbox"
	metricWrite    = "write_msgs_per_s"
	metricRelay    = "relay_msgs_per_s"
	caseInsertLoop = "insert-loop"
	caseTxInsert   = "tx-insert-loop"
	caseOutboxPub  = "outbox-publish"
	caseRelayDrain = "relay-drain"
	caseOutboxE2E  = "e2e"
)

func runOutbox(args []string) error {
	fs := flag.NewFlagSet("outbox", flag.ContinueOnError)
	jsonOut := fs.Bool("json", false, "print one JSON object per result line")
	runs := fs.Int("runs", 3, "runs per case (median reported)")
	count := fs.Int("count", 20000, "messages per measurement")
	producers := fs.Int("producers", 8, "concurrent writers (insert-loop, outbox-publish, e2e)")
	size := fs.Int("size", 128, "payload bytes")
	batch := fs.Int("batch", 500, "relay BatchSize")
	quick := fs.Bool("quick", false, "1 run of 3000 messages")
	pgURL := fs.String("postgres", envOr("SWITCHBOARD_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL")
	dir := fs.String("dir", os.TempDir(), "parent of the embedded broker's data directories")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *quick {
		*runs, *count = 1, 3000
	}
	if *runs < 1 || *count < 1 || *producers < 1 || *size < 0 || *batch < 1 {
		return errors.New("--runs, --count, --producers and --batch must be positive")
	}
	ctx := context.Background()
	db, err := sql.Open("pgx", *pgURL)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(*producers + 4)
	db.SetMaxIdleConns(*producers + 4)
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w", broker.Redact(*pgURL), err)
	}
	var syncCommit string
	if err := db.QueryRowContext(ctx, "SHOW synchronous_commit").Scan(&syncCommit); err != nil {
		return err
	}
	pgDur := "postgres commit (synchronous_commit=" + syncCommit + ")"
	relayDur := "embedded fsync per batch + " + pgDur
	payload := make([]byte, *size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	progress("outbox: count=%d runs=%d producers=%d size=%d batch=%d", *count, *runs, *producers, *size, *batch)

	col := NewCollector()
	for run := 1; run <= *runs; run++ {
		for _, inTx := range []bool{false, true} {
			cas := caseInsertLoop
			if inTx {
				cas = caseTxInsert
			}
			rate, err := outboxInsertLoop(ctx, db, *count, *producers, payload, inTx)
			if err != nil {
				return fmt.Errorf("%s: %w", cas, err)
			}
			col.Add(sysPostgres, cas, *size, *producers, pgDur, metricWrite, rate)
			progress("run %d/%d  %-16s %9.0f msgs/s", run, *runs, cas, rate)
		}

		rate, err := outboxPublishLoop(ctx, db, *count, *producers, payload)
		if err != nil {
			return fmt.Errorf("%s: %w", caseOutboxPub, err)
		}
		col.Add(sysOutbox, caseOutboxPub, *size, *producers, pgDur, metricWrite, rate)
		progress("run %d/%d  %-16s %9.0f msgs/s", run, *runs, caseOutboxPub, rate)

		rate, err = outboxRelay(ctx, db, *dir, *count, *producers, *batch, payload, false)
		if err != nil {
			return fmt.Errorf("%s: %w", caseRelayDrain, err)
		}
		col.Add(sysOutbox, caseRelayDrain, *size, 1, relayDur, metricRelay, rate)
		progress("run %d/%d  %-16s %9.0f msgs/s", run, *runs, caseRelayDrain, rate)

		rate, err = outboxRelay(ctx, db, *dir, *count, *producers, *batch, payload, true)
		if err != nil {
			return fmt.Errorf("%s: %w", caseOutboxE2E, err)
		}
		col.Add(sysOutbox, caseOutboxE2E, *size, *producers, relayDur, MetricE2ERate, rate)
		progress("run %d/%d  %-16s %9.0f msgs/s", run, *runs, caseOutboxE2E, rate)
	}

	results := col.Results()
	var ratios []Ratio
	base, ok := Find(results, sysPostgres, caseInsertLoop, *size, metricWrite)
	if ok && base.Value > 0 {
		if r, ok := Find(results, sysOutbox, caseRelayDrain, *size, metricRelay); ok {
			v := r.Value / base.Value
			ratios = append(ratios, Ratio{Name: "outbox relay-drain / plain INSERT loop", Value: v, Goal: ">= 1.0", Pass: v >= 1,
				Note: fmt.Sprintf("%.0f vs %.0f msgs/s", r.Value, base.Value)})
		}
	}
	txBase, ok1 := Find(results, sysPostgres, caseTxInsert, *size, metricWrite)
	pub, ok2 := Find(results, sysOutbox, caseOutboxPub, *size, metricWrite)
	if ok1 && ok2 && txBase.Value > 0 {
		v := pub.Value / txBase.Value
		ratios = append(ratios, Ratio{Name: "outbox.Publish in a tx / plain INSERT in a tx (writer cost)", Value: v, Goal: ">= 0.9", Pass: v >= 0.9,
			Note: fmt.Sprintf("%.0f vs %.0f msgs/s", pub.Value, txBase.Value)})
	}
	if *jsonOut {
		if err := PrintJSON(os.Stdout, results); err != nil {
			return err
		}
		PrintRatios(os.Stderr, ratios)
		return nil
	}
	PrintTable(os.Stdout, results)
	fmt.Println()
	PrintRatios(os.Stdout, ratios)
	return nil
}

// runProducers runs n jobs on p goroutines and returns jobs per second.
func runProducers(ctx context.Context, n, p int, job func(ctx context.Context, i int) error) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, p)
	start := time.Now()
	for range p {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := job(ctx, i); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	close(errc)
	if err := <-errc; err != nil {
		return 0, err
	}
	return float64(n) / el.Seconds(), nil
}

func outboxInsertLoop(ctx context.Context, db *sql.DB, n, p int, payload []byte, inTx bool) (float64, error) {
	table := "sbbench_plain_" + randomSuffix()
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+table+` (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL, topic TEXT NOT NULL, payload BYTEA NOT NULL)`); err != nil {
		return 0, err
	}
	defer db.ExecContext(context.Background(), `DROP TABLE `+table)
	q := `INSERT INTO ` + table + ` (id, topic, payload) VALUES ($1, $2, $3)`
	return runProducers(ctx, n, p, func(ctx context.Context, _ int) error {
		if !inTx {
			_, err := db.ExecContext(ctx, q, message.NewID(), "bench.outbox", payload)
			return err
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, q, message.NewID(), "bench.outbox", payload); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	})
}

func newOutboxTable(ctx context.Context, db *sql.DB) (*outbox.Outbox, func(), error) {
	table := "sbbench_outbox_" + randomSuffix()
	if err := outbox.Migrate(ctx, db, outbox.Postgres, outbox.WithTable(table)); err != nil {
		return nil, nil, err
	}
	ob, err := outbox.New(table)
	if err != nil {
		return nil, nil, err
	}
	return ob, func() { db.ExecContext(context.Background(), `DROP TABLE `+table) }, nil
}

func outboxPublishTx(ctx context.Context, db *sql.DB, ob *outbox.Outbox, msgs ...message.Message) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if _, err := ob.PublishBatch(ctx, tx, msgs); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func outboxPublishLoop(ctx context.Context, db *sql.DB, n, p int, payload []byte) (float64, error) {
	ob, drop, err := newOutboxTable(ctx, db)
	if err != nil {
		return 0, err
	}
	defer drop()
	return runProducers(ctx, n, p, func(ctx context.Context, i int) error {
		return outboxPublishTx(ctx, db, ob, message.Message{Topic: "bench.outbox", Key: fmt.Sprintf("k%d", i%64), Payload: payload})
	})
}

// countingBroker counts acknowledged messages.
type countingBroker struct {
	broker.Broker
	n atomic.Int64
}

func (c *countingBroker) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	res, err := c.Broker.Publish(ctx, p)
	if err == nil {
		c.n.Add(int64(len(res.Results)))
	}
	return res, err
}

// outboxRelay measures the relay: draining a committed backlog, or (e2e)
// while p producers publish through the outbox.
func outboxRelay(ctx context.Context, db *sql.DB, parent string, n, p, batch int, payload []byte, e2e bool) (float64, error) {
	ob, drop, err := newOutboxTable(ctx, db)
	if err != nil {
		return 0, err
	}
	defer drop()
	dir, err := os.MkdirTemp(parent, "sbbench-outbox-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	eb, err := embedded.Open(dir)
	if err != nil {
		return 0, err
	}
	defer eb.Close()
	b := &countingBroker{Broker: eb}
	msg := func(i int) message.Message {
		return message.Message{Topic: "bench.outbox", Key: fmt.Sprintf("k%d", i%64), Payload: payload}
	}
	if !e2e {
		msgs := make([]message.Message, 0, 1000)
		for i := range n {
			msgs = append(msgs, msg(i))
			if len(msgs) == cap(msgs) || i == n-1 {
				if err := outboxPublishTx(ctx, db, ob, msgs...); err != nil {
					return 0, err
				}
				msgs = msgs[:0]
			}
		}
	}
	r, err := outbox.NewRelay(db, outbox.Postgres, b, outbox.WithTable(ob.Table()), outbox.BatchSize(batch),
		outbox.PollInterval(time.Millisecond), outbox.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	start := time.Now()
	go func() { ran <- r.Run(rctx) }()
	prodErr := make(chan error, 1)
	if e2e {
		go func() {
			_, err := runProducers(ctx, n, p, func(ctx context.Context, i int) error { return outboxPublishTx(ctx, db, ob, msg(i)) })
			prodErr <- err
		}()
	}
	timeout := time.After(5 * time.Minute)
	for b.n.Load() < int64(n) {
		select {
		case err := <-ran:
			return 0, fmt.Errorf("relay stopped: %v", err)
		case err := <-prodErr:
			if err != nil {
				return 0, err
			}
		case <-timeout:
			return 0, fmt.Errorf("timed out with %d of %d relayed", b.n.Load(), n)
		case <-time.After(time.Millisecond):
		}
	}
	for {
		l, err := r.Lag(ctx)
		if err != nil {
			return 0, err
		}
		if l.Pending == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	cancel()
	if err := <-ran; err != nil {
		return 0, err
	}
	return float64(n) / el.Seconds(), nil
}
