package hub

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

// Config configures a hub Server. The zero value is usable: every field
// documents its default, applied by WithDefaults.
type Config struct {
	// Logger receives the hub's structured logs. Default: a logger that
	// discards everything.
	Logger *slog.Logger

	// Version is reported by GetCapabilities and /healthz. Default "dev".
	Version string

	// Limits bound each published message; the hub refuses a message that
	// breaks them before it reaches the backend. Default
	// message.DefaultLimits() (1 MiB payload).
	Limits message.Limits

	// MaxRequestBytes bounds one request body, in bytes. A larger body is
	// refused with 413 (REST) or ResourceExhausted (gRPC, Connect). Default
	// 16 MiB.
	MaxRequestBytes int64

	// MaxBatch is the most messages one PublishBatch may carry. Default
	// 10000.
	MaxBatch int

	// DefaultMaxInFlight is the max in flight of a subscription that asks for
	// none. Default 256.
	DefaultMaxInFlight int

	// MaxInFlight caps what a subscription may ask for. Default 4096.
	MaxInFlight int

	// MaxRequestTimeout caps the timeout of a Request. Default 5 minutes.
	MaxRequestTimeout time.Duration

	// SSEKeepAlive is the interval of keep-alive comments on Server-Sent
	// Events streams. Default 15 s.
	SSEKeepAlive time.Duration

	// Auth, when not nil, requires a bearer token on every API request and
	// checks its per-topic permissions and rate limit. Default nil:
	// authentication off (the CLI refuses that beyond loopback unless told
	// --insecure).
	Auth *Auth

	// TLS, when not nil, makes Serve speak HTTPS (HTTP/2 negotiated by ALPN,
	// and HTTP/1.1) instead of cleartext. Default nil: cleartext HTTP/1.1
	// and HTTP/2 (h2c).
	TLS *tls.Config

	// MaxHeaderBytes bounds the HTTP request headers (not message headers,
	// which travel in the body and are bounded by Limits). Default 64 KiB.
	MaxHeaderBytes int

	// ScrapeTimeout bounds reading group lag from the backend for /metrics.
	// Default 5 s.
	ScrapeTimeout time.Duration

	// ShutdownGrace bounds how long Serve waits, once its context is done,
	// for requests in progress before closing connections. Default 10 s.
	ShutdownGrace time.Duration
}

// WithDefaults returns a copy of c (which may be nil) with defaults applied.
func (c *Config) WithDefaults() *Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if out.Version == "" {
		out.Version = "dev"
	}
	if out.Limits == (message.Limits{}) {
		out.Limits = message.DefaultLimits()
	}
	if out.MaxRequestBytes == 0 {
		out.MaxRequestBytes = 16 << 20
	}
	if out.MaxBatch == 0 {
		out.MaxBatch = 10000
	}
	if out.DefaultMaxInFlight == 0 {
		out.DefaultMaxInFlight = 256
	}
	if out.MaxInFlight == 0 {
		out.MaxInFlight = 4096
	}
	if out.MaxRequestTimeout == 0 {
		out.MaxRequestTimeout = 5 * time.Minute
	}
	if out.SSEKeepAlive == 0 {
		out.SSEKeepAlive = 15 * time.Second
	}
	if out.MaxHeaderBytes == 0 {
		out.MaxHeaderBytes = 64 << 10
	}
	if out.ScrapeTimeout == 0 {
		out.ScrapeTimeout = 5 * time.Second
	}
	if out.ShutdownGrace == 0 {
		out.ShutdownGrace = 10 * time.Second
	}
	return &out
}

func (c *Config) validate() error {
	if err := c.Limits.Check(); err != nil {
		return fmt.Errorf("hub config: %w", err)
	}
	if c.MaxRequestBytes < 1024 {
		return fmt.Errorf("hub config: MaxRequestBytes %d is below 1024 bytes", c.MaxRequestBytes)
	}
	if int64(c.Limits.MaxPayload) > c.MaxRequestBytes {
		return fmt.Errorf("hub config: MaxRequestBytes %d is smaller than the payload limit %d; a message at the limit could never be published", c.MaxRequestBytes, c.Limits.MaxPayload)
	}
	if c.MaxBatch < 1 || c.DefaultMaxInFlight < 1 || c.MaxInFlight < 1 {
		return fmt.Errorf("hub config: MaxBatch, DefaultMaxInFlight and MaxInFlight must be positive")
	}
	if c.DefaultMaxInFlight > c.MaxInFlight {
		return fmt.Errorf("hub config: DefaultMaxInFlight %d exceeds MaxInFlight %d", c.DefaultMaxInFlight, c.MaxInFlight)
	}
	if c.MaxHeaderBytes < 4096 {
		return fmt.Errorf("hub config: MaxHeaderBytes %d is below 4096 bytes", c.MaxHeaderBytes)
	}
	if c.MaxRequestTimeout < 0 || c.SSEKeepAlive < 0 || c.ShutdownGrace < 0 || c.ScrapeTimeout < 0 {
		return fmt.Errorf("hub config: durations must not be negative")
	}
	return nil
}
