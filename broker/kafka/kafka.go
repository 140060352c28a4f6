// Package kafka is the Apache Kafka backend of Switchboard, registered for
// the URL scheme "kafka" (kafka://127.0.0.1:9092[,host2:9092...]). It uses
// github.com/twmb/franz-go (kgo).
//
// # Mapping
//
//   - A topic is the Kafka topic of the same name. A system topic's leading
//     '$' is written "_sb." ("$dlq.email" is the Kafka topic
//     "_sb.dlq.email") because Kafka forbids '$'; user topics starting
//     with "_sb." and topics containing ':' (also forbidden by Kafka) are
//     refused with the rule. Topics are created on first use with the URL's
//     partitions (default 1) and replication factor (default: the broker's).
//   - The message key is the record key, so Kafka's partitioner keeps a
//     key on one partition. Headers are record headers; the message's own
//     fields use brokerutil's "Sb-" envelope names. PublishedAt is the
//     record timestamp.
//   - Seq is (partition << 48) | (offset + 1): offset + 1 on a
//     single-partition topic (the default).
//   - A group is a Kafka consumer group. Offsets are committed only after
//     acks, and only the contiguous acked prefix of each partition: a later
//     ack never commits past an earlier unsettled record. Deadlines, nack
//     delays, attempts, dead letters, expiry and per-key ordering are
//     emulated in the client (see group.go and docs/backends.md).
//   - An ephemeral subscription is a consumer without a group that reads
//     each partition from its end offset at the time of Subscribe.
//
// See docs/backends.md for the capabilities table and the header mapping.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

const backendName = "kafka"

func init() {
	broker.Register("kafka", func(ctx context.Context, u *url.URL) (broker.Broker, error) {
		return Open(ctx, u.String())
	})
}

// Broker is the Kafka backend. It is safe for concurrent use.
type Broker struct {
	cl     *kgo.Client // producer and admin client
	adm    *kadm.Client
	cfg    config
	limits message.Limits
	caps   broker.Capabilities
	// maxMessageBytes is the broker's message.max.bytes.
	maxMessageBytes int

	topics sync.Map // Kafka topic name -> struct{} (known to exist)

	mu     sync.Mutex
	subs   brokerutil.Subs
	closed bool
	pubs   sync.WaitGroup // publishes in progress
}

var (
	_ broker.Broker          = (*Broker)(nil)
	_ broker.AsyncPublisher  = (*Broker)(nil)
	_ broker.DeadLetterAdmin = (*Broker)(nil)
)

type config struct {
	seeds            []string
	dialTimeout      time.Duration
	partitions       int32
	replication      int16
	autoCreate       bool
	clientID         string
	heartbeat        time.Duration
	sessionTimeout   time.Duration
	commitInterval   time.Duration
	maxTracked       int
	rebalanceTimeout time.Duration
	metadataMaxAge   time.Duration
}

// Open connects to the Kafka cluster named by rawURL:
//
//	kafka://host:9092[,host2:9092...][?dial_timeout=5s&partitions=1&replication=-1&auto_create=true&client_id=switchboard&heartbeat_interval=3s&session_timeout=45s&rebalance_timeout=60s&commit_interval=100ms&max_buffered=4096&metadata_max_age=5m]
//
// dial_timeout bounds connecting (default 5 s): a cluster that cannot be
// reached fails Open with broker.ErrUnavailable naming the address.
// partitions and replication apply to topics the backend creates
// (auto_create=false refuses unknown topics with broker.ErrTopicNotFound).
// heartbeat_interval, session_timeout and rebalance_timeout configure
// consumer groups; commit_interval is how often a group commits its acked
// prefix; max_buffered bounds the records one group subscription keeps in
// memory (delivered, held back for per-key order or waiting for a
// redelivery). ctx bounds connecting only.
func Open(ctx context.Context, rawURL string) (*Broker, error) {
	u, err := brokerutil.ParseURL(backendName, rawURL, "kafka://127.0.0.1:9092", "kafka")
	if err != nil {
		return nil, err
	}
	if u.User != nil {
		return nil, brokerutil.BadURL(backendName, u, "credentials in the URL are not supported (SASL is not configured by this backend)")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, brokerutil.BadURL(backendName, u, "unexpected path %q; use kafka://host:9092", u.Path)
	}
	var seeds []string
	for h := range strings.SplitSeq(u.Host, ",") {
		if h == "" {
			return nil, brokerutil.BadURL(backendName, u, "empty host in the host list")
		}
		if !strings.Contains(h, ":") {
			h += ":9092"
		}
		seeds = append(seeds, h)
	}
	q := brokerutil.NewQuery(backendName, u)
	cfg := config{
		seeds:            seeds,
		dialTimeout:      q.Duration("dial_timeout", brokerutil.DefaultDialTimeout),
		partitions:       int32(q.Int("partitions", 1)),
		replication:      int16(q.Int("replication", 0)),
		autoCreate:       q.Bool("auto_create", true),
		clientID:         q.String("client_id", "switchboard"),
		heartbeat:        q.Duration("heartbeat_interval", 3*time.Second),
		sessionTimeout:   q.Duration("session_timeout", 45*time.Second),
		rebalanceTimeout: q.Duration("rebalance_timeout", time.Minute),
		commitInterval:   q.Duration("commit_interval", 100*time.Millisecond),
		maxTracked:       int(q.Int("max_buffered", 4096)),
		metadataMaxAge:   q.Duration("metadata_max_age", 5*time.Minute),
	}
	if err := q.Err(); err != nil {
		return nil, err
	}
	if cfg.partitions <= 0 || cfg.partitions > 1<<15 {
		return nil, brokerutil.BadURL(backendName, u, "partitions must be between 1 and 32768")
	}
	if cfg.replication == 0 {
		cfg.replication = -1 // the broker's default.replication.factor
	}
	if cfg.maxTracked < 16 {
		return nil, brokerutil.BadURL(backendName, u, "max_buffered must be at least 16")
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < cfg.dialTimeout {
		cfg.dialTimeout = max(time.Until(d), time.Millisecond)
	}
	b := &Broker{cfg: cfg, limits: message.DefaultLimits()}
	addr := strings.Join(seeds, ",")

	// Learn the broker's message.max.bytes before producing, so the producer
	// can send the largest record the broker takes.
	probe, err := kgo.NewClient(b.baseOpts()...)
	if err != nil {
		return nil, brokerutil.BadURL(backendName, u, "%v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	maxBytes, err := describeMaxMessageBytes(pctx, kadm.NewClient(probe))
	probe.Close()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: connect to %s: %w", backendName, addr, ctx.Err())
		}
		return nil, brokerutil.Unreachable(backendName, addr, err)
	}
	b.maxMessageBytes = maxBytes
	opts := append(b.baseOpts(),
		kgo.ProducerBatchMaxBytes(int32(maxBytes)),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	b.cl, err = kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", backendName, err)
	}
	b.adm = kadm.NewClient(b.cl)
	b.caps = broker.Capabilities{
		Name:           backendName,
		Durable:        true,
		Groups:         true,
		Ephemeral:      true,
		Ack:            true,
		NackDelay:      true,
		Extend:         true,
		DeadLetter:     true,
		Expiry:         true,
		OrderedByKey:   true,
		StartPositions: true,
		MaxPayload:     maxPayloadFor(maxBytes, b.limits),
	}
	return b, nil
}

// baseOpts are the kgo options every client of the backend uses.
func (b *Broker) baseOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(b.cfg.seeds...),
		kgo.ClientID(b.cfg.clientID),
		kgo.DialTimeout(b.cfg.dialTimeout),
		kgo.MetadataMaxAge(b.cfg.metadataMaxAge),
		kgo.MetadataMinAge(50 * time.Millisecond),
		kgo.RetryTimeout(b.cfg.dialTimeout * 6),
	}
}

// describeMaxMessageBytes reads message.max.bytes from a broker of the
// cluster (it also proves that the cluster answers).
func describeMaxMessageBytes(ctx context.Context, adm *kadm.Client) (int, error) {
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return 0, err
	}
	if len(meta.Brokers) == 0 {
		return 0, errors.New("the cluster reported no brokers")
	}
	const kafkaDefault = 1048588
	rcs, err := adm.DescribeBrokerConfigs(ctx, meta.Brokers[0].NodeID)
	if err != nil {
		return kafkaDefault, nil // an ACL may forbid describing configs: assume Kafka's default
	}
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == "message.max.bytes" && c.Value != nil {
				if n, err := strconv.Atoi(*c.Value); err == nil && n > 0 {
					return n, nil
				}
			}
		}
	}
	return kafkaDefault, nil
}

// recordOverhead is the room kept in a record batch for everything but the
// payload: the batch and record headers, the key and the header block at
// Switchboard's limits, and the envelope.
func recordOverhead(l message.Limits) int { return 61 + 64 + l.MaxKeyLen + l.MaxHeaderBytes + 1024 }

// maxPayloadFor is the largest payload that fits in one record batch of
// maxBytes.
func maxPayloadFor(maxBytes int, l message.Limits) int {
	return max(maxBytes-recordOverhead(l), 1)
}

// Capabilities implements broker.Broker.
func (b *Broker) Capabilities() broker.Capabilities { return b.caps }

// Client returns the underlying kgo client used for producing.
func (b *Broker) Client() *kgo.Client { return b.cl }

// Close closes every subscription (their unsettled deliveries are left
// uncommitted and come back to the group), waits for publishes in
// progress and closes the client.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.subs.CloseAll()
	b.pubs.Wait()
	b.cl.Close()
	return nil
}

// beginPublish registers a publish in progress, or fails when closed.
func (b *Broker) beginPublish() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("%s: publish: %w", backendName, broker.ErrClosed)
	}
	b.pubs.Add(1)
	return nil
}

// sysPrefix is the Kafka spelling of a system topic's leading '$'.
const sysPrefix = "_sb."

// kafkaTopic maps a Switchboard topic to its Kafka topic, or refuses a name
// Kafka forbids with the rule.
func kafkaTopic(topic string) (string, error) {
	if strings.HasPrefix(topic, sysPrefix) {
		return "", &message.ValidationError{Field: "topic", Value: topic, Reason: "topics starting with \"_sb.\" are reserved on Kafka (they carry system topics such as \"$dlq.<group>\"); rename the topic"}
	}
	if strings.Contains(topic, ":") {
		return "", &message.ValidationError{Field: "topic", Value: topic, Reason: "Kafka topic names allow only letters, digits, '.', '_' and '-' (no ':'); rename the topic"}
	}
	kt := topic
	if strings.HasPrefix(topic, "$") {
		kt = sysPrefix + topic[1:]
	}
	if len(kt) > 249 {
		return "", &message.ValidationError{Field: "topic", Value: topic, Reason: fmt.Sprintf("the Kafka topic %q would be %d characters; Kafka allows 249", kt, len(kt))}
	}
	return kt, nil
}

// topicOf maps a Kafka topic back to its Switchboard topic.
func topicOf(kt string) string {
	if strings.HasPrefix(kt, sysPrefix) {
		return "$" + kt[len(sysPrefix):]
	}
	return kt
}

// ensureTopic creates kt when it does not exist (auto_create) and returns
// nil once it exists.
func (b *Broker) ensureTopic(ctx context.Context, kt string) error {
	if _, ok := b.topics.Load(kt); ok {
		return nil
	}
	tds, err := b.adm.ListTopics(ctx, kt)
	if err != nil {
		return b.opErr(ctx, "look up topic "+topicOf(kt), err)
	}
	if td, ok := tds[kt]; ok && td.Err == nil && len(td.Partitions) > 0 {
		b.topics.Store(kt, struct{}{})
		return nil
	}
	if !b.cfg.autoCreate {
		return fmt.Errorf("%s: topic %q (Kafka topic %q): %w; create it, or open with auto_create=true", backendName, topicOf(kt), kt, broker.ErrTopicNotFound)
	}
	resp, err := b.adm.CreateTopic(ctx, b.cfg.partitions, b.cfg.replication, nil, kt)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		if errors.Is(err, kerr.InvalidTopicException) {
			return &message.ValidationError{Field: "topic", Value: topicOf(kt), Reason: fmt.Sprintf("Kafka refused the name: %v (%s)", err, resp.ErrMessage)}
		}
		return b.opErr(ctx, "create topic "+topicOf(kt), err)
	}
	// Wait until the metadata shows the topic's partitions.
	for i := 0; ; i++ {
		tds, err := b.adm.ListTopics(ctx, kt)
		if err == nil {
			if td, ok := tds[kt]; ok && td.Err == nil && len(td.Partitions) > 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return b.opErr(ctx, "create topic "+topicOf(kt), ctx.Err())
		case <-time.After(time.Duration(min(i+1, 10)) * 10 * time.Millisecond):
		}
	}
	b.topics.Store(kt, struct{}{})
	return nil
}

// opErr wraps a Kafka error with what was being done, mapping closed
// clients to ErrClosed, unreachable brokers to ErrUnavailable and ctx
// errors to themselves.
func (b *Broker) opErr(ctx context.Context, what string, err error) error {
	switch {
	case errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("%s: %s: %w", backendName, what, broker.ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %s: %w (%v)", backendName, what, ctx.Err(), err)
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return &message.ValidationError{Field: "message", Reason: fmt.Sprintf("%s: Kafka refused the record as too large (%v); the broker's message.max.bytes is %d", what, err, b.maxMessageBytes)}
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) || errors.Is(err, kerr.BrokerNotAvailable) || strings.Contains(err.Error(), "unable to dial") {
		return fmt.Errorf("%s: %s on %s: %w (%v)", backendName, what, strings.Join(b.cfg.seeds, ","), broker.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %s: %w", backendName, what, err)
}

// Seq packing: the partition in the top 16 bits, offset+1 below.
const seqShift = 48

func seqOf(partition int32, offset int64) uint64 {
	return uint64(partition)<<seqShift | uint64(offset+1)
}

func partitionOffset(seq uint64) (int32, int64) {
	return int32(seq >> seqShift), int64(seq&(1<<seqShift-1)) - 1
}

// toRecord encodes m as a record of Kafka topic kt. The key is the record
// key; the envelope and the user headers are record headers.
func toRecord(kt string, m *message.Message) *kgo.Record {
	r := &kgo.Record{Topic: kt, Value: m.Payload}
	if m.Key != "" {
		r.Key = []byte(m.Key)
	}
	if r.Value == nil {
		r.Value = []byte{}
	}
	r.Headers = make([]kgo.RecordHeader, 0, len(m.Headers)+3)
	brokerutil.Encode(m, time.Time{}, func(k, v string) {
		if k == brokerutil.HeaderKey {
			return // the record key
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	})
	return r
}

// fromRecord decodes a record. A record from a plain client without Sb-Id
// gets the ID "kafka:<topic>:<partition>:<offset>".
func fromRecord(r *kgo.Record) *message.Message {
	m := &message.Message{Topic: topicOf(r.Topic), Payload: r.Value, Key: string(r.Key), PublishedAt: r.Timestamp}
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	for _, h := range r.Headers {
		if _, dup := m.Headers[h.Key]; dup {
			continue // the first value of a repeated header wins
		}
		brokerutil.Decode(m, h.Key, string(h.Value))
	}
	if m.ID == "" {
		m.ID = fmt.Sprintf("kafka:%s:%d:%d", r.Topic, r.Partition, r.Offset)
	}
	return m
}

// prepare validates p and maps its topic; the error names both limits when
// a payload is too large.
func (b *Broker) prepare(ctx context.Context, p *broker.PublishParams) (string, error) {
	if err := broker.PrepareMessages(b.caps, b.limits, p); err != nil {
		if errors.Is(err, message.ErrTooLarge) {
			return "", fmt.Errorf("%w (Kafka's message.max.bytes is %d bytes per record batch; Switchboard keeps %d bytes of it for the key, headers and framing, so the payload limit on this cluster is %d bytes)", err, b.maxMessageBytes, recordOverhead(b.limits), b.caps.MaxPayload)
		}
		return "", err
	}
	kt, err := kafkaTopic(p.Topic)
	if err != nil {
		return "", err
	}
	if err := b.ensureTopic(ctx, kt); err != nil {
		return "", err
	}
	return kt, nil
}

// Publish implements broker.Broker. Every record is acknowledged by all
// in-sync replicas (acks=all, idempotent producer) before Publish returns.
// Records of one batch keep their order per partition; a batch is not
// atomic: on error some records may be stored.
func (b *Broker) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	if err := b.beginPublish(); err != nil {
		return nil, err
	}
	defer b.pubs.Done()
	kt, err := b.prepare(ctx, p)
	if err != nil {
		return nil, err
	}
	recs := make([]*kgo.Record, len(p.Messages))
	for i, m := range p.Messages {
		recs[i] = toRecord(kt, m)
	}
	results := b.cl.ProduceSync(ctx, recs...)
	res := &broker.PublishResult{Results: make([]broker.MessageResult, len(p.Messages))}
	for i, pr := range results {
		if pr.Err != nil {
			return nil, b.opErr(ctx, fmt.Sprintf("publish to %s", p.Topic), pr.Err)
		}
		res.Results[i] = broker.MessageResult{ID: p.Messages[i].ID, Seq: seqOf(pr.Record.Partition, pr.Record.Offset)}
	}
	return res, nil
}

// PublishAsync implements broker.AsyncPublisher with kgo's Produce: done is
// called once every record of p is acknowledged (acks=all) or one failed.
// It blocks while the producer's buffer is full (backpressure).
func (b *Broker) PublishAsync(ctx context.Context, p *broker.PublishParams, done func(*broker.PublishResult, error)) error {
	if err := b.beginPublish(); err != nil {
		return err
	}
	kt, err := b.prepare(ctx, p)
	if err != nil {
		b.pubs.Done()
		return err
	}
	res := &broker.PublishResult{Results: make([]broker.MessageResult, len(p.Messages))}
	var (
		mu      sync.Mutex
		left    = len(p.Messages)
		failure error
	)
	for i, m := range p.Messages {
		res.Results[i].ID = m.ID
		b.cl.Produce(ctx, toRecord(kt, m), func(r *kgo.Record, err error) {
			mu.Lock()
			if err != nil && failure == nil {
				failure = b.opErr(ctx, "publish to "+p.Topic, err)
			} else if err == nil {
				res.Results[i].Seq = seqOf(r.Partition, r.Offset)
			}
			left--
			last := left == 0
			mu.Unlock()
			if last {
				if failure != nil {
					done(nil, failure)
				} else {
					done(res, nil)
				}
				b.pubs.Done()
			}
		})
	}
	return nil
}

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := broker.CheckSubscribe(b.caps, p); err != nil {
		return nil, err
	}
	kt, err := kafkaTopic(p.Topic)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s: subscribe: %w", backendName, broker.ErrClosed)
	}
	if err := b.ensureTopic(ctx, kt); err != nil {
		return nil, err
	}
	if p.Group == "" {
		return b.subscribeEphemeral(ctx, kt, p)
	}
	return b.subscribeGroup(ctx, kt, p)
}
