//go:build !unix

package call_test

import "testing"

// blackhole is not available here (see blackhole_unix_test.go).
func blackhole(*testing.T) (string, bool) { return "", false }
