package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/consume/inbox/boltinbox"
	"github.com/switchboard-dev/switchboard/consume/inbox/redisinbox"
	"github.com/switchboard-dev/switchboard/consume/inbox/sqlinbox"
	"github.com/switchboard-dev/switchboard/message"
)

// The runtime suite: N messages are published to a fresh embedded topic
// first, then consumed by one consumer group, measured from the first
// fetch to the last ack:
//
//	direct            the embedded backend used directly: workers range
//	                  over Deliveries, json.Unmarshal, Ack
//	runtime           the same work through consume.Runtime (typed JSON
//	                  handler, retries, panic guard, timeout)
//	runtime+inbox-*   the runtime with an idempotency inbox per store
//	                  (bolt file, Redis, SQLite, PostgreSQL)
//	runtime+tx-*      HandleTx: the SQL inbox row in the handler's tx
//
// Ratio: runtime / direct throughput (goal: the runtime costs <= 10 %).

const (
	sysRuntime     = "switchboard-runtime"
	metricHandle   = "handle_msgs_per_s"
	metricOverhead = "inbox_overhead_us_per_msg"
)

type benchOrder struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
	Note  string `json:"note"`
}

func runRuntime(args []string) error {
	fs := flag.NewFlagSet("runtime", flag.ContinueOnError)
	jsonOut := fs.Bool("json", false, "print one JSON object per result line")
	runs := fs.Int("runs", 3, "runs per case (median reported)")
	count := fs.Int("count", 20000, "messages per run")
	conc := fs.Int("concurrency", 8, "handler concurrency (workers)")
	quick := fs.Bool("quick", false, "1 run of 3000 messages")
	stores := fs.String("stores", "bolt,redis,sqlite,postgres", "inbox stores to measure")
	redisURL := fs.String("redis", envOr("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL")
	pgURL := fs.String("postgres", envOr("SWITCHBOARD_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL")
	dir := fs.String("dir", os.TempDir(), "parent of the data directories")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memProfile := fs.String("memprofile", "", "write an allocation profile (at the end of the run) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if *memProfile != "" {
		defer func() {
			f, err := os.Create(*memProfile)
			if err != nil {
				progress("memprofile: %v", err)
				return
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				progress("memprofile: %v", err)
			}
		}()
	}
	if *quick {
		*runs, *count = 1, 3000
	}
	ctx := context.Background()
	payload, _ := json.Marshal(benchOrder{ID: "o-123456", Total: 4200, Note: "a 128-byte-ish order payload for the runtime bench......"})
	col := NewCollector()
	var skipped []string
	dur := "durable publish (fsync); acks in memory + checkpoint"

	type inboxCase struct {
		name string
		open func(dir string) (consume.Inbox, func(), error)
		tx   bool
	}
	var inboxes []inboxCase
	for _, s := range splitList(*stores) {
		switch s {
		case "bolt":
			inboxes = append(inboxes, inboxCase{name: "bolt", open: func(dir string) (consume.Inbox, func(), error) {
				x, err := boltinbox.Open(filepath.Join(dir, "inbox.db"), nil)
				if err != nil {
					return nil, nil, err
				}
				return x, func() { x.Close() }, nil
			}})
		case "redis":
			inboxes = append(inboxes, inboxCase{name: "redis", open: func(string) (consume.Inbox, func(), error) {
				opt, err := redis.ParseURL(*redisURL)
				if err != nil {
					return nil, nil, err
				}
				c := redis.NewClient(opt)
				if err := c.Ping(ctx).Err(); err != nil {
					c.Close()
					return nil, nil, err
				}
				return redisinbox.New(c, "sbbench:"+randomSuffix()+":"), func() { c.Close() }, nil
			}})
		case "sqlite", "postgres":
			for _, tx := range []bool{false, true} {
				name := s
				inboxes = append(inboxes, inboxCase{name: name, tx: tx, open: func(dir string) (consume.Inbox, func(), error) {
					var db *sql.DB
					var err error
					d := sqlinbox.SQLite
					if name == "sqlite" {
						db, err = sql.Open("sqlite", "file:"+filepath.Join(dir, "inbox.sqlite")+"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate")
					} else {
						d = sqlinbox.Postgres
						db, err = sql.Open("pgx", *pgURL)
					}
					if err != nil {
						return nil, nil, err
					}
					if err := db.PingContext(ctx); err != nil {
						db.Close()
						return nil, nil, err
					}
					table := "sbbench_inbox_" + randomSuffix()
					x, err := sqlinbox.New(ctx, db, d, &sqlinbox.Options{Table: table})
					if err != nil {
						db.Close()
						return nil, nil, err
					}
					return x, func() { db.Exec("DROP TABLE " + table); db.Close() }, nil
				}})
			}
		default:
			return fmt.Errorf("--stores: unknown store %q (bolt, redis, sqlite, postgres)", s)
		}
	}

	for run := 1; run <= *runs; run++ {
		rate, err := runtimeMeasure(ctx, *dir, *count, *conc, payload, "direct", nil, false)
		if err != nil {
			return fmt.Errorf("direct: %w", err)
		}
		col.Add("switchboard-embedded", "direct", len(payload), *conc, dur, metricHandle, rate)
		progress("run %d/%d  direct                   %9.0f msgs/s", run, *runs, rate)
		base, err := runtimeMeasure(ctx, *dir, *count, *conc, payload, "runtime", nil, false)
		if err != nil {
			return fmt.Errorf("runtime: %w", err)
		}
		col.Add(sysRuntime, "runtime", len(payload), *conc, dur, metricHandle, base)
		progress("run %d/%d  runtime                  %9.0f msgs/s", run, *runs, base)
		for _, ic := range inboxes {
			cas := "runtime+inbox-" + ic.name
			if ic.tx {
				cas = "runtime+tx-" + ic.name
			}
			tmp, err := os.MkdirTemp(*dir, "sbbench-inbox-")
			if err != nil {
				return err
			}
			x, closeFn, err := ic.open(tmp)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("SKIPPED %s: %v", cas, err))
				os.RemoveAll(tmp)
				continue
			}
			rate, err := runtimeMeasure(ctx, *dir, *count, *conc, payload, cas, x, ic.tx)
			closeFn()
			os.RemoveAll(tmp)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("FAILED %s run %d: %v", cas, run, err))
				continue
			}
			col.Add(sysRuntime, cas, len(payload), *conc, dur, metricHandle, rate)
			col.Add(sysRuntime, cas, len(payload), *conc, dur, metricOverhead, 1e6/rate-1e6/base)
			progress("run %d/%d  %-24s %9.0f msgs/s", run, *runs, cas, rate)
		}
	}
	results := col.Results()
	var ratios []Ratio
	d, ok1 := Find(results, "switchboard-embedded", "direct", len(payload), metricHandle)
	r, ok2 := Find(results, sysRuntime, "runtime", len(payload), metricHandle)
	if ok1 && ok2 && d.Value > 0 {
		v := r.Value / d.Value
		ratios = append(ratios, Ratio{Name: "runtime / embedded direct (handler throughput)", Value: v, Goal: ">= 0.90", Pass: v >= 0.9,
			Note: fmt.Sprintf("%.0f vs %.0f msgs/s", r.Value, d.Value)})
	}
	if *jsonOut {
		if err := PrintJSON(os.Stdout, results); err != nil {
			return err
		}
		PrintRatios(os.Stderr, ratios)
		for _, s := range skipped {
			fmt.Fprintln(os.Stderr, "# "+s)
		}
		return nil
	}
	PrintTable(os.Stdout, results)
	fmt.Println()
	PrintRatios(os.Stdout, ratios)
	for _, s := range skipped {
		fmt.Println("# " + s)
	}
	return nil
}

var benchSeq atomic.Int64

func randomSuffix() string {
	return fmt.Sprintf("%d%d", time.Now().UnixNano()%1e9, benchSeq.Add(1))
}

// runtimeMeasure publishes n messages to a fresh embedded broker, then
// consumes them the given way and returns messages per second. Its
// goroutines (the broker's included) carry the profiler label case=<cas>,
// so that --cpuprofile can be split by case (pprof -tagfocus case=direct).
func runtimeMeasure(ctx context.Context, parent string, n, conc int, payload []byte, cas string, inbox consume.Inbox, tx bool) (rate float64, err error) {
	pprof.Do(ctx, pprof.Labels("case", cas), func(ctx context.Context) {
		rate, err = runtimeMeasure1(ctx, parent, n, conc, payload, cas, inbox, tx)
	})
	return rate, err
}

func runtimeMeasure1(ctx context.Context, parent string, n, conc int, payload []byte, cas string, inbox consume.Inbox, tx bool) (float64, error) {
	dir, err := os.MkdirTemp(parent, "sbbench-runtime-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	b, err := embedded.Open(dir, embedded.WithGroupMaxQueued(n+1000))
	if err != nil {
		return 0, err
	}
	defer b.Close()
	const topic, group = "bench.orders", "bench"
	batch := make([]*message.Message, 0, 500)
	for i := 0; i < n; i++ {
		batch = append(batch, &message.Message{Payload: payload, ContentType: "application/json"})
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: batch}); err != nil {
				return 0, err
			}
			batch = batch[:0]
		}
	}
	earliest := broker.StartPosition{Kind: broker.StartEarliest}
	var done atomic.Int64
	finished := make(chan struct{})
	count := func() {
		if done.Add(1) == int64(n) {
			close(finished)
		}
	}
	timeout := time.After(5 * time.Minute)
	if cas == "direct" {
		// Timed from Subscribe, as the runtime case is timed from Run
		// (which subscribes).
		start := time.Now()
		sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: group, Start: earliest, MaxInFlight: 2 * conc})
		if err != nil {
			return 0, err
		}
		defer sub.Close()
		var wg sync.WaitGroup
		for range conc {
			wg.Go(func() {
				for {
					select {
					case <-finished:
						return
					case d, ok := <-sub.Deliveries():
						if !ok {
							return
						}
						var o benchOrder
						if err := json.Unmarshal(d.Message.Payload, &o); err != nil {
							d.Term(ctx, "decode")
							continue
						}
						if d.Ack(ctx) == nil {
							count()
						}
					}
				}
			})
		}
		select {
		case <-finished:
		case <-timeout:
			return 0, errors.New("timed out")
		}
		el := time.Since(start)
		wg.Wait()
		return float64(n) / el.Seconds(), nil
	}
	rt := consume.New(b, nil)
	opts := []consume.Option{consume.Concurrency(conc), consume.Subscribe(func(p *broker.SubscribeParams) { p.Start = earliest })}
	if inbox != nil {
		opts = append(opts, consume.Idempotent(inbox, time.Hour))
	}
	var h consume.Handler
	if tx {
		h = consume.TxFunc(func(ctx context.Context, tx *sql.Tx, o *benchOrder) error { count(); return nil })
	} else {
		h = consume.Func(func(ctx context.Context, o *benchOrder) error { count(); return nil })
	}
	if err := rt.Handle(topic, group, h, opts...); err != nil {
		return 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	start := time.Now()
	go func() { ran <- rt.Run(rctx) }()
	select {
	case <-finished:
	case err := <-ran:
		cancel()
		return 0, fmt.Errorf("run ended: %v", err)
	case <-timeout:
		cancel()
		return 0, errors.New("timed out")
	}
	// The last handler returned; wait for its ack to count it.
	for rt.Stats()[0].Acked < int64(n) {
		time.Sleep(100 * time.Microsecond)
	}
	el := time.Since(start)
	cancel()
	if err := <-ran; err != nil {
		return 0, err
	}
	return float64(n) / el.Seconds(), nil
}
