package sqs

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// maxVisibility is SQS's longest visibility timeout (12 hours).
const maxVisibility = 43200

// seconds rounds d up to whole seconds for SQS (a delay is never shorter
// than asked), between lo and 12 hours.
func seconds(d time.Duration, lo int32) int32 {
	s := int32(min(math.Ceil(d.Seconds()), maxVisibility))
	return max(s, lo)
}

// sub is a group subscription on the group's queue.
type sub struct {
	*brokerutil.Sub
	b     *Broker
	p     broker.SubscribeParams
	set   brokerutil.Settings
	queue string // URL
	slots chan struct{}

	mu       sync.Mutex
	inflight map[*token]struct{}
	closed   bool

	dels deleter // asynchronous acks (ack.go)
}

// token is the backend state of one delivery.
type token struct {
	handle   string
	attempt  int
	deadline atomic.Int64 // unix nanoseconds
	timer    *time.Timer  // expires the delivery at its deadline (guarded by sub.mu)
	expired  bool         // the deadline passed (guarded by sub.mu)
}

// Subscribe implements broker.Broker. Only group subscriptions exist: SQS
// has no live fan-out.
func (b *Broker) Subscribe(ctx context.Context, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := broker.CheckSubscribe(b.caps, p); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, fmt.Errorf("sqs: subscribe: %w", broker.ErrClosed)
	}
	q, err := b.ensureQueue(ctx, b.QueueName(p.Topic, p.Group))
	if err != nil {
		return nil, err
	}
	s := &sub{b: b, p: *p, set: brokerutil.SettingsOf(p), queue: q, inflight: map[*token]struct{}{}}
	s.slots = make(chan struct{}, s.set.MaxInFlight)
	s.Sub = brokerutil.NewSub(s.release)
	if err := b.subs.Track(s.Sub, "sqs: subscribe"); err != nil {
		return nil, err
	}
	s.Run(s.loop)
	return s, nil
}

// release runs once at Close: the unsettled messages become visible again.
func (s *sub) release() {
	s.mu.Lock()
	s.closed = true
	toks := make([]*token, 0, len(s.inflight))
	for t := range s.inflight {
		t.timer.Stop()
		toks = append(toks, t)
	}
	s.inflight = map[*token]struct{}{}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, t := range toks {
		_, _ = s.b.c.ChangeMessageVisibility(ctx, &awssqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(s.queue), ReceiptHandle: aws.String(t.handle), VisibilityTimeout: 0})
	}
	s.b.subs.Untrack(s.Sub)
}

// loop long polls the queue while there are free in-flight slots.
func (s *sub) loop() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fails := 0
	for !s.Closing() {
		free := 0
		for free < 10 {
			select {
			case s.slots <- struct{}{}:
				free++
				continue
			default:
			}
			break
		}
		if free == 0 {
			select {
			case s.slots <- struct{}{}:
				free = 1
			case <-s.Done():
				return nil
			}
		}
		vis := min(int32(math.Ceil(s.set.AckDeadline.Seconds())), maxVisibility)
		in := &awssqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(s.queue),
			MaxNumberOfMessages:         int32(free),
			WaitTimeSeconds:             int32(s.b.cfg.wait / time.Second),
			VisibilityTimeout:           vis,
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		}
		if s.b.cfg.fifo {
			// A response lost on the way (the connection broke after SQS
			// answered) leaves its messages invisible for the whole
			// visibility timeout. On FIFO queues the SDK's retry of the
			// same input carries the same attempt ID, and SQS answers it
			// with the same messages.
			in.ReceiveRequestAttemptId = aws.String(attemptID())
		}
		out, err := s.b.c.ReceiveMessage(ctx, in)
		if err != nil {
			for range free {
				<-s.slots
			}
			if isMissingQueue(err) {
				return fmt.Errorf("sqs: queue of group %q on %q was deleted: %w", s.p.Group, s.p.Topic, err)
			}
			fails++
			select {
			case <-time.After(brokerutil.ReconnectBackoff(fails)):
			case <-s.Done():
				return nil
			}
			continue
		}
		fails = 0
		for i := len(out.Messages); i < free; i++ {
			<-s.slots
		}
		for _, m := range out.Messages {
			s.handle(ctx, m, time.Now().Add(s.set.AckDeadline))
		}
	}
	return nil
}

// handle turns one received message into a delivery (or a dead letter).
func (s *sub) handle(ctx context.Context, sm types.Message, deadline time.Time) {
	m, seq := decode(sm, s.p.Topic)
	attempt, _ := strconv.Atoi(sm.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	attempt = max(attempt, 1)
	t := &token{handle: aws.ToString(sm.ReceiptHandle), attempt: attempt}
	t.deadline.Store(deadline.UnixNano())
	info := message.Info{Group: s.p.Group, Seq: seq, Attempt: attempt, Redelivered: attempt > 1, Deadline: deadline}
	d := broker.NewDelivery(m, info, acker{s}, t)
	switch {
	case s.set.MaxAttempts > 0 && attempt > s.set.MaxAttempts:
		// The last attempt missed its deadline: dead-letter, never deliver.
		info.Attempt = attempt - 1
		d.Info = info
		_ = s.deadLetter(ctx, d, brokerutil.ReasonMaxAttempts)
		<-s.slots
		return
	case !m.ExpiresAt.IsZero() && time.Now().After(m.ExpiresAt):
		_ = s.deadLetter(ctx, d, brokerutil.ReasonExpired)
		<-s.slots
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.slots
		return
	}
	s.inflight[t] = struct{}{}
	t.timer = time.AfterFunc(time.Until(deadline), func() { s.expire(t) })
	s.mu.Unlock()
	if !s.Send(d) {
		s.forget(t)
		_, _ = s.b.c.ChangeMessageVisibility(ctx, &awssqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(s.queue), ReceiptHandle: aws.String(t.handle), VisibilityTimeout: 0})
	}
}

// decode rebuilds the message from the SQS body and attributes.
func decode(sm types.Message, topic string) (*message.Message, uint64) {
	m := &message.Message{Topic: topic}
	var seq uint64
	body := aws.ToString(sm.Body)
	enc := ""
	for name, v := range sm.MessageAttributes {
		val := aws.ToString(v.StringValue)
		if v.StringValue == nil && v.BinaryValue != nil {
			val = base64.StdEncoding.EncodeToString(v.BinaryValue)
		}
		switch h := headerName(name); h {
		case attrSeq:
			seq, _ = strconv.ParseUint(val, 10, 64)
		case attrEncoding:
			enc = val
		case attrHeaders:
			var hs map[string]string
			if json.Unmarshal([]byte(val), &hs) == nil {
				for k, hv := range hs {
					m.SetHeader(k, hv)
				}
			} else {
				m.SetHeader(name, val)
			}
		default:
			if brokerutil.IsEnvelope(h) {
				brokerutil.Decode(m, h, val)
			} else {
				m.SetHeader(name, val)
			}
		}
	}
	m.Payload = []byte(body)
	switch enc {
	case "empty":
		m.Payload = []byte{}
	case "base64":
		if p, err := base64.StdEncoding.DecodeString(body); err == nil {
			m.Payload = p
		}
	}
	if m.ID == "" {
		m.ID = "sqs:" + aws.ToString(sm.MessageId)
	}
	if m.PublishedAt.IsZero() {
		if ms, err := strconv.ParseInt(sm.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
			m.PublishedAt = time.UnixMilli(ms)
		}
	}
	return m, seq
}

// expire runs at a delivery's deadline: the delivery no longer settles,
// and the message becomes visible again after the group's backoff. The
// visibility timeout given to SQS is the deadline rounded up to whole
// seconds, so this also honours sub-second deadlines.
func (s *sub) expire(t *token) {
	s.mu.Lock()
	_, ok := s.inflight[t]
	if ok {
		delete(s.inflight, t)
		t.expired = true
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	<-s.slots
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.visibility(ctx, t, seconds(s.set.Delay(t.attempt, 0), 0))
}

// forget removes t from the in-flight set and frees its slot. It fails
// with ErrDeliveryExpired after the deadline and ErrClosed after Close.
func (s *sub) forget(t *token) error {
	s.mu.Lock()
	_, ok := s.inflight[t]
	delete(s.inflight, t)
	expired := t.expired
	if ok && t.timer != nil {
		t.timer.Stop()
	}
	s.mu.Unlock()
	switch {
	case ok:
		<-s.slots
		return nil
	case expired:
		return broker.ErrDeliveryExpired
	default:
		return broker.ErrClosed
	}
}

// deadLetter publishes the dead letter of d to "$dlq.<group>" and then
// deletes the original.
func (s *sub) deadLetter(ctx context.Context, d *broker.Delivery, reason string) error {
	dl := brokerutil.DeadLetter(d.Message, d.Info, reason)
	if _, err := s.b.Publish(ctx, &broker.PublishParams{Topic: dl.Topic, Messages: []*message.Message{dl}}); err != nil {
		return fmt.Errorf("sqs: dead-letter %s: %w", d.Message.ID, err)
	}
	return s.del(ctx, d.Token.(*token))
}

func (s *sub) del(ctx context.Context, t *token) error {
	_, err := s.b.c.DeleteMessage(ctx, &awssqs.DeleteMessageInput{QueueUrl: aws.String(s.queue), ReceiptHandle: aws.String(t.handle)})
	return brokerutil.CtxErr(ctx, "sqs: delete message", err)
}

func (s *sub) visibility(ctx context.Context, t *token, secs int32) error {
	_, err := s.b.c.ChangeMessageVisibility(ctx, &awssqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(s.queue), ReceiptHandle: aws.String(t.handle), VisibilityTimeout: secs})
	return brokerutil.CtxErr(ctx, "sqs: change message visibility", err)
}

// acker settles deliveries of a sub.
type acker struct{ s *sub }

// settle takes d out of flight; it fails when the deadline passed (SQS
// may have handed the message out again) or the subscription closed.
func (a acker) settle(op string, d *broker.Delivery) (*token, error) {
	t := d.Token.(*token)
	if err := a.s.forget(t); err != nil {
		return nil, fmt.Errorf("sqs: %s of message %s: %w", op, d.Message.ID, err)
	}
	return t, nil
}

func (a acker) Ack(ctx context.Context, d *broker.Delivery) error {
	t, err := a.settle("ack", d)
	if err != nil {
		return err
	}
	return a.s.del(ctx, t)
}

func (a acker) Nack(ctx context.Context, d *broker.Delivery, delay time.Duration) error {
	t, err := a.settle("nack", d)
	if err != nil {
		return err
	}
	if a.s.set.Exhausted(d.Info.Attempt) {
		return a.s.deadLetter(ctx, d, brokerutil.ReasonMaxAttempts)
	}
	return a.s.visibility(ctx, t, seconds(a.s.set.Delay(d.Info.Attempt, delay), 0))
}

func (a acker) Term(ctx context.Context, d *broker.Delivery, reason string) error {
	if _, err := a.settle("term", d); err != nil {
		return err
	}
	return a.s.deadLetter(ctx, d, reason)
}

func (a acker) Extend(ctx context.Context, d *broker.Delivery, by time.Duration) error {
	t := d.Token.(*token)
	a.s.mu.Lock()
	_, ok := a.s.inflight[t]
	expired := t.expired
	if ok {
		// Stop the clock while SQS is asked; a failure expires it.
		t.timer.Stop()
	}
	a.s.mu.Unlock()
	if !ok {
		err := broker.ErrClosed
		if expired {
			err = broker.ErrDeliveryExpired
		}
		return fmt.Errorf("sqs: extend of message %s: %w", d.Message.ID, err)
	}
	err := a.s.visibility(ctx, t, seconds(by, 1))
	a.s.mu.Lock()
	if _, still := a.s.inflight[t]; still {
		if err != nil {
			t.timer.Reset(0)
		} else {
			t.timer.Reset(by)
			t.deadline.Store(time.Now().Add(by).UnixNano())
		}
	}
	a.s.mu.Unlock()
	return err
}

// attemptID returns a new ReceiveRequestAttemptId: 32 random hex digits.
func attemptID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
