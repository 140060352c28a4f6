package redis_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	sbredis "github.com/switchboard-dev/switchboard/broker/redis"
	"github.com/switchboard-dev/switchboard/internal/testenv"
	"github.com/switchboard-dev/switchboard/message"
)

var _ broker.Broker = (*sbredis.Broker)(nil)

const urlEnv = "SWITCHBOARD_REDIS_URL"

func serverURL(t testing.TB) string {
	return testenv.NeedServer(t, "Redis", urlEnv, "redis://127.0.0.1:6379")
}

func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}

func open(t testing.TB, query string) *sbredis.Broker {
	t.Helper()
	u := serverURL(t)
	if query != "" {
		u = withQuery(u, query)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := sbredis.Open(ctx, u)
	if err != nil {
		t.Fatalf("Open(%s): %v", u, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func harness(query string) brokertest.Harness {
	return brokertest.Harness{
		Slow: 2, // a real server over the network, shared with parallel subtests
		Open: func(t *testing.T) broker.Broker { return open(t, query) },
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			_ = b.Close()
			return open(t, query)
		},
	}
}

func TestConformanceStreams(t *testing.T) {
	serverURL(t)
	brokertest.Run(t, harness(""))
}

// TestRuntime runs the consumer-runtime section of the suite on Redis
// Streams (delayed retries and per-key order emulated by the runtime).
func TestRuntime(t *testing.T) {
	serverURL(t)
	brokertest.RunRuntime(t, harness(""))
}

func TestConformancePubSub(t *testing.T) {
	serverURL(t)
	brokertest.Run(t, harness("mode=pubsub"))
}

func TestPubSubRefusesGroups(t *testing.T) {
	b := open(t, "mode=pubsub")
	_, err := b.Subscribe(context.Background(), &broker.SubscribeParams{Topic: "a.b", Group: "g"})
	if !errors.Is(err, broker.ErrNotSupported) || !strings.Contains(err.Error(), "consumer group") {
		t.Fatalf("group on Pub/Sub: %v", err)
	}
	_, err = b.Subscribe(context.Background(), &broker.SubscribeParams{Topic: "a.b", AckDeadline: time.Second})
	if err == nil {
		t.Fatal("ack deadline without a group accepted")
	}
}

func TestOpenErrors(t *testing.T) {
	open := func(ctx context.Context, u string) (broker.Broker, error) { return sbredis.Open(ctx, u) }
	brokertest.CheckOpen(t, open, 6*time.Second, []brokertest.OpenCase{
		{URL: "redis://127.0.0.1:1", Want: broker.ErrUnavailable},
		{URL: "redis://", Want: broker.ErrBadURL},
		{URL: "redis://127.0.0.1:6379?mode=cluster", Want: broker.ErrBadURL},
		{URL: "redis://127.0.0.1:6379?nope=1", Want: broker.ErrBadURL},
	})
}

func TestBadCredentials(t *testing.T) {
	u := serverURL(t)
	bad := strings.Replace(u, "redis://", "redis://nobody:wrong@", 1)
	_, err := sbredis.Open(context.Background(), bad)
	if err == nil {
		t.Skip("the server accepted made-up credentials (no ACL)")
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("error leaks the password: %v", err)
	}
	if !strings.Contains(err.Error(), "credentials") {
		t.Errorf("error does not say the credentials were refused: %v", err)
	}
}

// TestInterop: Switchboard → plain go-redis (XRANGE) and plain XADD →
// Switchboard, headers both ways; Pub/Sub both ways.
func TestInterop(t *testing.T) {
	b := open(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rdb := goredis.NewClient(&goredis.Options{Addr: strings.TrimPrefix(serverURL(t), "redis://")})
	defer rdb.Close()
	topic := brokertest.Topic(t)

	if _, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{
		ID: "id-1", Key: "k1", ContentType: "text/plain", Payload: []byte("hello"), Headers: map[string]string{"x-trace": "t1"},
	}}}); err != nil {
		t.Fatal(err)
	}
	xs, err := rdb.XRange(ctx, topic, "-", "+").Result()
	if err != nil || len(xs) != 1 {
		t.Fatalf("XRANGE: %v %v", xs, err)
	}
	for k, want := range map[string]string{"Sb-Body": "hello", "Sb-Id": "id-1", "Sb-Key": "k1", "Sb-Content-Type": "text/plain", "x-trace": "t1"} {
		if got := xs[0].Values[k]; got != want {
			t.Errorf("field %s = %v, want %q", k, got, want)
		}
	}

	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: brokertest.Group(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := rdb.XAdd(ctx, &goredis.XAddArgs{Stream: topic, Values: []any{"Sb-Body", "from-redis", "x-origin", "plain", "Sb-Key", "k2"}}).Err(); err != nil {
		t.Fatal(err)
	}
	d := brokertest.Receive(t, sub, 5*time.Second)
	if string(d.Message.Payload) != "from-redis" || d.Message.Key != "k2" || d.Message.Header("x-origin") != "plain" || d.Message.ID == "" {
		t.Errorf("delivered %+v", d.Message)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}

	// Pub/Sub: a plain PUBLISH reaches a Switchboard subscriber as payload.
	ps := open(t, "mode=pubsub")
	live, err := ps.Subscribe(ctx, &broker.SubscribeParams{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := rdb.Publish(ctx, topic, "raw text").Err(); err != nil {
		t.Fatal(err)
	}
	d = brokertest.Receive(t, live, 5*time.Second)
	if string(d.Message.Payload) != "raw text" {
		t.Errorf("raw PUBLISH delivered as %q", d.Message.Payload)
	}
}

func TestReconnect(t *testing.T) {
	testenv.CheckReconnect(t, serverURL(t), func(t *testing.T, u string) broker.Broker {
		b, err := sbredis.Open(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
