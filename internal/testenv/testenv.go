// Package testenv finds the real servers that tests talk to (RabbitMQ,
// Redis, NATS, PostgreSQL) and decides what a test does when one is missing:
// skip with a clear message, or fail when SWITCHBOARD_REQUIRE_SERVICES=1
// (as CI sets it), so that a missing server can never pass CI as a skip.
package testenv

import (
	"net"
	"net/url"
	"os"
	"testing"
	"time"
)

// RequireEnv is the variable that turns a missing server into a failure.
const RequireEnv = "SWITCHBOARD_REQUIRE_SERVICES"

// URL returns the value of env, or def when it is unset or empty.
func URL(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// Required reports whether missing services must fail tests.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// NeedServer returns the URL named by env (default def) after checking that
// its host:port accepts a TCP connection within 2 s. When it does not, the
// test is skipped with a message that says how to run it, or fails when
// SWITCHBOARD_REQUIRE_SERVICES=1.
func NeedServer(tb testing.TB, name, env, def string) string {
	tb.Helper()
	raw := URL(env, def)
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatalf("%s=%q is not a URL: %v", env, raw, err)
	}
	addr := u.Host
	if u.Port() == "" {
		tb.Fatalf("%s=%q has no port", env, raw)
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		msg := name + " is not reachable at " + addr + " (" + err.Error() + "); start it (/work/shared/services.sh or .ci/run) or point " + env + " at one"
		if Required() {
			tb.Fatalf("%s; %s=1 so this fails instead of skipping", msg, RequireEnv)
		}
		tb.Skip(msg)
	}
	_ = c.Close()
	return raw
}
