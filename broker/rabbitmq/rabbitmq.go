// Package rabbitmq is the RabbitMQ (AMQP 0-9-1) backend of Switchboard,
// registered for the URL schemes "amqp" and "amqps"
// (amqp://guest:guest@127.0.0.1:5672/).
//
// # Mapping
//
//   - One durable topic exchange, "switchboard" by default (?exchange=),
//     takes every topic; the routing key is the topic. Topics starting with
//     '$' (dead-letter topics "$dlq.<group>") go to "<exchange>.sys" so that
//     a wildcard binding never catches them, and requests go to
//     "<exchange>.req" so that they never land in a durable group queue.
//   - Patterns map to binding keys: '*' is '*' and '>' is "*.#" (AMQP's '#'
//     alone would also match zero words; '>' needs at least one).
//   - A group is one durable queue "<exchange>.<group>" bound to the topic
//     (or pattern); a quorum queue by default, a classic one with
//     ?queue_type=classic. Consumers use manual acks and a prefetch of
//     MaxInFlight. Binding the same group to a second topic adds a binding:
//     the group then follows both.
//   - Publish waits for the publisher confirm of every message. Unroutable
//     messages (no group or subscriber bound) are dropped by RabbitMQ as
//     they would be on any topic without groups; with ?mandatory=true they
//     come back (basic.return) and Publish fails naming the topic.
//   - Attempts: the attempt number is 1 + the attempts carried by the
//     message in its "Sb-Attempts" header (set when the adapter republishes
//     it, see below) + x-delivery-count (quorum queues count requeues after
//     a consumer died; classic queues only say "redelivered", counted as 1).
//   - Ack deadlines, nack delays and backoff are emulated: each delivery has
//     a timer; at the deadline, or on Nack, the adapter republishes the
//     message with Sb-Attempts+1 to a per-delay queue
//     "<exchange>.delay.<group>.<ms>" (x-message-ttl = the delay,
//     x-dead-letter-exchange "" and x-dead-letter-routing-key = the group's
//     queue, x-expires so unused delay queues vanish), waits for the
//     confirm, and then acks the original: the copy comes back to the group
//     after the delay. A consumer that dies leaves its unacked messages to
//     RabbitMQ, which requeues them (x-delivery-count counts them).
//   - Dead letters are published to "$dlq.<group>" on "<exchange>.sys",
//     where the durable queue "<exchange>.dlq.<group>" (declared with the
//     group) keeps them, and any group subscribed to "$dlq.<group>" gets a
//     copy.
//   - Sequence numbers: RabbitMQ queues have no offsets, so Seq is assigned
//     by the publishing process (microseconds since the epoch, strictly
//     increasing per process) and carried in "Sb-Seq". It orders one
//     publisher's messages; it is not a position to start from
//     (StartPositions is not declared).
//   - An ephemeral subscription is an exclusive, auto-delete queue with
//     automatic acks. Request/reply uses direct reply-to
//     (amq.rabbitmq.reply-to) and a mandatory publish on "<exchange>.req":
//     a request nobody is bound for comes back at once (ErrNoResponders).
//
// See docs/backends.md for the header mapping and the capabilities table.
package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

const backendName = "rabbitmq"

func init() {
	open := func(ctx context.Context, u *url.URL) (broker.Broker, error) { return Open(ctx, u.String()) }
	broker.Register("amqp", open)
	broker.Register("amqps", open)
}

// Envelope headers specific to this adapter.
const (
	headerSeq   = "Sb-Seq"
	headerTopic = "Sb-Topic" // the topic of a republished copy (its routing key is the queue's)
)

// Broker is the RabbitMQ backend. It is safe for concurrent use.
type Broker struct {
	url    string
	cfg    config
	limits message.Limits
	caps   broker.Capabilities

	mu      sync.Mutex
	conn    *amqp.Connection
	ready   chan struct{} // closed while conn is usable
	pub     *publisher
	subs    brokerutil.Subs
	closed  bool
	closing chan struct{}
	done    chan struct{}

	declared sync.Map // queue and exchange names already declared
	seq      atomic.Uint64
}

var _ broker.Broker = (*Broker)(nil)
var _ broker.Requester = (*Broker)(nil)

type config struct {
	addr         string
	exchange     string
	queueType    string
	mandatory    bool
	queueExpires time.Duration
	dial         time.Duration
}

// Open connects to RabbitMQ:
//
//	amqp://user:pass@host:5672/vhost[?exchange=switchboard&queue_type=quorum|classic&mandatory=false&queue_expires=&dial_timeout=5s]
//
// queue_expires, when set, gives group queues an x-expires (they vanish
// after being unused that long; useful for tests). dial_timeout bounds
// connecting; after a lost connection the backend reconnects forever with
// backoff and subscriptions resume. ctx bounds connecting only.
func Open(ctx context.Context, rawURL string) (*Broker, error) {
	u, err := brokerutil.ParseURL(backendName, rawURL, "amqp://guest:guest@127.0.0.1:5672/", "amqp", "amqps")
	if err != nil {
		return nil, err
	}
	q := brokerutil.NewQuery(backendName, u)
	cfg := config{
		addr:         u.Host,
		exchange:     q.String("exchange", "switchboard"),
		queueType:    q.String("queue_type", "quorum"),
		mandatory:    q.Bool("mandatory", false),
		queueExpires: q.Duration("queue_expires", 0),
		dial:         q.Duration("dial_timeout", brokerutil.DefaultDialTimeout),
	}
	if cfg.queueType != "quorum" && cfg.queueType != "classic" {
		q.Fail("queue_type=%q: use quorum (default) or classic", cfg.queueType)
	}
	if err := q.Err(); err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < cfg.dial {
		cfg.dial = max(time.Until(d), time.Millisecond)
	}
	clean := *u
	clean.RawQuery = ""
	b := &Broker{
		url: clean.String(), cfg: cfg, limits: message.DefaultLimits(),
		closing: make(chan struct{}), done: make(chan struct{}),
		ready: make(chan struct{}),
	}
	conn, err := b.dial()
	if err != nil {
		return nil, err
	}
	if err := b.declareExchanges(conn); err != nil {
		_ = conn.Close()
		return nil, err
	}
	b.setConn(conn)
	b.caps = broker.Capabilities{
		Name:       backendName,
		Durable:    true,
		Groups:     true,
		Ephemeral:  true,
		Patterns:   true,
		Ack:        true,
		NackDelay:  true,
		Extend:     true,
		DeadLetter: true,
		Expiry:     true,
		Request:    true,
		// RabbitMQ's default max message size is 128 MiB, above Switchboard's own limit.
	}
	go b.watch(conn)
	return b, nil
}

func (b *Broker) dial() (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(b.url, amqp.Config{
		Dial:       amqp.DefaultDial(b.cfg.dial),
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "switchboard"},
	})
	if err != nil {
		if errors.Is(err, amqp.ErrCredentials) || strings.Contains(err.Error(), "ACCESS_REFUSED") || strings.Contains(err.Error(), "username or password") {
			return nil, fmt.Errorf("%s: %s refused the credentials of %s: %w", backendName, b.cfg.addr, broker.Redact(b.url), err)
		}
		if errors.Is(err, amqp.ErrVhost) {
			return nil, fmt.Errorf("%w: %s: %s: the virtual host does not exist or is not allowed: %v", broker.ErrBadURL, backendName, broker.Redact(b.url), err)
		}
		return nil, brokerutil.Unreachable(backendName, b.cfg.addr, err)
	}
	return conn, nil
}

func (b *Broker) setConn(conn *amqp.Connection) {
	b.mu.Lock()
	b.conn = conn
	b.pub = nil
	close(b.ready)
	b.mu.Unlock()
}

// watch reconnects with backoff whenever the connection drops, until Close.
func (b *Broker) watch(conn *amqp.Connection) {
	defer close(b.done)
	for {
		lost := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-b.closing:
			return
		case <-lost:
		}
		b.mu.Lock()
		b.ready = make(chan struct{})
		b.conn = nil
		b.pub = nil
		b.mu.Unlock()
		b.declared.Range(func(k, _ any) bool { b.declared.Delete(k); return true })
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-b.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := brokerutil.Retry(ctx, func(context.Context) error {
			c, err := b.dial()
			if err != nil {
				return err
			}
			if err := b.declareExchanges(c); err != nil {
				_ = c.Close()
				return err
			}
			conn = c
			return nil
		}, nil)
		cancel()
		if err != nil {
			return // closing
		}
		b.setConn(conn)
	}
}

// connection returns the live connection, waiting (bounded by ctx) while
// the backend reconnects.
func (b *Broker) connection(ctx context.Context) (*amqp.Connection, error) {
	for {
		b.mu.Lock()
		conn, ready, closed := b.conn, b.ready, b.closed
		b.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("%s: %w", backendName, broker.ErrClosed)
		}
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		if conn != nil {
			// Lost and not yet noticed by watch: give it a moment.
			ready = nil
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: waiting for the connection to %s: %w: %w", backendName, b.cfg.addr, broker.ErrUnavailable, ctx.Err())
		case <-b.closing:
			return nil, fmt.Errorf("%s: %w", backendName, broker.ErrClosed)
		}
	}
}

func (b *Broker) sysExchange() string { return b.cfg.exchange + ".sys" }
func (b *Broker) reqExchange() string { return b.cfg.exchange + ".req" }

// exchangeFor returns the exchange a topic (or pattern) lives on.
func (b *Broker) exchangeFor(topic string) string {
	if strings.HasPrefix(topic, "$") {
		return b.sysExchange()
	}
	return b.cfg.exchange
}

// bindingKey maps a pattern to an AMQP topic binding key.
func bindingKey(pattern string) string {
	segs := strings.Split(pattern, ".")
	if segs[len(segs)-1] == ">" {
		segs[len(segs)-1] = "*.#"
	}
	return strings.Join(segs, ".")
}

func (b *Broker) declareExchanges(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("%s: open channel on %s: %w", backendName, b.cfg.addr, err)
	}
	defer ch.Close()
	for _, name := range []string{b.cfg.exchange, b.sysExchange(), b.reqExchange()} {
		if err := ch.ExchangeDeclare(name, "topic", name != b.reqExchange(), false, false, false, nil); err != nil {
			return fmt.Errorf("%s: declare exchange %q: %w (an exchange of that name with other settings exists? use ?exchange=)", backendName, name, err)
		}
	}
	return nil
}

// Capabilities implements broker.Broker.
func (b *Broker) Capabilities() broker.Capabilities { return b.caps }

// Close closes every subscription (unsettled deliveries go back to their
// queue) and the connection.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.closing)
	conn := b.conn
	b.mu.Unlock()
	b.subs.CloseAll()
	if conn != nil {
		_ = conn.Close()
	}
	<-b.done
	return nil
}

// nextSeq returns a strictly increasing, time-based sequence number.
func (b *Broker) nextSeq() uint64 {
	for {
		old := b.seq.Load()
		n := max(old+1, uint64(time.Now().UnixMicro()))
		if b.seq.CompareAndSwap(old, n) {
			return n
		}
	}
}

// publishing encodes m. Native properties carry the ID (message-id), the
// content type, the publish time (timestamp) and persistence; the rest of
// the envelope and the user headers go in the headers table.
func publishing(m *message.Message, seq uint64) amqp.Publishing {
	h := amqp.Table{}
	brokerutil.Encode(m, time.Time{}, func(k, v string) {
		switch k {
		case brokerutil.HeaderID, brokerutil.HeaderContentType:
		default:
			h[k] = v
		}
	})
	if seq != 0 {
		h[headerSeq] = strconv.FormatUint(seq, 10)
	}
	return amqp.Publishing{
		Headers:      h,
		ContentType:  m.ContentType,
		DeliveryMode: amqp.Persistent,
		MessageId:    m.ID,
		Timestamp:    time.Now(),
		Body:         m.Payload,
	}
}

// rabbitHeader reports headers RabbitMQ adds itself (dead-lettering and
// quorum delivery counts); they are not passed on as user headers.
func rabbitHeader(k string) bool {
	return k == "x-delivery-count" || strings.HasPrefix(k, "x-death") || strings.HasPrefix(k, "x-first-death") ||
		strings.HasPrefix(k, "x-last-death") || k == "x-received-from"
}

// fromDelivery decodes d; it returns the message, its seq and the attempts
// it carries in Sb-Attempts.
func fromDelivery(d *amqp.Delivery) (*message.Message, uint64, int) {
	m := &message.Message{ID: d.MessageId, ContentType: d.ContentType, Payload: d.Body, Topic: d.RoutingKey}
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	if !d.Timestamp.IsZero() {
		m.PublishedAt = d.Timestamp
	}
	var seq uint64
	var attempts int
	for k, v := range d.Headers {
		if rabbitHeader(k) {
			continue
		}
		s, ok := v.(string)
		if !ok {
			s = fmt.Sprint(v)
		}
		switch k {
		case headerSeq:
			seq, _ = strconv.ParseUint(s, 10, 64)
		case headerTopic:
			m.Topic = s
		case brokerutil.HeaderAttempts:
			attempts, _ = strconv.Atoi(s)
		default:
			brokerutil.Decode(m, k, s)
		}
	}
	if m.ID == "" {
		m.ID = message.NewID()
	}
	if m.PublishedAt.IsZero() {
		m.PublishedAt = time.Now()
	}
	return m, seq, attempts
}

// Publish implements broker.Broker: each message is published persistent
// and Publish returns after RabbitMQ confirmed all of them (a confirm of a
// persistent message routed to durable queues means it is on disk). A batch
// is not atomic.
func (b *Broker) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	if err := broker.PrepareMessages(b.caps, b.limits, p); err != nil {
		return nil, err
	}
	if strings.HasPrefix(p.Topic, brokerutil.ReqPrefix) {
		return nil, &message.ValidationError{Field: "topic", Value: p.Topic, Reason: "topics starting with \"_sbreq.\" are reserved"}
	}
	res := &broker.PublishResult{Results: make([]broker.MessageResult, len(p.Messages))}
	msgs := make([]amqp.Publishing, len(p.Messages))
	for i, m := range p.Messages {
		seq := b.nextSeq()
		msgs[i] = publishing(m, seq)
		res.Results[i] = broker.MessageResult{ID: m.ID, Seq: seq}
	}
	if err := b.publish(ctx, b.exchangeFor(p.Topic), p.Topic, b.cfg.mandatory, msgs); err != nil {
		return nil, err
	}
	return res, nil
}

// publish publishes msgs with confirms and waits for them all.
func (b *Broker) publish(ctx context.Context, exchange, key string, mandatory bool, msgs []amqp.Publishing) error {
	pub, err := b.publisher(ctx)
	if err != nil {
		return err
	}
	return pub.publish(ctx, exchange, key, mandatory, msgs)
}

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := broker.CheckSubscribe(b.caps, p); err != nil {
		return nil, err
	}
	if _, err := b.connection(ctx); err != nil {
		return nil, err
	}
	if p.Group == "" {
		return b.subscribeEphemeral(ctx, p)
	}
	return b.subscribeGroup(ctx, p)
}
