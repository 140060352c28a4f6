package embedded_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/message"
)

// TestPublishAsync: every callback is called exactly once, acknowledged
// messages are on disk after a reopen, and a Close with publishes in flight
// answers each of them (stored or ErrClosed), never leaving one hanging.
func TestPublishAsync(t *testing.T) {
	dir := t.TempDir()
	b, err := embedded.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 5000
	var calls [n]atomic.Int32
	var acked, failed atomic.Int64
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		p := &broker.PublishParams{Topic: "async", Messages: []*message.Message{{Payload: []byte("x")}}}
		err := b.PublishAsync(ctx, p, func(res *broker.PublishResult, err error) {
			if calls[i].Add(1) != 1 {
				t.Errorf("callback %d called twice", i)
			}
			if err == nil && res.Results[0].Seq > 0 {
				acked.Add(1)
			} else if errors.Is(err, broker.ErrClosed) {
				failed.Add(1)
			} else {
				t.Errorf("publish %d: %v", i, err)
			}
			wg.Done()
		})
		if err != nil {
			if !errors.Is(err, broker.ErrClosed) {
				t.Fatal(err)
			}
			failed.Add(1)
			wg.Done()
		}
		if i == n/2 {
			go b.Close() // close with publishes in flight
		}
	}
	wg.Wait()
	b.Close()
	if acked.Load()+failed.Load() != n {
		t.Fatalf("%d acked + %d failed != %d", acked.Load(), failed.Load(), n)
	}
	b, err = embedded.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	info, err := b.DescribeTopic(ctx, "async")
	if err != nil {
		t.Fatal(err)
	}
	if info.Messages < acked.Load() {
		t.Fatalf("%d acknowledged, %d stored after reopen", acked.Load(), info.Messages)
	}
	if err := b.PublishAsync(ctx, &broker.PublishParams{Topic: "bad topic", Messages: []*message.Message{{}}}, func(*broker.PublishResult, error) {
		t.Error("callback called for refused input")
	}); !errors.Is(err, message.ErrInvalid) {
		t.Fatalf("refused input: %v", err)
	}
}
