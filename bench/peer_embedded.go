//go:build !noembedded

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard"
	"github.com/switchboard-dev/switchboard/broker"
)

// embeddedPeer is Switchboard's own engine, opened in the process with its
// default durability (fsync before ack) on a fresh directory per measurement,
// so every run starts from empty segments like the peers' fresh streams.
type embeddedPeer struct {
	parent string
}

func openEmbeddedPeer(ctx context.Context, parent string) (brokerPeer, error) {
	// Probe once so a missing or broken engine is reported up front.
	dir, err := os.MkdirTemp(parent, "sb-bench-probe-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	c, err := switchboard.Open(ctx, "embedded://"+dir)
	if err != nil {
		return nil, fmt.Errorf("open embedded://%s: %w", dir, err)
	}
	if err := c.Close(); err != nil {
		return nil, fmt.Errorf("close probe: %w", err)
	}
	return &embeddedPeer{parent: parent}, nil
}

func (p *embeddedPeer) Name() string                 { return sysEmbedded }
func (p *embeddedPeer) Durability(cas string) string { return "fsync-before-ack" }
func (p *embeddedPeer) Close() error                 { return nil }

func (p *embeddedPeer) NewTopic(ctx context.Context, run string) (benchTopic, error) {
	dir, err := tempDataDir(p.parent, run)
	if err != nil {
		return nil, err
	}
	c, err := switchboard.Open(ctx, "embedded://"+dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &embeddedTopic{c: c, dir: dir, name: "bench." + run}, nil
}

type embeddedTopic struct {
	c    *switchboard.Client
	dir  string
	name string
}

func (t *embeddedTopic) PublishSync(ctx context.Context, payload []byte) error {
	_, err := t.c.Publish(ctx, t.name, switchboard.Msg{Payload: payload})
	return err
}

// StartConsumer subscribes one consumer of group "bench" with room for
// --max-inflight (default 1024) unsettled deliveries, settled by --ackers goroutines (Ack is a call into
// the engine; several settle in parallel, as a real handler pool would).
func (t *embeddedTopic) StartConsumer(ctx context.Context, n int) (consumer, error) {
	if ta, ok := t.c.Broker().(broker.TopicAdmin); ok {
		if err := ta.CreateTopic(ctx, broker.TopicConfig{Name: t.name}); err != nil {
			progress("broker: embedded CreateTopic %s: %v (continuing)", t.name, err)
		}
	}
	sub, err := t.c.Subscribe(ctx, t.name, "bench", switchboard.FromEarliest(), switchboard.MaxInFlight(benchMaxInFlight))
	if err != nil {
		return nil, err
	}
	cons := &embeddedConsumer{ackCounter: newAckCounter(n), sub: sub}
	actx, cancel := context.WithCancel(context.Background())
	cons.cancel = cancel
	for range benchAckers {
		cons.wg.Go(func() {
			for d := range sub.Deliveries() {
				if err := d.Ack(actx); err != nil {
					if actx.Err() == nil && !errors.Is(err, broker.ErrClosed) {
						cons.fail(fmt.Errorf("ack seq %d: %w", d.Info.Seq, err))
					}
					continue
				}
				cons.add(1)
			}
		})
	}
	return cons, nil
}

type embeddedConsumer struct {
	*ackCounter
	sub    broker.Subscription
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (c *embeddedConsumer) Stop() {
	_ = c.sub.Close()
	c.cancel()
	c.wg.Wait()
	if err := c.sub.Err(); err != nil {
		progress("broker: embedded subscription ended with: %v", err)
	}
}

func (t *embeddedTopic) Cleanup(ctx context.Context) error {
	err := t.c.Close()
	return errors.Join(err, os.RemoveAll(t.dir))
}

// PublishConcurrent is the engine's async path, tuned like the JetStream
// peer's: the producers share --nats-max-pending publishes in flight,
// each acknowledged only after the fsync that covers it (fsync-before-ack).
func (t *embeddedTopic) PublishConcurrent(ctx context.Context, payload []byte, n, producers int) (pubStats, error) {
	window := max(1, natsMaxPending/producers)
	var next atomic.Int64
	lats := make([][]time.Duration, producers)
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for i := range producers {
		lats[i] = make([]time.Duration, 0, n/producers+1)
		sem := make(chan struct{}, window)
		var mu sync.Mutex
		wg.Go(func() {
			var inner sync.WaitGroup
			for next.Add(1) <= int64(n) && firstErr.Load() == nil {
				sem <- struct{}{}
				inner.Add(1)
				t0 := time.Now()
				err := t.c.PublishAsync(ctx, t.name, switchboard.Msg{Payload: payload}, func(_ switchboard.PublishResult, err error) {
					if err != nil {
						firstErr.CompareAndSwap(nil, &err)
					} else {
						d := time.Since(t0)
						mu.Lock()
						lats[i] = append(lats[i], d)
						mu.Unlock()
					}
					<-sem
					inner.Done()
				})
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					<-sem
					inner.Done()
				}
			}
			inner.Wait()
		})
	}
	wg.Wait()
	end := time.Now()
	if p := firstErr.Load(); p != nil {
		return pubStats{}, *p
	}
	return pubStats{start: start, end: end, latencies: slices.Concat(lats...)}, nil
}
