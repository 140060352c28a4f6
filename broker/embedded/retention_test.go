package embedded

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

func fill(t *testing.T, b *Broker, topic string, n int) {
	t.Helper()
	for i := 0; i < n; i += 50 {
		batch := make([]*message.Message, 50)
		for j := range batch {
			batch[j] = &message.Message{Payload: make([]byte, 200)}
		}
		if _, err := b.Publish(context.Background(), &broker.PublishParams{Topic: topic, Messages: batch}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRetention(t *testing.T) {
	ctx := context.Background()
	b, err := OpenMemory(WithSegmentBytes(8 << 10))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cases := []struct {
		name string
		r    broker.Retention
		keep func(info broker.TopicInfo) bool
	}{
		{"count", broker.Retention{MaxCount: 300}, func(i broker.TopicInfo) bool { return i.Messages >= 300 && i.Messages < 400 }},
		{"bytes", broker.Retention{MaxBytes: 40 << 10}, func(i broker.TopicInfo) bool { return i.Bytes >= 40<<10 && i.Bytes < 56<<10 }},
		{"age", broker.Retention{MaxAge: time.Hour}, func(i broker.TopicInfo) bool { return i.Messages == 1000 }},
	}
	for _, c := range cases {
		name := "ret." + c.name
		if err := b.CreateTopic(ctx, broker.TopicConfig{Name: name, Retention: c.r}); err != nil {
			t.Fatal(err)
		}
		fill(t, b, name, 1000)
		b.applyRetention(time.Now())
		info, _ := b.DescribeTopic(ctx, name)
		if !c.keep(info) {
			t.Errorf("%s retention %+v kept %d messages / %d bytes (seq %d..%d)", c.name, c.r, info.Messages, info.Bytes, info.FirstSeq, info.LastSeq)
		}
		if info.LastSeq != 1000 {
			t.Errorf("%s: newest message removed", c.name)
		}
	}
	// Age: everything is older than the limit two hours from now; the
	// active segment always stays.
	b.applyRetention(time.Now().Add(2 * time.Hour))
	if info, _ := b.DescribeTopic(ctx, "ret.age"); info.Messages >= 1000 || info.LastSeq != 1000 {
		t.Errorf("age retention removed nothing after the age passed: %+v", info)
	}
}

func TestWorkQueueRetention(t *testing.T) {
	ctx := context.Background()
	b, err := OpenMemory(WithSegmentBytes(8 << 10))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.CreateTopic(ctx, broker.TopicConfig{Name: "wq", Retention: broker.Retention{WorkQueue: true}}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: "wq", Group: "workers", MaxInFlight: 64})
	if err != nil {
		t.Fatal(err)
	}
	fill(t, b, "wq", 1000)
	b.applyRetention(time.Now())
	if info, _ := b.DescribeTopic(ctx, "wq"); info.FirstSeq != 1 {
		t.Fatalf("work-queue retention removed unconsumed messages: first seq %d", info.FirstSeq)
	}
	for i := 0; i < 600; i++ {
		d := <-sub.Deliveries()
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b.applyRetention(time.Now())
	info, _ := b.DescribeTopic(ctx, "wq")
	if info.FirstSeq <= 1 || info.FirstSeq > 601 {
		t.Fatalf("after 600 acks first retained seq is %d, want in (1, 601]", info.FirstSeq)
	}
	for i := 600; i < 1000; i++ { // the rest is still delivered
		select {
		case d := <-sub.Deliveries():
			d.Ack(ctx)
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d lost by retention", i+1)
		}
	}
}
