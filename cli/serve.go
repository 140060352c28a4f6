package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/switchboard-dev/switchboard/broker"
	_ "github.com/switchboard-dev/switchboard/broker/embedded" // the default backend
	"github.com/switchboard-dev/switchboard/hub"
)

// serveFlags are the settings of serve. Each flag's default comes from its
// SWITCHBOARD_* environment variable when set (flags beat env beat defaults).
type serveFlags struct {
	addr     string
	data     string
	backend  string
	insecure bool
	logLevel string
}

func (a *app) serveCmd() *cobra.Command {
	f := &serveFlags{}
	env := func(name, def string) string {
		if v := a.cfg.Getenv(name); v != "" {
			return v
		}
		return def
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hub: the broker and its gRPC, Connect and REST API on one port",
		Long: `Run the hub: the embedded broker (or --backend) with its API served on one port as
gRPC, gRPC-Web, Connect and REST+JSON, plus gRPC reflection and health, /healthz, /readyz
and Server-Sent Events. SIGINT or SIGTERM shuts down gracefully: new work is refused,
requests in progress finish, subscriptions end and their unsettled deliveries are
redelivered after the restart.`,
		Example: `  switchboard serve
  switchboard serve --addr 127.0.0.1:7420 --data /var/lib/switchboard
  switchboard serve --backend nats://127.0.0.1:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.serve(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "addr", env("SWITCHBOARD_ADDR", "127.0.0.1:7420"), "host:port to listen on (env SWITCHBOARD_ADDR)")
	fl.StringVar(&f.data, "data", env("SWITCHBOARD_DATA", "./switchboard-data"), "data directory of the embedded broker (env SWITCHBOARD_DATA)")
	fl.StringVar(&f.backend, "backend", env("SWITCHBOARD_BACKEND", ""), "backend URL, e.g. amqp://… or nats://… (env SWITCHBOARD_BACKEND; default: embedded:// in --data)")
	fl.BoolVar(&f.insecure, "insecure", false, "allow listening beyond loopback without authentication")
	fl.StringVar(&f.logLevel, "log-level", env("SWITCHBOARD_LOG_LEVEL", "info"), "debug, info, warn or error (env SWITCHBOARD_LOG_LEVEL)")
	return cmd
}

// isLoopback reports whether host (from host:port) only accepts local
// connections.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (a *app) serve(ctx context.Context, f *serveFlags) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", f.logLevel)}
	}
	host, _, err := net.SplitHostPort(f.addr)
	if err != nil {
		return usageError{fmt.Errorf("--addr %q: use host:port, e.g. 127.0.0.1:7420", f.addr)}
	}
	if !isLoopback(host) && !f.insecure {
		return fmt.Errorf("refusing to listen on %s without authentication (authentication is not available in this version); listen on 127.0.0.1, or pass --insecure to accept anyone who can reach the port", f.addr)
	}
	backendURL, where := f.backend, ""
	if backendURL == "" {
		dir, err := filepath.Abs(f.data)
		if err != nil {
			return fmt.Errorf("--data %q: %w", f.data, err)
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
		backendURL = (&url.URL{Scheme: "embedded", Path: dir}).String()
		where = dir
	}
	log := slog.New(slog.NewTextHandler(a.cfg.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := broker.Open(ctx, backendURL)
	if err != nil {
		return fmt.Errorf("open backend %s: %w", broker.Redact(backendURL), err)
	}
	s, err := hub.New(b, &hub.Config{Logger: log, Version: version()})
	if err != nil {
		_ = b.Close()
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		_ = b.Close()
		return fmt.Errorf("listen on %s: %w", f.addr, err)
	}
	out := a.cfg.Stdout
	fmt.Fprintf(out, "switchboard hub %s\n", version())
	fmt.Fprintf(out, "listening on http://%s (gRPC, gRPC-Web, Connect, REST; cleartext HTTP/2 and HTTP/1.1)\n", ln.Addr())
	if where != "" {
		fmt.Fprintf(out, "data in %s (embedded broker)\n", where)
	} else {
		fmt.Fprintf(out, "backend %s (%s); data lives in the backend\n", broker.Redact(backendURL), b.Capabilities().Name)
	}
	if isLoopback(host) {
		fmt.Fprintln(out, "auth off (listening on loopback only)")
	} else {
		fmt.Fprintln(out, "auth OFF: --insecure, anyone who can reach this port has full access")
	}
	if a.cfg.Ready != nil {
		a.cfg.Ready(ln.Addr().String())
	}
	serveErr := s.Serve(ctx, ln)
	log.Info("hub stopped; closing the backend")
	if err := b.Close(); err != nil && serveErr == nil {
		serveErr = fmt.Errorf("close backend: %w", err)
	}
	if serveErr == nil {
		fmt.Fprintln(out, "stopped")
	}
	return serveErr
}
