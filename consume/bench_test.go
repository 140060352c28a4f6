package consume_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

// BenchmarkHandle compares handler throughput through the runtime with the
// embedded backend used directly (workers ranging over Deliveries,
// json.Unmarshal, Ack), as bench/runtime.go does, with b.N messages
// published first. Run with -benchmem to see allocations per message.
func BenchmarkHandle(b *testing.B) {
	const conc = 8
	payload, _ := json.Marshal(order{ID: "o-123456", Total: 4200})
	setup := func(b *testing.B) *embedded.Broker {
		b.Helper()
		br, err := embedded.OpenMemory(embedded.WithGroupMaxQueued(b.N + 1000))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { br.Close() })
		batch := make([]*message.Message, 0, 500)
		for i := 0; i < b.N; i++ {
			batch = append(batch, &message.Message{Payload: payload, ContentType: "application/json"})
			if len(batch) == cap(batch) || i == b.N-1 {
				if _, err := br.Publish(context.Background(), &broker.PublishParams{Topic: "bench", Messages: batch}); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		return br
	}
	start := broker.StartPosition{Kind: broker.StartEarliest}
	b.Run("direct", func(b *testing.B) {
		br := setup(b)
		sub, err := br.Subscribe(context.Background(), &broker.SubscribeParams{Topic: "bench", Group: "g", Start: start, MaxInFlight: 2 * conc})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		var done atomic.Int64
		finished := make(chan struct{})
		b.ReportAllocs()
		b.ResetTimer()
		var wg sync.WaitGroup
		for range conc {
			wg.Go(func() {
				for {
					select {
					case <-finished:
						return
					case d := <-sub.Deliveries():
						var o order
						if json.Unmarshal(d.Message.Payload, &o) != nil {
							d.Term(context.Background(), "decode")
							continue
						}
						if d.Ack(context.Background()) == nil && done.Add(1) == int64(b.N) {
							close(finished)
						}
					}
				}
			})
		}
		wg.Wait()
	})
	b.Run("runtime", func(b *testing.B) {
		br := setup(b)
		rt := consume.New(br, &consume.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		var done atomic.Int64
		finished := make(chan struct{})
		h := consume.Func(func(ctx context.Context, o *order) error {
			if done.Add(1) == int64(b.N) {
				close(finished)
			}
			return nil
		})
		if err := rt.Handle("bench", "g", h, consume.Concurrency(conc), consume.Subscribe(func(p *broker.SubscribeParams) { p.Start = start })); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		b.ReportAllocs()
		b.ResetTimer()
		go func() { ran <- rt.Run(ctx) }()
		<-finished
		for rt.Stats()[0].Acked < int64(b.N) {
			time.Sleep(50 * time.Microsecond)
		}
		b.StopTimer()
		cancel()
		if err := <-ran; err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkHandlerCall is the cost of one handler call (decode included):
// Func (generic) vs HandlerOf (a function checked by reflection once).
func BenchmarkHandlerCall(b *testing.B) {
	payload, _ := json.Marshal(order{ID: "o-123456", Total: 4200})
	m := &message.Message{Payload: payload, ContentType: "application/json"}
	fn := func(ctx context.Context, o *order) error { return nil }
	of, err := consume.HandlerOf(fn)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		h    consume.Handler
	}{{"Func", consume.Func(fn)}, {"HandlerOf", of}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := consume.CallHandler(context.Background(), c.h, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
