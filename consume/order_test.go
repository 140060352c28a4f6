package consume_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	sbnats "github.com/switchboard-dev/switchboard/broker/nats"
	sbrabbit "github.com/switchboard-dev/switchboard/broker/rabbitmq"
	sbredis "github.com/switchboard-dev/switchboard/broker/redis"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/internal/testenv"
	"github.com/switchboard-dev/switchboard/message"
)

// The ordering tests run on real servers: the embedded engine orders
// natively; on Redis Streams, RabbitMQ and NATS JetStream (and the embedded
// engine declaring no ordering) the runtime emulates it.

const (
	amqpEnv, amqpDefault = "SWITCHBOARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
	natsEnv, natsDefault = "SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222"
)

// slowWait bounds the waits of the tests that talk to real servers.
const slowWait = 60 * time.Second

// orderBackend is a backend the ordering tests run on.
type orderBackend struct {
	name string
	open func(t *testing.T) broker.Broker
}

func orderBackends() []orderBackend {
	return []orderBackend{
		{"embedded", func(t *testing.T) broker.Broker { return openEmbedded(t) }},
		{"embedded-emulated", func(t *testing.T) broker.Broker { return &noOrdering{openEmbedded(t)} }},
		{"redis-streams", openRedisBroker},
		{"rabbitmq", openRabbitBroker},
		{"nats-jetstream", openNATSBroker},
	}
}

func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}

func openWith(t *testing.T, open func(context.Context, string) (broker.Broker, error), u string) broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := open(ctx, u)
	if err != nil {
		t.Fatalf("open %s: %v", u, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func openRedisBroker(t *testing.T) broker.Broker {
	u := testenv.NeedServer(t, "Redis", redisEnv, redisDefault)
	return openWith(t, func(ctx context.Context, u string) (broker.Broker, error) { return sbredis.Open(ctx, u) }, u)
}

func openRabbitBroker(t *testing.T) broker.Broker {
	// Test queues vanish once unused.
	u := withQuery(testenv.NeedServer(t, "RabbitMQ", amqpEnv, amqpDefault), "queue_expires=2m")
	return openWith(t, func(ctx context.Context, u string) (broker.Broker, error) { return sbrabbit.Open(ctx, u) }, u)
}

func openNATSBroker(t *testing.T) broker.Broker {
	// Test groups vanish once unused.
	u := withQuery(testenv.NeedServer(t, "NATS (JetStream)", natsEnv, natsDefault), "consumer_inactive=10m")
	return openWith(t, func(ctx context.Context, u string) (broker.Broker, error) { return sbnats.Open(ctx, u) }, u)
}

// prepareOrdered registers h on b with OrderedByKey and opts, making sure
// that messages published before Run reach the group: it starts from the
// earliest message where the backend can, else the group is created first.
// It returns the runtime (not started) and its logs.
func prepareOrdered(t *testing.T, b broker.Broker, topic, group string, h consume.Handler, opts ...consume.Option) (*consume.Runtime, *logBuf) {
	t.Helper()
	t.Logf("backend %s: native ordering %v", b.Capabilities().Name, b.Capabilities().OrderedByKey)
	rt, logs := newRuntime(t, b)
	opts = append([]consume.Option{consume.OrderedByKey()}, opts...)
	if b.Capabilities().StartPositions {
		opts = append([]consume.Option{earliest}, opts...)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: group})
		cancel()
		if err != nil {
			t.Fatalf("create group %s: %v", group, err)
		}
		if err := sub.Close(); err != nil {
			t.Fatalf("close the subscription that created group %s: %v", group, err)
		}
	}
	if err := rt.Handle(topic, group, h, opts...); err != nil {
		t.Fatalf("Handle(%q, %q): %v", topic, group, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s := logs.String()
			if len(s) > 8000 {
				s = "..." + s[len(s)-8000:]
			}
			t.Logf("runtime log:\n%s", s)
		}
	})
	return rt, logs
}

// publishChunks publishes msgs in batches of at most 50.
func publishChunks(t *testing.T, b broker.Broker, topic string, msgs []*message.Message) {
	t.Helper()
	for len(msgs) > 0 {
		n := min(len(msgs), 50)
		publish(t, b, topic, msgs[:n]...)
		msgs = msgs[n:]
	}
}

// within waits up to d for cond.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOrderedByKeyUnderRetriesOnBackends: a failing message of key a holds
// back a's later messages only; key b proceeds meanwhile. a1 keeps failing
// until every b message was handled (so the test cannot pass with b held
// back behind a) and at least twice; the handler sees its attempts counted.
func TestOrderedByKeyUnderRetriesOnBackends(t *testing.T) {
	for _, bk := range orderBackends() {
		t.Run(bk.name, func(t *testing.T) {
			b := bk.open(t)
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			var mu sync.Mutex
			var log []string
			var a1Attempts []int
			bDone := 0
			rt, _ := prepareOrdered(t, b, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
				mu.Lock()
				defer mu.Unlock()
				p := string(m.Payload)
				if p == "a1" {
					a1Attempts = append(a1Attempts, consume.DeliveryFrom(ctx).Info.Attempt)
					if len(a1Attempts) < 3 || bDone < 5 {
						log = append(log, "a1-fail")
						return errors.New("a1 not yet")
					}
				}
				if p[0] == 'b' {
					bDone++
				}
				log = append(log, p)
				return nil
			}), consume.Concurrency(4), consume.Retry(consume.Constant(150*time.Millisecond), 100))
			var msgs []*message.Message
			for _, p := range []string{"a1", "b1", "a2", "b2", "b3", "a3", "b4", "b5"} {
				msgs = append(msgs, &message.Message{Key: p[:1], Payload: []byte(p)})
			}
			publish(t, b, topic, msgs...)
			start(t, rt)
			within(t, slowWait, "all handled", func() bool { return stats(t, rt).Acked == 8 })
			mu.Lock()
			defer mu.Unlock()
			var as, handled []string
			for _, p := range log {
				if p != "a1-fail" {
					handled = append(handled, p)
				}
				if p[0] == 'a' && p != "a1-fail" {
					as = append(as, p)
				}
			}
			if strings.Join(as, ",") != "a1,a2,a3" {
				t.Fatalf("key a handled in the order %v (log %v)", as, log)
			}
			slices.Sort(handled)
			if strings.Join(handled, ",") != "a1,a2,a3,b1,b2,b3,b4,b5" {
				t.Fatalf("handled %v, want each message once (log %v)", handled, log)
			}
			idx := func(s string) int { return slices.Index(log, s) }
			for _, bm := range []string{"b1", "b2", "b3", "b4", "b5"} {
				if idx(bm) > idx("a1") {
					t.Fatalf("key b was held back by key a's retries: %v", log)
				}
			}
			for i, a := range a1Attempts {
				if a != i+1 {
					t.Fatalf("a1's handler saw attempts %v, want 1, 2, 3, ...", a1Attempts)
				}
			}
			s := stats(t, rt)
			if s.DeadLettered != 0 || s.AckErrors != 0 || s.Retried != int64(len(a1Attempts)-1) {
				t.Fatalf("stats %+v after %d attempts of a1", s, len(a1Attempts))
			}
		})
	}
}

// TestOrderedByKeyConcurrency: 24 keys × 20 messages, Concurrency(16),
// a quarter of the attempts failing at random, 4 attempts per message.
// Per key, the messages handled successfully are in publish order, a key
// never has two handlers at once, and every message ends handled once or
// dead-lettered. Meanwhile the first message of key "stuck" stays in its
// handler until every other key is done: the others must not wait for it.
func TestOrderedByKeyConcurrency(t *testing.T) {
	for _, bk := range orderBackends() {
		t.Run(bk.name, func(t *testing.T) {
			b := bk.open(t)
			const keys, perKey, stuckMsgs, maxAttempts = 24, 20, 5, 4
			const stuckHead = "stuck/000"
			topic, group := brokertest.Topic(t), brokertest.Group(t)
			seed := uint64(time.Now().UnixNano())
			t.Logf("random seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 7))

			var mu sync.Mutex
			succeeded := map[string][]int{} // key -> indexes handled successfully, in handling order
			outcome := map[string]string{}  // payload -> "ok" or "dead"
			active := map[string]int{}      // key -> handlers running
			var violations []string
			othersLeft := keys * perKey
			othersDone := make(chan struct{})
			finish := func(key, p, how string) { // with mu held
				outcome[p] = how
				if key != "stuck" {
					if othersLeft--; othersLeft == 0 {
						close(othersDone)
					}
				}
			}
			h := consume.Raw(func(ctx context.Context, m *message.Message) error {
				key, p := m.Key, string(m.Payload)
				_, num, _ := strings.Cut(p, "/")
				idx, _ := strconv.Atoi(num)
				attempt := consume.DeliveryFrom(ctx).Info.Attempt
				mu.Lock()
				if active[key]++; active[key] > 1 {
					violations = append(violations, fmt.Sprintf("key %s had %d handlers at once (at %s)", key, active[key], p))
				}
				if how, ok := outcome[p]; ok {
					violations = append(violations, fmt.Sprintf("%s handled again after it ended (%s)", p, how))
				}
				fail := rng.IntN(4) == 0
				mu.Unlock()
				if p == stuckHead {
					fail = false
					select {
					case <-othersDone:
					case <-ctx.Done():
						mu.Lock()
						violations = append(violations, "the other keys did not finish while key stuck was held in its handler")
						active[key]--
						mu.Unlock()
						return ctx.Err()
					}
				}
				mu.Lock()
				defer mu.Unlock()
				active[key]--
				if fail {
					if attempt >= maxAttempts {
						finish(key, p, "dead")
					}
					return errors.New("random failure")
				}
				succeeded[key] = append(succeeded[key], idx)
				finish(key, p, "ok")
				return nil
			})
			rt, _ := prepareOrdered(t, b, topic, group, h, consume.Concurrency(16),
				consume.Retry(consume.Constant(10*time.Millisecond), maxAttempts), consume.Timeout(slowWait))

			var msgs []*message.Message
			add := func(key string, i int) {
				msgs = append(msgs, &message.Message{Key: key, Payload: fmt.Appendf(nil, "%s/%03d", key, i)})
			}
			add("stuck", 0)
			for i := range perKey {
				if i > 0 && i < stuckMsgs {
					add("stuck", i)
				}
				for k := range keys {
					add(fmt.Sprintf("k%02d", k), i)
				}
			}
			publishChunks(t, b, topic, msgs)
			start(t, rt)
			total := keys*perKey + stuckMsgs
			within(t, slowWait, "every message handled or dead-lettered", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(outcome) == total || len(violations) > 0
			})
			mu.Lock()
			if len(violations) > 0 {
				defer mu.Unlock()
				t.Fatalf("%d violations, first: %s", len(violations), strings.Join(violations[:min(5, len(violations))], "; "))
			}
			mu.Unlock()
			within(t, slowWait, "every message settled", func() bool {
				s := stats(t, rt)
				return s.Acked+s.DeadLettered >= int64(total)
			})
			mu.Lock()
			defer mu.Unlock()
			dead := 0
			for _, how := range outcome {
				if how == "dead" {
					dead++
				}
			}
			for key, got := range succeeded {
				if !slices.IsSorted(got) {
					t.Fatalf("key %s handled in the order %v", key, got)
				}
			}
			if outcome[stuckHead] != "ok" || len(succeeded["stuck"]) == 0 || succeeded["stuck"][0] != 0 {
				t.Fatalf("key stuck: %v, head %s", succeeded["stuck"], outcome[stuckHead])
			}
			s := stats(t, rt)
			if s.Acked != int64(total-dead) || s.DeadLettered != int64(dead) || s.AckErrors != 0 {
				t.Fatalf("stats %+v; %d messages, %d dead-lettered by the test's count", s, total, dead)
			}
			t.Logf("%d messages, %d retries, %d dead-lettered", total, s.Retried, dead)
		})
	}
}
