package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// In one process the clients' CPU counts against the server they load:
// aws-sdk-go-v2 spends more CPU per message than the SQS face it talks to
// (signing, checksums, its JSON codec), the hub's Go client far less. So
// the sqs suite also runs each workload with its clients in a child
// process (this binary, hidden command sqsLoadCmd) and measures what the
// serving process spends per message (getrusage: user + system CPU of
// every thread, the engine's included) and what the clients spend. The
// face's own cost per message is the first; its cost to an application
// that switches from the hub's API to the SQS API is the sum.

// sqsLoadCmd is the hidden command of the child process.
const sqsLoadCmd = "sqs-load"

// Metrics of the split measurement.
const (
	MetricSplitRate = "split_e2e_msgs_per_s"  // clients in another process
	MetricServerCPU = "server_cpu_us_per_msg" // the serving process's CPU per message
	MetricClientCPU = "client_cpu_us_per_msg" // the client process's CPU per message
	MetricTotalCPU  = "total_cpu_us_per_msg"  // both
	modeInProcess   = "inprocess"
	modeSplit       = "split"
	sqsLoadResult   = "sqs-load-result: " // prefix of the child's one result line
)

// cpuSeconds is the user + system CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// splitResult is one split measurement.
type splitResult struct {
	rate, serverUS, clientUS float64
}

// measureSplit runs the workload of sys with its clients in a child
// process, the hub (and the face) in this one.
func measureSplit(ctx context.Context, c *sqsConfig, sys string, size, run int) (res splitResult, err error) {
	err = withSQSEndpoint(ctx, c, sys, fmt.Sprintf("sqs-split-%s-%d-%d", sys, size, run), func(ctx context.Context, endpoint string) error {
		res, err = runSplit(ctx, c, sys, endpoint, size)
		return err
	})
	return res, err
}

// runSplit runs the clients of sys against endpoint in a child process and
// measures both processes' CPU.
func runSplit(ctx context.Context, c *sqsConfig, sys, endpoint string, size int) (splitResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return splitResult{}, err
	}
	cmd := exec.CommandContext(ctx, exe, sqsLoadCmd, "--system", sys, "--endpoint", endpoint,
		"--count", strconv.Itoa(c.count), "--size", strconv.Itoa(size), "--producers", strconv.Itoa(c.producers),
		"--consumers", strconv.Itoa(c.consumers), "--ackers", strconv.Itoa(c.ackers), "--timeout", c.timeout.String())
	cmd.Stderr = os.Stderr
	before := cpuSeconds()
	out, err := cmd.Output()
	server := cpuSeconds() - before
	if err != nil {
		return splitResult{}, fmt.Errorf("client process: %w", err)
	}
	var res struct {
		Rate float64 `json:"rate"`
	}
	line, ok := strings.CutPrefix(strings.TrimSpace(string(out)), sqsLoadResult)
	if !ok {
		return splitResult{}, fmt.Errorf("client process printed %q", out)
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		return splitResult{}, fmt.Errorf("client process result: %w", err)
	}
	st := cmd.ProcessState
	client := (st.UserTime() + st.SystemTime()).Seconds()
	n := float64(c.count)
	return splitResult{rate: res.Rate, serverUS: server / n * 1e6, clientUS: client / n * 1e6}, nil
}

// runSQSLoad is the child process: it runs the clients of one workload
// and prints its rate.
func runSQSLoad(args []string) error {
	var c sqsConfig
	var sys, endpoint string
	var size int
	fs := flag.NewFlagSet(sqsLoadCmd, flag.ContinueOnError)
	fs.StringVar(&sys, "system", "", "system")
	fs.StringVar(&endpoint, "endpoint", "", "endpoint")
	fs.IntVar(&c.count, "count", 0, "messages")
	fs.IntVar(&size, "size", 0, "message size")
	fs.IntVar(&c.producers, "producers", 0, "producers")
	fs.IntVar(&c.consumers, "consumers", 0, "SQS receivers")
	fs.IntVar(&c.ackers, "ackers", 0, "hub ackers")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "limit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if endpoint == "" || c.count < 1 || size < 1 {
		return errors.New("--endpoint, --count and --size are required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	payload := sqsPayload(size)
	rate, err := sqsLoad(ctx, &c, sys, endpoint, payload)
	if err != nil {
		return err
	}
	b, err := json.Marshal(map[string]float64{"rate": rate})
	if err != nil {
		return err
	}
	fmt.Println(sqsLoadResult + string(b))
	return nil
}

// sqsPayload is a message body of size bytes (text, as an SQS body is).
func sqsPayload(size int) []byte {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	return payload
}
