package brokertest

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// OpenCase is a backend URL and the error opening it must give.
type OpenCase struct {
	URL  string
	Want error // e.g. broker.ErrBadURL, broker.ErrUnavailable
}

// CheckOpen opens each case's URL and checks that it fails with an error
// matching Want, within limit (a server that is not there must not hang),
// and that an ErrUnavailable names the address it tried. A backend that
// opens anyway is closed and reported.
func CheckOpen(t *testing.T, open func(context.Context, string) (broker.Broker, error), limit time.Duration, cases []OpenCase) {
	t.Helper()
	for _, tc := range cases {
		start := time.Now()
		b, err := open(context.Background(), tc.URL)
		if err == nil {
			_ = b.Close()
		}
		if !errors.Is(err, tc.Want) {
			t.Errorf("Open(%q) = %v, want %v", tc.URL, err, tc.Want)
			continue
		}
		if took := time.Since(start); took > limit {
			t.Errorf("Open(%q) took %s, more than %s", tc.URL, took, limit)
		}
		if tc.Want == broker.ErrUnavailable {
			if u, perr := url.Parse(tc.URL); perr == nil && u.Host != "" && !strings.Contains(err.Error(), u.Host) {
				t.Errorf("Open(%q) error does not name the address %s: %v", tc.URL, u.Host, err)
			}
		}
	}
}
