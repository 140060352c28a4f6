// Package hub is the Switchboard server: a broker with its API on one port.
// The API is served by package call, as any service built on it: gRPC,
// gRPC-Web and Connect (connect-go), REST+JSON (from the google.api.http
// annotations of api/switchboard/v1), GraphQL, SOAP, gRPC server reflection
// and gRPC health. Next to it the hub serves /healthz, /readyz, /metrics and
// Server-Sent Events for REST consumers.
//
// The hub does not own the broker: the caller opens it, hands it to [New],
// and closes it after [Server.Shutdown]. Subscriptions attached through the
// hub end when the hub shuts down; their unsettled deliveries are released
// and redelivered by the broker, never lost.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/call"
)

// Server serves one broker. It is an http.Handler; Serve runs it on a
// listener with HTTP/1.1 and cleartext HTTP/2 (h2c, so plain gRPC works
// without TLS).
type Server struct {
	b       broker.Broker
	cfg     *Config
	handler http.Handler
	tokens  *tokens
	api     *call.Server // the API in every protocol, and gRPC health
	metrics *metrics

	// auth is the current token set, loaded once per request (nil:
	// authentication off). SetAuth replaces it; authOn, fixed at New, says
	// whether it is set at all (SetAuth never turns auth on or off).
	auth     atomic.Pointer[authn]
	authOn   bool
	reloadMu sync.Mutex // serializes SetAuth

	done      chan struct{} // closed when shutting down: streams end
	closeOnce sync.Once
}

// New returns a hub serving b. cfg may be nil (defaults).
func New(b broker.Broker, cfg *Config) (*Server, error) {
	if b == nil {
		return nil, errors.New("hub: New with a nil broker")
	}
	c := cfg.WithDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	auth, err := newAuthn(c.Auth)
	if err != nil {
		return nil, err
	}
	s := &Server{b: b, cfg: c, tokens: newTokens(), done: make(chan struct{}), authOn: auth != nil}
	s.auth.Store(auth)
	s.metrics = newMetrics(b, c.ScrapeTimeout)
	h, err := s.routes()
	if err != nil {
		return nil, err
	}
	s.handler = h
	return s, nil
}

// ServeHTTP serves every protocol of the hub.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Broker returns the broker the hub serves.
func (s *Server) Broker() broker.Broker { return s.b }

// Registry returns the Prometheus registry behind /metrics, for a program
// that embeds the hub and wants to add its own collectors.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// AuthEnabled reports whether requests need a bearer token.
func (s *Server) AuthEnabled() bool { return s.authOn }

func (s *Server) closing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// beginShutdown marks the hub not ready and ends every subscription stream,
// GraphQL WebSockets included.
func (s *Server) beginShutdown() {
	s.closeOnce.Do(func() {
		s.api.SetServing(false)
		close(s.done)
		s.api.GoingAway()
	})
}

// Serve serves on ln until ctx is done, then shuts down gracefully: it stops
// accepting, ends subscription streams (their deliveries are redelivered),
// waits up to Config.ShutdownGrace for requests in progress (publishes and
// acks finish), and returns. It returns nil after a shutdown caused by ctx.
// With Config.TLS it serves HTTPS. The caller closes the broker afterwards
// (which fsyncs it).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var protos http.Protocols
	protos.SetHTTP1(true)
	if s.cfg.TLS != nil {
		protos.SetHTTP2(true)
	} else {
		protos.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{
		Handler:           s,
		Protocols:         &protos,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	if s.cfg.TLS != nil {
		srv.TLSConfig = s.cfg.TLS.Clone()
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case err := <-errc:
		s.beginShutdown()
		return fmt.Errorf("hub: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.beginShutdown()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		s.cfg.Logger.Warn("graceful shutdown incomplete; closing connections", "err", err)
		_ = srv.Close()
	}
	<-errc
	return nil
}

// ListenAndServe listens on addr (host:port) and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("hub: listen on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Shutdown ends subscription streams (GraphQL WebSockets included) and
// marks the hub not ready, for a caller that serves the Handler itself.
// Serve calls it when its ctx is done.
func (s *Server) Shutdown() { s.beginShutdown() }
