package sqsface

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Config configures the SQS face. The zero value works: every field
// documents its default.
type Config struct {
	// Region reported in queue ARNs and expected in SigV4 credential scopes
	// when Credentials are set. Default "us-east-1".
	Region string
	// AccountID is the 12-digit account in queue URLs and ARNs. Default
	// "000000000000".
	AccountID string
	// BaseURL is the scheme and host (and path prefix) queue URLs start
	// with, e.g. "http://sqs.internal:9324". Default: taken from each
	// request's Host header (http, or https behind TLS or with
	// X-Forwarded-Proto: https) plus PathPrefix.
	BaseURL string
	// PathPrefix is where the handler is mounted when it shares a server,
	// e.g. "/sqs"; requests are expected under it. Default "" (the root).
	PathPrefix string
	// Dir is where queue metadata (attributes, tags, creation times) is
	// kept, in the file queues.json. Default "": in memory only, so queues
	// are forgotten on restart (their topics and messages stay).
	Dir string
	// TopicPrefix is put before a queue name to make its topic and group
	// name. Default "sqs." (queue "orders" is topic and group "sqs.orders").
	TopicPrefix string
	// Credentials maps access key IDs to secret keys. When empty, any
	// request is accepted whatever its signature (development mode); when
	// set, every request must carry a valid AWS Signature Version 4 made
	// with one of these keys.
	Credentials map[string]string
	// MaxInFlight bounds, per queue, the messages received and not yet
	// deleted (AWS: 120,000 for standard queues). Default 1024.
	MaxInFlight int
	// IdleRelease is how long a queue's subscription stays open with no
	// receive and no message in flight. Default 1 minute.
	IdleRelease time.Duration
	// DefaultMaximumMessageSize is the MaximumMessageSize of queues created
	// without one. Default 262,144 (256 KiB, SQS's long-standing default;
	// AWS raised it to 1 MiB in 2025, set 1048576 to match).
	DefaultMaximumMessageSize int
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns a copy of c (nil allowed) with defaults filled in.
func (c *Config) WithDefaults() *Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.Region == "" {
		out.Region = "us-east-1"
	}
	if out.AccountID == "" {
		out.AccountID = "000000000000"
	}
	if out.TopicPrefix == "" {
		out.TopicPrefix = "sqs."
	}
	if out.MaxInFlight == 0 {
		out.MaxInFlight = 1024
	}
	if out.IdleRelease == 0 {
		out.IdleRelease = time.Minute
	}
	if out.DefaultMaximumMessageSize == 0 {
		out.DefaultMaximumMessageSize = 262144
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	out.PathPrefix = strings.TrimSuffix(out.PathPrefix, "/")
	out.BaseURL = strings.TrimSuffix(out.BaseURL, "/")
	return &out
}

func (c *Config) validate() error {
	var errs []error
	if len(c.AccountID) != 12 || strings.Trim(c.AccountID, "0123456789") != "" {
		errs = append(errs, fmt.Errorf("sqsface: AccountID %q must be 12 digits", c.AccountID))
	}
	if c.PathPrefix != "" && !strings.HasPrefix(c.PathPrefix, "/") {
		errs = append(errs, fmt.Errorf("sqsface: PathPrefix %q must start with '/'", c.PathPrefix))
	}
	if c.MaxInFlight < 0 || c.IdleRelease < 0 {
		errs = append(errs, errors.New("sqsface: MaxInFlight and IdleRelease must not be negative"))
	}
	if c.DefaultMaximumMessageSize < 1024 || c.DefaultMaximumMessageSize > maxMessageSizeLimit {
		errs = append(errs, fmt.Errorf("sqsface: DefaultMaximumMessageSize %d must be between 1024 and %d", c.DefaultMaximumMessageSize, maxMessageSizeLimit))
	}
	for k, v := range c.Credentials {
		if k == "" || v == "" {
			errs = append(errs, errors.New("sqsface: Credentials must not hold an empty access key or secret"))
			break
		}
	}
	return errors.Join(errs...)
}
