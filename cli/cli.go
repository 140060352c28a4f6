// Package cli is the switchboard command line: serve (the hub), publish,
// consume, tail, request, call, topics, groups, dlq and version. cmd/switchboard
// only calls Main; tests drive the same commands through Run.
//
// Every command but serve talks to a hub (--hub, default
// http://127.0.0.1:7420, or $SWITCHBOARD_HUB) and reports a failure as one
// line on stderr with a non-zero exit status.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/switchboard-dev/switchboard/client"
)

// Version is the version printed by `switchboard version`; release builds
// set it with -ldflags "-X github.com/switchboard-dev/switchboard/cli.Version=v1.2.3".
var Version = ""

// Config is what the commands read and write. The zero value of a field
// means the process's own (os.Stdin, os.Stdout, os.Stderr, os.Getenv).
type Config struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// Ready, when not nil, is called by serve with the address it listens
	// on, once it accepts connections (for tests).
	Ready func(addr string)
}

func (c *Config) withDefaults() *Config {
	out := *c
	if out.Stdin == nil {
		out.Stdin = os.Stdin
	}
	if out.Stdout == nil {
		out.Stdout = os.Stdout
	}
	if out.Stderr == nil {
		out.Stderr = os.Stderr
	}
	if out.Getenv == nil {
		out.Getenv = os.Getenv
	}
	return &out
}

// Main runs the command line with os.Args and returns the exit status.
func Main() int {
	return Run(context.Background(), &Config{}, os.Args[1:])
}

// Run runs the command line with args and returns the exit status: 0 on
// success, 1 on failure (after printing one line to stderr), 2 on a usage
// error.
func Run(ctx context.Context, cfg *Config, args []string) int {
	c := cfg.withDefaults()
	root := newRoot(c)
	root.SetArgs(args)
	root.SetIn(c.Stdin)
	root.SetOut(c.Stdout)
	root.SetErr(c.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(c.Stderr, "switchboard: "+oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// app carries the shared flags and the config to the commands.
type app struct {
	cfg   *Config
	hub   string
	token string
	tlsCA string
}

func newRoot(cfg *Config) *cobra.Command {
	a := &app{cfg: cfg}
	root := &cobra.Command{
		Use:   "switchboard",
		Short: "Switchboard: durable messaging and its hub",
		Long: `Switchboard is how services talk to each other: durable topics, consumer groups,
retries, dead letters and request/reply. "switchboard serve" runs the hub (the embedded
broker with its gRPC, Connect and REST API on one port); the other commands talk to a hub.`,
		Example: `  switchboard serve --data ./switchboard-data
  switchboard publish orders.placed '{"id": 1}'
  switchboard consume orders.placed --group email --from earliest`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	def := cfg.Getenv("SWITCHBOARD_HUB")
	if def == "" {
		def = "http://" + client.DefaultAddr
	}
	root.PersistentFlags().StringVar(&a.hub, "hub", def, "address of the hub (env SWITCHBOARD_HUB)")
	root.PersistentFlags().StringVar(&a.token, "token", "", "bearer token for the hub (env SWITCHBOARD_TOKEN)")
	root.PersistentFlags().StringVar(&a.tlsCA, "tls-ca", cfg.Getenv("SWITCHBOARD_TLS_CA"), "PEM file of CAs to trust for an https:// hub (env SWITCHBOARD_TLS_CA)")
	root.AddCommand(
		a.serveCmd(), a.publishCmd(), a.consumeCmd(), a.tailCmd(), a.requestCmd(),
		a.topicsCmd(), a.groupsCmd(), a.dlqCmd(), a.versionCmd(), a.callCmd(),
	)
	return root
}

// connect opens the hub named by --hub.
func (a *app) connect(ctx context.Context) (*client.Broker, error) {
	base := a.hub
	switch {
	case strings.HasPrefix(base, "switchboard://"):
		base = "http://" + strings.TrimPrefix(base, "switchboard://")
	case !strings.Contains(base, "://"):
		base = "http://" + base
	}
	var opts []client.Option
	if a.token == "" {
		a.token = a.cfg.Getenv("SWITCHBOARD_TOKEN") // not the flag's default: --help would print it
	}
	if a.token != "" {
		opts = append(opts, client.WithToken(a.token))
	}
	if a.tlsCA != "" {
		tc, err := client.LoadCA(a.tlsCA)
		if err != nil {
			return nil, usageError{fmt.Errorf("--tls-ca: %w", err)}
		}
		opts = append(opts, client.WithTLSConfig(tc))
	}
	b, err := client.New(ctx, base, opts...)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of this binary (and of the hub, if reachable)",
		Example: "  switchboard version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.cfg.Stdout, "switchboard %s\n", version())
			if cmd.Flags().Changed("hub") {
				b, err := a.connect(cmd.Context())
				if err != nil {
					return err
				}
				defer b.Close()
				fmt.Fprintf(a.cfg.Stdout, "hub %s at %s (backend %s)\n", b.HubVersion(), b.Addr(), b.Capabilities().Name)
			}
			return nil
		},
	}
}
