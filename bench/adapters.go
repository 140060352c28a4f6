package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/switchboard-dev/switchboard"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

// The adapters suite: each Switchboard adapter (broker/redis,
// broker/rabbitmq, broker/nats, used through switchboard.Client) against the
// raw client library of its broker, on the same local server, in one run:
//
//	sync-1     one producer, one synchronous publish at a time (ack latency)
//	publish-N  N producers (--producers), each publishing synchronously
//	e2e        the same N producers publish --count messages while one
//	           consumer group with --ackers goroutines consumes and acks
//	           them all; first publish to last ack (Switchboard acks the
//	           way consume.Runtime does, with Delivery.AckAsync, and the
//	           count is of acks the server confirmed)
//
// Each backend is measured through its sides: "raw", "switchboard" and
// "watermill". Runs interleave the sides (and rotate which goes first), and
// every measurement uses a fresh topic, stream or queue that is deleted
// afterwards. Ratios are a side's median over raw's median.

// Sides of a backend, the suffix of the system names ("redis-streams/raw").
const (
	sideSwitchboard = "switchboard"
	sideRaw         = "raw"
	sideWatermill   = "watermill"
)

// casePublish is the name of the publish-N case on the command line.
const casePublish = "publish"

// pctSuffix marks the JSON ratio rows: a side's median as a percentage of
// the raw client's.
const pctSuffix = "_pct_of_raw"

// adapterGoal is DESIGN.md's goal: adapters reach at least 0.9x their raw
// client's throughput.
const adapterGoal = 0.9

// adaptersConfig holds the suite's flags.
type adaptersConfig struct {
	json          bool
	quick         bool
	runs          int
	count         int
	syncCount     int
	producers     int
	ackers        int
	prefetch      int
	backends      string
	sides         string
	sizes         string
	cases         string
	redisURL      string
	amqpURL       string
	natsURL       string
	queueType     string
	natsDoubleAck bool
	natsMsgID     bool
	sbAckWait     bool
	sbRuntime     bool
	timeout       time.Duration
	cpuprof       string
	memprof       string
}

// adapterBackend is one broker measured through each of its sides; sides[0]
// is the raw client.
type adapterBackend struct {
	name  string
	sides []brokerPeer
	close func()
}

// adapterOpeners open the backends by their --backends name.
var adapterOpeners = map[string]func(ctx context.Context, c *adaptersConfig) (*adapterBackend, error){
	"redis":    openRedisAdapters,
	"rabbitmq": openRabbitAdapters,
	"nats":     openNATSAdapters,
}

func runAdapters(args []string) error {
	var c adaptersConfig
	fs := flag.NewFlagSet("adapters", flag.ContinueOnError)
	fs.BoolVar(&c.json, "json", false, "print one JSON object per result line instead of a table")
	fs.IntVar(&c.runs, "runs", 3, "runs per measurement; each value is the median")
	fs.BoolVar(&c.quick, "quick", false, "smoke run: count 1000, sync-count 100 and 1 run unless given explicitly")
	fs.IntVar(&c.count, "count", 5000, "messages per publish-N and e2e measurement")
	fs.IntVar(&c.syncCount, "sync-count", 500, "messages per sync-1 measurement")
	fs.IntVar(&c.producers, "producers", 32, "concurrent synchronous publishers in publish-N and e2e (the same for every side)")
	fs.IntVar(&c.ackers, "ackers", 8, "goroutines acking deliveries in e2e (consume.DefaultConcurrency is 8)")
	fs.StringVar(&c.cpuprof, "cpuprofile", "", "write a CPU profile of the whole run (every side) to this file")
	fs.StringVar(&c.memprof, "memprofile", "", "write an allocation profile of the whole run to this file")
	fs.IntVar(&c.prefetch, "prefetch", 256, "deliveries in flight per consumer: Switchboard MaxInFlight, AMQP prefetch, JetStream fetch batch")
	fs.StringVar(&c.backends, "backends", "redis,rabbitmq,nats", "backends to run (comma separated)")
	fs.StringVar(&c.sides, "sides", "switchboard,watermill", "sides to run besides raw, which always runs: switchboard, watermill (comma separated)")
	fs.StringVar(&c.sizes, "sizes", "128,1024", "message sizes in bytes (comma separated)")
	fs.StringVar(&c.cases, "cases", "sync-1,publish,e2e", "cases to run (comma separated)")
	fs.StringVar(&c.redisURL, "redis-url", envOr("BENCH_REDIS_URL", "redis://127.0.0.1:6379"), "Redis server (env BENCH_REDIS_URL)")
	fs.StringVar(&c.amqpURL, "amqp-url", envOr("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ server (env BENCH_AMQP_URL)")
	fs.StringVar(&c.natsURL, "nats-url", envOr("BENCH_NATS_URL", "nats://127.0.0.1:4222"), "NATS server (env BENCH_NATS_URL)")
	fs.StringVar(&c.queueType, "rabbit-queue-type", "quorum", "RabbitMQ queue type on both sides: quorum (the adapter's default) or classic")
	fs.BoolVar(&c.sbRuntime, "sb-runtime", false, "Switchboard e2e consumes through consume.Runtime (a no-op Raw handler, Concurrency --ackers, MaxInFlight --prefetch) instead of Subscribe and ackers")
	fs.BoolVar(&c.sbAckWait, "sb-ack-wait", false, "Switchboard ackers call Delivery.Ack and wait for each instead of Delivery.AckAsync (what consume.Runtime does)")
	fs.BoolVar(&c.natsMsgID, "nats-msg-id", false, "raw JetStream publishes set a unique Nats-Msg-Id (the stream deduplicates, as for the adapter)")
	fs.BoolVar(&c.natsDoubleAck, "nats-double-ack", false, "raw JetStream consumer acks with DoubleAck (waits for the server, as the adapter does) instead of Ack")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "limit for one measurement")
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if c.quick {
		for name, v := range map[string]*int{"count": &c.count, "sync-count": &c.syncCount, "runs": &c.runs} {
			if !set[name] {
				*v = map[string]int{"count": 1000, "sync-count": 100, "runs": 1}[name]
			}
		}
	}
	if c.runs < 1 || c.count < 1 || c.syncCount < 1 || c.producers < 1 || c.ackers < 1 || c.prefetch < 1 {
		return errors.New("--runs, --count, --sync-count, --producers, --ackers and --prefetch must be positive")
	}
	if c.queueType != "quorum" && c.queueType != "classic" {
		return fmt.Errorf("--rabbit-queue-type %q: quorum or classic", c.queueType)
	}
	for _, s := range splitList(c.sides) {
		if s != sideSwitchboard && s != sideRaw && s != sideWatermill {
			return fmt.Errorf("--sides: unknown side %q (switchboard, watermill; raw always runs)", s)
		}
	}
	sizes, err := parseInts(c.sizes)
	if err != nil {
		return fmt.Errorf("--sizes: %w", err)
	}
	var cases []string
	for _, cs := range splitList(c.cases) {
		switch cs {
		case caseSync1, caseE2E:
			cases = append(cases, cs)
		case casePublish:
			cases = append(cases, publishCase(c.producers))
		default:
			return fmt.Errorf("--cases: unknown case %q (sync-1, publish, e2e)", cs)
		}
	}
	benchAckers = c.ackers // the raw Redis consumer (peer_redis.go) reads it
	stopProfiles, err := startProfiles(c.cpuprof, c.memprof)
	if err != nil {
		return err
	}
	defer stopProfiles()
	ctx := context.Background()
	progress("adapters: count=%d sync-count=%d runs=%d sizes=%v producers=%d ackers=%d prefetch=%d GOMAXPROCS=%d",
		c.count, c.syncCount, c.runs, sizes, c.producers, c.ackers, c.prefetch, runtime.GOMAXPROCS(0))

	var backends []*adapterBackend
	var skipped []string
	for _, name := range splitList(c.backends) {
		open, ok := adapterOpeners[name]
		if !ok {
			return fmt.Errorf("--backends: unknown backend %q (redis, rabbitmq, nats)", name)
		}
		be, err := open(ctx, &c)
		if err != nil {
			line := fmt.Sprintf("SKIPPED %s: %v", name, err)
			progress("adapters: %s", line)
			skipped = append(skipped, line)
			continue
		}
		defer be.close()
		backends = append(backends, be)
	}

	col := NewCollector()
	for run := 1; run <= c.runs; run++ {
		for _, size := range sizes {
			payload := make([]byte, size)
			_, _ = rand.Read(payload)
			for _, cas := range cases {
				for _, be := range backends {
					for i := range be.sides {
						p := be.sides[(i+run)%len(be.sides)] // rotate who goes first
						if err := measureAdapter(ctx, &c, col, p, cas, payload, run); err != nil {
							line := fmt.Sprintf("FAILED %s %s %d B run %d: %v", p.Name(), cas, size, run, err)
							progress("adapters: %s", line)
							skipped = append(skipped, line)
						}
					}
				}
			}
		}
	}

	results := col.Results()
	ratios := adapterRatios(results, backends, sizes, cases)
	if c.json {
		// The ratio rows follow the measured ones; the goal checks go to
		// stderr, as in the other suites.
		if err := PrintJSON(os.Stdout, append(results, rawRatioRows(results, backends)...)); err != nil {
			return err
		}
		PrintRatios(os.Stderr, ratios)
		return nil
	}
	PrintTable(os.Stdout, results)
	fmt.Println()
	printSideBySide(os.Stdout, results, backends, sizes, cases)
	fmt.Println()
	PrintRatios(os.Stdout, ratios)
	for _, s := range skipped {
		fmt.Println("# " + s)
	}
	return nil
}

func publishCase(producers int) string { return fmt.Sprintf("%s-%d", casePublish, producers) }

// caseProducers is the number of publishers of a case.
func (c *adaptersConfig) caseProducers(cas string) int {
	if cas == caseSync1 {
		return 1
	}
	return c.producers
}

// wants reports whether --sides asks for side.
func (c *adaptersConfig) wants(side string) bool { return slices.Contains(splitList(c.sides), side) }

// measureAdapter runs one case once on one side and adds its metrics.
func measureAdapter(ctx context.Context, c *adaptersConfig, col *Collector, p brokerPeer, cas string, payload []byte, run int) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return withTopic(ctx, "adapters", p, cas, len(payload), run, func(topic benchTopic) error {
		size := len(payload)
		publish := func(ctx context.Context) error { return topic.PublishSync(ctx, payload) }
		producers, n := c.caseProducers(cas), c.count
		if cas == caseSync1 {
			n = c.syncCount
		}
		dur := p.Durability(cas)
		if cas == caseE2E {
			cons, err := topic.StartConsumer(ctx, n)
			if err != nil {
				return fmt.Errorf("start consumer: %w", err)
			}
			defer cons.Stop()
			st, err := syncProducers(ctx, n, producers, publish)
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
			rate := float64(n) / cons.LastAck().Sub(st.start).Seconds()
			col.Add(p.Name(), cas, size, producers, dur, MetricE2ERate, rate)
			progress("run %d  %-25s %-11s %5d B  e2e %9.0f msg/s  (publish alone %9.0f msg/s)", run, p.Name(), cas, size, rate, st.rate())
		} else {
			st, err := syncProducers(ctx, n, producers, publish)
			if err != nil {
				return err
			}
			addPub(col, p.Name(), cas, size, producers, dur, st)
			progressPub(p.Name(), cas, size, run, st)
		}
		return nil
	})
}

// sideRatio returns side's median of metric over raw's, with both results.
func sideRatio(rs []Result, be *adapterBackend, side, cas string, size int, metric string) (v float64, s, r Result, ok bool) {
	s, ok1 := Find(rs, be.name+"/"+side, cas, size, metric)
	r, ok2 := Find(rs, be.name+"/"+sideRaw, cas, size, metric)
	if !ok1 || !ok2 || r.Value <= 0 {
		return 0, s, r, false
	}
	return s.Value / r.Value, s, r, true
}

// adapterRatios are the goal checks: Switchboard's median throughput over
// the raw client's, for the publish-N and e2e cases.
func adapterRatios(rs []Result, backends []*adapterBackend, sizes []int, cases []string) []Ratio {
	var out []Ratio
	for _, be := range backends {
		for _, size := range sizes {
			for _, cas := range cases {
				if cas == caseSync1 {
					continue
				}
				metric := MetricPublishRate
				if cas == caseE2E {
					metric = MetricE2ERate
				}
				v, s, r, ok := sideRatio(rs, be, sideSwitchboard, cas, size, metric)
				if !ok {
					continue
				}
				out = append(out, Ratio{
					Name:  fmt.Sprintf("%d B %s %s switchboard / raw", size, be.name, cas),
					Value: v, Goal: fmt.Sprintf(">= %.1f", adapterGoal), Pass: v >= adapterGoal,
					Note: fmt.Sprintf("%.0f vs %.0f msg/s", s.Value, r.Value),
				})
			}
		}
	}
	return out
}

// rawRatioRows are the JSON rows of the ratios: every metric of every side
// but raw as a percentage of raw's median ("<metric>_pct_of_raw"; above 100
// is faster for a rate, slower for a latency). min and max are the extremes
// the two spreads allow.
func rawRatioRows(rs []Result, backends []*adapterBackend) []Result {
	var out []Result
	for _, s := range rs {
		be := backendOf(backends, s.System)
		if be == nil || sideOf(s.System) == sideRaw {
			continue
		}
		v, _, r, ok := sideRatio(rs, be, sideOf(s.System), s.Case, s.MsgSize, s.Metric)
		if !ok || r.Min <= 0 {
			continue
		}
		row := s
		row.Metric += pctSuffix
		row.Value, row.Min, row.Max = 100*v, 100*s.Min/r.Max, 100*s.Max/r.Min
		out = append(out, row)
	}
	return out
}

func backendOf(backends []*adapterBackend, system string) *adapterBackend {
	name, _, _ := strings.Cut(system, "/")
	for _, be := range backends {
		if be.name == name {
			return be
		}
	}
	return nil
}

// printSideBySide prints one row per backend, size, case and metric with
// every side's median next to raw's and the ratio of the medians.
func printSideBySide(w io.Writer, rs []Result, backends []*adapterBackend, sizes []int, cases []string) {
	var sides []string // side names besides raw, in first-seen order
	for _, be := range backends {
		for _, p := range be.sides[1:] {
			if s := sideOf(p.Name()); !slices.Contains(sides, s) {
				sides = append(sides, s)
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "backend\tcase\tmsg_size\tmetric\traw\t"
	for _, s := range sides {
		head += s + "\t"
	}
	for _, s := range sides {
		head += s + "/raw\t"
	}
	fmt.Fprintln(tw, head)
	for _, be := range backends {
		for _, size := range sizes {
			for _, cas := range cases {
				for _, metric := range sideBySideMetrics(cas) {
					r, ok := Find(rs, be.name+"/"+sideRaw, cas, size, metric)
					if !ok {
						continue
					}
					line := fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t", be.name, cas, size, metric, formatValue(metric, r.Value))
					ratios := ""
					for _, side := range sides {
						s, ok := Find(rs, be.name+"/"+side, cas, size, metric)
						line += cell(ok, formatValue(metric, s.Value))
						v, _, _, ok := sideRatio(rs, be, side, cas, size, metric)
						ratios += cell(ok, fmt.Sprintf("%.2fx", v))
					}
					fmt.Fprintln(tw, line+ratios)
				}
			}
		}
	}
	_ = tw.Flush()
}

func cell(ok bool, s string) string {
	if !ok {
		return "-\t"
	}
	return s + "\t"
}

// sideBySideMetrics are the metrics compared per case.
func sideBySideMetrics(cas string) []string {
	switch cas {
	case caseSync1:
		return []string{MetricPublishRate, MetricAckP50, MetricAckP99}
	case caseE2E:
		return []string{MetricE2ERate}
	}
	return []string{MetricPublishRate, MetricAckP99}
}

func sideOf(system string) string {
	_, s, _ := strings.Cut(system, "/")
	return s
}

// renamedPeer gives a peer of the broker suite its system name in this suite.
type renamedPeer struct {
	brokerPeer
	name string
}

func (p renamedPeer) Name() string { return p.name }

// sbPeer is the Switchboard side of a backend: switchboard.Client over the
// adapter, as a user would call it.
type sbPeer struct {
	name       string
	durability string
	c          *switchboard.Client
	cfg        *adaptersConfig
	// cleanup deletes what the adapter created for topic and group.
	cleanup func(ctx context.Context, topic, group string) error
}

func (p *sbPeer) Name() string             { return p.name }
func (p *sbPeer) Durability(string) string { return p.durability }
func (p *sbPeer) Close() error             { return p.c.Close() }

// NewTopic names a fresh topic and group and creates the group up front
// (subscribe, then close), so that no publish pays for creating a stream and
// RabbitMQ has a queue to route to. The raw sides prepare the same.
func (p *sbPeer) NewTopic(ctx context.Context, run string) (benchTopic, error) {
	t := &sbTopic{p: p, topic: "sbb_" + sanitize(run) + ".m", group: "g_" + sanitize(run)}
	sub, err := p.c.Subscribe(ctx, t.topic, t.group, switchboard.MaxInFlight(p.cfg.prefetch))
	if err == nil {
		err = sub.Close()
	}
	if err != nil {
		_ = t.Cleanup(ctx)
		return nil, fmt.Errorf("create group %s: %w", t.group, err)
	}
	return t, nil
}

// sbTopic is one fresh topic with its group.
type sbTopic struct {
	p     *sbPeer
	topic string
	group string
}

// PublishSync is Client.Publish of one message: it returns once the backend
// acknowledged it.
func (t *sbTopic) PublishSync(ctx context.Context, payload []byte) error {
	_, err := t.p.c.Publish(ctx, t.topic, switchboard.Msg{Payload: payload})
	return err
}

// StartConsumer subscribes to the group with MaxInFlight --prefetch; --ackers
// goroutines take the deliveries and ack them as consume.Runtime does: with
// Delivery.AckAsync, at most --prefetch acks unanswered (with --sb-ack-wait,
// each acker waits for each Ack instead).
func (t *sbTopic) StartConsumer(ctx context.Context, n int) (consumer, error) {
	if t.p.cfg.sbRuntime {
		return t.startRuntime(n)
	}
	sub, err := t.p.c.Subscribe(ctx, t.topic, t.group, switchboard.MaxInFlight(t.p.cfg.prefetch))
	if err != nil {
		return nil, err
	}
	c := &sbConsumer{ackCounter: newAckCounter(n), sub: sub}
	slots := make(chan struct{}, t.p.cfg.prefetch)
	acked := func(err error) {
		if err != nil {
			c.fail(fmt.Errorf("ack: %w", err))
		} else {
			c.add(1)
		}
	}
	for range t.p.cfg.ackers {
		c.wg.Go(func() {
			for d := range sub.Deliveries() {
				if t.p.cfg.sbAckWait {
					acked(d.Ack(ctx))
					continue
				}
				slots <- struct{}{}
				c.pending.Add(1)
				d.AckAsync(ctx, func(err error) {
					acked(err)
					<-slots
					c.pending.Done()
				})
			}
		})
	}
	return c, nil
}

func (t *sbTopic) Cleanup(ctx context.Context) error { return t.p.cleanup(ctx, t.topic, t.group) }

// startRuntime consumes through consume.Runtime, as Client.Handle does: a
// no-op Raw handler with Concurrency --ackers and MaxInFlight --prefetch.
// A poller adds the runtime's confirmed acks (Stats.Acked) to the count
// every millisecond (so the clock may stop up to 1 ms late).
func (t *sbTopic) startRuntime(n int) (consumer, error) {
	rt := consume.New(t.p.c.Broker(), &consume.Config{Logger: slog.New(slog.DiscardHandler)})
	err := rt.Handle(t.topic, t.group, consume.Raw(func(context.Context, *message.Message) error { return nil }),
		consume.Concurrency(t.p.cfg.ackers),
		consume.Subscribe(func(p *broker.SubscribeParams) { p.MaxInFlight = t.p.cfg.prefetch }))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &runtimeConsumer{ackCounter: newAckCounter(n), cancel: cancel}
	c.wg.Go(func() {
		if err := rt.Run(ctx); err != nil {
			c.fail(fmt.Errorf("runtime: %w", err))
		}
	})
	c.wg.Go(func() {
		var seen int64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			st := rt.Stats()[0]
			if st.AckErrors > 0 {
				c.fail(fmt.Errorf("runtime: %d ack errors", st.AckErrors))
				return
			}
			if st.Acked > seen {
				c.add(int(st.Acked - seen))
				seen = st.Acked
			}
		}
	})
	return c, nil
}

// runtimeConsumer is a consume.Runtime running one registration.
type runtimeConsumer struct {
	*ackCounter
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (c *runtimeConsumer) Stop() {
	c.cancel()
	c.wg.Wait()
}

// sbConsumer is a Switchboard subscription with its ackers.
type sbConsumer struct {
	*ackCounter
	sub     broker.Subscription
	wg      sync.WaitGroup
	pending sync.WaitGroup // acks not answered yet
}

func (c *sbConsumer) Stop() {
	_ = c.sub.Close()
	c.wg.Wait()
	c.pending.Wait()
}

// withQuery returns rawURL with the query parameters kv (name, value, ...)
// added.
func withQuery(rawURL string, kv ...string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("bad URL %q: %w", broker.Redact(rawURL), err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
