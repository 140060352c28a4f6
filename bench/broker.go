package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The broker suite: for each system and message size,
//
//	sync-1          one producer, one synchronous publish at a time
//	concurrent-256  256 producers (group commit on the embedded engine; the
//	                peers' documented fast paths: JetStream async publish,
//	                Redis auto-pipelining)
//	e2e             256 producers publish while a consumer group with
//	                explicit acks consumes; first publish to last ack
//
// plus a small fdatasync loop on the embedded engine's filesystem, the
// reference for the lone-publisher latency goal.

// System names as they appear in results.
const (
	sysEmbedded = "switchboard-embedded"
	sysNATS     = "nats-jetstream"
	sysRedis    = "redis-streams"
)

// Case names.
const (
	caseSync1      = "sync-1"
	caseConcurrent = "concurrent-256" // each system's fast path: async publish with a shared in-flight window
	caseSync256    = "sync-256"       // 256 producers each waiting for its own ack (group commit only)
	caseE2E        = "e2e"
)

// brokerPeer is one system under test, connected once for the whole suite.
type brokerPeer interface {
	Name() string
	// Durability names what an ack means on this system for the case.
	Durability(cas string) string
	// NewTopic makes a fresh topic/stream for one measurement.
	NewTopic(ctx context.Context, run string) (benchTopic, error)
	Close() error
}

// benchTopic is one fresh topic/stream; Cleanup deletes it.
type benchTopic interface {
	// PublishSync publishes one message and returns once it is acked.
	PublishSync(ctx context.Context, payload []byte) error
	// StartConsumer creates a consumer group with explicit acks and starts
	// consuming; ackedAll is closed when n messages have been acked, and
	// last returns the time the n-th ack completed.
	StartConsumer(ctx context.Context, n int) (consumer, error)
	Cleanup(ctx context.Context) error
}

type consumer interface {
	Done() <-chan struct{} // closed once n acks completed (or the consumer failed)
	LastAck() time.Time
	Err() error
	Stop()
}

// concurrentPublisher is implemented by topics whose fast path for many
// producers is not "many goroutines calling PublishSync" (JetStream async
// publish). It publishes n messages from the given number of producers and
// reports per-message ack latencies.
type concurrentPublisher interface {
	PublishConcurrent(ctx context.Context, payload []byte, n, producers int) (pubStats, error)
}

// pubStats is what one publishing phase measured.
type pubStats struct {
	start, end time.Time
	latencies  []time.Duration // one per acked message
}

func (p pubStats) rate() float64 {
	return float64(len(p.latencies)) / p.end.Sub(p.start).Seconds()
}

// benchAckers is the number of goroutines settling deliveries in the e2e
// case (--ackers).
var benchAckers = 8

// benchMaxInFlight is the embedded consumer's MaxInFlight (--max-inflight).
var benchMaxInFlight = 1024

// brokerConfig holds the suite's flags.
type brokerConfig struct {
	json       bool
	runs       int
	count      int
	syncCount  int
	quick      bool
	systems    string
	sizes      string
	cases      string
	producers  int
	ackers     int
	natsURL    string
	redisAddr  string
	dir        string
	cpuprofile string
	timeout    time.Duration
	fsyncN     int
}

func runBroker(args []string) error {
	var c brokerConfig
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.BoolVar(&c.json, "json", false, "print one JSON object per result line instead of a table")
	fs.IntVar(&c.runs, "runs", 3, "runs per measurement; each value is the median")
	fs.IntVar(&c.count, "count", 200_000, "messages per concurrent-256 and e2e measurement")
	fs.IntVar(&c.syncCount, "sync-count", 0, "messages per sync-1 measurement (0: count/20, at least 500)")
	fs.BoolVar(&c.quick, "quick", false, "smoke run: count 20000 and 1 run unless given explicitly")
	fs.StringVar(&c.systems, "systems", "embedded,nats,redis", "systems to run: embedded, nats, redis (comma separated)")
	fs.StringVar(&c.sizes, "sizes", "128,1024", "message sizes in bytes (comma separated)")
	fs.StringVar(&c.cases, "cases", "sync-1,concurrent-256,sync-256,e2e", "cases to run (comma separated)")
	fs.IntVar(&c.producers, "producers", 256, "producers in the concurrent and e2e cases")
	fs.IntVar(&benchMaxInFlight, "max-inflight", 1024, "embedded e2e consumer's MaxInFlight")
	fs.IntVar(&natsMaxPending, "nats-max-pending", natsMaxPending, "JetStream async-publish window (acks outstanding on the connection)")
	fs.IntVar(&c.ackers, "ackers", 8, "goroutines settling deliveries in the e2e case (embedded, redis)")
	fs.StringVar(&c.natsURL, "nats-url", envOr("BENCH_NATS_URL", "nats://127.0.0.1:4222"), "NATS server (env BENCH_NATS_URL)")
	fs.StringVar(&c.redisAddr, "redis-addr", envOr("BENCH_REDIS_ADDR", "127.0.0.1:6379"), "Redis server (env BENCH_REDIS_ADDR)")
	fs.StringVar(&c.dir, "dir", os.TempDir(), "parent of the embedded engine's temporary data dirs and of the fdatasync probe file")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run to this file (use with --systems embedded)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "limit for one measurement")
	fs.IntVar(&c.fsyncN, "fsync-samples", 1000, "fdatasync calls in the reference loop per run")
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if c.quick {
		if !set["count"] {
			c.count = 20_000
		}
		if !set["runs"] {
			c.runs = 1
		}
		if !set["fsync-samples"] {
			c.fsyncN = 300
		}
	}
	if c.syncCount == 0 {
		c.syncCount = max(500, c.count/20)
	}
	if c.runs < 1 || c.count < 1 || c.producers < 1 || c.ackers < 1 {
		return errors.New("--runs, --count, --producers and --ackers must be positive")
	}
	sizes, err := parseInts(c.sizes)
	if err != nil {
		return fmt.Errorf("--sizes: %w", err)
	}
	cases := splitList(c.cases)
	for _, cs := range cases {
		if cs != caseSync1 && cs != caseConcurrent && cs != caseSync256 && cs != caseE2E {
			return fmt.Errorf("--cases: unknown case %q (sync-1, concurrent-256, sync-256, e2e)", cs)
		}
	}

	if c.cpuprofile != "" {
		f, err := os.Create(c.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	benchAckers = c.ackers
	ctx := context.Background()
	progress("broker: count=%d sync-count=%d runs=%d sizes=%v producers=%d GOMAXPROCS=%d", c.count, c.syncCount, c.runs, sizes, c.producers, runtime.GOMAXPROCS(0))

	var peers []brokerPeer
	var skipped []string
	for _, s := range splitList(c.systems) {
		var p brokerPeer
		var err error
		switch s {
		case "embedded", sysEmbedded:
			p, err = openEmbeddedPeer(ctx, c.dir)
		case "nats", sysNATS:
			p, err = openNATSPeer(ctx, c.natsURL)
		case "redis", sysRedis:
			p, err = openRedisPeer(ctx, c.redisAddr)
		default:
			return fmt.Errorf("--systems: unknown system %q (embedded, nats, redis)", s)
		}
		if err != nil {
			line := fmt.Sprintf("SKIPPED %s: %v", s, err)
			progress("broker: %s", line)
			skipped = append(skipped, line)
			continue
		}
		defer p.Close()
		peers = append(peers, p)
	}

	col := NewCollector()
	var fsyncP50s []float64
	for run := 1; run <= c.runs; run++ {
		if fsyncPeer(peers) {
			p50, err := fdatasyncP50(c.dir, c.fsyncN)
			if err != nil {
				return fmt.Errorf("fdatasync probe: %w", err)
			}
			fsyncP50s = append(fsyncP50s, p50)
			progress("run %d/%d  fdatasync (128 B append + fdatasync, %d samples in %s): p50 %.1f us", run, c.runs, c.fsyncN, c.dir, p50)
		}
		for _, size := range sizes {
			payload := make([]byte, size)
			_, _ = rand.Read(payload)
			for _, cas := range cases {
				for _, p := range peers {
					if err := measure(ctx, &c, col, p, cas, payload, run); err != nil {
						line := fmt.Sprintf("FAILED %s %s %d B run %d: %v", p.Name(), cas, size, run, err)
						progress("broker: %s", line)
						skipped = append(skipped, line)
					}
				}
			}
		}
	}

	results := col.Results()
	ratios := brokerRatios(results, sizes, median(fsyncP50s))
	if c.json {
		if err := PrintJSON(os.Stdout, results); err != nil {
			return err
		}
		// stdout stays pure result lines; the goal checks go to stderr.
		PrintRatios(os.Stderr, ratios)
	} else {
		PrintTable(os.Stdout, results)
		fmt.Println()
		if len(fsyncP50s) > 0 {
			fmt.Printf("fdatasync reference: p50 %.1f us (median of %d runs, 128 B append + fdatasync in %s)\n", median(fsyncP50s), len(fsyncP50s), c.dir)
		}
		PrintRatios(os.Stdout, ratios)
		for _, s := range skipped {
			fmt.Println("# " + s)
		}
	}
	return nil
}

func fsyncPeer(peers []brokerPeer) bool {
	return slices.ContainsFunc(peers, func(p brokerPeer) bool { return p.Name() == sysEmbedded })
}

// withTopic runs f on a fresh topic of p, named after the case, payload
// size and run, and deletes the topic afterwards (a failed cleanup is
// reported on stderr under suite).
func withTopic(ctx context.Context, suite string, p brokerPeer, cas string, size, run int, f func(benchTopic) error) error {
	runID := fmt.Sprintf("%s_%d_%d_%d", strings.ReplaceAll(cas, "-", ""), size, run, time.Now().UnixNano()%1_000_000_000)
	topic, err := p.NewTopic(ctx, runID)
	if err != nil {
		return fmt.Errorf("new topic: %w", err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		if err := topic.Cleanup(cctx); err != nil {
			progress("%s: cleanup %s %s: %v", suite, p.Name(), runID, err)
		}
	}()
	return f(topic)
}

// measure runs one case once on one system and adds its metrics.
func measure(ctx context.Context, c *brokerConfig, col *Collector, p brokerPeer, cas string, payload []byte, run int) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return withTopic(ctx, "broker", p, cas, len(payload), run, func(topic benchTopic) error {
		size, dur := len(payload), p.Durability(cas)

		switch cas {
		case caseSync1:
			st, err := syncProducers(ctx, c.syncCount, 1, func(ctx context.Context) error { return topic.PublishSync(ctx, payload) })
			if err != nil {
				return err
			}
			addPub(col, p.Name(), cas, size, 1, dur, st)
			progressPub(p.Name(), cas, size, run, st)
		case caseConcurrent:
			st, err := publishMany(ctx, topic, payload, c.count, c.producers)
			if err != nil {
				return err
			}
			addPub(col, p.Name(), cas, size, c.producers, dur, st)
			progressPub(p.Name(), cas, size, run, st)
		case caseSync256:
			st, err := syncProducers(ctx, c.count, c.producers, func(ctx context.Context) error { return topic.PublishSync(ctx, payload) })
			if err != nil {
				return err
			}
			addPub(col, p.Name(), cas, size, c.producers, dur, st)
			progressPub(p.Name(), cas, size, run, st)
		case caseE2E:
			cons, err := topic.StartConsumer(ctx, c.count)
			if err != nil {
				return fmt.Errorf("start consumer: %w", err)
			}
			defer cons.Stop()
			st, err := publishMany(ctx, topic, payload, c.count, c.producers)
			if err != nil {
				return err
			}
			select {
			case <-cons.Done():
			case <-ctx.Done():
				return fmt.Errorf("waiting for the consumer: %w", ctx.Err())
			}
			if err := cons.Err(); err != nil {
				return fmt.Errorf("consumer: %w", err)
			}
			rate := float64(c.count) / cons.LastAck().Sub(st.start).Seconds()
			col.Add(p.Name(), cas, size, c.producers, dur, MetricE2ERate, rate)
			progress("run %d  %-21s %-15s %5d B  e2e %9.0f msg/s  (publish alone %9.0f msg/s)", run, p.Name(), cas, size, rate, st.rate())
		}
		return nil
	})
}

func publishMany(ctx context.Context, topic benchTopic, payload []byte, n, producers int) (pubStats, error) {
	if cp, ok := topic.(concurrentPublisher); ok {
		return cp.PublishConcurrent(ctx, payload, n, producers)
	}
	return syncProducers(ctx, n, producers, func(ctx context.Context) error { return topic.PublishSync(ctx, payload) })
}

func addPub(col *Collector, sys, cas string, size, producers int, dur string, st pubStats) {
	slices.Sort(st.latencies)
	col.Add(sys, cas, size, producers, dur, MetricPublishRate, st.rate())
	col.Add(sys, cas, size, producers, dur, MetricAckP50, percentileUS(st.latencies, 50))
	col.Add(sys, cas, size, producers, dur, MetricAckP99, percentileUS(st.latencies, 99))
}

func progressPub(sys, cas string, size, run int, st pubStats) {
	progress("run %d  %-21s %-15s %5d B  publish %9.0f msg/s  ack p50 %8.1f us  p99 %8.1f us",
		run, sys, cas, size, st.rate(), percentileUS(st.latencies, 50), percentileUS(st.latencies, 99))
}

// syncProducers runs producers goroutines that together call publish n
// times, each call timed from start to ack.
func syncProducers(ctx context.Context, n, producers int, publish func(context.Context) error) (pubStats, error) {
	var next atomic.Int64
	lats := make([][]time.Duration, producers)
	errs := make([]error, producers)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for i := range producers {
		lats[i] = make([]time.Duration, 0, n/producers+1)
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				t := time.Now()
				if err := publish(ctx); err != nil {
					errs[i] = err
					cancel()
					return
				}
				lats[i] = append(lats[i], time.Since(t))
			}
		})
	}
	wg.Wait()
	end := time.Now()
	if err := firstErr(errs); err != nil {
		return pubStats{}, err
	}
	return pubStats{start: start, end: end, latencies: slices.Concat(lats...)}, nil
}

func firstErr(errs []error) error {
	for _, e := range errs {
		if e != nil && !errors.Is(e, context.Canceled) {
			return e
		}
	}
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// ackCounter is the shared part of the consumers: it counts acks and closes
// done at the n-th.
type ackCounter struct {
	n       int64
	acked   atomic.Int64
	done    chan struct{}
	once    sync.Once
	lastAck atomic.Int64 // unix nanos
	errMu   sync.Mutex
	err     error
}

func newAckCounter(n int) *ackCounter { return &ackCounter{n: int64(n), done: make(chan struct{})} }

func (a *ackCounter) add(k int) {
	if a.acked.Add(int64(k)) >= a.n {
		a.once.Do(func() {
			a.lastAck.Store(time.Now().UnixNano())
			close(a.done)
		})
	}
}

func (a *ackCounter) fail(err error) {
	a.errMu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.errMu.Unlock()
	a.once.Do(func() { close(a.done) })
}

func (a *ackCounter) Done() <-chan struct{} { return a.done }
func (a *ackCounter) LastAck() time.Time    { return time.Unix(0, a.lastAck.Load()) }
func (a *ackCounter) Err() error {
	a.errMu.Lock()
	defer a.errMu.Unlock()
	return a.err
}

// fdatasyncP50 appends 128 B to a temp file in dir and fdatasyncs it, n
// times, and returns the median latency of one write+fdatasync in µs.
func fdatasyncP50(dir string, n int) (float64, error) {
	f, err := os.CreateTemp(dir, "sb-bench-fsync-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 128)
	_, _ = rand.Read(buf)
	lats := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
		lats = append(lats, time.Since(t))
	}
	slices.Sort(lats)
	return percentileUS(lats, 50), nil
}

// brokerRatios computes the DESIGN.md performance goals from the results.
func brokerRatios(rs []Result, sizes []int, fsyncP50 float64) []Ratio {
	var out []Ratio
	for _, size := range sizes {
		if e, ok := Find(rs, sysEmbedded, caseConcurrent, size, MetricPublishRate); ok {
			if n, ok := Find(rs, sysNATS, caseConcurrent, size, MetricPublishRate); ok {
				v := e.Value / n.Value
				out = append(out, Ratio{
					Name: fmt.Sprintf("%d B embedded durable publish / JetStream async publish", size), Value: v, Goal: ">= 2.0", Pass: v >= 2.0,
					Note: fmt.Sprintf("%.0f vs %.0f msg/s", e.Value, n.Value),
				})
			}
		}
		if e, ok := Find(rs, sysEmbedded, caseE2E, size, MetricE2ERate); ok {
			if n, ok := Find(rs, sysNATS, caseE2E, size, MetricE2ERate); ok {
				v := e.Value / n.Value
				out = append(out, Ratio{
					Name: fmt.Sprintf("%d B embedded e2e / JetStream explicit-ack e2e", size), Value: v, Goal: ">= 1.5", Pass: v >= 1.5,
					Note: fmt.Sprintf("%.0f vs %.0f msg/s", e.Value, n.Value),
				})
			}
		}
		if e, ok := Find(rs, sysEmbedded, caseSync1, size, MetricAckP50); ok && fsyncP50 > 0 {
			v := e.Value / fsyncP50
			out = append(out, Ratio{
				Name: fmt.Sprintf("%d B lone sync publisher p50 / one fdatasync p50", size), Value: v, Goal: "<= 1.3", Pass: v <= 1.3,
				Note: fmt.Sprintf("%.1f vs %.1f us", e.Value, fsyncP50),
			})
		}
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad size %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// tempDataDir makes a fresh directory for one embedded measurement.
func tempDataDir(parent, run string) (string, error) {
	return os.MkdirTemp(parent, "sb-bench-"+filepath.Base(run)+"-")
}
