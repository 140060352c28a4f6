package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/broker"
	_ "github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/client"
	"github.com/switchboard-dev/switchboard/hub"
	"github.com/switchboard-dev/switchboard/message"
)

// The hub suite: the hub in this process on loopback, over the embedded
// engine (fsync before ack), against NATS on the local server, side by side:
//
//	publish        producers send batches (PublishBatch over gRPC, h2c) vs
//	               JetStream async publish from the same number of producers
//	e2e            the same publishing while a consumer group consumes with
//	               explicit acks (hub: Go client stream, Delivery.Ack from
//	               --ackers goroutines, each returning once the hub confirmed
//	               it; the client batches them into Settle calls; JetStream:
//	               pull consumer with explicit acks); first publish to last ack
//	request-reply  one requester, one responder, sequential round trips:
//	               hub Request/Reply vs NATS core request/reply
//	rest-publish   a Go load generator: --rest-conns HTTP/1.1 keep-alive
//	               connections POSTing one JSON message each
//	               (/v1/topics/{t}/messages); requests/s and latency
const (
	sysHub     = "switchboard-hub"
	sysHubREST = "switchboard-hub-rest"
	sysNATSRR  = "nats-core"

	caseHubPublish = "publish"
	caseHubE2E     = "e2e"
	caseRR         = "request-reply"
	caseREST       = "rest-publish"

	MetricRRP50 = "request_reply_p50_us"
	MetricRRP99 = "request_reply_p99_us"
	MetricREST  = "rest_requests_per_s"
)

type hubConfig struct {
	json      bool
	runs      int
	count     int
	quick     bool
	sizes     string
	cases     string
	systems   string
	producers int
	batch     int
	ackers    int
	rrCount   int
	restConns int
	restCount int
	natsURL   string
	dir       string
	timeout   time.Duration
	cpuprof   string
	memprof   string
}

func runHub(args []string) error {
	var c hubConfig
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	fs.BoolVar(&c.json, "json", false, "print one JSON object per result line instead of a table")
	fs.IntVar(&c.runs, "runs", 3, "runs per measurement; each value is the median")
	fs.IntVar(&c.count, "count", 200_000, "messages per publish and e2e measurement")
	fs.BoolVar(&c.quick, "quick", false, "smoke run: count 20000, 1 run, fewer round trips unless given explicitly")
	fs.StringVar(&c.sizes, "sizes", "128,1024", "message sizes in bytes (comma separated)")
	fs.StringVar(&c.cases, "cases", "publish,e2e,request-reply,rest-publish", "cases to run (comma separated)")
	fs.StringVar(&c.systems, "systems", "hub,nats", "systems: hub, nats (comma separated)")
	fs.IntVar(&c.producers, "producers", 16, "producers in the publish and e2e cases (hub and JetStream alike)")
	fs.IntVar(&c.batch, "batch", 100, "messages per hub PublishBatch")
	fs.IntVar(&c.ackers, "ackers", 256, "goroutines acking hub deliveries in the e2e case (Delivery.Ack, one at a time each; the client coalesces them into Settle calls on one HTTP/2 connection)")
	fs.IntVar(&c.rrCount, "rr-count", 5000, "round trips per request-reply measurement")
	fs.IntVar(&c.restConns, "rest-conns", 64, "concurrent connections of the REST load generator")
	fs.IntVar(&c.restCount, "rest-count", 50_000, "requests per rest-publish measurement")
	fs.StringVar(&c.natsURL, "nats-url", envOr("BENCH_NATS_URL", "nats://127.0.0.1:4222"), "NATS server (env BENCH_NATS_URL)")
	fs.StringVar(&c.dir, "dir", os.TempDir(), "parent of the hub's temporary data dirs")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "limit for one measurement")
	fs.StringVar(&c.cpuprof, "cpuprofile", "", "write a CPU profile of the whole run to this file (use with --systems hub)")
	fs.StringVar(&c.memprof, "memprofile", "", "write an allocation profile of the whole run to this file (use with --systems hub)")
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if c.quick {
		for name, v := range map[string]*int{"count": &c.count, "runs": &c.runs, "rr-count": &c.rrCount, "rest-count": &c.restCount} {
			if !set[name] {
				*v = map[string]int{"count": 20_000, "runs": 1, "rr-count": 1000, "rest-count": 10_000}[name]
			}
		}
	}
	if c.runs < 1 || c.count < 1 || c.producers < 1 || c.batch < 1 || c.ackers < 1 || c.rrCount < 1 || c.restConns < 1 || c.restCount < 1 {
		return errors.New("--runs, --count, --producers, --batch, --ackers, --rr-count, --rest-conns and --rest-count must be positive")
	}
	sizes, err := parseInts(c.sizes)
	if err != nil {
		return fmt.Errorf("--sizes: %w", err)
	}
	cases := splitList(c.cases)
	for _, cs := range cases {
		if !slices.Contains([]string{caseHubPublish, caseHubE2E, caseRR, caseREST}, cs) {
			return fmt.Errorf("--cases: unknown case %q (publish, e2e, request-reply, rest-publish)", cs)
		}
	}
	systems := splitList(c.systems)
	if c.cpuprof != "" {
		f, err := os.Create(c.cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if c.memprof != "" {
		defer func() {
			f, err := os.Create(c.memprof)
			if err != nil {
				progress("hub: memprofile: %v", err)
				return
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				progress("hub: memprofile: %v", err)
			}
		}()
	}
	ctx := context.Background()
	progress("hub: count=%d runs=%d sizes=%v producers=%d batch=%d GOMAXPROCS=%d", c.count, c.runs, sizes, c.producers, c.batch, runtime.GOMAXPROCS(0))

	var np *natsPeer
	var nc *nats.Conn
	var skipped []string
	if slices.Contains(systems, "nats") {
		p, err := openNATSPeer(ctx, c.natsURL)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("SKIPPED nats: %v", err))
			progress("hub: %s", skipped[len(skipped)-1])
		} else {
			np = p.(*natsPeer)
			defer np.Close()
			nc = np.subNC
		}
	}
	runHubSys := slices.Contains(systems, "hub")

	col := NewCollector()
	fail := func(sys, cas string, size, run int, err error) {
		line := fmt.Sprintf("FAILED %s %s %d B run %d: %v", sys, cas, size, run, err)
		progress("hub: %s", line)
		skipped = append(skipped, line)
	}
	for run := 1; run <= c.runs; run++ {
		for _, size := range sizes {
			payload := make([]byte, size)
			_, _ = rand.Read(payload)
			for _, cas := range cases {
				if runHubSys {
					if err := measureHub(ctx, &c, col, cas, payload, run); err != nil {
						fail(sysHub, cas, size, run, err)
					}
				}
				if np != nil {
					if err := measureNATS(ctx, &c, col, np, nc, cas, payload, run); err != nil {
						fail(sysNATS, cas, size, run, err)
					}
				}
			}
		}
	}
	results := col.Results()
	ratios := hubRatios(results, sizes)
	if c.json {
		if err := PrintJSON(os.Stdout, results); err != nil {
			return err
		}
		PrintRatios(os.Stderr, ratios)
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

// benchHub is a hub on a loopback port over a fresh embedded engine.
type benchHub struct {
	url    string
	dir    string
	b      broker.Broker
	cancel context.CancelFunc
	done   chan error
}

func startBenchHub(ctx context.Context, parent, run string) (*benchHub, error) {
	dir, err := tempDataDir(parent, run)
	if err != nil {
		return nil, err
	}
	b, err := broker.Open(ctx, "embedded://"+dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s, err := hub.New(b, &hub.Config{MaxInFlight: 8192})
	if err != nil {
		b.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	h := &benchHub{url: "http://" + ln.Addr().String(), dir: dir, b: b, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- s.Serve(sctx, ln) }()
	return h, nil
}

func (h *benchHub) Close() error {
	h.cancel()
	err := <-h.done
	return errors.Join(err, h.b.Close(), os.RemoveAll(h.dir))
}

func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func measureHub(ctx context.Context, c *hubConfig, col *Collector, cas string, payload []byte, run int) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	runID := fmt.Sprintf("hub-%s-%d-%d", cas, len(payload), run)
	h, err := startBenchHub(ctx, c.dir, runID)
	if err != nil {
		return fmt.Errorf("start hub: %w", err)
	}
	defer func() {
		if err := h.Close(); err != nil {
			progress("hub: close: %v", err)
		}
	}()
	topic := "bench." + sanitize(runID)
	size, dur := len(payload), "fsync-before-ack"
	switch cas {
	case caseHubPublish:
		st, err := hubPublish(ctx, h.url, topic, payload, c.count, c.producers, c.batch)
		if err != nil {
			return err
		}
		addPub(col, sysHub, cas, size, c.producers, dur, st)
		progressPub(sysHub, cas, size, run, st)
	case caseHubE2E:
		cl, err := client.New(ctx, h.url)
		if err != nil {
			return err
		}
		defer cl.Close()
		if err := cl.CreateTopic(ctx, broker.TopicConfig{Name: topic}); err != nil {
			return err
		}
		sub, err := cl.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: "bench", Start: broker.StartPosition{Kind: broker.StartEarliest}, MaxInFlight: 8192})
		if err != nil {
			return err
		}
		cons := newAckCounter(c.count)
		actx, acancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range c.ackers {
			wg.Go(func() {
				for d := range sub.Deliveries() {
					if err := d.Ack(actx); err != nil {
						if actx.Err() == nil {
							cons.fail(fmt.Errorf("ack: %w", err))
						}
						continue
					}
					cons.add(1)
				}
			})
		}
		stop := func() { _ = sub.Close(); acancel(); wg.Wait() }
		st, err := hubPublish(ctx, h.url, topic, payload, c.count, c.producers, c.batch)
		if err != nil {
			stop()
			return err
		}
		select {
		case <-cons.Done():
		case <-ctx.Done():
			stop()
			return fmt.Errorf("waiting for the consumer (%d of %d acked): %w", cons.acked.Load(), c.count, ctx.Err())
		}
		stop()
		if err := cons.Err(); err != nil {
			return err
		}
		rate := float64(c.count) / cons.LastAck().Sub(st.start).Seconds()
		col.Add(sysHub, cas, size, c.producers, dur, MetricE2ERate, rate)
		progress("run %d  %-21s %-15s %5d B  e2e %9.0f msg/s  (publish alone %9.0f msg/s)", run, sysHub, cas, size, rate, st.rate())
	case caseRR:
		cl, err := client.New(ctx, h.url)
		if err != nil {
			return err
		}
		defer cl.Close()
		sub, err := cl.Subscribe(ctx, &broker.SubscribeParams{Topic: topic})
		if err != nil {
			return err
		}
		defer sub.Close()
		go func() {
			for d := range sub.Deliveries() {
				_ = d.Reply(context.Background(), &message.Message{Payload: d.Message.Payload})
			}
		}()
		lats, err := roundTrips(ctx, c.rrCount, func(ctx context.Context) error {
			_, err := cl.Request(ctx, topic, &message.Message{Payload: payload}, 5*time.Second)
			return err
		})
		if err != nil {
			return err
		}
		addRR(col, sysHub, size, "fsync-free (ephemeral)", lats, run)
	case caseREST:
		st, err := restLoad(ctx, h.url+"/v1/topics/"+topic+"/messages", payload, c.restCount, c.restConns)
		if err != nil {
			return err
		}
		slices.Sort(st.latencies)
		col.Add(sysHubREST, cas, size, c.restConns, dur, MetricREST, st.rate())
		col.Add(sysHubREST, cas, size, c.restConns, dur, MetricAckP50, percentileUS(st.latencies, 50))
		col.Add(sysHubREST, cas, size, c.restConns, dur, MetricAckP99, percentileUS(st.latencies, 99))
		progress("run %d  %-21s %-15s %5d B  %9.0f req/s  p50 %8.1f us  p99 %8.1f us", run, sysHubREST, cas, size, st.rate(), percentileUS(st.latencies, 50), percentileUS(st.latencies, 99))
	}
	return nil
}

// hubPublish sends n messages from producers goroutines in PublishBatch
// calls of batch messages over gRPC (h2c, one connection per producer so
// that HTTP/2 flow control of one does not hold back another). Every message
// of a batch gets the batch's ack latency.
func hubPublish(ctx context.Context, url, topic string, payload []byte, n, producers, batch int) (pubStats, error) {
	var next atomic.Int64
	lats := make([][]time.Duration, producers)
	errs := make([]error, producers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clients := make([]switchboardv1connect.SwitchboardServiceClient, producers)
	for i := range clients {
		clients[i] = switchboardv1connect.NewSwitchboardServiceClient(h2cClient(), url, connect.WithGRPC())
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range producers {
		wg.Go(func() {
			msgs := make([]*v1.Message, 0, batch)
			for {
				begin := int(next.Add(int64(batch))) - batch
				if begin >= n {
					return
				}
				k := min(batch, n-begin)
				msgs = msgs[:0]
				for range k {
					msgs = append(msgs, &v1.Message{Body: &v1.Message_Payload{Payload: payload}})
				}
				t := time.Now()
				_, err := clients[i].PublishBatch(ctx, connect.NewRequest(&v1.PublishBatchRequest{Topic: topic, Messages: msgs}))
				if err != nil {
					errs[i] = err
					cancel()
					return
				}
				d := time.Since(t)
				for range k {
					lats[i] = append(lats[i], d)
				}
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

// roundTrips calls rt n times in a row and returns the sorted latencies.
func roundTrips(ctx context.Context, n int, rt func(context.Context) error) ([]time.Duration, error) {
	for range min(100, n) { // warm up connections and subscriptions
		if err := rt(ctx); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	lats := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if err := rt(ctx); err != nil {
			return nil, err
		}
		lats = append(lats, time.Since(t))
	}
	slices.Sort(lats)
	return lats, nil
}

func addRR(col *Collector, sys string, size int, dur string, lats []time.Duration, run int) {
	col.Add(sys, caseRR, size, 1, dur, MetricRRP50, percentileUS(lats, 50))
	col.Add(sys, caseRR, size, 1, dur, MetricRRP99, percentileUS(lats, 99))
	progress("run %d  %-21s %-15s %5d B  round trip p50 %8.1f us  p99 %8.1f us", run, sys, caseRR, size, percentileUS(lats, 50), percentileUS(lats, 99))
}

// restLoad is the REST load generator: conns goroutines, each with its own
// keep-alive HTTP/1.1 connection, POST one message per request until n
// requests are done.
func restLoad(ctx context.Context, url string, payload []byte, n, conns int) (pubStats, error) {
	body := []byte(`{"payload": "` + base64.StdEncoding.EncodeToString(payload) + `"}`)
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	var next atomic.Int64
	lats := make([][]time.Duration, conns)
	errs := make([]error, conns)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range conns {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				t := time.Now()
				req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					errs[i] = err
					cancel()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs[i] = fmt.Errorf("POST %s: status %d", url, resp.StatusCode)
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

func measureNATS(ctx context.Context, c *hubConfig, col *Collector, np *natsPeer, nc *nats.Conn, cas string, payload []byte, run int) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	size := len(payload)
	switch cas {
	case caseRR:
		subj := fmt.Sprintf("sbbench.rr.%d.%d.%d", size, run, time.Now().UnixNano())
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(m.Data) })
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		if err := nc.Flush(); err != nil {
			return err
		}
		lats, err := roundTrips(ctx, c.rrCount, func(ctx context.Context) error {
			_, err := np.pubNC.RequestWithContext(ctx, subj, payload)
			return err
		})
		if err != nil {
			return err
		}
		addRR(col, sysNATSRR, size, "memory (core NATS)", lats, run)
		return nil
	case caseREST:
		return nil // no REST face in NATS
	}
	bc := &brokerConfig{count: c.count, producers: c.producers, timeout: c.timeout}
	bcas := caseConcurrent
	if cas == caseHubE2E {
		bcas = caseE2E
	}
	// Reuse the broker suite's JetStream measurement, filed under this
	// suite's case names.
	sub := NewCollector()
	if err := measure(ctx, bc, sub, np, bcas, payload, run); err != nil {
		return err
	}
	for _, r := range sub.Results() {
		col.Add(r.System, cas, r.MsgSize, r.Producers, r.Durability, r.Metric, r.Value)
	}
	return nil
}

// hubRatios are the goals: hub throughput >= JetStream's while
// fsyncing before ack.
func hubRatios(rs []Result, sizes []int) []Ratio {
	var out []Ratio
	for _, size := range sizes {
		for _, p := range []struct{ cas, metric, what string }{
			{caseHubPublish, MetricPublishRate, "hub batched publish / JetStream async publish"},
			{caseHubE2E, MetricE2ERate, "hub e2e / JetStream explicit-ack e2e"},
		} {
			h, ok1 := Find(rs, sysHub, p.cas, size, p.metric)
			n, ok2 := Find(rs, sysNATS, p.cas, size, p.metric)
			if ok1 && ok2 {
				v := h.Value / n.Value
				out = append(out, Ratio{Name: fmt.Sprintf("%d B %s", size, p.what), Value: v, Goal: ">= 1.0", Pass: v >= 1.0,
					Note: fmt.Sprintf("%.0f vs %.0f msg/s", h.Value, n.Value)})
			}
		}
		h, ok1 := Find(rs, sysHub, caseRR, size, MetricRRP50)
		n, ok2 := Find(rs, sysNATSRR, caseRR, size, MetricRRP50)
		if ok1 && ok2 {
			out = append(out, Ratio{Name: fmt.Sprintf("%d B hub request/reply p50 / NATS request/reply p50", size), Value: h.Value / n.Value,
				Goal: "info", Pass: true, Note: fmt.Sprintf("%.1f vs %.1f us", h.Value, n.Value)})
		}
	}
	return out
}
