package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisPeer is Redis Streams through go-redis, tuned with its documented fast
// paths:
//
//   - sync-1 is a plain XADD per message;
//   - many producers publish through go-redis's blocking auto-pipeliner
//     (each producer's XADD blocks until its reply, but concurrent callers'
//     commands share pipelines), the way a Redis client gets throughput from
//     many callers without changing their code;
//   - consuming is XREADGROUP COUNT 256 from --ackers consumers of one group,
//     each batch settled with one XACK carrying all its IDs.
//
// The durability field reports the server's persistence as configured
// (CONFIG GET appendonly/appendfsync); the local test server runs without
// persistence ("memory-no-aof").
type redisPeer struct {
	rdb        *redis.Client
	ap         *redis.AutoPipeliner
	durability string
}

func openRedisPeer(ctx context.Context, addr string) (brokerPeer, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 512, DialTimeout: 3 * time.Second})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis not reachable at %s: %w", addr, err)
	}
	dur := "memory-no-aof"
	if v, err := rdb.ConfigGet(pctx, "appendonly").Result(); err == nil && v["appendonly"] == "yes" {
		fs, _ := rdb.ConfigGet(pctx, "appendfsync").Result()
		dur = "aof-appendfsync-" + fs["appendfsync"]
	}
	ap, err := rdb.AutoPipeline()
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("go-redis auto-pipeline: %w", err)
	}
	return &redisPeer{rdb: rdb, ap: ap, durability: dur}, nil
}

func (p *redisPeer) Name() string                 { return sysRedis }
func (p *redisPeer) Durability(cas string) string { return p.durability }
func (p *redisPeer) Close() error                 { return p.rdb.Close() }

func (p *redisPeer) NewTopic(ctx context.Context, run string) (benchTopic, error) {
	key := "sbbench:" + run
	if err := p.rdb.Del(ctx, key).Err(); err != nil {
		return nil, err
	}
	return &redisTopic{p: p, key: key}, nil
}

type redisTopic struct {
	p   *redisPeer
	key string
}

func (t *redisTopic) PublishSync(ctx context.Context, payload []byte) error {
	return t.p.rdb.XAdd(ctx, &redis.XAddArgs{Stream: t.key, Values: []any{"p", payload}}).Err()
}

// PublishConcurrent runs producers goroutines, each issuing blocking XADDs
// through the shared auto-pipeliner.
func (t *redisTopic) PublishConcurrent(ctx context.Context, payload []byte, n, producers int) (pubStats, error) {
	return syncProducers(ctx, n, producers, func(ctx context.Context) error {
		return t.p.ap.XAdd(ctx, &redis.XAddArgs{Stream: t.key, Values: []any{"p", payload}}).Err()
	})
}

func (t *redisTopic) StartConsumer(ctx context.Context, n int) (consumer, error) {
	const group = "bench"
	if err := t.p.rdb.XGroupCreateMkStream(ctx, t.key, group, "0").Err(); err != nil {
		return nil, fmt.Errorf("XGROUP CREATE: %w", err)
	}
	c := &redisConsumer{ackCounter: newAckCounter(n)}
	cctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	for i := range benchAckers {
		c.wg.Go(func() {
			name := fmt.Sprintf("c%d", i)
			for cctx.Err() == nil {
				res, err := t.p.rdb.XReadGroup(cctx, &redis.XReadGroupArgs{
					Group: group, Consumer: name, Streams: []string{t.key, ">"}, Count: 256, Block: 50 * time.Millisecond,
				}).Result()
				if errors.Is(err, redis.Nil) {
					continue
				}
				if err != nil {
					if cctx.Err() == nil {
						c.fail(fmt.Errorf("XREADGROUP: %w", err))
					}
					return
				}
				for _, s := range res {
					if len(s.Messages) == 0 {
						continue
					}
					ids := make([]string, len(s.Messages))
					for j, m := range s.Messages {
						ids[j] = m.ID
					}
					if err := t.p.rdb.XAck(cctx, t.key, group, ids...).Err(); err != nil {
						if cctx.Err() == nil {
							c.fail(fmt.Errorf("XACK: %w", err))
						}
						return
					}
					c.add(len(ids))
				}
			}
		})
	}
	return c, nil
}

type redisConsumer struct {
	*ackCounter
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (c *redisConsumer) Stop() {
	c.cancel()
	c.wg.Wait()
}

func (t *redisTopic) Cleanup(ctx context.Context) error {
	err := t.p.rdb.Del(ctx, t.key).Err()
	if err != nil && strings.Contains(err.Error(), "closed") {
		return nil
	}
	return err
}
