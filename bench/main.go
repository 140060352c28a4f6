// Command bench is Switchboard's benchmark harness. Each suite is a
// subcommand that runs Switchboard and the peers it is compared against side
// by side in one process and one run, and prints a table (or JSON lines with
// --json) on stdout and progress on stderr.
//
//	cd bench && go run . broker [--json] [--runs N] [--count N] [--quick]
//
// It is its own Go module so that the peers' client libraries never reach the
// root module's go.mod.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
)

// suite is one subcommand. run gets the arguments after the suite name and
// parses them with its own flag.FlagSet.
type suite struct {
	summary string
	run     func(args []string) error
}

// suites lists the subcommands. Later suites (runtime, calls, adapters, hub,
// sqs) are added here, one file each.
var suites = map[string]suite{
	"broker":   {"embedded broker vs NATS JetStream vs Redis Streams: publish, group commit, end to end", runBroker},
	"runtime":  {"consumer runtime vs the embedded backend used directly; inbox overhead per store", runRuntime},
	"calls":    {"one handler as gRPC, Connect, REST, GraphQL, SOAP vs a bare connect-go handler: p50/p99, calls/s", runCalls},
	"hub":      {"the hub over loopback vs NATS: batched publish, end to end, request/reply, REST load", runHub},
	"outbox":   {"outbox relay msgs/s on PostgreSQL vs a plain INSERT loop; outbox.Publish writer cost", runOutbox},
	"adapters": {"Switchboard's Redis, RabbitMQ and NATS adapters vs each broker's raw client: publish, sync latency, end to end", runAdapters},
	"sqs":      {"SQS face (aws-sdk-go-v2 batch send/receive/delete) vs the same workload through the hub's own API", runSQS},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: go run . <suite> [flags]   (go run . <suite> -h for the suite's flags)")
	fmt.Fprintln(os.Stderr, "suites:")
	names := make([]string, 0, len(suites))
	for n := range suites {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, suites[n].summary)
	}
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	if os.Args[1] == sqsLoadCmd { // the sqs suite's client process (sqs_split.go)
		if err := runSQSLoad(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", sqsLoadCmd, err)
			os.Exit(1)
		}
		return
	}
	s, ok := suites[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "bench: unknown suite %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := s.run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// progress prints one progress line on stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// parseFlags parses args with fs, refuses positional arguments, and returns
// the names of the flags given on the command line.
func parseFlags(fs *flag.FlagSet, args []string) (map[string]bool, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set, nil
}
