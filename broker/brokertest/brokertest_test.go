package brokertest_test

import (
	"context"
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/message"
)

// reduced is the embedded engine declaring fewer capabilities and refusing
// the rest the way a real backend must, so that the suite's capability
// gating and refusal clauses are exercised too.
type reduced struct {
	broker.Broker
	caps broker.Capabilities
}

func (r *reduced) Capabilities() broker.Capabilities { return r.caps }

func (r *reduced) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	if err := broker.PrepareMessages(r.caps, message.DefaultLimits(), p); err != nil {
		return nil, err
	}
	return r.Broker.Publish(ctx, p)
}

func (r *reduced) Subscribe(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := broker.CheckSubscribe(r.caps, p); err != nil {
		return nil, err
	}
	return r.Broker.Subscribe(ctx, p)
}

func runReduced(t *testing.T, caps broker.Capabilities) {
	brokertest.Run(t, brokertest.Harness{
		Open: func(t *testing.T) broker.Broker {
			b, err := embedded.OpenMemory()
			if err != nil {
				t.Fatal(err)
			}
			return &reduced{Broker: b, caps: caps}
		},
	})
}

// TestReducedGroupsOnly: a durable backend with groups and acks only (no
// Reopen, so the restart clauses skip as well).
func TestReducedGroupsOnly(t *testing.T) {
	runReduced(t, broker.Capabilities{Name: "reduced-groups", Durable: true, Groups: true, Ack: true})
}

// TestReducedEphemeralOnly: a Redis Pub/Sub-like backend that keeps nothing.
func TestReducedEphemeralOnly(t *testing.T) {
	runReduced(t, broker.Capabilities{Name: "reduced-ephemeral", Ephemeral: true})
}
