package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// The Watermill side (--sides ...,watermill): watermill-redisstream,
// watermill-amqp/v3 and watermill-nats/v2's jetstream package against the
// same servers, configured like the other two sides where Watermill lets
// the user choose. Watermill hands a subscription one message at a time (the
// next comes after the Ack), so its consumer is --ackers subscriptions of
// the group, the way Watermill scales a handler. Each Watermill subscriber
// closes the client it is given, so every consumer gets its own connection.

// wmPeer is a Watermill Publisher for one backend, with what the backend
// needs per topic and per consumer.
type wmPeer struct {
	name       string
	durability string
	cfg        *adaptersConfig
	pub        message.Publisher
	// newTopic creates what a topic needs before publishing (a queue, a
	// stream and its consumer) and returns its Watermill topic name and
	// how to delete it.
	newTopic func(ctx context.Context, run string) (string, func(ctx context.Context) error, error)
	// newSubscriber makes a subscriber of the topic's group on a client of
	// its own.
	newSubscriber func() (message.Subscriber, error)
	close         func()
}

func (p *wmPeer) Name() string             { return p.name }
func (p *wmPeer) Durability(string) string { return p.durability }

func (p *wmPeer) Close() error {
	err := p.pub.Close()
	if p.close != nil {
		p.close()
	}
	return err
}

func (p *wmPeer) NewTopic(ctx context.Context, run string) (benchTopic, error) {
	topic, cleanup, err := p.newTopic(ctx, run)
	if err != nil {
		return nil, err
	}
	return &wmTopic{p: p, topic: topic, cleanup: cleanup}, nil
}

type wmTopic struct {
	p       *wmPeer
	topic   string
	cleanup func(ctx context.Context) error
}

// PublishSync is Publisher.Publish of one message: it returns once the
// backend acknowledged it.
func (t *wmTopic) PublishSync(ctx context.Context, payload []byte) error {
	m := message.NewMessage(watermill.NewUUID(), payload)
	m.SetContext(ctx)
	return t.p.pub.Publish(t.topic, m)
}

// StartConsumer subscribes --ackers times to the group and acks every
// message.
func (t *wmTopic) StartConsumer(ctx context.Context, n int) (consumer, error) {
	sub, err := t.p.newSubscriber()
	if err != nil {
		return nil, fmt.Errorf("watermill subscriber: %w", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &wmConsumer{ackCounter: newAckCounter(n), sub: sub, cancel: cancel}
	for range t.p.cfg.ackers {
		msgs, err := sub.Subscribe(cctx, t.topic)
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		c.wg.Go(func() {
			for m := range msgs {
				m.Ack()
				c.add(1)
			}
		})
	}
	return c, nil
}

func (t *wmTopic) Cleanup(ctx context.Context) error { return t.cleanup(ctx) }

// wmConsumer is a Watermill subscriber with its subscriptions.
type wmConsumer struct {
	*ackCounter
	sub    message.Subscriber
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (c *wmConsumer) Stop() {
	c.cancel()
	_ = c.sub.Close()
	c.wg.Wait()
}

// wmQuietLogger drops Watermill's logs.
var wmQuietLogger = watermill.NopLogger{}

// addWatermillRedis adds Watermill's Redis Streams side: XADD per message
// (watermill-redisstream's msgpack envelope), consumers reading XREADGROUP
// COUNT 1 and acking with XACK, on clients with the adapter's options.
func addWatermillRedis(be *adapterBackend, c *adaptersConfig, opts redis.Options, durability string) error {
	newClient := func() *redis.Client {
		o := opts
		o.ClientName = "sb-bench-watermill"
		return redis.NewClient(&o)
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: newClient()}, wmQuietLogger)
	if err != nil {
		return fmt.Errorf("watermill redis publisher: %w", err)
	}
	admin := newClient()
	be.sides = append(be.sides, &wmPeer{
		name: adRedis + "/" + sideWatermill, durability: durability, cfg: c, pub: pub,
		newTopic: func(ctx context.Context, run string) (string, func(context.Context) error, error) {
			key := "wmb:" + sanitize(run)
			return key, func(ctx context.Context) error { return admin.Del(ctx, key).Err() }, nil
		},
		newSubscriber: func() (message.Subscriber, error) {
			return redisstream.NewSubscriber(redisstream.SubscriberConfig{
				Client: newClient(), ConsumerGroup: "bench", OldestId: "0",
				BlockTime: 100 * time.Millisecond, DisableIndefiniteInitialBlock: true,
			}, wmQuietLogger)
		},
		close: func() { _ = admin.Close() },
	})
	return nil
}

// addWatermillRabbit adds Watermill's RabbitMQ side: a durable topic
// exchange, a durable queue per topic of --rabbit-queue-type, persistent
// messages, publisher confirms (ConfirmDelivery) on a pool of one channel
// per producer, and consumers with manual acks sharing --prefetch.
func addWatermillRabbit(be *adapterBackend, c *adaptersConfig, raw *rabbitRawPeer, exchange string) error {
	cfg := wmamqp.NewDurableTopicConfig(c.amqpURL, exchange, "")
	cfg.Queue.GenerateName = func(topic string) string { return exchange + "." + topic }
	cfg.Queue.Arguments = amqp.Table{"x-queue-type": c.queueType}
	cfg.Publish.ConfirmDelivery = true
	cfg.Publish.ChannelPoolSize = c.producers
	cfg.Consume.Qos.PrefetchCount = max(1, c.prefetch/c.ackers)
	pub, err := wmamqp.NewPublisher(cfg, wmQuietLogger)
	if err != nil {
		return fmt.Errorf("watermill amqp publisher: %w", err)
	}
	admin, err := wmamqp.NewSubscriber(cfg, wmQuietLogger)
	if err != nil {
		_ = pub.Close()
		return fmt.Errorf("watermill amqp subscriber: %w", err)
	}
	be.sides = append(be.sides, &wmPeer{
		name: adRabbit + "/" + sideWatermill, durability: raw.durability, cfg: c, pub: pub,
		// The queue is declared and bound before publishing, as on the
		// other sides.
		newTopic: func(ctx context.Context, run string) (string, func(context.Context) error, error) {
			topic := "wmb_" + sanitize(run) + ".m"
			cleanup := func(context.Context) error { return raw.deleteQueues(cfg.Queue.GenerateName(topic)) }
			if err := admin.SubscribeInitialize(topic); err != nil {
				_ = cleanup(ctx)
				return "", nil, fmt.Errorf("declare queue: %w", err)
			}
			return topic, cleanup, nil
		},
		newSubscriber: func() (message.Subscriber, error) { return wmamqp.NewSubscriber(cfg, wmQuietLogger) },
		close: func() {
			_ = admin.Close()
			_ = raw.withChannel(func(ch *amqp.Channel) error { return ch.ExchangeDelete(exchange, false, false) })
		},
	})
	return nil
}

// addWatermillNATS adds Watermill's JetStream side: a file stream per topic
// (created up front with the same durable consumer as the raw side),
// synchronous PublishMsg per message, and consumers on Consume with
// PullMaxMessages --prefetch/--ackers each, acking with Watermill's default
// (DoubleAck, AckAsync off).
func addWatermillNATS(be *adapterBackend, c *adaptersConfig, raw *natsRawPeer) error {
	pubNC, err := nats.Connect(c.natsURL, nats.Name("sb-bench-watermill"))
	if err != nil {
		return fmt.Errorf("NATS: %w", err)
	}
	pub, err := wmjs.NewPublisher(wmjs.PublisherConfig{Conn: pubNC, Logger: wmQuietLogger})
	if err != nil {
		pubNC.Close()
		return fmt.Errorf("watermill jetstream publisher: %w", err)
	}
	js := raw.js
	be.sides = append(be.sides, &wmPeer{
		name: adNATS + "/" + sideWatermill, durability: raw.Durability(""), cfg: c, pub: pub,
		// Watermill publishes to the subject named like the stream.
		newTopic: func(ctx context.Context, run string) (string, func(context.Context) error, error) {
			topic := "WMB_" + sanitize(run)
			cleanup := func(ctx context.Context) error { return js.DeleteStream(ctx, topic) }
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: topic, Subjects: []string{topic}, Storage: jetstream.FileStorage})
			if err == nil {
				_, err = js.CreateOrUpdateConsumer(ctx, topic, jetstream.ConsumerConfig{
					Durable: "bench", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
					MaxAckPending: natsAdapterMaxAckPending, AckWait: natsAdapterAckWait,
				})
			}
			if err != nil {
				_ = cleanup(ctx)
				return "", nil, fmt.Errorf("create stream %s: %w", topic, err)
			}
			return topic, cleanup, nil
		},
		newSubscriber: func() (message.Subscriber, error) {
			return wmjs.NewSubscriber(wmjs.SubscriberConfig{
				URL: c.natsURL, Logger: wmQuietLogger, AckWaitTimeout: natsAdapterAckWait,
				ResourceInitializer: func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
					cons, err := js.Consumer(ctx, topic, "bench")
					return cons, nil, err
				},
				ConsumeOptions: []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(max(1, c.prefetch/c.ackers))},
			})
		},
	})
	return nil
}
