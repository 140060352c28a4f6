package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// frameMagic starts a Pub/Sub message written by Switchboard. A Pub/Sub
// message is one string, so the envelope and headers are framed in front
// of the payload: magic, uvarint count of header pairs, each name and value
// as uvarint length + bytes, then the payload. A message without the magic
// (PUBLISH from redis-cli) is taken whole as the payload.
const frameMagic = "SB1\x00"

func encodeFrame(m *message.Message) []byte {
	var pairs [][2]string
	brokerutil.Encode(m, time.Time{}, func(k, v string) { pairs = append(pairs, [2]string{k, v}) })
	buf := make([]byte, 0, len(frameMagic)+len(m.Payload)+64*len(pairs))
	buf = append(buf, frameMagic...)
	buf = binary.AppendUvarint(buf, uint64(len(pairs)))
	for _, p := range pairs {
		for _, s := range p {
			buf = binary.AppendUvarint(buf, uint64(len(s)))
			buf = append(buf, s...)
		}
	}
	return append(buf, m.Payload...)
}

func decodeFrame(topic, data string) *message.Message {
	m := &message.Message{Topic: topic}
	if !strings.HasPrefix(data, frameMagic) {
		m.Payload = []byte(data)
		m.ID = message.NewID()
		return m
	}
	b := []byte(data[len(frameMagic):])
	next := func() (string, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return "", false
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, true
	}
	count, k := binary.Uvarint(b)
	if k <= 0 {
		m.Payload = []byte(data)
		return m
	}
	b = b[k:]
	for range count {
		name, ok1 := next()
		value, ok2 := next()
		if !ok1 || !ok2 {
			break
		}
		brokerutil.Decode(m, name, value)
	}
	m.Payload = b
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	if m.ID == "" {
		m.ID = message.NewID()
	}
	return m
}

// glob maps a Switchboard pattern to a Redis PSUBSCRIBE glob that matches a
// superset ('*' in a glob crosses dots); deliveries are then filtered with
// message.Match, so the result is exact.
func glob(pattern string) string {
	segs := strings.Split(pattern, ".")
	for i, s := range segs {
		if s == ">" || s == "*" {
			segs[i] = "*"
		} else {
			segs[i] = strings.NewReplacer(`\`, `\\`, "?", `\?`, "[", `\[`, "]", `\]`).Replace(s)
		}
	}
	return strings.Join(segs, ".")
}

// listen subscribes to the Pub/Sub channels of topic: the topic itself when
// live is true, and its request channel. A pattern uses PSUBSCRIBE.
func (b *Broker) listen(ctx context.Context, topic string, live bool) (*goredis.PubSub, error) {
	var chans []string
	if live {
		chans = append(chans, b.key(topic))
	}
	chans = append(chans, b.key(brokerutil.ReqPrefix+topic))
	var ps *goredis.PubSub
	if message.IsPattern(topic) {
		for i, c := range chans {
			chans[i] = glob(c)
		}
		ps = b.rdb.PSubscribe(ctx, chans...)
	} else {
		ps = b.rdb.Subscribe(ctx, chans...)
	}
	// Wait for the server's confirmation so that a publish made after
	// Subscribe returns is seen.
	for range chans {
		if _, err := ps.Receive(ctx); err != nil {
			_ = ps.Close()
			return nil, b.opErr(ctx, "subscribe to "+topic, err)
		}
	}
	return ps, nil
}

// pumpPubSub hands Pub/Sub messages (live ones and requests) to s until it
// closes. pattern filters exactly what the glob let through.
func (b *Broker) pumpPubSub(s *brokerutil.Sub, ps *goredis.PubSub, pattern, group string) {
	acker := ephemeralAcker{b: b}
	ch := ps.Channel(goredis.WithChannelSize(1024))
	for {
		select {
		case <-s.Done():
			return
		case pm, ok := <-ch:
			if !ok {
				return
			}
			name := strings.TrimPrefix(pm.Channel, b.cfg.prefix)
			req := strings.HasPrefix(name, brokerutil.ReqPrefix)
			topic := strings.TrimPrefix(name, brokerutil.ReqPrefix)
			if !message.Match(pattern, topic) {
				continue
			}
			m := decodeFrame(topic, pm.Payload)
			if req && m.Header(message.HeaderReplyTo) == "" {
				continue
			}
			if !req {
				delete(m.Headers, message.HeaderReplyTo)
			}
			if m.PublishedAt.IsZero() {
				m.PublishedAt = time.Now()
			}
			if m.Expired(time.Now()) {
				continue
			}
			if !s.Send(broker.NewDelivery(m, message.Info{Group: group, Attempt: 1}, acker, nil)) {
				return
			}
		}
	}
}

func (b *Broker) subscribePubSub(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	ps, err := b.listen(ctx, p.Topic, true)
	if err != nil {
		return nil, err
	}
	s := brokerutil.NewSub(func() { _ = ps.Close() })
	if err := b.subs.Track(s, b.caps.Name); err != nil {
		_ = ps.Close()
		return nil, err
	}
	s.Run(func() error {
		defer b.subs.Untrack(s)
		b.pumpPubSub(s, ps, p.Topic, "")
		return nil
	})
	return s, nil
}

// ephemeralAcker settles nothing and answers requests.
type ephemeralAcker struct {
	brokerutil.NoopAcker
	b *Broker
}

// Reply PUBLISHes resp on the request's reply channel.
func (a ephemeralAcker) Reply(ctx context.Context, req *message.Message, resp *message.Message) error {
	m, err := brokerutil.ReplyMessage(a.b.limits, resp)
	if err != nil {
		return err
	}
	if err := a.b.rdb.Publish(ctx, req.Header(message.HeaderReplyTo), encodeFrame(m)).Err(); err != nil {
		return a.b.opErr(ctx, "reply to "+req.ID, err)
	}
	return nil
}

// Request implements broker.Requester over Pub/Sub: it subscribes to a
// reply channel, PUBLISHes the request on "_sbreq.<topic>" and fails at
// once with ErrNoResponders when PUBLISH reached nobody.
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
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	replyCh := b.key("_sbreply." + message.NewID())
	ps := b.rdb.Subscribe(rctx, replyCh)
	defer ps.Close()
	if _, err := ps.Receive(rctx); err != nil {
		return nil, b.requestErr(ctx, topic, timeout, err)
	}
	m.SetHeader(message.HeaderReplyTo, replyCh)
	n, err := b.rdb.Publish(rctx, b.key(brokerutil.ReqPrefix+topic), encodeFrame(m)).Result()
	if err != nil {
		return nil, b.requestErr(ctx, topic, timeout, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: request to %s: %w", b.caps.Name, topic, broker.ErrNoResponders)
	}
	select {
	case pm, ok := <-ps.Channel():
		if !ok {
			return nil, fmt.Errorf("%s: request to %s: %w", b.caps.Name, topic, broker.ErrClosed)
		}
		out := decodeFrame(topic, pm.Payload)
		return out, nil
	case <-rctx.Done():
		return nil, b.requestErr(ctx, topic, timeout, rctx.Err())
	}
}

func (b *Broker) requestErr(ctx context.Context, topic string, timeout time.Duration, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: request to %s: %w", b.caps.Name, topic, ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: request to %s: no reply within %s: %w", b.caps.Name, topic, timeout, broker.ErrTimeout)
	}
	return b.opErr(ctx, "request to "+topic, err)
}
