package kafka_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	sbkafka "github.com/switchboard-dev/switchboard/broker/kafka"
	"github.com/switchboard-dev/switchboard/message"
)

var _ broker.Broker = (*sbkafka.Broker)(nil)
var _ broker.AsyncPublisher = (*sbkafka.Broker)(nil)

var (
	clusterOnce sync.Once
	cluster     *kfake.Cluster
	clusterErr  error
)

// seeds returns the address list of the in-process kfake cluster shared by
// the package's tests (started on first use, closed in TestMain).
func seeds(t testing.TB) string {
	t.Helper()
	clusterOnce.Do(func() {
		cluster, clusterErr = kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second))
	})
	if clusterErr != nil {
		t.Fatalf("kfake cluster: %v", clusterErr)
	}
	return strings.Join(cluster.ListenAddrs(), ",")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		cluster.Close()
	}
	os.Exit(code)
}

// testURL is the URL of the kfake cluster with group timings suited to
// tests (members that come and go every few hundred milliseconds).
func testURL(t testing.TB, extra string) string {
	u := "kafka://" + seeds(t) + "?heartbeat_interval=100ms&session_timeout=6s&rebalance_timeout=10s&commit_interval=20ms"
	if extra != "" {
		u += "&" + extra
	}
	return u
}

func open(t testing.TB, extra string) *sbkafka.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := sbkafka.Open(ctx, testURL(t, extra))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Harness{
		Slow: 2, // kfake runs in this process and shares its CPU with the parallel clauses
		Open: func(t *testing.T) broker.Broker { return open(t, "") },
		Reopen: func(t *testing.T, b broker.Broker) broker.Broker {
			if err := b.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return open(t, "")
		},
	})
}

// TestRuntime runs the consumer-runtime section of the suite on Kafka
// (kfake; delayed retries emulated by the runtime).
func TestRuntime(t *testing.T) {
	brokertest.RunRuntime(t, brokertest.Harness{Slow: 2, Open: func(t *testing.T) broker.Broker { return open(t, "") }})
}

// TestConformancePartitions runs the suite on topics of three partitions:
// sequences then carry the partition, and a group's records come from
// several partitions.
func TestConformancePartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	brokertest.Run(t, brokertest.Harness{
		Slow: 2,
		Open: func(t *testing.T) broker.Broker { return open(t, "partitions=3") },
	})
}

func TestOpenErrors(t *testing.T) {
	open := func(ctx context.Context, u string) (broker.Broker, error) { return sbkafka.Open(ctx, u) }
	brokertest.CheckOpen(t, open, 3*time.Second, []brokertest.OpenCase{
		{URL: "kafka://127.0.0.1:1?dial_timeout=1s", Want: broker.ErrUnavailable},
		{URL: "kafka://", Want: broker.ErrBadURL},
		{URL: "kafka://user:secret@127.0.0.1:9092", Want: broker.ErrBadURL},
		{URL: "kafka://" + seeds(t) + "?nope=1", Want: broker.ErrBadURL},
		{URL: "kafka://" + seeds(t) + "?dial_timeout=x", Want: broker.ErrBadURL},
		{URL: "kafka://" + seeds(t) + "?partitions=0", Want: broker.ErrBadURL},
		{URL: "amqp://127.0.0.1:9092", Want: broker.ErrBadURL},
	})
}

func TestTopicNames(t *testing.T) {
	b := open(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, topic := range []string{"orders:eu", "_sb.x"} {
		_, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{Payload: []byte("x")}}})
		if !errors.Is(err, message.ErrInvalid) {
			t.Errorf("publish to %q: %v, want ErrInvalid", topic, err)
		} else {
			t.Logf("%s: %v", topic, err)
		}
		_, err = b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: "g"})
		if !errors.Is(err, message.ErrInvalid) {
			t.Errorf("subscribe to %q: %v, want ErrInvalid", topic, err)
		}
	}
}

func TestMessageTooLarge(t *testing.T) {
	b := open(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	caps := b.Capabilities()
	if caps.MaxPayload <= 0 || caps.MaxPayload >= 1048588 {
		t.Fatalf("MaxPayload = %d, want below kfake's message.max.bytes", caps.MaxPayload)
	}
	_, err := b.Publish(ctx, &broker.PublishParams{Topic: brokertest.Topic(t), Messages: []*message.Message{{Payload: make([]byte, caps.MaxPayload+1)}}})
	if !errors.Is(err, message.ErrTooLarge) {
		t.Fatalf("oversized publish: %v", err)
	}
	for _, want := range []string{"message.max.bytes is 1048588", "limit of " + strconv.Itoa(caps.MaxPayload)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestInterop: Switchboard → plain kgo and plain kgo → Switchboard, headers
// both ways.
func TestInterop(t *testing.T) {
	b := open(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := brokertest.Topic(t)

	res, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{
		ID: "id-1", Key: "k1", ContentType: "text/plain", Payload: []byte("hello"),
		Headers: map[string]string{"x-trace": "t1"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Results[0].Seq != 1 {
		t.Errorf("Seq of the first record of a one-partition topic = %d, want 1 (offset 0 + 1)", res.Results[0].Seq)
	}
	plain, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(seeds(t), ",")...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var r *kgo.Record
	for r == nil && ctx.Err() == nil {
		if rs := plain.PollRecords(ctx, 1).Records(); len(rs) > 0 {
			r = rs[0]
		}
	}
	if r == nil {
		t.Fatal("plain client read nothing")
	}
	if string(r.Value) != "hello" || string(r.Key) != "k1" || r.Offset != 0 {
		t.Errorf("raw record value %q key %q offset %d", r.Value, r.Key, r.Offset)
	}
	hdr := map[string]string{}
	for _, h := range r.Headers {
		hdr[h.Key] = string(h.Value)
	}
	for k, want := range map[string]string{"x-trace": "t1", "Sb-Id": "id-1", "Sb-Content-Type": "text/plain"} {
		if hdr[k] != want {
			t.Errorf("raw header %s = %q, want %q (all: %v)", k, hdr[k], want, hdr)
		}
	}
	if _, ok := hdr["Sb-Key"]; ok {
		t.Error("the key travels as the record key, not as an Sb-Key header")
	}

	// A plain producer publishes; a Switchboard group reads.
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: brokertest.Group(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	producer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(seeds(t), ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	pr := &kgo.Record{Topic: topic, Key: []byte("k2"), Value: []byte("from-kgo"),
		Headers: []kgo.RecordHeader{{Key: "x-origin", Value: []byte("plain")}}}
	if err := producer.ProduceSync(ctx, pr).FirstErr(); err != nil {
		t.Fatal(err)
	}
	d := brokertest.Receive(t, sub, 10*time.Second)
	m := d.Message
	if string(m.Payload) != "from-kgo" || m.Key != "k2" || m.Header("x-origin") != "plain" || m.Topic != topic {
		t.Errorf("delivered %+v", m)
	}
	if want := "kafka:" + topic + ":0:1"; m.ID != want {
		t.Errorf("ID of a plain record = %q, want %q", m.ID, want)
	}
	if m.PublishedAt.IsZero() || d.Info.Seq != 2 {
		t.Errorf("PublishedAt %s, Seq %d (want the record timestamp and 2)", m.PublishedAt, d.Info.Seq)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}

	// Dead letters land on "_sb.dlq.<group>" where plain clients read them.
	g := brokertest.Group(t)
	sub2, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: topic, Group: g, Start: broker.StartPosition{Kind: broker.StartEarliest}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	d = brokertest.Receive(t, sub2, 10*time.Second)
	if err := d.Term(ctx, "bad"); err != nil {
		t.Fatal(err)
	}
	dlq, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(seeds(t), ",")...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"_sb.dlq." + g: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.Close()
	r = nil
	for r == nil && ctx.Err() == nil {
		if rs := dlq.PollRecords(ctx, 1).Records(); len(rs) > 0 {
			r = rs[0]
		}
	}
	if r == nil {
		t.Fatal("no dead letter on _sb.dlq." + g)
	}
	hdr = map[string]string{}
	for _, h := range r.Headers {
		hdr[h.Key] = string(h.Value)
	}
	if hdr[message.HeaderDLQReason] != "bad" || hdr[message.HeaderDLQTopic] != topic || hdr[message.HeaderDLQGroup] != g {
		t.Errorf("dead letter headers %v", hdr)
	}
}

// TestOutOfOrderAcks: a later ack never commits past an earlier unacked
// record; after the subscription closes, only the unacked record comes
// back, and acked ones do not (the commit metadata keeps them).
func TestOutOfOrderAcks(t *testing.T) {
	b := open(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	p := &broker.SubscribeParams{Topic: topic, Group: group}
	sub, err := b.Subscribe(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]*message.Message, 5)
	for i := range msgs {
		msgs[i] = &message.Message{Payload: []byte{byte('a' + i)}}
	}
	if _, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	ds := brokertest.ReceiveN(t, sub, 5, 10*time.Second)
	for i, d := range ds {
		if i == 1 {
			continue // b stays unacked
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // a few commit intervals
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	// A new broker (a restart) sees only b, redelivered.
	b2 := open(t, "")
	sub2, err := b2.Subscribe(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	d := brokertest.Receive(t, sub2, 10*time.Second)
	if string(d.Message.Payload) != "b" || d.Info.Attempt != 2 || !d.Info.Redelivered {
		t.Errorf("after restart got %q attempt %d redelivered %t, want b attempt 2 redelivered", d.Message.Payload, d.Info.Attempt, d.Info.Redelivered)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	brokertest.ExpectNone(t, sub2, 500*time.Millisecond)
}

func TestPublishAsync(t *testing.T) {
	b := open(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := brokertest.Topic(t)
	const n = 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	seqs := map[uint64]bool{}
	for i := range n {
		wg.Add(1)
		err := b.PublishAsync(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{{Payload: []byte{byte(i)}}}},
			func(r *broker.PublishResult, err error) {
				defer wg.Done()
				if err != nil {
					t.Errorf("async publish: %v", err)
					return
				}
				mu.Lock()
				seqs[r.Results[0].Seq] = true
				mu.Unlock()
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if len(seqs) != n {
		t.Errorf("%d distinct sequences, want %d", len(seqs), n)
	}
	err := b.PublishAsync(ctx, &broker.PublishParams{Topic: "bad topic", Messages: []*message.Message{{}}}, func(*broker.PublishResult, error) {
		t.Error("done called for a refused publish")
	})
	if !errors.Is(err, message.ErrInvalid) {
		t.Errorf("async publish to a bad topic: %v", err)
	}
}
