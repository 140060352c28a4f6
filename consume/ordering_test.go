package consume_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

// TestOrderedByKeyUnderRetries: a failing message of key A holds back A's
// later messages only; key B proceeds meanwhile.
func TestOrderedByKeyUnderRetries(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var mu sync.Mutex
	var log []string
	failures := 0
	handle(t, rt, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		p := string(m.Payload)
		if p == "a1" && failures < 2 {
			failures++
			log = append(log, "a1-fail")
			return errors.New("a1 not yet")
		}
		log = append(log, p)
		return nil
	}), consume.OrderedByKey(), consume.Concurrency(4), consume.Retry(consume.Constant(300*time.Millisecond), 5))
	var msgs []*message.Message
	for _, p := range []string{"a1", "b1", "a2", "b2", "b3", "a3", "b4", "b5"} {
		msgs = append(msgs, &message.Message{Key: p[:1], Payload: []byte(p)})
	}
	publish(t, b, topic, msgs...)
	start(t, rt)
	eventually(t, "all handled", func() bool { return stats(t, rt).Acked == 8 })
	mu.Lock()
	defer mu.Unlock()
	idx := func(s string) int { return slices.Index(log, s) }
	if !(idx("a1") < idx("a2") && idx("a2") < idx("a3")) {
		t.Fatalf("key a out of order: %v", log)
	}
	for _, bm := range []string{"b1", "b2", "b3", "b4", "b5"} {
		if idx(bm) > idx("a1") {
			t.Fatalf("key b was held back by key a's retries: %v", log)
		}
	}
	if got := strings.Count(strings.Join(log, ","), "a1-fail"); got != 2 {
		t.Fatalf("%d failures of a1: %v", got, log)
	}
}

// TestOrderedByKeyRefusedWithoutCapability: without native ordering the
// runtime emulates it, which needs Extend; a backend with neither is
// refused.
func TestOrderedByKeyRefusedWithoutCapability(t *testing.T) {
	h := consume.Raw(func(context.Context, *message.Message) error { return nil })
	rt, _ := newRuntime(t, &noOrderingNoExtend{openEmbedded(t)})
	err := rt.Handle("t", "g", h, consume.OrderedByKey())
	if !errors.Is(err, broker.ErrNotSupported) || !strings.Contains(err.Error(), "per-key ordering") || !strings.Contains(err.Error(), "extend") {
		t.Fatalf("Handle with OrderedByKey on a backend without ordering or Extend: %v", err)
	}
	rt, _ = newRuntime(t, &noOrdering{openEmbedded(t)})
	if err := rt.Handle("t", "g", h, consume.OrderedByKey()); err != nil {
		t.Fatalf("Handle with OrderedByKey on a backend with Extend but no ordering (emulated): %v", err)
	}
}

// TestDropStale: versions 1, 3, 2, 4 of a key: 2 arrives after 3 and is
// dropped; messages without a version or key are always handled.
func TestDropStale(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	var mu sync.Mutex
	var got []string
	handle(t, rt, topic, group, consume.Raw(func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		got = append(got, string(m.Payload))
		mu.Unlock()
		return nil
	}), consume.OrderedByKey(), consume.DropStale(), consume.Concurrency(4))
	v := func(key, ver, p string) *message.Message {
		m := &message.Message{Key: key, Payload: []byte(p)}
		if ver != "" {
			m.Headers = map[string]string{message.HeaderVersion: ver}
		}
		return m
	}
	publish(t, b, topic, v("sku-1", "1", "s1"), v("sku-1", "3", "s3"), v("sku-1", "2", "s2-stale"),
		v("sku-1", "3", "s3-again"), v("sku-1", "4", "s4"), v("sku-2", "1", "o1"), v("sku-1", "", "nover"))
	start(t, rt)
	eventually(t, "all settled", func() bool { return stats(t, rt).Acked == 7 })
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(got)
	if strings.Join(got, ",") != "nover,o1,s1,s3,s4" {
		t.Fatalf("handled %v", got)
	}
	if s := stats(t, rt); s.Stale != 2 {
		t.Fatalf("stale %d, want 2", s.Stale)
	}
}
