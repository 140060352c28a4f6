package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/client"
	"github.com/switchboard-dev/switchboard/sqsface"
)

// The sqs suite: one workload through the SQS face (aws-sdk-go-v2, JSON
// protocol, on a loopback listener over the hub's embedded engine) and
// through the hub's own API (gRPC over h2c), in the same run:
//
//	sqs-face         --producers goroutines SendMessageBatch (10 entries,
//	                 the SQS maximum) while --consumers goroutines loop
//	                 ReceiveMessage (10, long poll) + DeleteMessageBatch
//	switchboard-hub  --producers goroutines PublishBatch (10 messages) while
//	                 a Go client subscription is acked by --ackers goroutines
//
// Each measures first send to last delete/ack of --count messages on a fresh
// engine (fsync before ack), with the clients in this process and, again,
// in a child process (sqs_split.go), which measures CPU per message of the
// serving process and of the clients. The goal (face <= 1.5x the hub's API
// per message) is read on the serving process's CPU.
const (
	sysSQSFace = "sqs-face"
	caseSQS    = "batch-send-receive-delete"
	sqsBatch   = 10
)

type sqsConfig struct {
	json      bool
	runs      int
	count     int
	quick     bool
	sizes     string
	producers int
	consumers int
	ackers    int
	dir       string
	timeout   time.Duration
	systems   string
	modes     string
	cpuprof   string
	memprof   string
}

func runSQS(args []string) error {
	var c sqsConfig
	fs := flag.NewFlagSet("sqs", flag.ContinueOnError)
	fs.BoolVar(&c.json, "json", false, "print one JSON object per result line instead of a table")
	fs.IntVar(&c.runs, "runs", 3, "runs per measurement; each value is the median")
	fs.IntVar(&c.count, "count", 50_000, "messages per measurement")
	fs.BoolVar(&c.quick, "quick", false, "smoke run: count 5000, 1 run, unless given explicitly")
	fs.StringVar(&c.sizes, "sizes", "128,1024", "message sizes in bytes (comma separated)")
	fs.IntVar(&c.producers, "producers", 16, "producers (SendMessageBatch / PublishBatch of 10 messages)")
	fs.IntVar(&c.consumers, "consumers", 16, "SQS receivers (ReceiveMessage of 10 + DeleteMessageBatch)")
	fs.IntVar(&c.ackers, "ackers", 256, "goroutines acking hub deliveries one at a time (the client coalesces them into Settle calls)")
	fs.StringVar(&c.dir, "dir", os.TempDir(), "parent of the temporary data dirs")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "limit for one measurement")
	fs.StringVar(&c.systems, "systems", sysSQSFace+","+sysHub, "systems to measure (comma separated); the ratio needs both")
	fs.StringVar(&c.modes, "modes", modeInProcess+","+modeSplit, "how to run the clients (comma separated): "+modeInProcess+" (in the hub's process: throughput) and "+modeSplit+" (in a child process: throughput, and CPU per message of the serving and of the client process)")
	fs.StringVar(&c.cpuprof, "cpuprofile", "", "write a CPU profile of the whole run to this file (client and server run in this process; use with --systems "+sysSQSFace+")")
	fs.StringVar(&c.memprof, "memprofile", "", "write an allocation profile of the whole run to this file")
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if c.quick {
		if !set["count"] {
			c.count = 5000
		}
		if !set["runs"] {
			c.runs = 1
		}
	}
	if c.runs < 1 || c.count < 1 || c.producers < 1 || c.consumers < 1 || c.ackers < 1 {
		return errors.New("--runs, --count, --producers, --consumers and --ackers must be positive")
	}
	sizes, err := parseInts(c.sizes)
	if err != nil {
		return fmt.Errorf("--sizes: %w", err)
	}
	systems := splitList(c.systems)
	for _, s := range systems {
		if s != sysSQSFace && s != sysHub {
			return fmt.Errorf("--systems: unknown system %q (%s, %s)", s, sysSQSFace, sysHub)
		}
	}
	modes := splitList(c.modes)
	for _, m := range modes {
		if m != modeInProcess && m != modeSplit {
			return fmt.Errorf("--modes: unknown mode %q (%s, %s)", m, modeInProcess, modeSplit)
		}
	}
	stop, err := startProfiles(c.cpuprof, c.memprof)
	if err != nil {
		return err
	}
	defer stop()
	ctx := context.Background()
	progress("sqs: count=%d runs=%d sizes=%v producers=%d consumers=%d ackers=%d GOMAXPROCS=%d", c.count, c.runs, sizes, c.producers, c.consumers, c.ackers, runtime.GOMAXPROCS(0))
	col := NewCollector()
	var failed []string
	for run := 1; run <= c.runs; run++ {
		for _, size := range sizes {
			payload := sqsPayload(size)
			for _, sys := range []string{sysSQSFace, sysHub} {
				if !slices.Contains(systems, sys) {
					continue
				}
				if slices.Contains(modes, modeSplit) {
					sr, err := measureSplit(ctx, &c, sys, size, run)
					if err != nil {
						line := fmt.Sprintf("FAILED %s %d B run %d (clients in a child process): %v", sys, size, run, err)
						progress("sqs: %s", line)
						failed = append(failed, line)
					} else {
						col.Add(sys, caseSQS, size, c.producers, "fsync-before-ack", MetricSplitRate, sr.rate)
						col.Add(sys, caseSQS, size, c.producers, "fsync-before-ack", MetricServerCPU, sr.serverUS)
						col.Add(sys, caseSQS, size, c.producers, "fsync-before-ack", MetricClientCPU, sr.clientUS)
						col.Add(sys, caseSQS, size, c.producers, "fsync-before-ack", MetricTotalCPU, sr.serverUS+sr.clientUS)
						progress("run %d  %-16s %5d B  %9.0f msg/s  server %5.1f µs/msg  clients %5.1f µs/msg (child process)", run, sys, size, sr.rate, sr.serverUS, sr.clientUS)
					}
				}
				if !slices.Contains(modes, modeInProcess) {
					continue
				}
				rate, err := measureSQSCase(ctx, &c, sys, payload, run)
				if err != nil {
					line := fmt.Sprintf("FAILED %s %d B run %d: %v", sys, size, run, err)
					progress("sqs: %s", line)
					failed = append(failed, line)
					continue
				}
				col.Add(sys, caseSQS, size, c.producers, "fsync-before-ack", MetricE2ERate, rate)
				progress("run %d  %-16s %5d B  %9.0f msg/s", run, sys, size, rate)
			}
		}
	}
	results := col.Results()
	ratios := sqsRatios(results, sizes)
	if c.json {
		if err := PrintJSON(os.Stdout, results); err != nil {
			return err
		}
		PrintRatios(os.Stderr, ratios)
	} else {
		PrintTable(os.Stdout, results)
		fmt.Println()
		PrintRatios(os.Stdout, ratios)
		for _, s := range failed {
			fmt.Println("# " + s)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d measurements failed", len(failed))
	}
	return nil
}

// startProfiles starts a CPU profile into cpu and arranges an allocation
// profile into mem (either may be empty); stop ends both.
func startProfiles(cpu, mem string) (stop func(), err error) {
	var cf *os.File
	if cpu != "" {
		if cf, err = os.Create(cpu); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(cf); err != nil {
			cf.Close()
			return nil, err
		}
	}
	return func() {
		if cf != nil {
			pprof.StopCPUProfile()
			cf.Close()
		}
		if mem == "" {
			return
		}
		f, err := os.Create(mem)
		if err != nil {
			progress("sqs: memprofile: %v", err)
			return
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			progress("sqs: memprofile: %v", err)
		}
	}, nil
}

// sqsRatios: the face's cost per message relative to the hub's API, as the
// serving process's CPU per message (the face's own cost: the goal), as
// both processes' CPU per message (what switching an application from the
// hub's API to the SQS API costs), and as throughput with the clients in
// the same process.
func sqsRatios(rs []Result, sizes []int) []Ratio {
	var out []Ratio
	for _, size := range sizes {
		cpu := func(metric, what, goal string, limit float64) {
			f, ok1 := Find(rs, sysSQSFace, caseSQS, size, metric)
			h, ok2 := Find(rs, sysHub, caseSQS, size, metric)
			if ok1 && ok2 {
				v := f.Value / h.Value
				out = append(out, Ratio{Name: fmt.Sprintf("%d B SQS face / hub API, %s", size, what), Value: v, Goal: goal, Pass: limit == 0 || v <= limit,
					Note: fmt.Sprintf("%.1f vs %.1f µs/msg", f.Value, h.Value)})
			}
		}
		cpu(MetricServerCPU, "server CPU per message", "<= 1.5", 1.5)
		cpu(MetricTotalCPU, "server + client CPU per message", "info", 0)
		f, ok1 := Find(rs, sysSQSFace, caseSQS, size, MetricE2ERate)
		h, ok2 := Find(rs, sysHub, caseSQS, size, MetricE2ERate)
		if ok1 && ok2 {
			v := h.Value / f.Value
			out = append(out, Ratio{Name: fmt.Sprintf("%d B hub API / SQS face msg/s, clients in process", size), Value: v, Goal: "info", Pass: true,
				Note: fmt.Sprintf("%.0f vs %.0f msg/s", f.Value, h.Value)})
		}
	}
	return out
}

// measureSQSCase runs the workload once through sys on a fresh hub and
// returns messages per second, first send to last delete (ack).
func measureSQSCase(ctx context.Context, c *sqsConfig, sys string, payload []byte, run int) (float64, error) {
	var rate float64
	err := withSQSEndpoint(ctx, c, sys, fmt.Sprintf("sqs-%s-%d-%d", sys, len(payload), run), func(ctx context.Context, endpoint string) (err error) {
		rate, err = sqsLoad(ctx, c, sys, endpoint, payload)
		return err
	})
	return rate, err
}

// withSQSEndpoint starts a fresh hub (named runID) and, for the face, the
// SQS face over its engine, and runs fn with the endpoint of sys, within
// --timeout.
func withSQSEndpoint(ctx context.Context, c *sqsConfig, sys, runID string, fn func(ctx context.Context, endpoint string) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	h, err := startBenchHub(ctx, c.dir, runID)
	if err != nil {
		return fmt.Errorf("start hub: %w", err)
	}
	defer func() {
		if err := h.Close(); err != nil {
			progress("sqs: close: %v", err)
		}
	}()
	endpoint := h.url
	if sys == sysSQSFace {
		ep, stop, err := serveFace(h)
		if err != nil {
			return err
		}
		defer stop()
		endpoint = ep
	}
	return fn(ctx, endpoint)
}

// sqsLoad runs the workload of sys (the face: aws-sdk-go-v2; the hub: its
// own API, PublishBatch of 10 from the producers and a consumer group
// subscription acked by the ackers) against endpoint.
func sqsLoad(ctx context.Context, c *sqsConfig, sys, endpoint string, payload []byte) (float64, error) {
	switch sys {
	case sysSQSFace:
		return faceLoad(ctx, c, endpoint, payload)
	case sysHub:
		return hubLoad(ctx, c, endpoint, payload)
	}
	return 0, fmt.Errorf("unknown system %q", sys)
}

// hubLoad runs the workload against the hub at url with its own API.
func hubLoad(ctx context.Context, c *sqsConfig, url string, payload []byte) (float64, error) {
	topic := "bench.sqs"
	cl, err := client.New(ctx, url)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	if err := cl.CreateTopic(ctx, broker.TopicConfig{Name: topic}); err != nil {
		return 0, err
	}
	sub, err := cl.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: "bench", Start: broker.StartPosition{Kind: broker.StartEarliest}, MaxInFlight: 8192})
	if err != nil {
		return 0, err
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
	defer func() { _ = sub.Close(); acancel(); wg.Wait() }()
	st, err := hubPublish(ctx, url, topic, payload, c.count, c.producers, sqsBatch)
	if err != nil {
		return 0, err
	}
	select {
	case <-cons.Done():
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for the consumer (%d of %d acked): %w", cons.acked.Load(), c.count, ctx.Err())
	}
	if err := cons.Err(); err != nil {
		return 0, err
	}
	return float64(c.count) / cons.LastAck().Sub(st.start).Seconds(), nil
}

// serveFace serves the SQS face over h's engine on a loopback listener and
// returns its endpoint URL.
func serveFace(h *benchHub) (endpoint string, stop func(), err error) {
	face, err := sqsface.NewFace(h.b, &sqsface.Config{MaxInFlight: 8192})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = face.Close()
		return "", nil, err
	}
	srv := &http.Server{Handler: face, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close(); _ = face.Close() }, nil
}

// faceLoad runs the SQS workload against endpoint with aws-sdk-go-v2.
func faceLoad(ctx context.Context, c *sqsConfig, endpoint string, payload []byte) (float64, error) {
	conns := c.producers + c.consumers
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	api := sqs.New(sqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("bench", "bench", ""),
		HTTPClient:   &http.Client{Transport: tr},
	})
	q, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("bench")})
	if err != nil {
		return 0, fmt.Errorf("CreateQueue: %w", err)
	}
	qurl := q.QueueUrl
	body := string(payload)

	cons := newAckCounter(c.count)
	rctx, rcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range c.consumers {
		wg.Go(func() {
			for rctx.Err() == nil {
				out, err := api.ReceiveMessage(rctx, &sqs.ReceiveMessageInput{QueueUrl: qurl, MaxNumberOfMessages: sqsBatch, WaitTimeSeconds: 1, VisibilityTimeout: 120})
				if err != nil {
					if rctx.Err() == nil {
						cons.fail(fmt.Errorf("ReceiveMessage: %w", err))
					}
					return
				}
				if len(out.Messages) == 0 {
					continue
				}
				entries := make([]sqstypes.DeleteMessageBatchRequestEntry, len(out.Messages))
				for i, m := range out.Messages {
					entries[i] = sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
				}
				del, err := api.DeleteMessageBatch(rctx, &sqs.DeleteMessageBatchInput{QueueUrl: qurl, Entries: entries})
				if err != nil {
					if rctx.Err() == nil {
						cons.fail(fmt.Errorf("DeleteMessageBatch: %w", err))
					}
					return
				}
				if len(del.Failed) > 0 {
					cons.fail(fmt.Errorf("DeleteMessageBatch: %d failed: %s", len(del.Failed), aws.ToString(del.Failed[0].Message)))
					return
				}
				cons.add(len(del.Successful))
			}
		})
	}
	defer func() { rcancel(); wg.Wait() }()

	var next atomic.Int64
	errs := make([]error, c.producers)
	var pwg sync.WaitGroup
	start := time.Now()
	for i := range c.producers {
		pwg.Go(func() {
			entries := make([]sqstypes.SendMessageBatchRequestEntry, 0, sqsBatch)
			for {
				begin := int(next.Add(sqsBatch)) - sqsBatch
				if begin >= c.count {
					return
				}
				entries = entries[:0]
				for j := range min(sqsBatch, c.count-begin) {
					entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), MessageBody: aws.String(body)})
				}
				out, err := api.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: qurl, Entries: entries})
				if err == nil && len(out.Failed) > 0 {
					err = fmt.Errorf("%d entries failed: %s", len(out.Failed), aws.ToString(out.Failed[0].Message))
				}
				if err != nil {
					errs[i] = fmt.Errorf("SendMessageBatch: %w", err)
					cons.fail(errs[i])
					return
				}
			}
		})
	}
	pwg.Wait()
	if err := firstErr(errs); err != nil {
		return 0, err
	}
	select {
	case <-cons.Done():
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for the receivers (%d of %d deleted): %w", cons.acked.Load(), c.count, ctx.Err())
	}
	if err := cons.Err(); err != nil {
		return 0, err
	}
	return float64(c.count) / cons.LastAck().Sub(start).Seconds(), nil
}
