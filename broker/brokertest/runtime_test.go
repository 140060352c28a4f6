package brokertest_test

import (
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/broker/embedded"
)

// TestRuntimeEmbedded runs the runtime section against the embedded engine.
func TestRuntimeEmbedded(t *testing.T) {
	brokertest.RunRuntime(t, brokertest.Harness{Open: func(t *testing.T) broker.Broker {
		b, err := embedded.OpenMemory()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}})
}

// TestRuntimeReduced runs it on a backend without delayed nacks, extend or
// ordering: retries are emulated by the runtime.
func TestRuntimeReduced(t *testing.T) {
	brokertest.RunRuntime(t, brokertest.Harness{Open: func(t *testing.T) broker.Broker {
		b, err := embedded.OpenMemory()
		if err != nil {
			t.Fatal(err)
		}
		return &reduced{Broker: b, caps: broker.Capabilities{Name: "reduced-runtime", Durable: true, Groups: true, Ack: true, DeadLetter: true, StartPositions: true, Dedup: true}}
	}})
}
