package client_test

import (
	"context"
	"sync"
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/client"
)

// TestConformance runs the backend conformance suite against the hub client:
// every clause gets its own hub (over an embedded broker in its own
// directory), reached through switchboard:// URLs; restarts stop the hub and
// its broker and start them again on the same data.
func TestConformance(t *testing.T) {
	var (
		mu   sync.Mutex
		hubs = map[broker.Broker]*runningHub{}
	)
	connect := func(t *testing.T, h *runningHub) broker.Broker {
		t.Helper()
		b, err := broker.Open(context.Background(), h.url())
		if err != nil {
			t.Fatalf("broker.Open(%q): %v", h.url(), err)
		}
		if _, ok := b.(*client.Broker); !ok {
			t.Fatalf("switchboard:// opened a %T, want *client.Broker", b)
		}
		mu.Lock()
		hubs[b] = h
		mu.Unlock()
		return b
	}
	brokertest.Run(t, brokertest.Harness{
		// Every settlement is a round trip to the hub: scale the suite's
		// deadlines so that a loaded machine does not turn an Extend sent
		// in time into a missed deadline.
		Slow: 3,
		Open: func(t *testing.T) broker.Broker { return connect(t, startHub(t, t.TempDir())) },
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			mu.Lock()
			h, ok := hubs[b]
			delete(hubs, b)
			mu.Unlock()
			if !ok {
				t.Fatal("Reopen of a broker this harness did not open")
			}
			if err := b.Close(); err != nil {
				t.Fatalf("Close before reopening: %v", err)
			}
			h.stop(t)
			return connect(t, startHub(t, h.dir))
		},
	})
}

// TestRuntime runs the consumer runtime's suite over the hub client, whose
// acks the runtime sends without waiting for them (Delivery.AckAsync).
func TestRuntime(t *testing.T) {
	brokertest.RunRuntime(t, brokertest.Harness{
		Slow: 3,
		Open: func(t *testing.T) broker.Broker {
			h := startHub(t, t.TempDir())
			b, err := broker.Open(context.Background(), h.url())
			if err != nil {
				t.Fatalf("broker.Open(%q): %v", h.url(), err)
			}
			return b
		},
	})
}
