package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/switchboard-dev/switchboard/message"
)

// File is the hub's config file (JSON; see docs/hub.md), as read by
// `switchboard serve --config FILE`. Every field is optional. Flags and
// SWITCHBOARD_* environment variables override the listening and storage
// settings; tokens come only from here.
//
//	{
//	  "addr": "0.0.0.0:7420",
//	  "data": "/var/lib/switchboard",
//	  "tls_cert": "/etc/switchboard/tls.crt",
//	  "tls_key": "/etc/switchboard/tls.key",
//	  "limits": {"max_payload": 1048576, "max_request_bytes": 16777216},
//	  "rate": {"per_second": 500, "burst": 1000},
//	  "sqs": {"addr": "127.0.0.1:9324", "access_key": "…", "secret_key": "…"},
//	  "tokens": [
//	    {"name": "orders-service", "token": "…", "publish": ["orders.>"], "consume": ["payments.>"]},
//	    {"name": "ops", "token_sha256": "…", "admin": [">", "$dlq.>"]}
//	  ]
//	}
type File struct {
	Addr     string     `json:"addr,omitempty"`
	Data     string     `json:"data,omitempty"`
	Backend  string     `json:"backend,omitempty"`
	LogLevel string     `json:"log_level,omitempty"`
	TLSCert  string     `json:"tls_cert,omitempty"`
	TLSKey   string     `json:"tls_key,omitempty"`
	Insecure bool       `json:"insecure,omitempty"`
	Limits   FileLimits `json:"limits"`
	Rate     FileRate   `json:"rate"`
	// PublicMetrics serves /metrics without a token.
	PublicMetrics bool    `json:"public_metrics,omitempty"`
	Tokens        []Token `json:"tokens,omitempty"`
	// SQS configures the SQS face (docs/sqs.md); off unless Addr is set.
	SQS FileSQS `json:"sqs"`
}

// FileSQS is the "sqs" section: where the SQS face listens and the AWS
// access key whose SigV4 signatures it verifies (none: signatures are
// accepted unverified).
type FileSQS struct {
	Addr      string `json:"addr,omitempty"`
	AccessKey string `json:"access_key,omitempty"`
	SecretKey string `json:"secret_key,omitempty"`
}

// FileLimits are the size limits; 0 keeps the default.
type FileLimits struct {
	MaxPayload      int   `json:"max_payload,omitempty"`       // bytes per message payload (default 1 MiB)
	MaxHeaders      int   `json:"max_headers,omitempty"`       // headers per message (default 64)
	MaxHeaderBytes  int   `json:"max_header_bytes,omitempty"`  // sum of a message's header names and values (default 16 KiB)
	MaxKeyLen       int   `json:"max_key_len,omitempty"`       // bytes of a message key (default 1 KiB)
	MaxRequestBytes int64 `json:"max_request_bytes,omitempty"` // bytes of one request body (default 16 MiB)
	MaxBatch        int   `json:"max_batch,omitempty"`         // messages per PublishBatch (default 10000)
	MaxInFlight     int   `json:"max_in_flight,omitempty"`     // highest max_in_flight a subscription may ask for (default 4096)
}

// FileRate is the default per-token rate limit; 0 means unlimited.
type FileRate struct {
	PerSecond float64 `json:"per_second,omitempty"`
	Burst     int     `json:"burst,omitempty"`
}

// LoadFile reads a config file. Unknown fields are errors (a misspelt
// setting must not be ignored silently), as are trailing data and a file
// that is readable by others while it holds plain secrets.
func LoadFile(path string) (*File, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	f, err := ParseFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o004 != 0 {
		if f.SQS.SecretKey != "" {
			return nil, fmt.Errorf("config file %s holds the SQS secret key and is readable by every user (mode %v); chmod 600 it", path, st.Mode().Perm())
		}
		for _, t := range f.Tokens {
			if t.Token != "" {
				return nil, fmt.Errorf("config file %s holds token secrets and is readable by every user (mode %v); chmod 600 it, or store token_sha256 instead of token", path, st.Mode().Perm())
			}
		}
	}
	return f, nil
}

// ParseFile decodes a config file from r (see LoadFile).
func ParseFile(r io.Reader) (*File, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("invalid JSON at byte %d: %w", se.Offset, err)
		}
		if strings.HasPrefix(err.Error(), "json: unknown field") {
			return nil, fmt.Errorf("%w; see docs/hub.md for the settings", err)
		}
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON object; the file holds one object")
	}
	return &f, nil
}

// Auth returns the authentication settings of the file: nil when it lists
// no tokens.
func (f *File) Auth() *Auth {
	if len(f.Tokens) == 0 {
		return nil
	}
	return &Auth{Tokens: f.Tokens, Rate: f.Rate.PerSecond, Burst: f.Rate.Burst, PublicMetrics: f.PublicMetrics}
}

// Apply sets the limits of the file on c (zero values keep c's).
func (l FileLimits) Apply(c *Config) {
	if l.MaxPayload != 0 || l.MaxHeaders != 0 || l.MaxHeaderBytes != 0 || l.MaxKeyLen != 0 {
		if c.Limits == (Config{}).Limits {
			c.Limits = message.DefaultLimits()
		}
		if l.MaxPayload != 0 {
			c.Limits.MaxPayload = l.MaxPayload
		}
		if l.MaxHeaders != 0 {
			c.Limits.MaxHeaders = l.MaxHeaders
		}
		if l.MaxHeaderBytes != 0 {
			c.Limits.MaxHeaderBytes = l.MaxHeaderBytes
		}
		if l.MaxKeyLen != 0 {
			c.Limits.MaxKeyLen = l.MaxKeyLen
		}
	}
	if l.MaxRequestBytes != 0 {
		c.MaxRequestBytes = l.MaxRequestBytes
	}
	if l.MaxBatch != 0 {
		c.MaxBatch = l.MaxBatch
	}
	if l.MaxInFlight != 0 {
		c.MaxInFlight = l.MaxInFlight
	}
}
