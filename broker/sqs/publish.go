package sqs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// Attributes of the adapter's own, next to the brokerutil envelope (whose
// "Sb-" names are written "Sb." in SQS: the attribute names "sb-…" are
// reserved by some SQS servers, Switchboard's face among them).
const (
	attrSeq      = "Sb-Seq"      // publisher-assigned sequence number
	attrEncoding = "Sb-Encoding" // "base64": the body is the payload in base64; "empty": the payload is empty
	attrHeaders  = "Sb-Headers"  // JSON object of the headers that cannot be attributes
)

var (
	seqMu   sync.Mutex
	lastSeq uint64
)

// nextSeq is microseconds since the epoch, strictly increasing per process:
// SQS has no offsets.
func nextSeq() uint64 {
	seqMu.Lock()
	defer seqMu.Unlock()
	s := uint64(time.Now().UnixMicro())
	if s <= lastSeq {
		s = lastSeq + 1
	}
	lastSeq = s
	return s
}

// attrName maps an envelope or header name to an SQS attribute name.
func attrName(h string) string {
	if len(h) >= 3 && strings.EqualFold(h[:3], "sb-") {
		return h[:2] + "." + h[3:]
	}
	return h
}

// headerName is the reverse of attrName.
func headerName(a string) string {
	if len(a) >= 3 && strings.EqualFold(a[:3], "sb.") {
		return a[:2] + "-" + a[3:]
	}
	return a
}

// validSQSText reports whether s can be an SQS body or attribute value.
func validSQSText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !(r == 0x9 || r == 0xA || r == 0xD || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000) {
			return false
		}
	}
	return true
}

// plainAttr reports whether user header h=v can travel as an attribute of
// its own name.
func plainAttr(h, v string) bool {
	if h == "" || len(h) > 256 || v == "" || h[0] == '.' || h[len(h)-1] == '.' || strings.Contains(h, "..") || !validSQSText(v) {
		return false
	}
	l := strings.ToLower(h)
	for _, p := range []string{"aws.", "amazon.", "sqs-", "sb-", "sb."} {
		if strings.HasPrefix(l, p) {
			return false
		}
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// encoded is one message as SQS sends it.
type encoded struct {
	body  string
	attrs map[string]types.MessageAttributeValue
	size  int // body + attribute names, types and values, as SQS counts
	delay int32
}

func strAttr(v string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
}

// encode maps m to an SQS body and attributes: the brokerutil envelope and
// the user headers as String attributes. When the headers that fit as
// attributes would pass SQS's 10-attribute limit, or a header cannot be an
// attribute (empty value, a name SQS forbids), the user headers travel
// together as JSON in "Sb.Headers".
func encode(m *message.Message, seq uint64, now time.Time) (*encoded, error) {
	e := &encoded{attrs: map[string]types.MessageAttributeValue{}}
	user := map[string]string{}
	brokerutil.Encode(m, now, func(k, v string) {
		if brokerutil.IsEnvelope(k) {
			e.attrs[attrName(k)] = strAttr(v)
		} else {
			user[k] = v
		}
	})
	e.attrs[attrName(attrSeq)] = strAttr(strconv.FormatUint(seq, 10))
	if s := string(m.Payload); len(s) == 0 {
		// SQS bodies are never empty.
		e.body = "-"
		e.attrs[attrName(attrEncoding)] = strAttr("empty")
	} else if validSQSText(s) {
		e.body = s
	} else {
		// SQS bodies are XML text: anything else goes as base64.
		e.body = base64.StdEncoding.EncodeToString(m.Payload)
		e.attrs[attrName(attrEncoding)] = strAttr("base64")
	}
	packed := len(e.attrs)+len(user) > maxAttrs
	for k, v := range user {
		if !plainAttr(k, v) {
			packed = true
		}
	}
	if packed && len(user) > 0 {
		js, err := json.Marshal(user)
		if err != nil {
			return nil, err
		}
		e.attrs[attrName(attrHeaders)] = strAttr(string(js))
	} else {
		for k, v := range user {
			e.attrs[k] = strAttr(v)
		}
	}
	e.size = len(e.body)
	for k, v := range e.attrs {
		e.size += len(k) + len(*v.DataType) + len(*v.StringValue)
	}
	if !m.DeliverAt.IsZero() {
		if d := time.Until(m.DeliverAt); d > 0 {
			e.delay = int32(math.Ceil(d.Seconds()))
		}
	}
	return e, nil
}

// tooLarge is the error for a message SQS would refuse, naming both limits.
func tooLarge(err error) error {
	return fmt.Errorf("%w (SQS's maximum message size is %d bytes for the body and attributes together; Switchboard keeps %d bytes for the attributes and sends binary payloads in base64, so the payload limit is %d bytes)", err, MaxMessageSize, attrRoom, MaxPayload)
}

// Publish implements broker.Broker: each message is sent, in order, to every
// group queue of the topic, or to the topic's holding queue when it has
// none. The result's Seq is the publisher-assigned sequence number.
func (b *Broker) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	if b.isClosed() {
		return nil, fmt.Errorf("sqs: publish: %w", broker.ErrClosed)
	}
	if err := broker.PrepareMessages(b.caps, b.limits, p); err != nil {
		if errors.Is(err, message.ErrTooLarge) {
			return nil, tooLarge(err)
		}
		return nil, err
	}
	now := time.Now()
	encs := make([]*encoded, len(p.Messages))
	seqs := make([]uint64, len(p.Messages))
	for i, m := range p.Messages {
		if !m.DeliverAt.IsZero() && time.Until(m.DeliverAt) > maxDelay {
			return nil, broker.NotSupported(b.caps.Name, fmt.Sprintf("a delay of %s (deliver-at %s)", time.Until(m.DeliverAt).Round(time.Second), m.DeliverAt.UTC().Format(time.RFC3339)), "SQS delays a message by at most 15 minutes (DelaySeconds 900)")
		}
		seqs[i] = nextSeq()
		e, err := encode(m, seqs[i], now)
		if err != nil {
			return nil, fmt.Errorf("sqs: message %s: %w", m.ID, err)
		}
		if e.size > MaxMessageSize {
			return nil, tooLarge(&message.ValidationError{Field: "message", Value: m.ID,
				Reason: fmt.Sprintf("%d bytes of body and attributes exceeds the limit of %d bytes", e.size, MaxMessageSize)})
		}
		encs[i] = e
	}
	queues, err := b.topicQueues(ctx, p.Topic)
	if err != nil {
		return nil, err
	}
	if len(queues) == 0 {
		u, err := b.ensureQueue(ctx, b.QueueName(p.Topic, ""))
		if err != nil {
			return nil, err
		}
		queues = []string{u}
	}
	res := &broker.PublishResult{}
	for i, m := range p.Messages {
		for _, q := range queues {
			in := &awssqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String(encs[i].body), MessageAttributes: encs[i].attrs}
			if b.cfg.fifo {
				gid := m.Key
				if gid == "" {
					gid = m.ID
				}
				in.MessageGroupId = aws.String(gid)
				in.MessageDeduplicationId = aws.String(m.ID)
			} else if encs[i].delay > 0 {
				in.DelaySeconds = encs[i].delay
			}
			if _, err := b.c.SendMessage(ctx, in); err != nil {
				if isMissingQueue(err) { // a group deleted meanwhile
					continue
				}
				return res, brokerutil.CtxErr(ctx, fmt.Sprintf("sqs: send message %s to %s", m.ID, q), err)
			}
		}
		res.Results = append(res.Results, broker.MessageResult{ID: m.ID, Seq: seqs[i]})
	}
	return res, nil
}

func isMissingQueue(err error) bool {
	var nq *types.QueueDoesNotExist
	return errors.As(err, &nq)
}
