// Package nats is the NATS JetStream backend of Switchboard, registered for
// the URL scheme "nats" (nats://127.0.0.1:4222).
//
// # Mapping
//
//   - A topic is a NATS subject with the same name: both are dot-separated,
//     and the wildcards '*' (one token) and '>' (one or more trailing
//     tokens) mean the same thing. A system topic's leading '$' (e.g. the
//     dead-letter topic "$dlq.email") is written "_sb" ("_sbdlq.email")
//     because subjects starting with '$' belong to the server; topics of
//     your own must therefore not start with "_sb".
//   - One stream per first token: topic "orders.placed" is stored in stream
//     "SB_orders" with subjects "orders" and "orders.>", created on first
//     use (file storage, the dedup window of the URL). A stream that already
//     captures the subject (made by you or another tool) is used as it is.
//     Because a consumer reads one stream, a group's pattern must keep its
//     first token literal ("orders.*" works, "*.placed" is refused).
//   - A group is a durable pull consumer named after the group (with '.'
//     written '~'), filtered on the topic: AckWait = AckDeadline, MaxDeliver
//     = MaxAttempts + 1 (the extra delivery is the one the adapter turns
//     into a dead letter when the last attempt missed its deadline), BackOff
//     = AckDeadline + Backoff(n) per attempt, so a missed deadline is
//     redelivered after the backoff. A subscription pulls no more messages
//     than it has free MaxInFlight slots, keeping a second pull request
//     outstanding while the first one's messages are handed out (pull.go).
//     Ack returns once the server has confirmed the ack, as DoubleAck; acks
//     sent together share one confirmation (ack.go). Nack uses NakWithDelay
//     (the explicit delay, or Backoff(attempt)); Extend uses InProgress;
//     Term and final failures publish to the dead-letter topic and then
//     Term the message.
//   - Publish uses the JetStream publish with Nats-Msg-Id = "<topic>/<ID>",
//     so the stream's duplicate window deduplicates per topic; PubAck.Duplicate is
//     reported as MessageResult.Duplicate, PubAck.Sequence as Seq (the
//     stream's sequence, which increases per topic but is shared by the
//     stream's topics).
//   - An ephemeral subscription is a core NATS subscription; request/reply
//     is a core NATS request on "_sbreq.<topic>" (NATS answers "no
//     responders" at once when nobody listens).
//
// See docs/backends.md for the header mapping and the capabilities table.
package nats

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

const backendName = "nats-jetstream"

func init() {
	broker.Register("nats", func(ctx context.Context, u *url.URL) (broker.Broker, error) {
		return Open(ctx, u.String())
	})
}

// Broker is the NATS JetStream backend. It is safe for concurrent use.
type Broker struct {
	nc     *natsgo.Conn
	js     jetstream.JetStream
	cfg    config
	limits message.Limits
	caps   broker.Capabilities

	streams sync.Map // subject or pattern -> stream name
	replies *replies // answers to publishes and ack confirmations

	subs brokerutil.Subs
	shut atomic.Bool // closed
}

var _ broker.Broker = (*Broker)(nil)
var _ broker.Requester = (*Broker)(nil)

type config struct {
	addr        string
	dialTimeout time.Duration
	dupWindow   time.Duration
	maxAge      time.Duration
	maxBytes    int64
	maxMsgs     int64
	replicas    int
	streamPre   string
	inactive    time.Duration
}

// Open connects to the NATS server named by rawURL:
//
//	nats://[user:pass@]host:4222[?dial_timeout=5s&dedup_window=2m&max_age=…&max_bytes=…&max_msgs=…&replicas=1&stream_prefix=SB_&consumer_inactive=…]
//
// dial_timeout bounds the first connection (default 5 s); after that the
// client reconnects forever with backoff. dedup_window, max_age, max_bytes,
// max_msgs, replicas and stream_prefix configure the streams the backend
// creates; consumer_inactive, when set, lets the server delete a group's
// consumer after it has had no subscriber that long (its position is lost).
// ctx bounds connecting only.
func Open(ctx context.Context, rawURL string) (*Broker, error) {
	u, err := brokerutil.ParseURL(backendName, rawURL, "nats://127.0.0.1:4222", "nats", "tls")
	if err != nil {
		return nil, err
	}
	q := brokerutil.NewQuery(backendName, u)
	cfg := config{
		addr:        u.Host,
		dialTimeout: q.Duration("dial_timeout", brokerutil.DefaultDialTimeout),
		dupWindow:   q.Duration("dedup_window", 2*time.Minute),
		maxAge:      q.Duration("max_age", 0),
		maxBytes:    q.Int("max_bytes", 0),
		maxMsgs:     q.Int("max_msgs", 0),
		replicas:    int(q.Int("replicas", 1)),
		streamPre:   q.String("stream_prefix", "SB_"),
		inactive:    q.Duration("consumer_inactive", 0),
	}
	if err := q.Err(); err != nil {
		return nil, err
	}
	server := *u
	server.RawQuery = ""
	if d, ok := ctx.Deadline(); ok && time.Until(d) < cfg.dialTimeout {
		cfg.dialTimeout = max(time.Until(d), time.Millisecond)
	}
	// Ack confirmations written before a reconnect may never be answered:
	// fail them then (see ack.go).
	var reps atomic.Pointer[replies]
	nc, err := natsgo.Connect(server.String(),
		natsgo.Name("switchboard"),
		natsgo.Timeout(cfg.dialTimeout),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250*time.Millisecond),
		natsgo.ReconnectJitter(250*time.Millisecond, time.Second),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			if r := reps.Load(); r != nil {
				r.failOrderedBefore(nc.Stats().Reconnects)
			}
		}),
		natsgo.ClosedHandler(func(*natsgo.Conn) {
			if r := reps.Load(); r != nil {
				r.failAll(fmt.Errorf("%s: the connection closed: %w", backendName, broker.ErrClosed))
			}
		}),
	)
	if err != nil {
		if errors.Is(err, natsgo.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization") {
			return nil, fmt.Errorf("%s: %s refused the credentials of %s: %w", backendName, cfg.addr, broker.Redact(rawURL), err)
		}
		return nil, brokerutil.Unreachable(backendName, cfg.addr, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", backendName, err)
	}
	actx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		nc.Close()
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, fmt.Errorf("%s: %s has JetStream disabled; start nats-server with -js: %w", backendName, cfg.addr, broker.ErrUnavailable)
		}
		return nil, brokerutil.Unreachable(backendName, cfg.addr, err)
	}
	r, err := newReplies(nc)
	if err != nil {
		nc.Close()
		return nil, brokerutil.Unreachable(backendName, cfg.addr, err)
	}
	reps.Store(r)
	b := &Broker{nc: nc, js: js, replies: r, cfg: cfg, limits: message.DefaultLimits()}
	// The server's max_payload covers headers too: keep room for the
	// largest header block Switchboard allows plus the envelope.
	maxPayload := int(nc.MaxPayload()) - b.limits.MaxHeaderBytes - 2048
	b.caps = broker.Capabilities{
		Name:           backendName,
		Durable:        true,
		Groups:         true,
		Ephemeral:      true,
		Patterns:       true,
		Ack:            true,
		NackDelay:      true,
		Extend:         true,
		DeadLetter:     true,
		Expiry:         true,
		Dedup:          true,
		StartPositions: true,
		Request:        true,
		MaxPayload:     maxPayload,
	}
	return b, nil
}

// Capabilities implements broker.Broker.
func (b *Broker) Capabilities() broker.Capabilities { return b.caps }

// Conn returns the underlying NATS connection.
func (b *Broker) Conn() *natsgo.Conn { return b.nc }

// Close closes every subscription (their unsettled deliveries are nak'ed
// for redelivery) and then drains and closes the connection.
func (b *Broker) Close() error {
	if b.shut.Swap(true) {
		return nil
	}
	b.subs.CloseAll()
	// Naks are plain publishes: flush them to the server before the
	// connection goes, or released messages would wait out AckWait; and
	// let the acks and publishes in flight get their answers.
	start := time.Now()
	_ = b.nc.FlushTimeout(closeWait)
	b.replies.close(max(closeWait-time.Since(start), 0))
	b.nc.Close()
	return nil
}

// closeWait bounds how long Close waits for the server.
const closeWait = 5 * time.Second

func (b *Broker) isClosed() bool { return b.shut.Load() }

// subject maps a topic or pattern to its NATS subject: a leading '$' is
// written "_sb".
func subject(topic string) string {
	if strings.HasPrefix(topic, "$") {
		return "_sb" + topic[1:]
	}
	return topic
}

// topicOf maps a subject back to its topic.
func topicOf(subj string) string {
	if strings.HasPrefix(subj, "_sb") && !strings.HasPrefix(subj, brokerutil.ReqPrefix) {
		return "$" + subj[3:]
	}
	return subj
}

func checkReserved(topic string) error {
	if strings.HasPrefix(topic, "_sb") {
		return &message.ValidationError{Field: "topic", Value: topic, Reason: "topics starting with \"_sb\" are reserved on NATS (they carry system topics such as \"$dlq.<group>\"); rename the topic"}
	}
	return nil
}

// consumerName maps a group to a durable consumer name ('.' is not allowed
// in NATS names).
func consumerName(group string) string { return strings.ReplaceAll(group, ".", "~") }

// streamFor returns the stream that stores subj (a subject or a pattern),
// creating "SB_<first token>" when no stream captures it.
func (b *Broker) streamFor(ctx context.Context, subj string) (string, error) {
	if v, ok := b.streams.Load(subj); ok {
		return v.(string), nil
	}
	first, _, _ := strings.Cut(subj, ".")
	if first == "*" || first == ">" {
		return "", broker.NotSupported(backendName, "group on a pattern with a wildcard first segment ("+topicOf(subj)+")", "a consumer reads one stream and streams are per first segment; keep the first segment literal, e.g. \"orders.*\"")
	}
	name, err := b.js.StreamNameBySubject(ctx, subj)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return "", b.opErr(ctx, "look up the stream of "+subj, err)
	}
	if name == "" {
		name = b.cfg.streamPre + strings.ReplaceAll(first, ".", "~")
		_, err = b.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        name,
			Description: "Switchboard topics " + topicOf(first) + " and " + topicOf(first) + ".>",
			Subjects:    []string{first, first + ".>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Duplicates:  b.cfg.dupWindow,
			MaxAge:      b.cfg.maxAge,
			MaxBytes:    orUnlimited(b.cfg.maxBytes),
			MaxMsgs:     orUnlimited(b.cfg.maxMsgs),
			Replicas:    b.cfg.replicas,
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return "", b.opErr(ctx, "create stream "+name+" for "+subj, err)
		}
	}
	b.streams.Store(subj, name)
	return name, nil
}

func orUnlimited(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// opErr wraps a NATS error with what was being done, mapping a lost
// connection to ErrUnavailable and ctx errors to themselves.
func (b *Broker) opErr(ctx context.Context, what string, err error) error {
	switch {
	case errors.Is(err, natsgo.ErrConnectionClosed):
		return fmt.Errorf("%s: %s: %w", backendName, what, broker.ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %s: %w", backendName, what, ctx.Err())
	case errors.Is(err, natsgo.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, natsgo.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		b.nc.Status() != natsgo.CONNECTED:
		return fmt.Errorf("%s: %s on %s: %w (%v)", backendName, what, b.cfg.addr, broker.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %s: %w", backendName, what, err)
}

// dedupID is the Nats-Msg-Id of a message: the stream's duplicate window is
// per stream and a stream holds several topics, so the ID is scoped by the
// topic ("<topic>/<id>") to make dedup per topic.
func dedupID(topic, id string) string { return topic + "/" + id }

// toNATS encodes m as a NATS message on subj. Envelope fields travel as
// "Sb-" headers; the ID also as Nats-Msg-Id for the stream's dedup window.
// The header values share one backing array (one allocation, not one per
// header).
func toNATS(subj string, m *message.Message, msgID string) *natsgo.Msg {
	n := envelopeFields + len(m.Headers)
	h := make(natsgo.Header, n)
	vals := make([]string, 0, n)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	brokerutil.Encode(m, time.Time{}, set)
	if msgID != "" {
		set(natsgo.MsgIdHdr, msgID)
	}
	return &natsgo.Msg{Subject: subj, Header: h, Data: m.Payload}
}

// envelopeFields bounds the headers toNATS writes besides the user's: the
// envelope fields brokerutil.Encode may write and Nats-Msg-Id.
const envelopeFields = 7

// fromNATS decodes a NATS message. Headers of the "Nats-" namespace are the
// server's and are dropped, except that Nats-Msg-Id gives the ID of a
// message published by a plain NATS client.
func fromNATS(nm *natsgo.Msg, publishedAt time.Time) *message.Message {
	m := &message.Message{Topic: topicOf(nm.Subject), Payload: nm.Data, PublishedAt: publishedAt}
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	for k, vs := range nm.Header {
		if len(vs) == 0 {
			continue
		}
		if strings.HasPrefix(k, "Nats-") {
			if k == natsgo.MsgIdHdr && m.ID == "" {
				m.ID = vs[0]
			}
			continue
		}
		brokerutil.Decode(m, k, vs[0])
	}
	if id := nm.Header.Get(brokerutil.HeaderID); id != "" {
		m.ID = id
	}
	return m
}

// Publish implements broker.Broker. Each message is acknowledged by the
// stream (stored per the stream's storage, file by default) before Publish
// returns. A batch is not atomic: on error, the results of the messages
// stored before the failure are not returned, and they stay stored.
func (b *Broker) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	if err := broker.PrepareMessages(b.caps, b.limits, p); err != nil {
		return nil, err
	}
	if err := checkReserved(p.Topic); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, fmt.Errorf("%s: publish: %w", backendName, broker.ErrClosed)
	}
	subj := subject(p.Topic)
	if _, err := b.streamFor(ctx, subj); err != nil {
		return nil, err
	}
	res := &broker.PublishResult{Results: make([]broker.MessageResult, len(p.Messages))}
	if len(p.Messages) == 1 {
		m := p.Messages[0]
		ack, err := b.publish(ctx, toNATS(subj, m, dedupID(p.Topic, m.ID)))
		if err != nil {
			return nil, b.opErr(ctx, "publish to "+p.Topic, err)
		}
		res.Results[0] = broker.MessageResult{ID: m.ID, Seq: ack.Sequence, Duplicate: ack.Duplicate}
		return res, nil
	}
	// A batch: every message is written before the first ack is awaited.
	sent := make([]sentPub, len(p.Messages))
	for i, m := range p.Messages {
		s, err := b.sendPub(toNATS(subj, m, dedupID(p.Topic, m.ID)))
		if err != nil {
			b.forget(sent[:i])
			return nil, b.opErr(ctx, fmt.Sprintf("publish message %d of batch to %s", i, p.Topic), err)
		}
		sent[i] = s
	}
	for i, s := range sent {
		ack, err := b.awaitPub(ctx, s)
		if err != nil {
			b.forget(sent[i+1:])
			return nil, b.opErr(ctx, fmt.Sprintf("publish message %d of batch to %s", i, p.Topic), err)
		}
		res.Results[i] = broker.MessageResult{ID: p.Messages[i].ID, Seq: ack.Sequence, Duplicate: ack.Duplicate}
	}
	return res, nil
}

// Subscribe implements broker.Broker.
func (b *Broker) Subscribe(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := broker.CheckSubscribe(b.caps, p); err != nil {
		return nil, err
	}
	if err := checkReserved(p.Topic); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, fmt.Errorf("%s: subscribe: %w", backendName, broker.ErrClosed)
	}
	if p.Group == "" {
		return b.subscribeEphemeral(p)
	}
	return b.subscribeGroup(ctx, p)
}

// Request implements broker.Requester with a core NATS request on
// "_sbreq.<topic>", which reaches the topic's ephemeral subscribers.
func (b *Broker) Request(ctx context.Context, topic string, req *message.Message, timeout time.Duration) (*message.Message, error) {
	if err := message.ValidateTopic(topic); err != nil {
		return nil, err
	}
	if timeout <= 0 {
		return nil, &message.ValidationError{Field: "timeout", Reason: "a request needs a timeout"}
	}
	if err := b.limits.Validate(req); err != nil {
		return nil, err
	}
	m := req.Clone()
	if m.ID == "" {
		m.ID = message.NewID()
	}
	m.Topic = topic
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := b.nc.RequestMsgWithContext(rctx, toNATS(brokerutil.ReqPrefix+subject(topic), m, ""))
	switch {
	case err == nil:
	case errors.Is(err, natsgo.ErrNoResponders):
		return nil, fmt.Errorf("%s: request to %s: %w", backendName, topic, broker.ErrNoResponders)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s: request to %s: %w", backendName, topic, ctx.Err())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, natsgo.ErrTimeout):
		return nil, fmt.Errorf("%s: request to %s: no reply within %s: %w", backendName, topic, timeout, broker.ErrTimeout)
	default:
		return nil, b.opErr(ctx, "request to "+topic, err)
	}
	out := fromNATS(resp, time.Now())
	out.Topic = topic
	return out, nil
}

// ephemeralAcker settles nothing and answers requests.
type ephemeralAcker struct {
	brokerutil.NoopAcker
	b *Broker
}

// Reply publishes resp to the request's reply inbox.
func (a ephemeralAcker) Reply(ctx context.Context, req *message.Message, resp *message.Message) error {
	m, err := brokerutil.ReplyMessage(a.b.limits, resp)
	if err != nil {
		return err
	}
	nm := toNATS(req.Header(message.HeaderReplyTo), m, "")
	if err := a.b.nc.PublishMsg(nm); err != nil {
		return a.b.opErr(ctx, "reply to "+req.ID, err)
	}
	return nil
}

func (b *Broker) subscribeEphemeral(p *broker.SubscribeParams) (broker.Subscription, error) {
	subj := subject(p.Topic)
	var natsSubs []*natsgo.Subscription
	s := brokerutil.NewSub(func() {
		for _, ns := range natsSubs {
			_ = ns.Unsubscribe()
		}
	})
	msgs := make(chan *natsgo.Msg, 1024)
	for _, sj := range []string{subj, brokerutil.ReqPrefix + subj} {
		ns, err := b.nc.ChanSubscribe(sj, msgs)
		if err != nil {
			for _, x := range natsSubs {
				_ = x.Unsubscribe()
			}
			return nil, b.opErr(context.Background(), "subscribe to "+p.Topic, err)
		}
		natsSubs = append(natsSubs, ns)
	}
	if err := b.nc.Flush(); err != nil {
		for _, x := range natsSubs {
			_ = x.Unsubscribe()
		}
		return nil, b.opErr(context.Background(), "subscribe to "+p.Topic, err)
	}
	if err := b.subs.Track(s, backendName); err != nil {
		for _, x := range natsSubs {
			_ = x.Unsubscribe()
		}
		return nil, err
	}
	s.Run(func() error {
		defer b.subs.Untrack(s)
		b.pump(s, "", msgs)
		return nil
	})
	return s, nil
}

// pump hands core NATS messages (live messages and requests) to s until it
// closes. group is "" for an ephemeral subscription.
func (b *Broker) pump(s *brokerutil.Sub, group string, msgs <-chan *natsgo.Msg) {
	acker := ephemeralAcker{b: b}
	for {
		select {
		case <-s.Done():
			return
		case nm := <-msgs:
			m := fromNATS(nm, time.Now())
			if strings.HasPrefix(nm.Subject, brokerutil.ReqPrefix) {
				m.Topic = topicOf(strings.TrimPrefix(nm.Subject, brokerutil.ReqPrefix))
				if nm.Reply == "" {
					continue
				}
				m.SetHeader(message.HeaderReplyTo, nm.Reply)
			}
			if m.Expired(time.Now()) {
				continue // never hand an expired message to a handler
			}
			if !s.Send(broker.NewDelivery(m, message.Info{Group: group, Attempt: 1}, acker, nil)) {
				return
			}
		}
	}
}
