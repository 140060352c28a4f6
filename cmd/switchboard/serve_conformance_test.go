package main_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	_ "github.com/switchboard-dev/switchboard/broker/embedded" // embedded://, to compare capabilities
	_ "github.com/switchboard-dev/switchboard/broker/nats"     // nats://, to compare capabilities
	_ "github.com/switchboard-dev/switchboard/broker/rabbitmq" // amqp://, to compare capabilities
	"github.com/switchboard-dev/switchboard/client"
	"github.com/switchboard-dev/switchboard/internal/testenv"
	"github.com/switchboard-dev/switchboard/message"
)

// hubBackend is a backend that `switchboard serve` is tested over.
type hubBackend struct {
	name string
	// url returns the --backend URL after checking that its server is
	// reachable (testenv.NeedServer: skip, or fail when services are
	// required). nil means the default: the embedded broker in --data.
	url func(t *testing.T) string
}

// hubBackends are the backends the hub is tested over: the embedded broker,
// and the real RabbitMQ and NATS JetStream servers of SWITCHBOARD_AMQP_URL
// and SWITCHBOARD_NATS_URL (the adapters' own test variables).
var hubBackends = []hubBackend{
	{name: "embedded"},
	{name: "rabbitmq", url: func(t *testing.T) string {
		u := testenv.NeedServer(t, "RabbitMQ", "SWITCHBOARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
		return withQuery(u, "queue_expires=2m") // test queues vanish once unused
	}},
	{name: "nats", url: func(t *testing.T) string {
		u := testenv.NeedServer(t, "NATS (JetStream)", "SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4222")
		return withQuery(u, "consumer_inactive=10m") // test groups vanish once unused
	}},
}

// withQuery adds the query q to the URL u.
func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}

// serveArgs returns the serve flags for backend: its own data directory,
// and --backend unless it is the embedded broker.
func (bk hubBackend) serveArgs(t *testing.T, backendURL string) []string {
	args := []string{"--data", t.TempDir()}
	if backendURL != "" {
		args = append(args, "--backend", backendURL)
	}
	return args
}

// backendURL returns the --backend URL of bk ("" for the embedded broker).
func (bk hubBackend) backendURL(t *testing.T) string {
	if bk.url == nil {
		return ""
	}
	return bk.url(t)
}

// TestServeConformance runs the backend conformance suite against the Go
// client talking to a real `switchboard serve` process, over each backend.
// Every clause gets its own process (about 50 ms to start), so that a
// restart clause (Harness.Reopen: SIGTERM, wait for a clean exit, start
// again on the same address and data) disturbs no other clause.
func TestServeConformance(t *testing.T) {
	bin := binary(t)
	for _, bk := range hubBackends {
		t.Run(bk.name, func(t *testing.T) {
			t.Parallel()
			backendURL := bk.backendURL(t)
			checkHubCapabilities(t, bin, bk, backendURL)
			runServeConformance(t, bin, func(t *testing.T) []string { return bk.serveArgs(t, backendURL) })
		})
	}
}

// runServeConformance runs brokertest against hubs started with the flags
// args returns (called once per hub, with the clause's t).
func runServeConformance(t *testing.T, bin string, args func(t *testing.T) []string) {
	var (
		mu   sync.Mutex
		hubs = map[broker.Broker]*hubProc{}
	)
	brokertest.Run(t, brokertest.Harness{
		// Every settlement is a round trip to the hub, as with the
		// in-process hub of the client's own conformance test.
		Slow: 3,
		Open: func(t *testing.T) broker.Broker {
			h := startHub(t, bin, args(t)...)
			b := connectHub(t, h)
			mu.Lock()
			hubs[b] = h
			mu.Unlock()
			return b
		},
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			mu.Lock()
			h, ok := hubs[b]
			delete(hubs, b)
			mu.Unlock()
			if !ok {
				t.Fatal("Reopen of a broker this harness did not open")
			}
			if err := b.Close(); err != nil {
				t.Fatalf("Close before the restart: %v", err)
			}
			h.restart(t)
			nb := connectHub(t, h)
			mu.Lock()
			hubs[nb] = h
			mu.Unlock()
			return nb
		},
	})
}

// connectHub opens the hub h through its switchboard:// URL, as users do.
func connectHub(t *testing.T, h *hubProc) broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, h.url())
	if err != nil {
		t.Fatalf("broker.Open(%q): %v", h.url(), err)
	}
	if _, ok := b.(*client.Broker); !ok {
		_ = b.Close()
		t.Fatalf("switchboard:// opened a %T, want *client.Broker", b)
	}
	return b
}

// checkHubCapabilities fails t unless the client of a hub over bk reports
// the capabilities of the backend itself, opened in this process: the
// suite skips and checks refusals by what the client reports.
func checkHubCapabilities(t *testing.T, bin string, bk hubBackend, backendURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct := backendURL
	if direct == "" {
		direct = (&url.URL{Scheme: "embedded", Path: t.TempDir()}).String()
	}
	d, err := broker.Open(ctx, direct)
	if err != nil {
		t.Fatalf("open the backend %s directly: %v", broker.Redact(direct), err)
	}
	want := d.Capabilities()
	if err := d.Close(); err != nil {
		t.Fatalf("close the backend %s: %v", broker.Redact(direct), err)
	}
	h := startHub(t, bin, bk.serveArgs(t, backendURL)...)
	b := connectHub(t, h)
	got := b.Capabilities()
	if err := b.Close(); err != nil {
		t.Fatalf("close the client: %v", err)
	}
	if got != want {
		t.Fatalf("through the hub the client reports capabilities\n%+v\nwant those of the backend %s\n%+v", got, broker.Redact(direct), want)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestServeEndToEndOverBackends drives `switchboard serve --backend` over
// RabbitMQ and NATS JetStream as users would (TestEndToEnd does the same,
// and more, on the embedded broker): REST, CLI and Go client publishes
// reach a group, deliveries in flight at a graceful SIGTERM are redelivered
// after the restart, and every publish acknowledged before a SIGKILL is
// consumed after the restart.
func TestServeEndToEndOverBackends(t *testing.T) {
	bin := binary(t)
	for _, bk := range hubBackends {
		if bk.url == nil {
			continue // TestEndToEnd
		}
		t.Run(bk.name, func(t *testing.T) {
			t.Parallel()
			backendURL := bk.backendURL(t)
			h := startHub(t, bin, append(bk.serveArgs(t, backendURL), "--config", writeConfig(t))...)
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			// Topics, groups and IDs are new per run: the backend keeps them
			// (NATS group names are global to the server).
			run := fmt.Sprintf("e2e%x", time.Now().UnixNano())
			prefix := "orders." + run // the publisher token may publish to orders.>

			a := openClient(t, ctx, h, adminToken)
			t.Run("rest, CLI and Go client", func(t *testing.T) {
				topic := prefix + ".smoke"
				sub := subscribeGroup(t, ctx, a, topic, run+"-smoke")
				code, _, body := rest(t, h.addr, pubToken, "POST", "/v1/topics/"+topic+"/messages", `{"id": "`+run+`-rest", "text": "from rest"}`)
				if code != 200 {
					t.Fatalf("REST publish: %d %s", code, body)
				}
				if _, stderr, err := cli(t, bin, h.addr, pubToken, "publish", topic, "from cli", "--id", run+"-cli"); err != nil {
					t.Fatalf("CLI publish: %v %s", err, stderr)
				}
				publishIDs(t, ctx, a, topic, run+"-go")
				got := map[string]string{}
				for len(got) < 3 {
					d := recvOrFail(t, ctx, sub)
					got[d.Message.ID] = string(d.Message.Payload)
					if err := d.Ack(ctx); err != nil {
						t.Fatalf("ack: %v", err)
					}
				}
				if got[run+"-rest"] == "" || got[run+"-cli"] != "from cli" || got[run+"-go"] == "" {
					t.Fatalf("the group got %q, want the REST, CLI and Go client messages", got)
				}
			})

			// Deliveries in flight at a graceful shutdown come back after the
			// restart, as redeliveries.
			topic := prefix + ".inflight"
			sub := subscribeGroup(t, ctx, a, topic, run+"-inflight")
			ids := []string{run + "-if-1", run + "-if-2", run + "-if-3"}
			publishIDs(t, ctx, a, topic, ids...)
			for range ids { // received, never acked
				recvOrFail(t, ctx, sub)
			}
			crashTopic := prefix + ".crash"
			closeOrFail(t, subscribeGroup(t, ctx, a, crashTopic, run+"-crash")) // the group exists before the crash
			h.restart(t)
			_ = a.Close() // its hub is gone

			b := openClient(t, ctx, h, adminToken)
			got := consumeGroup(t, ctx, b, topic, run+"-inflight", func(seen map[string]int) bool { return len(seen) >= len(ids) })
			for _, id := range ids {
				if got[id] < 2 {
					t.Errorf("in-flight message %s after SIGTERM and restart: attempt %d, want a redelivery (>= 2)", id, got[id])
				}
			}

			// SIGKILL while publishers publish; every acknowledged message
			// survives.
			acked := publishUntilKilled(t, ctx, b, h, crashTopic, run)
			_ = b.Close()
			h.startAgain(t)
			c := openClient(t, ctx, h, adminToken)
			seen := consumeGroup(t, ctx, c, crashTopic, run+"-crash", func(seen map[string]int) bool {
				for id := range acked {
					if seen[id] == 0 {
						return false
					}
				}
				return true
			})
			t.Logf("%d acknowledged messages before SIGKILL, all consumed after the restart (%d stored in all)", len(acked), len(seen))
		})
	}
}

// openClient connects a Go client to h with token; it is closed at cleanup.
func openClient(t *testing.T, ctx context.Context, h *hubProc, token string) *client.Broker {
	t.Helper()
	c, err := client.New(ctx, "http://"+h.addr, client.WithToken(token))
	if err != nil {
		t.Fatalf("connect to the hub: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// subscribeGroup subscribes to topic as group (new groups start at the
// latest message, which every backend supports).
func subscribeGroup(t *testing.T, ctx context.Context, b broker.Broker, topic, group string) broker.Subscription {
	t.Helper()
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: group, AckDeadline: 5 * time.Minute, MaxInFlight: 1024})
	if err != nil {
		t.Fatalf("subscribe to %s as %s: %v", topic, group, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// closeOrFail closes sub or fails the test.
func closeOrFail(t *testing.T, sub broker.Subscription) {
	t.Helper()
	if err := sub.Close(); err != nil {
		t.Fatalf("close the subscription: %v", err)
	}
}

// publishIDs publishes one message per ID to topic in one batch.
func publishIDs(t *testing.T, ctx context.Context, b broker.Broker, topic string, ids ...string) {
	t.Helper()
	ms := make([]*message.Message, len(ids))
	for i, id := range ids {
		ms[i] = &message.Message{ID: id, Payload: []byte(id)}
	}
	if _, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: ms}); err != nil {
		t.Fatalf("publish %d messages to %s: %v", len(ms), topic, err)
	}
}

// recvOrFail returns the next delivery of sub, failing the test when the
// subscription ends or ctx does first.
func recvOrFail(t *testing.T, ctx context.Context, sub broker.Subscription) *broker.Delivery {
	t.Helper()
	select {
	case d, ok := <-sub.Deliveries():
		if !ok {
			t.Fatalf("subscription ended: %v", sub.Err())
		}
		return d
	case <-ctx.Done():
		t.Fatalf("no delivery: %v", ctx.Err())
	}
	return nil
}

// publishUntilKilled runs 8 publishers of singles and batches to topic
// until at least 1000 messages are acknowledged (or 30 s passed), kills
// the hub with SIGKILL while they still publish, and returns the IDs the
// hub acknowledged.
func publishUntilKilled(t *testing.T, ctx context.Context, b broker.Broker, h *hubProc, topic, run string) map[string]bool {
	t.Helper()
	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		stopPub = make(chan struct{})
		enough  = make(chan struct{})
		once    sync.Once
		wg      sync.WaitGroup
	)
	for p := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stopPub:
					return
				default:
				}
				var ms []*message.Message
				for j := range 1 + i%10 {
					ms = append(ms, &message.Message{ID: fmt.Sprintf("%s-p%d-%d-%d", run, p, i, j), Key: fmt.Sprint(p), Payload: []byte("crash")})
				}
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := b.Publish(pctx, &broker.PublishParams{Topic: topic, Messages: ms})
				pcancel()
				if err != nil {
					continue // the hub is gone; keep trying until told to stop
				}
				mu.Lock()
				for _, m := range ms {
					acked[m.ID] = true
				}
				if len(acked) >= 1000 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		})
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case <-enough:
	case <-timer.C:
	}
	h.kill(t) // publishers still running
	close(stopPub)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no publish was acknowledged before the kill")
	}
	return acked
}

// consumeGroup acks deliveries of group (which must exist) until done says
// so, bounded by ctx and 2 minutes, and returns the attempt of each message
// ID.
func consumeGroup(t *testing.T, ctx context.Context, b broker.Broker, topic, group string, done func(map[string]int) bool) map[string]int {
	t.Helper()
	sub := subscribeGroup(t, ctx, b, topic, group)
	defer sub.Close()
	return ackUntil(t, ctx, sub, topic, done)
}
