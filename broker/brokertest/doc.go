// Package brokertest is the conformance suite of Switchboard backends: one
// entry point, [Run], that checks a [broker.Broker] against the delivery
// contract (DESIGN.md, "Delivery contract"). Every backend, the embedded
// engine included, runs it from its own _test package.
//
// # Wiring a backend
//
//	package mybackend_test
//
//	import (
//		"context"
//		"sync"
//		"testing"
//
//		"github.com/switchboard-dev/switchboard/broker"
//		"github.com/switchboard-dev/switchboard/broker/brokertest"
//		_ "github.com/switchboard-dev/switchboard/broker/embedded"
//	)
//
//	func TestConformance(t *testing.T) {
//		open := func(t *testing.T, url string) broker.Broker {
//			b, err := broker.Open(context.Background(), url)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return b
//		}
//		dirs := map[broker.Broker]string{}
//		var mu sync.Mutex
//		brokertest.Run(t, brokertest.Harness{
//			Open: func(t *testing.T) broker.Broker {
//				dir := t.TempDir()
//				b := open(t, "embedded://"+dir)
//				mu.Lock(); dirs[b] = dir; mu.Unlock()
//				return b
//			},
//			Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
//				mu.Lock(); dir := dirs[b]; mu.Unlock()
//				if err := b.Close(); err != nil {
//					t.Fatal(err)
//				}
//				nb := open(t, "embedded://"+dir)
//				mu.Lock(); dirs[nb] = dir; mu.Unlock()
//				return nb
//			},
//		})
//	}
//
// Open may be called many times, in parallel: every clause opens its own
// broker and uses fresh random topic and group names ([Topic], [Group]), so
// a single shared server is fine. The suite closes what it opens. Reopen is
// optional; without it the restart clauses are skipped. Harness.Slow scales
// every timeout for slow backends.
//
// [Run] starts every clause as a parallel subtest and returns before they
// finish, so a harness releases shared resources with t.Cleanup, not defer.
// Every wait is bounded: a backend call that never returns (Close, Ack,
// Subscribe, Request...) fails the clause with "did not return within"
// instead of hanging the test binary.
// Run a single clause with -run, e.g.
// go test -run 'TestConformance/DeadLetter/Term'.
//
// # Capabilities
//
// Each clause runs only where [broker.Capabilities] declares what it needs,
// and otherwise skips with a line naming the missing capability, e.g.
// "backend "redis-pubsub" does not declare Capabilities.Groups". For every
// capability that is not declared, a Capabilities/Refuses<Cap> clause checks
// that the backend refuses it with [broker.ErrNotSupported] instead of
// silently downgrading.
//
// # Clauses
//
//   - Capabilities: the declaration is consistent (a name, a way to
//     subscribe, Request implies [broker.Requester]); undeclared options are
//     refused with ErrNotSupported.
//   - Publish: round trip (ID, key, headers, content type and payload kept;
//     PublishedAt set; Info group, sequence, attempt 1, not redelivered);
//     generated IDs; empty, 900 KiB and at-the-limit payloads; a payload over
//     the limit refused with message.ErrTooLarge; a batch stored in order;
//     concurrent publishers each get a distinct sequence and every message is
//     delivered once; invalid topics, messages, groups and subscription options refused with
//     message.ErrInvalid.
//   - Groups: fan-out (every group gets every message); competing consumers
//     (each message to one consumer of a group); a group keeps its position
//     when resubscribed.
//   - StartPositions: latest, earliest, a time, a sequence.
//   - Patterns: "p.*" gets p.a and p.b, not p.a.b; "p.>" gets all three;
//     deliveries name the concrete topic.
//   - Ephemeral: live messages only; every subscriber gets each one; a
//     subscriber that reads nothing does not block publishers; settling is a
//     no-op that succeeds.
//   - Redelivery: nack (attempt 2, redelivered), nack with a delay, missed
//     ack deadline, a late ack of a redelivered message fails with
//     ErrDeliveryExpired, a consumer that stops reading for several deadlines
//     neither blocks its own settlements nor loses the message, Extend keeps
//     a message from redelivery, closing a
//     subscription releases its unacked messages to the group.
//   - Settlement: a second Ack, Nack, Term or Extend fails with
//     ErrAlreadySettled; settling after the subscription closed fails with
//     ErrClosed and does not take effect.
//   - DeadLetter: after MaxAttempts, or on Term(reason), the message goes to
//     message.DLQTopic(group) with the reason, attempts, original topic,
//     group, sequence and headers; ReplayDeadLetters (where the backend
//     implements [broker.DeadLetterAdmin]) brings it back to that group only.
//   - Delay: DeliverAt is honoured and does not hold back other messages.
//   - Expiry: expired messages are never delivered, also when they expire
//     while waiting for a redelivery; they are dead-lettered with reason
//     "expired".
//   - Dedup: the same ID is stored once, the repeat reported as a duplicate
//     with the original sequence; the window is per topic.
//   - Ordering: with OrderedByKey, 20 keys × 30 messages over 4 consumers
//     with random work time and nacks: per key never two in flight, acked in
//     order; a failing message holds back only its own key.
//   - Request: the reply reaches the requester; no subscriber fails fast with
//     ErrNoResponders; no reply fails with ErrTimeout after the timeout; a
//     cancelled context ends the wait.
//   - AtomicBatch: a batch with one oversized message stores nothing.
//   - Lifecycle: after Close, Publish and Subscribe fail with ErrClosed and
//     subscriptions end; after a clean restart (Harness.Reopen) nothing is
//     lost, nothing acked comes back, sequence numbers continue, the dedup
//     window and delayed messages survive.
//
// # Helpers
//
// [Topic], [Group], [Publish], [Receive], [ReceiveN] and [ExpectNone] are
// exported for backends' own tests.
package brokertest
