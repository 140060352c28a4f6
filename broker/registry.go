package broker

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"sync"
)

// OpenFunc opens a backend from its URL. ctx bounds dialing only and must not
// be kept.
type OpenFunc func(ctx context.Context, u *url.URL) (Broker, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]OpenFunc{}
)

// Register makes a backend available under a URL scheme. It is meant to be
// called from a backend package's init and panics on an empty scheme, a nil
// func or a scheme registered twice.
func Register(scheme string, open OpenFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if scheme == "" || open == nil {
		panic("broker: Register with an empty scheme or nil OpenFunc")
	}
	if _, dup := registry[scheme]; dup {
		panic("broker: Register called twice for scheme " + scheme)
	}
	registry[scheme] = open
}

// Schemes lists the registered URL schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s := make([]string, 0, len(registry))
	for k := range registry {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// knownImports maps schemes to the package that registers them, for the
// "forgotten import?" hint.
var knownImports = map[string]string{
	"embedded":    "github.com/switchboard-dev/switchboard/broker/embedded",
	"amqp":        "github.com/switchboard-dev/switchboard/broker/rabbitmq",
	"amqps":       "github.com/switchboard-dev/switchboard/broker/rabbitmq",
	"kafka":       "github.com/switchboard-dev/switchboard/broker/kafka",
	"sqs":         "github.com/switchboard-dev/switchboard/broker/sqs",
	"redis":       "github.com/switchboard-dev/switchboard/broker/redis",
	"nats":        "github.com/switchboard-dev/switchboard/broker/nats",
	"switchboard": "github.com/switchboard-dev/switchboard/client",
}

// Open parses rawURL and opens the backend registered for its scheme.
func Open(ctx context.Context, rawURL string) (Broker, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadURL, redact(rawURL), err)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("%w: %q has no scheme; use one of %v, e.g. embedded:///var/lib/sb", ErrBadURL, redact(rawURL), Schemes())
	}
	registryMu.RLock()
	open := registry[u.Scheme]
	registryMu.RUnlock()
	if open == nil {
		hint := ""
		if pkg, ok := knownImports[u.Scheme]; ok {
			hint = fmt.Sprintf(" (forgotten import? add _ %q)", pkg)
		}
		return nil, fmt.Errorf("%w: unknown scheme %q%s; registered: %v", ErrBadURL, u.Scheme, hint, Schemes())
	}
	return open(ctx, u)
}

// redact hides a password in a URL for error messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Redact returns rawURL with any password replaced, for logs and errors.
func Redact(rawURL string) string { return redact(rawURL) }
