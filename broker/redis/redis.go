// Package redis is the Redis backend of Switchboard, registered for the URL
// scheme "redis" (and "rediss" for TLS). It has two modes:
//
//   - Streams (redis://127.0.0.1:6379, the default): durable topics and
//     consumer groups on Redis Streams.
//   - Pub/Sub (redis://127.0.0.1:6379?mode=pubsub): live fan-out only. It
//     keeps nothing, so it declares Durable=false and Groups=false and
//     refuses consumer groups and every group option with a
//     NotSupportedError.
//
// # Streams mapping
//
//   - A topic is a stream whose key is the topic name (with an optional
//     key_prefix). Each message is one entry: the payload in field
//     "Sb-Body", the message's own fields as "Sb-Id", "Sb-Key",
//     "Sb-Content-Type", "Sb-Deliver-At", "Sb-Expires-At", and every user
//     header as a field of its own name.
//   - Publish runs a Lua script: for each message it checks the dedup key
//     "sb:dedup:<topic>:<id>" (the ID seen inside the dedup window returns
//     the original entry, Duplicate=true), XADDs the entry (with MAXLEN ~
//     when max_len is set) and remembers the ID for the window, atomically
//     per message. Concurrent publishes to a stream share one script call
//     (each caller's messages in order and its own outcome per message),
//     and concurrent publishes and acks of the broker share one pipeline:
//     a batch goes out as soon as the previous one is answered (group
//     commit), and every call returns only when the server has answered for
//     its own messages or entries.
//   - Sequence numbers are entry IDs: "<ms>-<n>" is Seq = ms<<16 | n (n is
//     below 65536 unless a topic takes more than 65,536 entries in one
//     millisecond).
//   - A group is an XGROUP created at the start position (latest "$",
//     earliest "0", a time or a sequence as an entry ID) and read with
//     XREADGROUP, at most MaxInFlight entries read and unsettled per
//     subscription; reading the next batch overlaps handing out the last.
//     Ack is XACK (concurrent acks of a group share one XACK). Missed
//     deadlines, nacks with a delay and Close's release are emulated on the
//     pending entries list: a reclaimer in every subscription looks at
//     XPENDING and XCLAIMs the entries that are due: last delivery +
//     AckDeadline + Backoff(attempts) for a missed deadline, or the time a
//     nack or Extend wrote in the hash "sb:due:<topic>:<group>".
//     (XAUTOCLAIM takes one idle time for every entry, so it cannot honour
//     per-entry backoff and nack delays.) The attempt number is the entry's
//     delivery count.
//   - Dead letters are XADDed to the stream "$dlq.<group>"; Term and final
//     failures XACK the original after that.
//   - An ephemeral subscription reads new entries with XREAD from "$".
//   - Request/reply uses Pub/Sub on "_sbreq.<topic>" (PUBLISH reports 0
//     receivers, so "no responders" fails at once) and replies on a
//     per-request channel.
//
// See docs/backends.md for the capability table.
package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

func init() {
	open := func(ctx context.Context, u *url.URL) (broker.Broker, error) { return Open(ctx, u.String()) }
	broker.Register("redis", open)
	broker.Register("rediss", open)
}

// Field that carries the payload of a stream entry.
const bodyField = "Sb-Body"

// Broker is the Redis backend. It is safe for concurrent use.
type Broker struct {
	rdb    *goredis.Client
	cfg    config
	limits message.Limits
	caps   broker.Capabilities

	// ops coalesces concurrent publishes and acks (Streams mode): each
	// caller still waits for the server's answer to its own operation.
	ops *batcher

	mu     sync.Mutex
	subs   brokerutil.Subs
	closed bool
}

var _ broker.Broker = (*Broker)(nil)
var _ broker.Requester = (*Broker)(nil)

type config struct {
	addr        string
	pubsub      bool
	prefix      string
	dedupWindow time.Duration
	maxLen      int64
	block       time.Duration
}

// Open connects to the Redis server named by rawURL:
//
//	redis://[user:pass@]host:6379[/db][?mode=streams|pubsub&dial_timeout=5s&dedup_window=2m&max_len=0&key_prefix=]
//
// dial_timeout bounds connecting (default 5 s); a lost connection is
// re-established by the client pool on the next command, and subscriptions
// retry with backoff. ctx bounds connecting only.
func Open(ctx context.Context, rawURL string) (*Broker, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: redis: %q: %v", broker.ErrBadURL, broker.Redact(rawURL), err)
	}
	q := brokerutil.NewQuery("redis", u)
	mode := q.String("mode", "streams")
	cfg := config{
		addr:        u.Host,
		pubsub:      mode == "pubsub",
		prefix:      q.String("key_prefix", ""),
		dedupWindow: q.Duration("dedup_window", 2*time.Minute),
		maxLen:      q.Int("max_len", 0),
		block:       200 * time.Millisecond,
	}
	dial := q.Duration("dial_timeout", brokerutil.DefaultDialTimeout)
	if mode != "streams" && mode != "pubsub" {
		q.Fail("mode=%q: use mode=streams (default) or mode=pubsub", mode)
	}
	if err := q.Err(); err != nil {
		return nil, err
	}
	name := "redis-streams"
	if cfg.pubsub {
		name = "redis-pubsub"
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, brokerutil.BadURL(name, u, "scheme must be redis:// or rediss://")
	}
	if u.Host == "" {
		return nil, brokerutil.BadURL(name, u, "no host; use redis://127.0.0.1:6379")
	}
	clean := *u
	clean.RawQuery = ""
	opts, err := goredis.ParseURL(clean.String())
	if err != nil {
		return nil, brokerutil.BadURL(name, u, "%v", err)
	}
	opts.DialTimeout = dial
	opts.ReadTimeout = 10 * time.Second
	opts.WriteTimeout = 10 * time.Second
	opts.ContextTimeoutEnabled = true
	opts.ClientName = "switchboard"
	opts.DisableIdentity = true
	rdb := goredis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		var ne net.Error
		switch {
		case strings.Contains(err.Error(), "WRONGPASS"), strings.Contains(err.Error(), "NOAUTH"), strings.Contains(err.Error(), "invalid password"), strings.Contains(err.Error(), "invalid username"):
			return nil, fmt.Errorf("%s: %s refused the credentials of %s: %w", name, cfg.addr, broker.Redact(rawURL), err)
		case errors.As(err, &ne), errors.Is(err, context.DeadlineExceeded):
			return nil, brokerutil.Unreachable(name, cfg.addr, err)
		default:
			return nil, brokerutil.Unreachable(name, cfg.addr, err)
		}
	}
	b := &Broker{rdb: rdb, cfg: cfg, limits: message.DefaultLimits()}
	if cfg.pubsub {
		b.caps = broker.Capabilities{
			Name:      name,
			Ephemeral: true,
			Patterns:  true,
			Expiry:    true,
			Request:   true,
		}
	} else {
		b.caps = broker.Capabilities{
			Name:           name,
			Durable:        serverPersists(pctx, rdb),
			Groups:         true,
			Ephemeral:      true,
			Ack:            true,
			NackDelay:      true,
			Extend:         true,
			DeadLetter:     true,
			Expiry:         true,
			Dedup:          true,
			StartPositions: true,
			Request:        true,
		}
		b.ops = newBatcher(batchWorkers, 1024, b.runOps)
	}
	return b, nil
}

// serverPersists reports whether the server writes its data to disk (AOF,
// or RDB snapshots), which is what makes a stream survive a restart.
func serverPersists(ctx context.Context, rdb *goredis.Client) bool {
	v, err := rdb.ConfigGet(ctx, "appendonly").Result()
	if err == nil && v["appendonly"] == "yes" {
		return true
	}
	v, err = rdb.ConfigGet(ctx, "save").Result()
	return err == nil && strings.TrimSpace(v["save"]) != ""
}

// Capabilities implements broker.Broker.
func (b *Broker) Capabilities() broker.Capabilities { return b.caps }

// Client returns the underlying go-redis client.
func (b *Broker) Client() *goredis.Client { return b.rdb }

// Close closes every subscription (unsettled deliveries are released for
// redelivery) and the connection pool. Publishes and acks already sent to
// the server complete; those still waiting for a batch fail with
// ErrClosed (nothing of them was written).
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.subs.CloseAll()
	if b.ops != nil {
		b.ops.close(fmt.Errorf("%s: %w", b.caps.Name, broker.ErrClosed))
	}
	return b.rdb.Close()
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *Broker) key(topic string) string { return b.cfg.prefix + topic }

// opErr wraps a Redis error with what was being done.
func (b *Broker) opErr(ctx context.Context, what string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, goredis.ErrClosed):
		return fmt.Errorf("%s: %s: %w", b.caps.Name, what, broker.ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %s: %w", b.caps.Name, what, ctx.Err())
	case errors.As(err, &ne), strings.Contains(err.Error(), "connection refused"), strings.Contains(err.Error(), "EOF"):
		return fmt.Errorf("%s: %s on %s: %w (%v)", b.caps.Name, what, b.cfg.addr, broker.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %s: %w", b.caps.Name, what, err)
}

// entryMessage decodes a stream entry. An entry written by another client
// without "Sb-Body" keeps all its fields as headers and has an empty
// payload; one with only a "payload" or "data" field uses that as payload.
func entryMessage(topic string, x goredis.XMessage) (*message.Message, uint64) {
	m := &message.Message{Topic: topic, Payload: []byte{}}
	seq, ms := seqOf(x.ID)
	m.PublishedAt = time.UnixMilli(ms)
	_, hasBody := x.Values[bodyField]
	for k, v := range x.Values {
		s, _ := v.(string)
		if k == bodyField {
			m.Payload = []byte(s)
			continue
		}
		if !hasBody && len(x.Values) == 1 && (k == "payload" || k == "data") {
			m.Payload = []byte(s)
			continue
		}
		brokerutil.Decode(m, k, s)
	}
	if m.ID == "" {
		m.ID = x.ID
	}
	return m, seq
}

// seqOf maps an entry ID "<ms>-<n>" to Seq = ms<<16 | n and returns ms
// (zeros for an ID of another form).
func seqOf(id string) (uint64, int64) {
	a, b, ok := strings.Cut(id, "-")
	if !ok {
		return 0, 0
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	n, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0
	}
	return ms<<16 | (n & 0xffff), int64(ms)
}

// before returns the entry ID just before id (XGROUP's start is exclusive).
func before(ms, n uint64) string {
	if n > 0 {
		return fmt.Sprintf("%d-%d", ms, n-1)
	}
	if ms == 0 {
		return "0"
	}
	return fmt.Sprintf("%d-%d", ms-1, uint64(1<<64-1))
}

// Publish implements broker.Broker. Streams: the messages are stored by the
// publish script, each atomically with its dedup check, in order, possibly
// in one call with other callers' messages; Publish returns when Redis has
// answered for all of them (durable as far as the server's persistence
// settings make it). A message that fails fails the call; the others may be
// stored (AtomicBatch is false).
// Pub/Sub: each message is PUBLISHed; nothing is kept.
func (b *Broker) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	if err := broker.PrepareMessages(b.caps, b.limits, p); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, fmt.Errorf("%s: publish: %w", b.caps.Name, broker.ErrClosed)
	}
	res := &broker.PublishResult{Results: make([]broker.MessageResult, len(p.Messages))}
	if b.cfg.pubsub {
		for i, m := range p.Messages {
			if err := b.rdb.Publish(ctx, b.key(p.Topic), encodeFrame(m)).Err(); err != nil {
				return nil, b.opErr(ctx, "publish to "+p.Topic, err)
			}
			res.Results[i] = broker.MessageResult{ID: m.ID}
		}
		return res, nil
	}
	return b.xadd(ctx, p.Topic, p.Messages, func(m *message.Message) string { return "sb:dedup:" + p.Topic + ":" + m.ID }, res)
}

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := broker.CheckSubscribe(b.caps, p); err != nil {
		var ns *broker.NotSupportedError
		if b.cfg.pubsub && errors.As(err, &ns) {
			ns.Hint = "Redis Pub/Sub keeps nothing; subscribe without a group, or use redis:// without mode=pubsub (Streams) for durable groups"
		}
		return nil, err
	}
	if b.isClosed() {
		return nil, fmt.Errorf("%s: subscribe: %w", b.caps.Name, broker.ErrClosed)
	}
	if p.Group == "" {
		if b.cfg.pubsub {
			return b.subscribePubSub(ctx, p)
		}
		return b.subscribeLive(ctx, p)
	}
	return b.subscribeGroup(ctx, p)
}
