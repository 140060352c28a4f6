package embedded_test

import (
	"context"
	"net/url"
	"sync"
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	_ "github.com/switchboard-dev/switchboard/broker/embedded"
)

// TestConformance runs the backend conformance suite against the embedded
// engine, one data directory per clause, opened through its URL.
func TestConformance(t *testing.T) {
	var (
		mu   sync.Mutex
		dirs = map[broker.Broker]string{}
	)
	open := func(t *testing.T, dir string) broker.Broker {
		t.Helper()
		u := (&url.URL{Scheme: "embedded", Path: dir}).String()
		b, err := broker.Open(context.Background(), u)
		if err != nil {
			t.Fatalf("broker.Open(%q): %v", u, err)
		}
		mu.Lock()
		dirs[b] = dir
		mu.Unlock()
		return b
	}
	brokertest.Run(t, brokertest.Harness{
		Open: func(t *testing.T) broker.Broker { return open(t, t.TempDir()) },
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			mu.Lock()
			dir, ok := dirs[b]
			delete(dirs, b)
			mu.Unlock()
			if !ok {
				t.Fatal("Reopen of a broker this harness did not open")
			}
			if err := b.Close(); err != nil {
				t.Fatalf("Close before reopening: %v", err)
			}
			return open(t, dir)
		},
	})
}
