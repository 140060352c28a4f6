package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/switchboard-dev/switchboard/broker"
	_ "github.com/switchboard-dev/switchboard/broker/embedded" // the default backend
	"github.com/switchboard-dev/switchboard/hub"
	"github.com/switchboard-dev/switchboard/sqsface"
)

// serveFlags are the settings of serve. Each is resolved in this order:
// the flag if given, else its SWITCHBOARD_* environment variable if set,
// else the config file (--config) if it sets it, else the default.
type serveFlags struct {
	config          string
	addr            string
	data            string
	backend         string
	insecure        bool
	logLevel        string
	logFormat       string
	tlsCert         string
	tlsKey          string
	maxPayload      int
	maxRequestBytes int64
	rate            float64
	shutdownGrace   time.Duration
	sqsAddr         string
	sqsAccessKey    string
	sqsSecretKey    string
}

func (a *app) serveCmd() *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hub: the broker and its gRPC, Connect, REST, GraphQL and SOAP API on one port",
		Long: `Run the hub: the embedded broker (or --backend) with its API served on one port as
gRPC, gRPC-Web, Connect, REST+JSON, GraphQL (/graphql) and SOAP
(/soap/switchboard.v1.SwitchboardService), plus gRPC reflection and health, /healthz, /readyz,
Prometheus /metrics and Server-Sent Events.

Settings come from flags, then SWITCHBOARD_* environment variables (named after the flag:
--max-payload is SWITCHBOARD_MAX_PAYLOAD), then the JSON config file (--config), in that
order of strength. Bearer tokens and their per-topic permissions and rate limits come from
the config file (see docs/hub.md). With tokens, every API request needs one. Without
tokens, serve listens on loopback only, unless --insecure says anyone who can reach the
port may do anything.

SIGINT or SIGTERM shuts down gracefully: /readyz turns 503, new streams are refused,
requests in progress (publishes, acks) finish, subscriptions end, the backend is closed
(fsynced); unsettled deliveries are redelivered after the restart.

SIGHUP reloads the tokens from the config file without a restart (kill -HUP <pid>): only
the "tokens" list; every other setting, the "rate" section and "public_metrics" included,
needs a restart. Requests after the reload use the new tokens; subscription streams of a
removed token (or of one that lost consume on the stream's topic) end, and their
deliveries are redelivered. A file that does not load or whose tokens are invalid is
refused and the old tokens stay; so is turning auth on or off, which needs a restart.
One log line tells the outcome.

With --sqs-addr, serve also answers the Amazon SQS API (JSON and Query protocols) on that
second listener, over the same backend (see docs/sqs.md). SigV4 signatures are verified
when --sqs-access-key and --sqs-secret-key are set, and accepted unverified otherwise; a
non-loopback --sqs-addr needs them, or --insecure. With the default embedded backend the
engine's dedup window is then 5 minutes, as SQS FIFO deduplication requires.`,
		Example: `  switchboard serve
  switchboard serve --addr 127.0.0.1:7420 --data /var/lib/switchboard
  switchboard serve --config /etc/switchboard/hub.json --addr 0.0.0.0:7420 --tls-cert tls.crt --tls-key tls.key
  switchboard serve --backend nats://127.0.0.1:4222
  switchboard serve --sqs-addr 127.0.0.1:9324`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.serve(cmd.Context(), cmd.Flags(), f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "JSON config file with tokens, limits and settings (env SWITCHBOARD_CONFIG)")
	fl.StringVar(&f.addr, "addr", "127.0.0.1:7420", "host:port to listen on (env SWITCHBOARD_ADDR)")
	fl.StringVar(&f.data, "data", "./switchboard-data", "data directory of the embedded broker (env SWITCHBOARD_DATA)")
	fl.StringVar(&f.backend, "backend", "", "backend URL, e.g. amqp://… or nats://… (env SWITCHBOARD_BACKEND; default: embedded:// in --data)")
	fl.BoolVar(&f.insecure, "insecure", false, "allow listening beyond loopback without authentication (env SWITCHBOARD_INSECURE)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug (every request), info (refused and failed requests), warn or error (env SWITCHBOARD_LOG_LEVEL)")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json (env SWITCHBOARD_LOG_FORMAT)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS (env SWITCHBOARD_TLS_CERT)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key file of --tls-cert (env SWITCHBOARD_TLS_KEY)")
	fl.IntVar(&f.maxPayload, "max-payload", 1<<20, "largest message payload in bytes (env SWITCHBOARD_MAX_PAYLOAD)")
	fl.Int64Var(&f.maxRequestBytes, "max-request-bytes", 16<<20, "largest request body in bytes (env SWITCHBOARD_MAX_REQUEST_BYTES)")
	fl.Float64Var(&f.rate, "rate", 0, "default per-token rate limit in requests/s, 0 = unlimited (env SWITCHBOARD_RATE)")
	fl.StringVar(&f.sqsAddr, "sqs-addr", "", "host:port of the SQS API listener, e.g. 127.0.0.1:9324; default off (env SWITCHBOARD_SQS_ADDR)")
	fl.StringVar(&f.sqsAccessKey, "sqs-access-key", "", "AWS access key ID whose SigV4 signatures the SQS API verifies (env SWITCHBOARD_SQS_ACCESS_KEY)")
	fl.StringVar(&f.sqsSecretKey, "sqs-secret-key", "", "secret key of --sqs-access-key; prefer the env or config file (env SWITCHBOARD_SQS_SECRET_KEY)")
	fl.DurationVar(&f.shutdownGrace, "shutdown-grace", 10*time.Second, "how long a shutdown waits for requests in progress (env SWITCHBOARD_SHUTDOWN_GRACE)")
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

// resolve applies the order of strength: a flag given on the command line,
// else its environment variable, else the config file's value (fileSet
// says whether the file sets it), else the flag's default.
func (a *app) resolve(fl *pflag.FlagSet, name string, fileVal string, fileSet bool) error {
	if fl.Changed(name) {
		return nil
	}
	env := envName(name)
	if v := a.cfg.Getenv(env); v != "" {
		if err := fl.Set(name, v); err != nil {
			return usageError{fmt.Errorf("%s=%q: %w", env, v, err)}
		}
		return nil
	}
	if fileSet {
		if err := fl.Set(name, fileVal); err != nil {
			return fmt.Errorf("config file: %s %q: %w", name, fileVal, err)
		}
	}
	return nil
}

// envName is the environment variable of a flag: --max-payload is
// SWITCHBOARD_MAX_PAYLOAD.
func envName(flag string) string {
	b := []byte("SWITCHBOARD_" + flag)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// settings resolves every flag and reads the config file.
func (a *app) settings(fl *pflag.FlagSet, f *serveFlags) (*hub.File, error) {
	if err := a.resolve(fl, "config", "", false); err != nil {
		return nil, err
	}
	file := &hub.File{}
	if f.config != "" {
		var err error
		if file, err = hub.LoadFile(f.config); err != nil {
			return nil, err
		}
	}
	str := func(v string) (string, bool) { return v, v != "" }
	num := func(v int64) (string, bool) { return strconv.FormatInt(v, 10), v != 0 }
	for _, s := range []struct {
		name string
		val  string
		set  bool
	}{
		{"addr", file.Addr, file.Addr != ""},
		{"data", file.Data, file.Data != ""},
		{"backend", file.Backend, file.Backend != ""},
		{"insecure", strconv.FormatBool(file.Insecure), file.Insecure},
		{"log-level", file.LogLevel, file.LogLevel != ""},
		{"sqs-addr", file.SQS.Addr, file.SQS.Addr != ""},
		{"sqs-access-key", file.SQS.AccessKey, file.SQS.AccessKey != ""},
		{"sqs-secret-key", file.SQS.SecretKey, file.SQS.SecretKey != ""},
		{"log-format", "", false},
		{"shutdown-grace", "", false},
	} {
		if err := a.resolve(fl, s.name, s.val, s.set); err != nil {
			return nil, err
		}
	}
	for name, v := range map[string]string{"tls-cert": file.TLSCert, "tls-key": file.TLSKey} {
		val, set := str(v)
		if err := a.resolve(fl, name, val, set); err != nil {
			return nil, err
		}
	}
	for name, v := range map[string]int64{"max-payload": int64(file.Limits.MaxPayload), "max-request-bytes": file.Limits.MaxRequestBytes} {
		val, set := num(v)
		if err := a.resolve(fl, name, val, set); err != nil {
			return nil, err
		}
	}
	if err := a.resolve(fl, "rate", strconv.FormatFloat(file.Rate.PerSecond, 'g', -1, 64), file.Rate.PerSecond != 0); err != nil {
		return nil, err
	}
	return file, nil
}

func (a *app) serve(ctx context.Context, fl *pflag.FlagSet, f *serveFlags) error {
	file, err := a.settings(fl, f)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", f.logLevel)}
	}
	var log *slog.Logger
	switch f.logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(a.cfg.Stderr, &slog.HandlerOptions{Level: level}))
	case "json":
		log = slog.New(slog.NewJSONHandler(a.cfg.Stderr, &slog.HandlerOptions{Level: level}))
	default:
		return usageError{fmt.Errorf("--log-format %q: use text or json", f.logFormat)}
	}
	host, _, err := net.SplitHostPort(f.addr)
	if err != nil {
		return usageError{fmt.Errorf("--addr %q: use host:port, e.g. 127.0.0.1:7420", f.addr)}
	}
	auth := file.Auth()
	if auth != nil && f.rate != 0 {
		auth.Rate = f.rate
	}
	if auth == nil && !isLoopback(host) && !f.insecure {
		return fmt.Errorf("refusing to listen on %s without authentication: add tokens to a config file (--config, see docs/hub.md), listen on 127.0.0.1, or pass --insecure to let anyone who can reach the port do anything", f.addr)
	}
	var sqsCreds map[string]string
	if f.sqsAddr != "" {
		sqsHost, _, err := net.SplitHostPort(f.sqsAddr)
		if err != nil {
			return usageError{fmt.Errorf("--sqs-addr %q: use host:port, e.g. 127.0.0.1:9324", f.sqsAddr)}
		}
		switch {
		case f.sqsAccessKey != "" && f.sqsSecretKey != "":
			sqsCreds = map[string]string{f.sqsAccessKey: f.sqsSecretKey}
		case f.sqsAccessKey != "" || f.sqsSecretKey != "":
			return usageError{errors.New("--sqs-access-key and --sqs-secret-key go together: give both, or neither to accept SQS requests unverified")}
		case !isLoopback(sqsHost) && !f.insecure:
			return fmt.Errorf("refusing to serve SQS on %s without credentials: set --sqs-access-key and --sqs-secret-key (or the config file's sqs section), listen on 127.0.0.1, or pass --insecure to let anyone who can reach the port do anything", f.sqsAddr)
		}
	} else if f.sqsAccessKey != "" || f.sqsSecretKey != "" {
		return usageError{errors.New("--sqs-access-key and --sqs-secret-key need --sqs-addr")}
	}
	var tlsCfg *tls.Config
	switch {
	case f.tlsCert != "" && f.tlsKey != "":
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("TLS certificate %s and key %s: %w", f.tlsCert, f.tlsKey, err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	case f.tlsCert != "" || f.tlsKey != "":
		return usageError{fmt.Errorf("--tls-cert and --tls-key go together: give both files, or neither for cleartext")}
	}
	cfg := &hub.Config{Logger: log, Version: version(), Auth: auth, TLS: tlsCfg, ShutdownGrace: f.shutdownGrace}
	file.Limits.Apply(cfg)
	hub.FileLimits{MaxPayload: f.maxPayload, MaxRequestBytes: f.maxRequestBytes}.Apply(cfg)

	backendURL, where := f.backend, ""
	if backendURL == "" {
		dir, err := filepath.Abs(f.data)
		if err != nil {
			return fmt.Errorf("--data %q: %w", f.data, err)
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
		u := &url.URL{Scheme: "embedded", Path: dir}
		q := url.Values{}
		if f.maxPayload > 1<<20 {
			// The engine has its own payload limit; keep it in step.
			q.Set("max_payload", strconv.Itoa(f.maxPayload))
		}
		if f.sqsAddr != "" {
			// SQS FIFO queues deduplicate for 5 minutes (engine default: 2).
			q.Set("dedup_window", "5m")
		}
		u.RawQuery = q.Encode()
		backendURL = u.String()
		where = dir
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := broker.Open(ctx, backendURL)
	if err != nil {
		return fmt.Errorf("open backend %s: %w", broker.Redact(backendURL), err)
	}
	s, err := hub.New(b, cfg)
	if err != nil {
		_ = b.Close()
		return err
	}
	stopReload := reloadOnHUP(s, f.config, auth, log)
	defer stopReload()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		_ = b.Close()
		return fmt.Errorf("listen on %s: %w", f.addr, err)
	}
	var sqs *sqsServer
	if f.sqsAddr != "" {
		dir := filepath.Join(f.data, "sqs")
		if where != "" {
			dir = filepath.Join(where, "sqs")
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			_ = ln.Close()
			_ = b.Close()
			return fmt.Errorf("create SQS data directory: %w", err)
		}
		if sqs, err = startSQS(b, f.sqsAddr, &sqsface.Config{Dir: dir, Credentials: sqsCreds, Logger: log}, log); err != nil {
			_ = ln.Close()
			_ = b.Close()
			return err
		}
	}
	out := a.cfg.Stdout
	scheme, protos := "http", "cleartext HTTP/2 and HTTP/1.1"
	if tlsCfg != nil {
		scheme, protos = "https", "TLS, HTTP/2 and HTTP/1.1"
	}
	fmt.Fprintf(out, "switchboard hub %s\n", version())
	fmt.Fprintf(out, "listening on %s://%s (gRPC, gRPC-Web, Connect, REST, GraphQL, SOAP; %s); metrics at /metrics\n", scheme, ln.Addr(), protos)
	if where != "" {
		fmt.Fprintf(out, "data in %s (embedded broker)\n", where)
	} else {
		fmt.Fprintf(out, "backend %s (%s); data lives in the backend\n", broker.Redact(backendURL), b.Capabilities().Name)
	}
	switch {
	case auth != nil:
		fmt.Fprintf(out, "auth on: %d tokens from %s\n", len(auth.Tokens), f.config)
		if tlsCfg == nil && !isLoopback(host) {
			fmt.Fprintln(out, "warning: tokens travel in cleartext; serve with --tls-cert/--tls-key or behind a TLS proxy")
		}
	case isLoopback(host):
		fmt.Fprintln(out, "auth off (listening on loopback only)")
	default:
		fmt.Fprintln(out, "auth OFF: --insecure, anyone who can reach this port has full access")
	}
	if sqs != nil {
		verified := "signatures accepted unverified"
		if sqsCreds != nil {
			verified = "signatures verified"
		}
		fmt.Fprintf(out, "sqs on http://%s; %s\n", sqs.ln.Addr(), verified)
		if sqsCreds == nil && !isLoopback(sqsHostOf(f.sqsAddr)) {
			fmt.Fprintln(out, "SQS auth OFF: --insecure, anyone who can reach the SQS port has full access")
		}
		go sqs.serve(stop)
	}
	if a.cfg.Ready != nil {
		a.cfg.Ready(ln.Addr().String())
	}
	serveErr := s.Serve(ctx, ln)
	if sqs != nil {
		if err := sqs.shutdown(f.shutdownGrace); err != nil && serveErr == nil {
			serveErr = err
		}
	}
	log.Info("hub stopped; closing the backend")
	if err := b.Close(); err != nil && serveErr == nil {
		serveErr = fmt.Errorf("close backend: %w", err)
	}
	if serveErr == nil {
		fmt.Fprintln(out, "stopped")
	}
	return serveErr
}

// reloadOnHUP reloads the tokens of the config file on each SIGHUP until
// the returned stop is called (which waits for a reload in progress).
// started is the Auth the hub started with (nil: auth off).
func reloadOnHUP(s *hub.Server, config string, started *hub.Auth, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-hup:
				reloadTokens(s, config, started, log)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-exited
	}
}

// reloadTokens reads the config file again and hands its tokens to the
// hub, and logs one line with the outcome. Only the tokens are reloaded:
// the rate defaults and public_metrics stay those the hub started with
// (started), and every other setting needs a restart. On any error the
// tokens in use stay.
func reloadTokens(s *hub.Server, config string, started *hub.Auth, log *slog.Logger) {
	if config == "" {
		log.Info("SIGHUP: no config file (--config), no tokens to reload")
		return
	}
	file, err := hub.LoadFile(config)
	if err != nil {
		log.Error(fmt.Sprintf("tokens not reloaded, the old tokens stay: %v", err))
		return
	}
	var next *hub.Auth
	if len(file.Tokens) > 0 {
		next = &hub.Auth{}
		if started != nil {
			*next = *started
		}
		next.Tokens = file.Tokens
	}
	if err := s.SetAuth(next); err != nil {
		log.Error(fmt.Sprintf("tokens not reloaded from %s, the old tokens stay: %v", config, err))
		return
	}
	if !s.AuthEnabled() {
		log.Info(fmt.Sprintf("tokens reloaded from %s: 0 tokens (auth stays off)", config))
		return
	}
	log.Info(fmt.Sprintf("tokens reloaded from %s: %d tokens", config, len(file.Tokens)))
}

// sqsServer is the SQS face on its own listener.
type sqsServer struct {
	face   *sqsface.Face
	ln     net.Listener
	srv    *http.Server
	cancel context.CancelFunc // ends long polls at shutdown
	log    *slog.Logger
	errc   chan error
}

// startSQS builds the face over b and listens on addr; serve starts
// answering.
func startSQS(b broker.Broker, addr string, cfg *sqsface.Config, log *slog.Logger) (*sqsServer, error) {
	face, err := sqsface.NewFace(b, cfg)
	if err != nil {
		return nil, fmt.Errorf("SQS face: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = face.Close()
		return nil, fmt.Errorf("listen on %s (--sqs-addr): %w", addr, err)
	}
	base, cancel := context.WithCancel(context.Background())
	s := &sqsServer{face: face, ln: ln, cancel: cancel, log: log, errc: make(chan error, 1)}
	s.srv = &http.Server{
		Handler:           face,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// serve answers on the listener until shutdown; if the listener fails, it
// calls stop so that the whole server shuts down.
func (s *sqsServer) serve(stop func()) {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if err != nil {
		s.log.Error("SQS listener failed; shutting down", "err", err)
		err = fmt.Errorf("sqs: serve on %s: %w", s.ln.Addr(), err)
		stop()
	}
	s.errc <- err
}

// shutdown ends long polls (they answer with no messages), waits up to
// grace for requests in progress, then closes the face (messages in
// flight become visible again).
func (s *sqsServer) shutdown(grace time.Duration) error {
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.log.Warn("SQS graceful shutdown incomplete; closing connections", "err", err)
		_ = s.srv.Close()
	}
	err := <-s.errc
	if cerr := s.face.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close SQS face: %w", cerr)
	}
	return err
}

func sqsHostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}
