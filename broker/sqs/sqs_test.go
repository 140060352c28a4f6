package sqs_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	_ "github.com/switchboard-dev/switchboard/broker/embedded"
	sbsqs "github.com/switchboard-dev/switchboard/broker/sqs"
	"github.com/switchboard-dev/switchboard/internal/awshttp"
	"github.com/switchboard-dev/switchboard/message"
	"github.com/switchboard-dev/switchboard/sqsface"
)

// face starts Switchboard's SQS face over a fresh embedded engine, in
// process, and returns its endpoint.
func face(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	eng, err := broker.Open(context.Background(), "embedded://"+dir+"/engine?dedup_window=5m")
	if err != nil {
		t.Fatal(err)
	}
	f, err := sqsface.NewFace(eng, &sqsface.Config{Dir: dir + "/sqs"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	t.Cleanup(func() {
		srv.Close()
		_ = f.Close()
		_ = eng.Close()
	})
	return srv.URL
}

func sqsURL(endpoint, query string) string {
	u := "sqs://dev:dev@?region=us-east-1&endpoint=" + endpoint
	if query != "" {
		u += "&" + query
	}
	return u
}

func open(t testing.TB, endpoint, query string) *sbsqs.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := sbsqs.Open(ctx, sqsURL(endpoint, query))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func harness(endpoint, query string) brokertest.Harness {
	return brokertest.Harness{
		Slow: 2,
		Open: func(t *testing.T) broker.Broker { return open(t, endpoint, query) },
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			_ = b.Close()
			return open(t, endpoint, query)
		},
	}
}

func TestConformanceStandard(t *testing.T) {
	brokertest.Run(t, harness(face(t), ""))
}

func TestConformanceFIFO(t *testing.T) {
	brokertest.Run(t, harness(face(t), "fifo=true"))
}

// TestRuntime runs the consumer-runtime section of the suite on standard
// and FIFO queues.
func TestRuntime(t *testing.T) {
	endpoint := face(t)
	t.Run("Standard", func(t *testing.T) { brokertest.RunRuntime(t, harness(endpoint, "")) })
	t.Run("FIFO", func(t *testing.T) { brokertest.RunRuntime(t, harness(endpoint, "fifo=true")) })
}

func rawClient(endpoint string) *awssqs.Client {
	return awssqs.New(awssqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  aws.AnonymousCredentials{},
		HTTPClient:   awshttp.NewClient(16),
	})
}

// TestInterop: Switchboard → plain SDK ReceiveMessage, and plain SDK
// SendMessage → Switchboard, with headers both ways.
func TestInterop(t *testing.T) {
	ep := face(t)
	b := open(t, ep, "")
	c := rawClient(ep)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic, group := brokertest.Topic(t), brokertest.Group(t)

	// A group's queue exists once the group subscribed; close it so that
	// the plain client reads the queue alone.
	x, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: group})
	if err != nil {
		t.Fatal(err)
	}
	_ = x.Close()
	q, err := c.GetQueueUrl(ctx, &awssqs.GetQueueUrlInput{QueueName: aws.String(b.QueueName(topic, group))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{
		ID: "id-1", Key: "k1", ContentType: "text/plain", Payload: []byte("hello"), Headers: map[string]string{"x-trace": "t1"},
	}}}); err != nil {
		t.Fatal(err)
	}
	out, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 5, MessageAttributeNames: []string{"All"}})
	if err != nil || len(out.Messages) != 1 {
		t.Fatalf("ReceiveMessage: %v %v", out, err)
	}
	got := out.Messages[0]
	if aws.ToString(got.Body) != "hello" {
		t.Errorf("body %q", aws.ToString(got.Body))
	}
	for k, want := range map[string]string{"Sb.Id": "id-1", "Sb.Key": "k1", "Sb.Content-Type": "text/plain", "x-trace": "t1"} {
		if v := aws.ToString(got.MessageAttributes[k].StringValue); v != want {
			t.Errorf("attribute %s = %q, want %q", k, v, want)
		}
	}
	if _, err := c.DeleteMessage(ctx, &awssqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: got.ReceiptHandle}); err != nil {
		t.Fatal(err)
	}

	// The reverse: a plain SendMessage reaches the Switchboard group.
	x, err = b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: group})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if _, err := c.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("from-sdk"),
		MessageAttributes: map[string]types.MessageAttributeValue{
			"x-origin": {DataType: aws.String("String"), StringValue: aws.String("plain")},
			"Sb.Key":   {DataType: aws.String("String"), StringValue: aws.String("k2")},
		}}); err != nil {
		t.Fatal(err)
	}
	d := brokertest.Receive(t, x, 10*time.Second)
	if string(d.Message.Payload) != "from-sdk" || d.Message.Key != "k2" || d.Message.Header("x-origin") != "plain" ||
		!strings.HasPrefix(d.Message.ID, "sqs:") || d.Info.Attempt != 1 || d.Message.Topic != topic {
		t.Errorf("delivered %+v %+v", d.Message, d.Info)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestHoldingQueue: a publish to a topic without a group queue is kept in
// the topic's holding queue, not dropped.
func TestHoldingQueue(t *testing.T) {
	ep := face(t)
	b := open(t, ep, "")
	c := rawClient(ep)
	ctx := context.Background()
	topic := brokertest.Topic(t)
	brokertest.Publish(t, b, topic, &message.Message{Payload: []byte("nobody yet")})
	q, err := c.GetQueueUrl(ctx, &awssqs.GetQueueUrlInput{QueueName: aws.String(b.QueueName(topic, ""))})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.ReceiveMessage(ctx, &awssqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 2})
	if err != nil || len(out.Messages) != 1 || aws.ToString(out.Messages[0].Body) != "nobody yet" {
		t.Fatalf("holding queue: %+v %v", out, err)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want error
	}{
		{"sqs://?region=us-east-1&endpoint=http://127.0.0.1:1", broker.ErrUnavailable},
		{"sqs://?endpoint=http://127.0.0.1:9324", broker.ErrBadURL},
		{"sqs://127.0.0.1:9324?region=us-east-1", broker.ErrBadURL},
		{"sqs://?region=us-east-1&endpoint=ftp://x", broker.ErrBadURL},
		{"sqs://?region=us-east-1&nope=1", broker.ErrBadURL},
		{"sqs://?region=us-east-1&wait_time=60s", broker.ErrBadURL},
	} {
		start := time.Now()
		_, err := broker.Open(context.Background(), strings.Replace(tc.url, "sqs://", "sqs://dev:dev@", 1)+"&dial_timeout=2s")
		if !errors.Is(err, tc.want) {
			t.Errorf("Open(%q) = %v, want %v", tc.url, err, tc.want)
			continue
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("Open(%q) took %s, more than the dial timeout", tc.url, el)
		}
		if tc.want == broker.ErrUnavailable && !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("error does not name the address: %v", err)
		}
	}
}

// TestTooLarge: over SQS's 256 KiB the message is refused before sending,
// naming both limits.
func TestTooLarge(t *testing.T) {
	ep := face(t)
	b := open(t, ep, "")
	for _, n := range []int{sbsqs.MaxPayload + 1, 300 << 10} {
		_, err := b.Publish(context.Background(), &broker.PublishParams{Topic: brokertest.Topic(t), Messages: []*message.Message{{Payload: make([]byte, n)}}})
		if !errors.Is(err, message.ErrTooLarge) {
			t.Fatalf("%d bytes: %v", n, err)
		}
		for _, want := range []string{strconv.Itoa(sbsqs.MaxPayload), strconv.Itoa(sbsqs.MaxMessageSize)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s: %v", want, err)
			}
		}
	}
	// Text that fits the payload limit but not SQS's limit with its headers.
	m := &message.Message{Payload: []byte(strings.Repeat("a", sbsqs.MaxPayload)), Headers: map[string]string{}}
	for i := range 60 {
		m.Headers["h"+strconv.Itoa(i)] = strings.Repeat("v", 250)
	}
	m.Payload = append(m.Payload, []byte(strings.Repeat("b", 250<<10-sbsqs.MaxPayload))...)
	_, err := b.Publish(context.Background(), &broker.PublishParams{Topic: brokertest.Topic(t), Messages: []*message.Message{m}})
	if err == nil {
		t.Fatal("oversized message accepted")
	}
}

func TestRefusesLongDelayAndEphemeral(t *testing.T) {
	ep := face(t)
	b := open(t, ep, "")
	m := &message.Message{Payload: []byte("x"), DeliverAt: time.Now().Add(time.Hour)}
	_, err := b.Publish(context.Background(), &broker.PublishParams{Topic: "a.b", Messages: []*message.Message{m}})
	if !errors.Is(err, broker.ErrNotSupported) || !strings.Contains(err.Error(), "15 minutes") {
		t.Errorf("1h delay: %v", err)
	}
	_, err = b.Subscribe(context.Background(), &broker.SubscribeParams{Topic: "a.b"})
	if !errors.Is(err, broker.ErrNotSupported) {
		t.Errorf("ephemeral: %v", err)
	}
}
