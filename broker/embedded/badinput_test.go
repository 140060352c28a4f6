package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/message"
)

func publishN(t *testing.T, b *embedded.Broker, topic string, n, size int) {
	t.Helper()
	for i := 0; i < n; i++ {
		m := &message.Message{Key: fmt.Sprint(i % 7), Payload: []byte(fmt.Sprintf("%0*d", size, i))}
		if _, err := b.Publish(context.Background(), &broker.PublishParams{Topic: topic, Messages: []*message.Message{m}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDirectoryIsLocked(t *testing.T) {
	dir := t.TempDir()
	b, err := embedded.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = embedded.Open(dir)
	if !errors.Is(err, broker.ErrLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("second open: got %v, want ErrLocked naming the directory and the holder's pid", err)
	}
}

func TestCorruptSealedSegment(t *testing.T) {
	dir := t.TempDir()
	b, err := embedded.Open(dir, embedded.WithSegmentBytes(4<<10), embedded.WithDurability(embedded.DurabilityNone))
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "c.t", 200, 100) // ~6 segments
	b.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "topics", "c.t", "*.log"))
	if len(segs) < 3 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	first := segs[0]
	data, _ := os.ReadFile(first)
	data[len(data)/2] ^= 0xff // damage the middle of a sealed segment
	os.WriteFile(first, data, 0o644)

	_, err = embedded.Open(dir)
	var ce *embedded.CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, broker.ErrStorage) || ce.Path != first || !strings.Contains(err.Error(), "repair=truncate") {
		t.Fatalf("open of a damaged segment: got %v, want a CorruptError naming %s and the way out", err, first)
	}
	b, err = embedded.Open(dir, embedded.WithRepair())
	if err == nil {
		defer b.Close()
		return // repair cut the first segment and the rest still lines up
	}
	// Cutting a sealed segment leaves a gap before the next one: also a
	// precise error, never a panic.
	if !errors.Is(err, broker.ErrStorage) {
		t.Fatalf("open with repair: %v", err)
	}
}

func TestBadNamesAndSizes(t *testing.T) {
	b, err := embedded.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	_, err = b.Publish(ctx, &broker.PublishParams{Topic: "orders placed", Messages: []*message.Message{{Payload: []byte("x")}}})
	if !errors.Is(err, message.ErrInvalid) || !strings.Contains(err.Error(), "' '") {
		t.Fatalf("topic with a space: %v", err)
	}
	_, err = b.Publish(ctx, &broker.PublishParams{Topic: "$dlq.x", Messages: []*message.Message{{Payload: []byte("x")}}})
	if !errors.Is(err, message.ErrInvalid) {
		t.Fatalf("publish to a system topic: %v", err)
	}
	_, err = b.Publish(ctx, &broker.PublishParams{Topic: "big", Messages: []*message.Message{{Payload: make([]byte, 2<<20)}}})
	if !errors.Is(err, message.ErrTooLarge) {
		t.Fatalf("oversized payload: %v", err)
	}
	if _, err := embedded.Open(t.TempDir(), embedded.WithLimits(message.Limits{MaxPayload: 2 << 30, MaxIDLen: 1})); !errors.Is(err, message.ErrInvalid) {
		t.Fatalf("a 2 GiB payload limit was accepted: %v", err)
	}
	info, err := b.DescribeTopic(ctx, "big")
	if err == nil && info.Messages != 0 {
		t.Fatalf("a refused publish stored %d messages", info.Messages)
	}
}

func TestBadURLs(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{"embedded://host/x", "embedded://", "embedded:///tmp/x?durability=maybe", "embedded:///tmp/x?bogus=1", "nosuch://x"} {
		b, err := broker.Open(ctx, u)
		if err == nil {
			b.Close()
			t.Errorf("%s: opened", u)
			continue
		}
		if !errors.Is(err, broker.ErrBadURL) {
			t.Errorf("%s: got %v, want ErrBadURL", u, err)
		}
	}
}

func TestPublishAfterCloseAndClosedSubscription(t *testing.T) {
	b, err := embedded.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: "x", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "x", 1, 1)
	d := <-sub.Deliveries()
	sub.Close()
	if err := d.Ack(ctx); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("ack after subscription close: %v", err)
	}
	b.Close()
	_, err = b.Publish(ctx, &broker.PublishParams{Topic: "x", Messages: []*message.Message{{}}})
	if !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}

// TestExtendShorterDeadline: extending to a deadline shorter than the
// current one takes effect at the new time, not when the old one fires.
func TestExtendShorterDeadline(t *testing.T) {
	b, err := embedded.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: "ext", Group: "g", AckDeadline: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, b, "ext", 1, 1)
	d := <-sub.Deliveries()
	if err := d.Extend(ctx, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	select {
	case d2 := <-sub.Deliveries():
		if d2.Info.Attempt != 2 {
			t.Fatalf("redelivery attempt %d, want 2", d2.Info.Attempt)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a deadline shortened to 100ms was not honoured within 10s")
	}
}
