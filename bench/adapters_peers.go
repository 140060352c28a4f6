package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard"
	sbnats "github.com/switchboard-dev/switchboard/broker/nats"
	sbrabbit "github.com/switchboard-dev/switchboard/broker/rabbitmq"
	sbredis "github.com/switchboard-dev/switchboard/broker/redis"
)

// The backends of the adapters suite. Each opens the Switchboard adapter
// and the raw client against the same server, configured alike where the
// adapter lets the user choose (pool size, queue type, prefetch), and knows
// how to delete what the adapter creates for a topic.

// Backend names as they appear in results, before "/<side>".
const (
	adRedis  = "redis-streams"
	adRabbit = "rabbitmq"
	adNATS   = "nats-jetstream"
)

// newBackend assembles a backend from its raw side and its Switchboard side
// (nil when --sides leaves it out); closeAll runs after the sides closed.
func newBackend(c *adaptersConfig, name string, raw brokerPeer, sb *sbPeer, closeAll func()) *adapterBackend {
	be := &adapterBackend{name: name, sides: []brokerPeer{raw}}
	if sb != nil && c.wants(sideSwitchboard) {
		be.sides = append(be.sides, sb)
	}
	be.close = func() {
		for _, p := range be.sides {
			_ = p.Close()
		}
		if sb != nil && !c.wants(sideSwitchboard) {
			_ = sb.Close()
		}
		if closeAll != nil {
			closeAll()
		}
	}
	return be
}

// --- Redis Streams -----------------------------------------------------------

// openRedisAdapters opens broker/redis and, as raw, a go-redis client with
// the adapter's own options (so the same connection pool size): XADD per
// message, and --ackers consumers of one group reading XREADGROUP COUNT 256
// and settling each batch with one XACK (peer_redis.go).
func openRedisAdapters(ctx context.Context, c *adaptersConfig) (*adapterBackend, error) {
	b, err := sbredis.Open(ctx, c.redisURL)
	if err != nil {
		return nil, err
	}
	opts := *b.Client().Options()
	opts.ClientName = "sb-bench-raw"
	rdb := redis.NewClient(&opts)
	dur := "memory-no-aof"
	if v, err := rdb.ConfigGet(ctx, "appendonly").Result(); err == nil && v["appendonly"] == "yes" {
		fs, _ := rdb.ConfigGet(ctx, "appendfsync").Result()
		dur = "aof-appendfsync-" + fs["appendfsync"]
	}
	raw := renamedPeer{&redisPeer{rdb: rdb, durability: dur}, adRedis + "/" + sideRaw}
	sb := &sbPeer{
		name: adRedis + "/" + sideSwitchboard, durability: dur, c: switchboard.New(b), cfg: c,
		// The adapter's keys: the stream (the topic), the due-time hash
		// of the group, its dead-letter stream and one dedup key per
		// published message.
		cleanup: func(ctx context.Context, topic, group string) error {
			rdb := b.Client()
			if err := rdb.Del(ctx, topic, "sb:due:"+topic+":"+group, "$dlq."+group).Err(); err != nil {
				return fmt.Errorf("DEL: %w", err)
			}
			return unlinkMatching(ctx, rdb, "sb:dedup:"+topic+":*")
		},
	}
	be := newBackend(c, adRedis, raw, sb, nil)
	if c.wants(sideWatermill) {
		warnSide(be, addWatermillRedis(be, c, opts, dur))
	}
	return be, nil
}

// warnSide reports a side that could not be opened; the backend's other
// sides still run.
func warnSide(be *adapterBackend, err error) {
	if err != nil {
		progress("adapters: SKIPPED %s/%s: %v", be.name, sideWatermill, err)
	}
}

// unlinkMatching deletes every key matching pattern (SCAN + UNLINK).
func unlinkMatching(ctx context.Context, rdb *redis.Client, pattern string) error {
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return fmt.Errorf("SCAN %s: %w", pattern, err)
		}
		if len(keys) > 0 {
			if err := rdb.Unlink(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("UNLINK: %w", err)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// --- RabbitMQ ----------------------------------------------------------------

// openRabbitAdapters opens broker/rabbitmq on an exchange of its own
// ("sbbench_<nonce>", so its three exchanges can be deleted at the end) and
// the raw amqp091-go peer on "sbbench_<nonce>_raw".
func openRabbitAdapters(ctx context.Context, c *adaptersConfig) (*adapterBackend, error) {
	exchange := fmt.Sprintf("sbbench_%d", time.Now().UnixNano()%1_000_000_000)
	sbURL, err := withQuery(c.amqpURL, "exchange", exchange, "queue_type", c.queueType)
	if err != nil {
		return nil, err
	}
	raw, err := openRabbitRaw(c, exchange+"_raw")
	if err != nil {
		return nil, err
	}
	b, err := sbrabbit.Open(ctx, sbURL)
	if err != nil {
		raw.conn.Close()
		return nil, err
	}
	sb := &sbPeer{
		name: adRabbit + "/" + sideSwitchboard, durability: raw.durability, c: switchboard.New(b), cfg: c,
		// The adapter's queues: "<exchange>.<group>" and its dead-letter
		// queue "<exchange>.dlq.<group>" (the request queue is auto-delete).
		cleanup: func(ctx context.Context, topic, group string) error {
			return raw.deleteQueues(exchange+"."+group, exchange+".dlq."+group)
		},
	}
	be := newBackend(c, adRabbit, raw, sb, func() {
		_ = raw.withChannel(func(ch *amqp.Channel) error {
			for _, x := range []string{exchange, exchange + ".sys", exchange + ".req", raw.exchange} {
				if err := ch.ExchangeDelete(x, false, false); err != nil {
					return err
				}
			}
			return nil
		})
		raw.conn.Close()
	})
	if c.wants(sideWatermill) {
		warnSide(be, addWatermillRabbit(be, c, raw, exchange+"_wm"))
	}
	return be, nil
}

// rabbitRawPeer is amqp091-go used the way the adapter uses it, so that the
// ratio is the adapter's own cost: a durable topic exchange, one durable
// queue per topic of the same type (--rabbit-queue-type), persistent
// messages, and one channel in confirm mode shared by all publishers, each
// waiting for its message's confirm (PublishWithDeferredConfirm). The
// consumer is one channel with prefetch --prefetch and manual acks from
// --ackers goroutines.
type rabbitRawPeer struct {
	cfg        *adaptersConfig
	conn       *amqp.Connection
	pub        *amqp.Channel
	exchange   string
	durability string
}

func openRabbitRaw(c *adaptersConfig, exchange string) (*rabbitRawPeer, error) {
	conn, err := amqp.DialConfig(c.amqpURL, amqp.Config{
		Dial: amqp.DefaultDial(5 * time.Second), Heartbeat: 10 * time.Second,
		Properties: amqp.Table{"connection_name": "sb-bench-raw"},
	})
	if err != nil {
		return nil, fmt.Errorf("RabbitMQ not reachable at %s: %w", c.amqpURL, err)
	}
	p := &rabbitRawPeer{cfg: c, conn: conn, exchange: exchange, durability: "quorum-confirm"}
	if c.queueType == "classic" {
		p.durability = "classic-persistent-confirm"
	}
	if p.pub, err = conn.Channel(); err == nil {
		err = p.pub.Confirm(false)
	}
	if err == nil {
		err = p.pub.ExchangeDeclare(exchange, "topic", true, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("RabbitMQ publisher channel: %w", err)
	}
	return p, nil
}

func (p *rabbitRawPeer) Name() string             { return adRabbit + "/" + sideRaw }
func (p *rabbitRawPeer) Durability(string) string { return p.durability }

// Close leaves the connection to the backend's close (it deletes the
// exchanges on it).
func (p *rabbitRawPeer) Close() error { return nil }

// withChannel runs f on a short-lived channel.
func (p *rabbitRawPeer) withChannel(f func(ch *amqp.Channel) error) error {
	ch, err := p.conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	return f(ch)
}

func (p *rabbitRawPeer) deleteQueues(names ...string) error {
	return p.withChannel(func(ch *amqp.Channel) error {
		for _, q := range names {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				return fmt.Errorf("delete queue %s: %w", q, err)
			}
		}
		return nil
	})
}

func (p *rabbitRawPeer) NewTopic(ctx context.Context, run string) (benchTopic, error) {
	t := &rabbitRawTopic{p: p, queue: p.exchange + "." + sanitize(run), key: "sbb_" + sanitize(run) + ".m"}
	err := p.withChannel(func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclare(t.queue, true, false, false, false, amqp.Table{"x-queue-type": p.cfg.queueType}); err != nil {
			return fmt.Errorf("declare queue %s: %w", t.queue, err)
		}
		return ch.QueueBind(t.queue, t.key, p.exchange, false, nil)
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

type rabbitRawTopic struct {
	p     *rabbitRawPeer
	queue string
	key   string
}

func (t *rabbitRawTopic) PublishSync(ctx context.Context, payload []byte) error {
	dc, err := t.p.pub.PublishWithDeferredConfirmWithContext(ctx, t.p.exchange, t.key, false, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, Body: payload})
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	if !ok {
		return errors.New("RabbitMQ nacked the message")
	}
	return nil
}

func (t *rabbitRawTopic) StartConsumer(ctx context.Context, n int) (consumer, error) {
	ch, err := t.p.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	var msgs <-chan amqp.Delivery
	if err = ch.Qos(t.p.cfg.prefetch, 0, false); err == nil {
		msgs, err = ch.Consume(t.queue, "", false, false, false, false, nil)
	}
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("consume %s: %w", t.queue, err)
	}
	c := &rabbitConsumer{ackCounter: newAckCounter(n), ch: ch}
	for range t.p.cfg.ackers {
		c.wg.Go(func() {
			for d := range msgs {
				if err := d.Ack(false); err != nil {
					c.fail(fmt.Errorf("ack: %w", err))
					continue
				}
				c.add(1)
			}
		})
	}
	return c, nil
}

func (t *rabbitRawTopic) Cleanup(ctx context.Context) error { return t.p.deleteQueues(t.queue) }

// rabbitConsumer is a raw AMQP consumer with its ackers.
type rabbitConsumer struct {
	*ackCounter
	ch *amqp.Channel
	wg sync.WaitGroup
}

// Stop closes the channel, which ends the deliveries and so the ackers.
func (c *rabbitConsumer) Stop() {
	_ = c.ch.Close()
	c.wg.Wait()
}

// --- NATS JetStream ----------------------------------------------------------

// natsAdapterMaxAckPending and natsAdapterAckWait are what broker/nats sets
// on a group's consumer (MaxAckPending 10000, AckWait = the default ack
// deadline); the raw consumer gets the same.
const (
	natsAdapterMaxAckPending = 10000
	natsAdapterAckWait       = 30 * time.Second
)

// openNATSAdapters opens broker/nats (streams named "SBB_<first topic
// token>", so each measurement's stream is its own) and, as raw, nats.go
// jetstream on one connection as the adapter has: sync js.Publish per
// message, and a durable pull consumer read with Fetch(--prefetch) whose
// messages --ackers goroutines Ack (or DoubleAck with --nats-double-ack).
func openNATSAdapters(ctx context.Context, c *adaptersConfig) (*adapterBackend, error) {
	nc, err := nats.Connect(c.natsURL, nats.Name("sb-bench-raw"), nats.Timeout(3*time.Second))
	if err != nil {
		return nil, fmt.Errorf("NATS not reachable at %s: %w", c.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sbURL, err := withQuery(c.natsURL, "stream_prefix", "SBB_")
	if err != nil {
		nc.Close()
		return nil, err
	}
	b, err := sbnats.Open(ctx, sbURL)
	if err != nil {
		nc.Close()
		return nil, err
	}
	peer := &natsPeer{url: c.natsURL, pubNC: nc, subNC: nc, js: js, subJS: js, maxPen: natsMaxPending, msgID: c.natsMsgID}
	raw := &natsRawPeer{natsPeer: peer, cfg: c}
	sb := &sbPeer{
		name: adNATS + "/" + sideSwitchboard, durability: peer.Durability(""), c: switchboard.New(b), cfg: c,
		cleanup: func(ctx context.Context, topic, group string) error {
			first, _, _ := strings.Cut(topic, ".")
			err := js.DeleteStream(ctx, "SBB_"+first)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil
			}
			return err
		},
	}
	be := newBackend(c, adNATS, raw, sb, nc.Close)
	if c.wants(sideWatermill) {
		warnSide(be, addWatermillNATS(be, c, raw))
	}
	return be, nil
}

// natsRawPeer is natsPeer (peer_nats.go) with a consumer shaped like the
// adapter's: Fetch batches instead of Consume.
type natsRawPeer struct {
	*natsPeer
	cfg *adaptersConfig
}

func (p *natsRawPeer) Name() string { return adNATS + "/" + sideRaw }

// Close leaves the shared connection to the backend's close.
func (p *natsRawPeer) Close() error { return nil }

// NewTopic creates the stream and, as the Switchboard side does, the
// group's durable consumer up front.
func (p *natsRawPeer) NewTopic(ctx context.Context, run string) (benchTopic, error) {
	bt, err := p.natsPeer.NewTopic(ctx, run)
	if err != nil {
		return nil, err
	}
	t := &natsRawTopic{natsTopic: bt.(*natsTopic), cfg: p.cfg}
	t.cons, err = p.js.CreateOrUpdateConsumer(ctx, t.stream, jetstream.ConsumerConfig{
		Durable:       "bench",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: natsAdapterMaxAckPending,
		AckWait:       natsAdapterAckWait,
	})
	if err != nil {
		_ = t.Cleanup(ctx)
		return nil, fmt.Errorf("create consumer: %w", err)
	}
	return t, nil
}

type natsRawTopic struct {
	*natsTopic
	cfg  *adaptersConfig
	cons jetstream.Consumer
}

// StartConsumer runs one fetch loop (Fetch(--prefetch), at most 500 ms per
// pull request, as the adapter) that hands messages to --ackers goroutines.
// Plain acks are fire-and-forget: after the n-th the connection is flushed,
// so every ack has reached the server when the clock stops.
func (t *natsRawTopic) StartConsumer(ctx context.Context, n int) (consumer, error) {
	cctx, cancel := context.WithCancel(ctx)
	c := &natsFetchConsumer{ackCounter: newAckCounter(n), cancel: cancel}
	msgs := make(chan jetstream.Msg)
	c.wg.Go(func() {
		defer close(msgs)
		for cctx.Err() == nil {
			batch, err := t.cons.Fetch(t.cfg.prefetch, jetstream.FetchMaxWait(500*time.Millisecond))
			if err != nil {
				if cctx.Err() == nil {
					c.fail(fmt.Errorf("fetch: %w", err))
				}
				return
			}
			for m := range batch.Messages() {
				select {
				case msgs <- m:
				case <-cctx.Done():
					return
				}
			}
		}
	})
	var acked atomic.Int64
	for range t.cfg.ackers {
		c.wg.Go(func() {
			for m := range msgs {
				var err error
				if t.cfg.natsDoubleAck {
					err = m.DoubleAck(cctx)
				} else {
					err = m.Ack()
				}
				if err != nil {
					if cctx.Err() == nil {
						c.fail(fmt.Errorf("ack: %w", err))
					}
					continue
				}
				if acked.Add(1) == int64(n) {
					if err := t.p.subNC.Flush(); err != nil {
						c.fail(fmt.Errorf("flush acks: %w", err))
						continue
					}
					c.add(n)
				}
			}
		})
	}
	return c, nil
}

// natsFetchConsumer is the raw JetStream consumer with its ackers.
type natsFetchConsumer struct {
	*ackCounter
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (c *natsFetchConsumer) Stop() {
	c.cancel()
	c.wg.Wait()
}
