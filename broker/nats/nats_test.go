package nats_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	sbnats "github.com/switchboard-dev/switchboard/broker/nats"
	"github.com/switchboard-dev/switchboard/internal/testenv"
	"github.com/switchboard-dev/switchboard/message"
)

var _ broker.Broker = (*sbnats.Broker)(nil)

const urlEnv = "SWITCHBOARD_NATS_URL"

func serverURL(t testing.TB) string {
	return testenv.NeedServer(t, "NATS (JetStream)", urlEnv, "nats://127.0.0.1:4222")
}

func open(t testing.TB) *sbnats.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Test groups vanish once unused.
	u := serverURL(t)
	if strings.Contains(u, "?") {
		u += "&consumer_inactive=10m"
	} else {
		u += "?consumer_inactive=10m"
	}
	b, err := sbnats.Open(ctx, u)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	serverURL(t)
	brokertest.Run(t, brokertest.Harness{
		Slow: 2, // a real server over the network, shared with parallel subtests
		Open: func(t *testing.T) broker.Broker { return open(t) },
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			_ = b.Close()
			return open(t)
		},
	})
}

// TestRuntime runs the consumer-runtime section of the suite on JetStream
// (per-key order emulated by the runtime).
func TestRuntime(t *testing.T) {
	serverURL(t)
	brokertest.RunRuntime(t, brokertest.Harness{Slow: 2, Open: func(t *testing.T) broker.Broker { return open(t) }})
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url  string
		want error
	}{
		{"nats://127.0.0.1:1", broker.ErrUnavailable},
		{"nats://", broker.ErrBadURL},
		{"nats://127.0.0.1:4222?nope=1", broker.ErrBadURL},
		{"nats://127.0.0.1:4222?dial_timeout=x", broker.ErrBadURL},
	} {
		start := time.Now()
		_, err := sbnats.Open(ctx, tc.url)
		if !errors.Is(err, tc.want) {
			t.Errorf("Open(%q) = %v, want %v", tc.url, err, tc.want)
			continue
		}
		if time.Since(start) > 6*time.Second {
			t.Errorf("Open(%q) took %s", tc.url, time.Since(start))
		}
		if tc.want == broker.ErrUnavailable && !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("Open(%q) error does not name the address: %v", tc.url, err)
		}
	}
}

func TestBadCredentials(t *testing.T) {
	u := serverURL(t)
	// The local server has no authentication: credentials are ignored, so
	// only check that a URL with them opens or fails with a clear error.
	withUser := strings.Replace(u, "nats://", "nats://nobody:wrong@", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := sbnats.Open(ctx, withUser)
	if err != nil {
		if strings.Contains(err.Error(), "wrong") {
			t.Fatalf("error leaks the password: %v", err)
		}
		return
	}
	_ = b.Close()
}

// TestInterop: Switchboard → plain nats.go and plain nats.go → Switchboard,
// headers both ways.
func TestInterop(t *testing.T) {
	b := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := brokertest.Topic(t)

	nc, err := natsgo.Connect(serverURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	// Switchboard publishes; a plain JetStream consumer reads.
	res, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{
		ID: "id-1", Key: "k1", ContentType: "text/plain", Payload: []byte("hello"),
		Headers: map[string]string{"x-trace": "t1"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.StreamNameBySubject(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetMsg(ctx, res.Results[0].Seq)
	if err != nil {
		t.Fatalf("GetMsg: %v", err)
	}
	if string(raw.Data) != "hello" || raw.Subject != topic {
		t.Errorf("raw message = %q on %q, want %q on %q", raw.Data, raw.Subject, "hello", topic)
	}
	for k, want := range map[string]string{"x-trace": "t1", "Sb-Key": "k1", "Sb-Content-Type": "text/plain", "Nats-Msg-Id": topic + "/id-1", "Sb-Id": "id-1"} {
		if got := raw.Header.Get(k); got != want {
			t.Errorf("raw header %s = %q, want %q", k, got, want)
		}
	}

	// A plain client publishes; a Switchboard group reads.
	g := brokertest.Group(t)
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: g})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	nm := natsgo.NewMsg(topic)
	nm.Data = []byte("from-nats")
	nm.Header.Set("x-origin", "plain")
	plainID := "plain-" + message.NewID() // the stream's dedup window outlives one test run
	nm.Header.Set(natsgo.MsgIdHdr, plainID)
	nm.Header.Set("Sb-Key", "k2")
	if _, err := js.PublishMsg(ctx, nm); err != nil {
		t.Fatal(err)
	}
	d := brokertest.Receive(t, sub, 5*time.Second)
	if string(d.Message.Payload) != "from-nats" || d.Message.ID != plainID || d.Message.Key != "k2" || d.Message.Header("x-origin") != "plain" {
		t.Errorf("delivered %+v", d.Message)
	}
	if _, ok := d.Message.Headers[natsgo.MsgIdHdr]; ok {
		t.Error("Nats-Msg-Id leaked into the user headers")
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}

	// Dead letters land on "_sbdlq.<group>" where plain clients can read them.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestDeadLetterSubject(t *testing.T) {
	b := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := brokertest.Topic(t)
	g := brokertest.Group(t)
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: g})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	nc, err := natsgo.Connect(serverURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	raw, err := nc.SubscribeSync("_sbdlq." + g)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{Payload: []byte("poison")}}}); err != nil {
		t.Fatal(err)
	}
	d := brokertest.Receive(t, sub, 5*time.Second)
	if err := d.Term(ctx, "bad"); err != nil {
		t.Fatal(err)
	}
	m, err := raw.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(message.HeaderDLQReason) != "bad" || m.Header.Get(message.HeaderDLQTopic) != topic {
		t.Errorf("dead letter headers %v", m.Header)
	}
}

func TestReconnect(t *testing.T) {
	testenv.CheckReconnect(t, serverURL(t), func(t *testing.T, u string) broker.Broker {
		b, err := sbnats.Open(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestCloseStopsPulling: closing a group subscription releases the messages
// it pulled but did not hand out, and pulls no more: each pull after Close
// would deliver and nak the released messages once more, spending their
// attempts until MaxDeliver drops them.
func TestCloseStopsPulling(t *testing.T) {
	b := open(t)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	p := broker.SubscribeParams{Topic: topic, Group: group, MaxAttempts: 10, Start: broker.StartPosition{Kind: broker.StartEarliest}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const n, cycles = 10, 5
	var msgs []*message.Message
	for i := range n {
		msgs = append(msgs, &message.Message{Payload: []byte{byte('a' + i)}})
	}
	res := brokertest.Publish(t, b, topic, msgs...)

	nc, err := natsgo.Connect(serverURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.StreamNameBySubject(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	delivered := func() uint64 {
		t.Helper()
		c, err := js.Consumer(ctx, stream, group)
		if err != nil {
			t.Fatal(err)
		}
		ci, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ci.Delivered.Consumer
	}

	var before uint64
	for i := range cycles {
		sub, err := b.Subscribe(ctx, &p)
		if err != nil {
			t.Fatal(err)
		}
		brokertest.Receive(t, sub, 10*time.Second) // held, released by Close
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		// Every message is delivered at most once per subscription here:
		// one Receive blocks the pull loop, and the released messages come
		// back only after the last pull request has ended.
		after := delivered()
		if after-before > n {
			t.Errorf("cycle %d: %d deliveries of %d messages: the subscription pulled again after Close", i, after-before, n)
		}
		before = after
	}
	sub, err := b.Subscribe(ctx, &p)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	seen := map[string]bool{}
	// Past the default 30 s AckWait: under heavy load a stray delivery
	// (one the client never saw) comes back only then.
	for _, d := range brokertest.ReceiveN(t, sub, n, 40*time.Second) {
		if d.Info.Attempt > cycles+1 {
			t.Errorf("message %s: attempt %d after %d closes, want at most %d", d.Message.ID, d.Info.Attempt, cycles, cycles+1)
		}
		seen[d.Message.ID] = true
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range res.Results {
		if !seen[r.ID] {
			t.Errorf("message %s lost", r.ID)
		}
	}
}
