package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// natsPeer is NATS JetStream with a file-storage stream per measurement,
// tuned with its documented fast paths:
//
//   - publishing from many producers uses async publish (PublishAsync) with up
//     to --nats-max-pending (default 65536) acks outstanding on the
//     connection, split evenly between the producers;
//   - consuming uses a durable pull consumer with explicit acks through
//     Consume (continuous pull, 8192 messages buffered), MaxAckPending 32768
//     (deeper buffers measured faster here: 1024/8192 gave ~66k e2e msg/s,
//     8192/32768 ~87k at 128 B),
//     and Ack (sent without waiting for the server's confirmation; the
//     consumer flushes the connection after the last one, so every ack has
//     reached the server when the clock stops).
//
// JetStream's file store does not fsync each message (the server's
// sync_interval, default 2 min, fsyncs in the background); the durability
// field says so.
type natsPeer struct {
	url    string
	pubNC  *nats.Conn // producers
	subNC  *nats.Conn // consumer, so its pulls and acks don't queue behind publishes
	js     jetstream.JetStream
	subJS  jetstream.JetStream
	maxPen int
	// msgID sets a unique Nats-Msg-Id on every synchronous publish, so
	// that the stream deduplicates as it does for the adapter.
	msgID bool
}

// natsMaxPending is the async-publish window of the publishing connection
// (--nats-max-pending). Measured here at 200k x 128 B: 1024 -> ~52k msg/s,
// 4096 -> ~89k, 16384 -> ~110k, 65536 -> ~142k; the default gives JetStream
// its best figure.
var natsMaxPending = 65536

func openNATSPeer(ctx context.Context, url string) (brokerPeer, error) {
	pub, err := nats.Connect(url, nats.Name("sb-bench-pub"), nats.Timeout(3*time.Second))
	if err != nil {
		return nil, fmt.Errorf("NATS not reachable at %s: %w", url, err)
	}
	sub, err := nats.Connect(url, nats.Name("sb-bench-sub"), nats.Timeout(3*time.Second))
	if err != nil {
		pub.Close()
		return nil, fmt.Errorf("NATS not reachable at %s: %w", url, err)
	}
	js, err := jetstream.New(pub, jetstream.WithPublishAsyncMaxPending(natsMaxPending))
	if err != nil {
		return nil, err
	}
	subJS, err := jetstream.New(sub)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		pub.Close()
		sub.Close()
		return nil, fmt.Errorf("JetStream not available at %s: %w", url, err)
	}
	return &natsPeer{url: url, pubNC: pub, subNC: sub, js: js, subJS: subJS, maxPen: natsMaxPending}, nil
}

func (p *natsPeer) Name() string { return sysNATS }

func (p *natsPeer) Durability(cas string) string { return "file-no-fsync-per-msg" }

func (p *natsPeer) Close() error {
	p.pubNC.Close()
	p.subNC.Close()
	return nil
}

func (p *natsPeer) NewTopic(ctx context.Context, run string) (benchTopic, error) {
	name := "SBBENCH_" + sanitize(run)
	subj := "sbbench." + sanitize(run)
	_, err := p.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      name,
		Subjects:  []string{subj},
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy,
		Replicas:  1,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", name, err)
	}
	return &natsTopic{p: p, stream: name, subj: subj}, nil
}

type natsTopic struct {
	p      *natsPeer
	stream string
	subj   string
}

// PublishSync is js.Publish: it waits for the stream's ack.
func (t *natsTopic) PublishSync(ctx context.Context, payload []byte) error {
	if t.p.msgID {
		_, err := t.p.js.Publish(ctx, t.subj, payload, jetstream.WithMsgID(nuid.Next()))
		return err
	}
	_, err := t.p.js.Publish(ctx, t.subj, payload)
	return err
}

// PublishConcurrent is JetStream's async publish from producers goroutines,
// each keeping up to maxPending/producers acks outstanding (so the
// connection's limit is never exceeded and nothing stalls). A drainer per
// producer waits for the acks in order and times each from its PublishAsync.
func (t *natsTopic) PublishConcurrent(ctx context.Context, payload []byte, n, producers int) (pubStats, error) {
	window := max(1, t.p.maxPen/producers-1)
	type pending struct {
		start time.Time
		f     jetstream.PubAckFuture
	}
	var next atomic.Int64
	lats := make([][]time.Duration, producers)
	errs := make([]error, 2*producers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range producers {
		lats[i] = make([]time.Duration, 0, n/producers+1)
		ch := make(chan pending, window)
		wg.Go(func() { // drainer
			for p := range ch {
				select {
				case <-p.f.Ok():
					lats[i] = append(lats[i], time.Since(p.start))
				case err := <-p.f.Err():
					if errs[producers+i] == nil {
						errs[producers+i] = err
					}
					cancel()
				case <-ctx.Done():
					if errs[producers+i] == nil {
						errs[producers+i] = ctx.Err()
					}
				}
			}
		})
		wg.Go(func() { // producer
			defer close(ch)
			for next.Add(1) <= int64(n) {
				if ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				f, err := t.p.js.PublishAsync(t.subj, payload, jetstream.WithStallWait(30*time.Second))
				if err != nil {
					errs[i] = err
					cancel()
					return
				}
				select {
				case ch <- pending{t0, f}:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	end := time.Now()
	if err := firstErr(errs); err != nil {
		return pubStats{}, err
	}
	return pubStats{start: start, end: end, latencies: slices.Concat(lats...)}, nil
}

func (t *natsTopic) StartConsumer(ctx context.Context, n int) (consumer, error) {
	cons, err := t.p.subJS.CreateOrUpdateConsumer(ctx, t.stream, jetstream.ConsumerConfig{
		Durable:       "bench",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 32768,
		AckWait:       time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer: %w", err)
	}
	c := &natsConsumer{ackCounter: newAckCounter(n)}
	var acked atomic.Int64
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			c.fail(fmt.Errorf("ack: %w", err))
			return
		}
		if acked.Add(1) == int64(n) {
			// Acks are fire-and-forget; a flush (PING/PONG) makes sure the
			// server has received every one of them before the clock stops.
			if err := t.p.subNC.Flush(); err != nil {
				c.fail(fmt.Errorf("flush acks: %w", err))
				return
			}
			c.add(n)
		}
	}, jetstream.PullMaxMessages(8192), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if !errors.Is(err, jetstream.ErrNoHeartbeat) {
			progress("broker: nats consume: %v", err)
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("consume: %w", err)
	}
	c.cc = cc
	return c, nil
}

type natsConsumer struct {
	*ackCounter
	cc jetstream.ConsumeContext
}

func (c *natsConsumer) Stop() { c.cc.Stop() }

func (t *natsTopic) Cleanup(ctx context.Context) error {
	return t.p.js.DeleteStream(ctx, t.stream)
}

// sanitize keeps letters, digits, '_' (stream names and subject tokens).
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}
