package sqsface

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// How SQS message data is kept in a Switchboard message. A message
// attribute of type String is a plain header (so headers set by Switchboard
// publishers appear as String attributes and the other way round); other
// types add a header naming their type; binary values are base64.
const (
	hdrTypePrefix = "sqs-type."      // sqs-type.<attribute> = data type when not "String"
	hdrSent       = "sqs-sent"       // original send time (unix ms) of delayed or redriven messages
	hdrTrace      = "sqs-trace"      // AWSTraceHeader system attribute
	hdrDLQSource  = "sqs-dlq-source" // ARN of the queue a dead letter came from
	maxAttributes = 10
)

// sendEntry is one message to send (SendMessage or a batch entry).
type sendEntry struct {
	ID                      string               `json:"Id"`
	MessageBody             *string              `json:"MessageBody"`
	DelaySeconds            *int                 `json:"DelaySeconds"`
	MessageAttributes       map[string]attrValue `json:"MessageAttributes"`
	MessageSystemAttributes map[string]attrValue `json:"MessageSystemAttributes"`
	MessageDeduplicationID  string               `json:"MessageDeduplicationId"`
	MessageGroupID          string               `json:"MessageGroupId"`
}

// sendResult is the answer for one sent message.
type sendResult struct {
	ID                           string `json:"Id,omitempty" xml:"Id,omitempty"`
	MessageID                    string `json:"MessageId" xml:"MessageId"`
	MD5OfMessageBody             string `json:"MD5OfMessageBody" xml:"MD5OfMessageBody"`
	MD5OfMessageAttributes       string `json:"MD5OfMessageAttributes,omitempty" xml:"MD5OfMessageAttributes,omitempty"`
	MD5OfMessageSystemAttributes string `json:"MD5OfMessageSystemAttributes,omitempty" xml:"MD5OfMessageSystemAttributes,omitempty"`
	SequenceNumber               string `json:"SequenceNumber,omitempty" xml:"SequenceNumber,omitempty"`
}

// validBody reports whether s is valid UTF-8 of SQS's allowed characters
// (#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to
// #x10FFFF).
func validBody(s string) bool {
	i := 0
	for i+8 <= len(s) {
		if w := load64(s[i:]); (below(w, 0x20)|w)&highs != 0 {
			break // a control character or not ASCII: look bytewise
		}
		i += 8
	}
	for ; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return validRunes(s[i:])
		}
		if c < 0x20 && c != 0x9 && c != 0xA && c != 0xD {
			return false
		}
	}
	return true
}

// validRunes is validBody for text that is not all ASCII.
func validRunes(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !(r == 0x9 || r == 0xA || r == 0xD || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF) {
			return false
		}
	}
	return true
}

func validAttrName(n string) bool {
	if n == "" || len(n) > 256 || n[0] == '.' || n[len(n)-1] == '.' || strings.Contains(n, "..") {
		return false
	}
	l := strings.ToLower(n)
	if strings.HasPrefix(l, "aws.") || strings.HasPrefix(l, "amazon.") || strings.HasPrefix(l, "sqs-") || strings.HasPrefix(l, "sb-") {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// checkAttributes validates message attributes and returns their size as
// SQS counts it.
func checkAttributes(attrs map[string]attrValue, system bool) (int, *apiError) {
	if len(attrs) > maxAttributes {
		return 0, errInvalidParameterValue("Number of message attributes [%d] exceeds the allowed maximum [%d].", len(attrs), maxAttributes)
	}
	size := 0
	for name, v := range attrs {
		if system {
			if name != "AWSTraceHeader" {
				return 0, errInvalidParameterValue("Message system attribute name '%s' is invalid.", name)
			}
		} else if !validAttrName(name) {
			return 0, errInvalidParameterValue("Message (user) attribute name '%s' is invalid: names are 1 to 256 letters, digits, '-', '_' and '.', not starting with AWS., Amazon., sqs- or sb-.", name)
		}
		bt := baseType(v.DataType)
		if v.DataType == "" || len(v.DataType) > 256 || (bt != "String" && bt != "Number" && bt != "Binary") {
			return 0, errInvalidParameterValue("The type of message (user) attribute '%s' is invalid. You must use only the following supported type prefixes: Binary, Number, String.", name)
		}
		if len(v.StringListValues) > 0 || len(v.BinaryListValues) > 0 {
			return 0, errInvalidParameterValue("Message (user) attribute '%s': StringListValues and BinaryListValues are not implemented.", name)
		}
		switch bt {
		case "Binary":
			if len(v.BinaryValue) == 0 || v.StringValue != nil {
				return 0, errInvalidParameterValue("The message attribute '%s' with type 'Binary' must use field 'Binary'.", name)
			}
			size += len(v.BinaryValue)
		default:
			if v.StringValue == nil || *v.StringValue == "" || v.BinaryValue != nil {
				return 0, errInvalidParameterValue("The message attribute '%s' must contain non-empty message attribute value for message attribute type '%s'.", name, bt)
			}
			if !validBody(*v.StringValue) {
				return 0, errInvalidParameterValue("The message attribute '%s' contains characters outside the allowed set.", name)
			}
			if bt == "Number" {
				if _, err := strconv.ParseFloat(strings.TrimSpace(*v.StringValue), 64); err != nil {
					return 0, errInvalidParameterValue("Value %s for parameter MessageAttributeValue is invalid. Reason: Can't convert the value to a Number.", *v.StringValue)
				}
			}
			size += len(*v.StringValue)
		}
		size += len(name) + len(v.DataType)
	}
	return size, nil
}

// fifoMessageID derives a FIFO message's MessageId from its deduplication
// ID, so that a duplicate send reports the original's MessageId.
func fifoMessageID(topic, dedup string) string {
	s := sha256.Sum256([]byte(topic + "\x00" + dedup))
	s[6] = 0x80 | s[6]&0x0f // UUID version 8 (custom), RFC 9562 variant
	s[8] = 0x80 | s[8]&0x3f
	h := hex.EncodeToString(s[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// buildMessage validates e for q and turns it into a Switchboard message.
// It returns the message and the result (without MessageId for standard
// queues, which the publish assigns).
func (q *queue) buildMessage(e *sendEntry) (*message.Message, sendResult, *apiError) {
	var res sendResult
	if e.MessageBody == nil || *e.MessageBody == "" {
		return nil, res, errMissingParameter("MessageBody")
	}
	body := *e.MessageBody
	if !validBody(body) {
		return nil, res, errInvalidMessageContents()
	}
	q.mu.Lock()
	a := q.attrs
	q.mu.Unlock()
	size, aerr := checkAttributes(e.MessageAttributes, false)
	if aerr != nil {
		return nil, res, aerr
	}
	if _, aerr := checkAttributes(e.MessageSystemAttributes, true); aerr != nil {
		return nil, res, aerr
	}
	if len(body)+size > a.maxSize {
		return nil, res, errMessageTooLong(a.maxSize)
	}
	delay := a.delay
	if e.DelaySeconds != nil && (*e.DelaySeconds != 0 || !q.fifo) {
		if q.fifo {
			return nil, res, errInvalidParameterValue("Value %d for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.", *e.DelaySeconds)
		}
		if *e.DelaySeconds < 0 || *e.DelaySeconds > 900 {
			return nil, res, errInvalidParameterValue("Value %d for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900.", *e.DelaySeconds)
		}
		delay = time.Duration(*e.DelaySeconds) * time.Second
	}
	m := &message.Message{Payload: []byte(body), ContentType: "text/plain; charset=utf-8", Key: e.MessageGroupID}
	if q.fifo {
		if e.MessageGroupID == "" {
			return nil, res, errMissingParameter("MessageGroupId")
		}
		if !validToken(e.MessageGroupID) {
			return nil, res, errInvalidParameterValue("Value %s for parameter MessageGroupId is invalid. Reason: MessageGroupId can only include alphanumeric and punctuation characters. 1 to 128 in length.", e.MessageGroupID)
		}
		dedup := e.MessageDeduplicationID
		if dedup == "" {
			if !a.cbd {
				return nil, res, errInvalidParameterValue("The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly")
			}
			s := sha256.Sum256([]byte(body))
			dedup = hex.EncodeToString(s[:])
		} else if !validToken(dedup) {
			return nil, res, errInvalidParameterValue("Value %s for parameter MessageDeduplicationId is invalid. Reason: MessageDeduplicationId can only include alphanumeric and punctuation characters. 1 to 128 in length.", dedup)
		}
		m.ID = dedup
		res.MessageID = fifoMessageID(q.topic, dedup)
	} else {
		if e.MessageDeduplicationID != "" {
			return nil, res, errInvalidParameterValue("The request include parameter MessageDeduplicationId that is not valid for this queue type")
		}
		if e.MessageGroupID != "" && !validToken(e.MessageGroupID) {
			return nil, res, errInvalidParameterValue("Value %s for parameter MessageGroupId is invalid.", e.MessageGroupID)
		}
	}
	for name, v := range e.MessageAttributes {
		if v.BinaryValue != nil {
			m.SetHeader(name, base64.StdEncoding.EncodeToString(v.BinaryValue))
		} else {
			m.SetHeader(name, *v.StringValue)
		}
		if v.DataType != "String" {
			m.SetHeader(hdrTypePrefix+name, v.DataType)
		}
	}
	if v, ok := e.MessageSystemAttributes["AWSTraceHeader"]; ok {
		m.SetHeader(hdrTrace, *v.StringValue)
	}
	if delay > 0 {
		now := time.Now()
		m.DeliverAt = now.Add(delay)
		m.SetHeader(hdrSent, strconv.FormatInt(now.UnixMilli(), 10))
	}
	res.MD5OfMessageBody = md5Hex(m.Payload)
	res.MD5OfMessageAttributes = md5OfAttributes(e.MessageAttributes)
	res.MD5OfMessageSystemAttributes = md5OfAttributes(e.MessageSystemAttributes)
	return m, res, nil
}

// validToken: 1 to 128 alphanumeric or punctuation characters.
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// sentAt is when the message was sent to SQS.
func sentAt(m *message.Message) time.Time {
	if v := m.Header(hdrSent); v != "" {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.UnixMilli(ms)
		}
	}
	return m.PublishedAt
}

// attributesOf rebuilds the message attributes of a stored message.
func attributesOf(m *message.Message) map[string]attrValue {
	var out map[string]attrValue
	for k, v := range m.Headers {
		if strings.HasPrefix(k, "sqs-") || strings.HasPrefix(k, "sb-") {
			continue
		}
		dt := m.Headers[hdrTypePrefix+k]
		if dt == "" {
			dt = "String"
		}
		av := attrValue{DataType: dt}
		if baseType(dt) == "Binary" {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				continue
			}
			av.BinaryValue = b
		} else {
			s := v
			av.StringValue = &s
		}
		if out == nil {
			out = map[string]attrValue{}
		}
		out[k] = av
	}
	return out
}

// msgOut is a received message.
type msgOut struct {
	MessageID              string     `json:"MessageId" xml:"MessageId"`
	ReceiptHandle          string     `json:"ReceiptHandle" xml:"ReceiptHandle"`
	MD5OfBody              string     `json:"MD5OfBody" xml:"MD5OfBody"`
	Body                   string     `json:"Body" xml:"Body"`
	Attributes             attrMap    `json:"Attributes,omitempty" xml:"Attribute,omitempty"`
	MD5OfMessageAttributes string     `json:"MD5OfMessageAttributes,omitempty" xml:"MD5OfMessageAttributes,omitempty"`
	MessageAttributes      msgAttrMap `json:"MessageAttributes,omitempty" xml:"MessageAttribute,omitempty"`
}

// render turns a delivery into what ReceiveMessage returns.
func (q *queue) render(d *broker.Delivery, handle string, count int, firstRecv time.Time, sys map[string]bool, attrFilter []string) msgOut {
	m := d.Message
	body := string(m.Payload)
	out := msgOut{MessageID: m.ID, ReceiptHandle: handle, MD5OfBody: md5Hex(m.Payload), Body: body}
	if q.fifo {
		out.MessageID = fifoMessageID(q.topic, m.ID)
	}
	all := attributesOf(m)
	out.MD5OfMessageAttributes = md5OfAttributes(all)
	for name, v := range all {
		if matchAttr(name, attrFilter) {
			if out.MessageAttributes == nil {
				out.MessageAttributes = msgAttrMap{}
			}
			out.MessageAttributes[name] = v
		}
	}
	want := func(n string) bool { return sys["All"] || sys[n] }
	var a attrMap // every write below is guarded by want: none without sys
	if len(sys) > 0 {
		a = attrMap{}
	}
	if want("SenderId") {
		a["SenderId"] = q.f.cfg.AccountID
	}
	if want("SentTimestamp") {
		a["SentTimestamp"] = strconv.FormatInt(sentAt(m).UnixMilli(), 10)
	}
	if want("ApproximateReceiveCount") {
		a["ApproximateReceiveCount"] = strconv.Itoa(count)
	}
	if want("ApproximateFirstReceiveTimestamp") {
		a["ApproximateFirstReceiveTimestamp"] = strconv.FormatInt(firstRecv.UnixMilli(), 10)
	}
	if v := m.Header(hdrTrace); v != "" && want("AWSTraceHeader") {
		a["AWSTraceHeader"] = v
	}
	if v := m.Header(hdrDLQSource); v != "" && want("DeadLetterQueueSourceArn") {
		a["DeadLetterQueueSourceArn"] = v
	}
	if m.Key != "" && want("MessageGroupId") {
		a["MessageGroupId"] = m.Key
	}
	if q.fifo {
		if want("MessageDeduplicationId") {
			a["MessageDeduplicationId"] = m.ID
		}
		if want("SequenceNumber") {
			a["SequenceNumber"] = fmt.Sprintf("%020d", d.Info.Seq)
		}
	}
	if len(a) > 0 {
		out.Attributes = a
	}
	return out
}

// matchAttr applies ReceiveMessage's MessageAttributeNames: "All", ".*",
// exact names and "prefix.*".
func matchAttr(name string, filter []string) bool {
	for _, f := range filter {
		if f == "All" || f == ".*" || f == name {
			return true
		}
		if p, ok := strings.CutSuffix(f, ".*"); ok && strings.HasPrefix(name, p+".") {
			return true
		}
	}
	return false
}
