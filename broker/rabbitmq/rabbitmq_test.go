package rabbitmq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	sbrabbit "github.com/switchboard-dev/switchboard/broker/rabbitmq"
	"github.com/switchboard-dev/switchboard/internal/testenv"
	"github.com/switchboard-dev/switchboard/message"
)

var _ broker.Broker = (*sbrabbit.Broker)(nil)

const urlEnv = "SWITCHBOARD_AMQP_URL"

func serverURL(t testing.TB) string {
	return testenv.NeedServer(t, "RabbitMQ", urlEnv, "amqp://guest:guest@127.0.0.1:5672/")
}

// testQuery makes test queues vanish once unused.
const testQuery = "queue_expires=2m"

func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}

func open(t testing.TB, query string) *sbrabbit.Broker {
	t.Helper()
	u := withQuery(serverURL(t), testQuery)
	if query != "" {
		u = withQuery(u, query)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := sbrabbit.Open(ctx, u)
	if err != nil {
		t.Fatalf("Open: %v", err)
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

func TestConformanceQuorum(t *testing.T) {
	serverURL(t)
	brokertest.Run(t, harness(""))
}

// TestRuntime runs the consumer-runtime section of the suite on RabbitMQ
// (per-key order emulated by the runtime).
func TestRuntime(t *testing.T) {
	serverURL(t)
	brokertest.RunRuntime(t, harness(""))
}

func TestConformanceClassic(t *testing.T) {
	serverURL(t)
	brokertest.Run(t, harness("queue_type=classic"))
}

func TestOpenErrors(t *testing.T) {
	open := func(ctx context.Context, u string) (broker.Broker, error) { return sbrabbit.Open(ctx, u) }
	brokertest.CheckOpen(t, open, 6*time.Second, []brokertest.OpenCase{
		{URL: "amqp://guest:guest@127.0.0.1:1/", Want: broker.ErrUnavailable},
		{URL: "amqp://", Want: broker.ErrBadURL},
		{URL: "amqp://guest:guest@127.0.0.1:5672/?queue_type=stream", Want: broker.ErrBadURL},
		{URL: "amqp://guest:guest@127.0.0.1:5672/?nope=1", Want: broker.ErrBadURL},
	})
}

func TestBadCredentials(t *testing.T) {
	u := serverURL(t)
	bad := strings.Replace(u, "guest:guest@", "guest:wrong@", 1)
	if bad == u {
		t.Skip("URL has no guest:guest credentials to spoil")
	}
	_, err := sbrabbit.Open(context.Background(), bad)
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	if strings.Contains(err.Error(), "wrong") || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("error = %v; want one that says the credentials were refused, without the password", err)
	}
}

func TestMandatory(t *testing.T) {
	b := open(t, "mandatory=true")
	_, err := b.Publish(context.Background(), &broker.PublishParams{Topic: brokertest.Topic(t), Messages: []*message.Message{{Payload: []byte("x")}}})
	if !errors.Is(err, broker.ErrTopicNotFound) {
		t.Fatalf("unroutable publish with mandatory=true: %v", err)
	}
}

// TestInterop: Switchboard → plain amqp091-go and plain amqp091-go →
// Switchboard, headers both ways.
func TestInterop(t *testing.T) {
	b := open(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := brokertest.Topic(t)

	conn, err := amqp.Dial(serverURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, topic, "switchboard", false, nil); err != nil {
		t.Fatal(err)
	}
	raw, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{
		ID: "id-1", Key: "k1", ContentType: "text/plain", Payload: []byte("hello"), Headers: map[string]string{"x-trace": "t1"},
	}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-raw:
		if string(d.Body) != "hello" || d.MessageId != "id-1" || d.ContentType != "text/plain" || d.RoutingKey != topic {
			t.Errorf("raw delivery %q id %q type %q key %q", d.Body, d.MessageId, d.ContentType, d.RoutingKey)
		}
		if d.Headers["x-trace"] != "t1" || d.Headers["Sb-Key"] != "k1" {
			t.Errorf("raw headers %v", d.Headers)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("plain consumer got nothing")
	}

	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: brokertest.Group(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := ch.PublishWithContext(ctx, "switchboard", topic, false, false, amqp.Publishing{
		MessageId: "plain-1", ContentType: "text/plain", Body: []byte("from-amqp"),
		Headers: amqp.Table{"x-origin": "plain", "Sb-Key": "k2", "x-num": int32(7)},
	}); err != nil {
		t.Fatal(err)
	}
	d := brokertest.Receive(t, sub, 5*time.Second)
	m := d.Message
	if string(m.Payload) != "from-amqp" || m.ID != "plain-1" || m.Key != "k2" || m.Header("x-origin") != "plain" || m.Header("x-num") != "7" || m.Topic != topic {
		t.Errorf("delivered %+v", m)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestReconnect(t *testing.T) {
	testenv.CheckReconnect(t, withQuery(serverURL(t), testQuery), func(t *testing.T, u string) broker.Broker {
		b, err := sbrabbit.Open(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
