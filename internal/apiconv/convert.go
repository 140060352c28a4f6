// Package apiconv converts between the hub API (api/switchboard/v1) and the
// broker contract (broker, message), in both directions, so that the hub and
// its Go client agree on every field and error.
package apiconv

import (
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// Timestamp converts t, leaving a zero time unset.
func Timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// Time converts ts; unset gives the zero time.
func Time(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// Duration converts d, leaving zero unset.
func Duration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// Dur converts d; unset gives zero.
func Dur(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

// MessageToProto converts m. With text, a payload that is valid UTF-8 is
// sent as text (readable in JSON); otherwise as bytes.
func MessageToProto(m *message.Message, text bool) *v1.Message {
	p := &v1.Message{
		Id:          m.ID,
		Topic:       m.Topic,
		Key:         m.Key,
		Headers:     m.Headers,
		ContentType: m.ContentType,
		PublishedAt: Timestamp(m.PublishedAt),
		DeliverAt:   Timestamp(m.DeliverAt),
		ExpiresAt:   Timestamp(m.ExpiresAt),
	}
	if text && utf8.Valid(m.Payload) {
		p.Body = &v1.Message_Text{Text: string(m.Payload)}
	} else {
		p.Body = &v1.Message_Payload{Payload: m.Payload}
	}
	return p
}

// MessageFromProto converts p (nil gives an empty message).
func MessageFromProto(p *v1.Message) *message.Message {
	if p == nil {
		return &message.Message{}
	}
	m := &message.Message{
		ID:          p.GetId(),
		Topic:       p.GetTopic(),
		Key:         p.GetKey(),
		Headers:     p.GetHeaders(),
		ContentType: p.GetContentType(),
		PublishedAt: Time(p.GetPublishedAt()),
		DeliverAt:   Time(p.GetDeliverAt()),
		ExpiresAt:   Time(p.GetExpiresAt()),
	}
	switch b := p.GetBody().(type) {
	case *v1.Message_Payload:
		m.Payload = b.Payload
	case *v1.Message_Text:
		m.Payload = []byte(b.Text)
	}
	if len(m.Headers) == 0 {
		m.Headers = nil
	}
	return m
}

// StartToProto converts a start position.
func StartToProto(s broker.StartPosition) *v1.StartPosition {
	switch s.Kind {
	case broker.StartEarliest:
		return &v1.StartPosition{Position: &v1.StartPosition_Earliest{Earliest: true}}
	case broker.StartTime:
		return &v1.StartPosition{Position: &v1.StartPosition_Time{Time: timestamppb.New(s.Time)}}
	case broker.StartSeq:
		return &v1.StartPosition{Position: &v1.StartPosition_Seq{Seq: s.Seq}}
	default:
		return nil // latest
	}
}

// StartFromProto converts a start position; unset means latest.
func StartFromProto(p *v1.StartPosition) broker.StartPosition {
	switch pos := p.GetPosition().(type) {
	case *v1.StartPosition_Earliest:
		if pos.Earliest {
			return broker.StartPosition{Kind: broker.StartEarliest}
		}
	case *v1.StartPosition_Time:
		return broker.StartPosition{Kind: broker.StartTime, Time: Time(pos.Time)}
	case *v1.StartPosition_Seq:
		return broker.StartPosition{Kind: broker.StartSeq, Seq: pos.Seq}
	}
	return broker.StartPosition{Kind: broker.StartLatest}
}

// InfoFromProto extracts the delivery metadata of p.
func InfoFromProto(p *v1.Delivery) message.Info {
	return message.Info{
		Group:       p.GetGroup(),
		Seq:         p.GetSeq(),
		Attempt:     int(p.GetAttempt()),
		Redelivered: p.GetRedelivered(),
		Deadline:    Time(p.GetDeadline()),
	}
}

// CapsToProto converts capabilities.
func CapsToProto(c broker.Capabilities) *v1.GetCapabilitiesResponse {
	return &v1.GetCapabilitiesResponse{
		Name: c.Name, Durable: c.Durable, Groups: c.Groups, Ephemeral: c.Ephemeral,
		Patterns: c.Patterns, Ack: c.Ack, NackDelay: c.NackDelay, Extend: c.Extend,
		DeadLetter: c.DeadLetter, Delay: c.Delay, Expiry: c.Expiry, Dedup: c.Dedup,
		OrderedByKey: c.OrderedByKey, StartPositions: c.StartPositions,
		AtomicBatch: c.AtomicBatch, Request: c.Request, MaxPayload: int64(c.MaxPayload),
	}
}

// CapsFromProto converts capabilities.
func CapsFromProto(p *v1.GetCapabilitiesResponse) broker.Capabilities {
	return broker.Capabilities{
		Name: p.GetName(), Durable: p.GetDurable(), Groups: p.GetGroups(), Ephemeral: p.GetEphemeral(),
		Patterns: p.GetPatterns(), Ack: p.GetAck(), NackDelay: p.GetNackDelay(), Extend: p.GetExtend(),
		DeadLetter: p.GetDeadLetter(), Delay: p.GetDelay(), Expiry: p.GetExpiry(), Dedup: p.GetDedup(),
		OrderedByKey: p.GetOrderedByKey(), StartPositions: p.GetStartPositions(),
		AtomicBatch: p.GetAtomicBatch(), Request: p.GetRequest(), MaxPayload: int(p.GetMaxPayload()),
	}
}

// RetentionToProto converts a retention.
func RetentionToProto(r broker.Retention) *v1.Retention {
	return &v1.Retention{MaxAge: Duration(r.MaxAge), MaxBytes: r.MaxBytes, MaxCount: r.MaxCount, WorkQueue: r.WorkQueue}
}

// RetentionFromProto converts a retention (nil: no limits).
func RetentionFromProto(p *v1.Retention) broker.Retention {
	return broker.Retention{MaxAge: Dur(p.GetMaxAge()), MaxBytes: p.GetMaxBytes(), MaxCount: p.GetMaxCount(), WorkQueue: p.GetWorkQueue()}
}

// TopicToProto converts a topic description.
func TopicToProto(t broker.TopicInfo) *v1.TopicInfo {
	return &v1.TopicInfo{
		Name: t.Config.Name, Retention: RetentionToProto(t.Config.Retention), Partitions: int32(t.Config.Partitions),
		FirstSeq: t.FirstSeq, LastSeq: t.LastSeq, Messages: t.Messages, Bytes: t.Bytes, Groups: t.Groups,
	}
}

// TopicFromProto converts a topic description.
func TopicFromProto(p *v1.TopicInfo) broker.TopicInfo {
	return broker.TopicInfo{
		Config:   broker.TopicConfig{Name: p.GetName(), Retention: RetentionFromProto(p.GetRetention()), Partitions: int(p.GetPartitions())},
		FirstSeq: p.GetFirstSeq(), LastSeq: p.GetLastSeq(), Messages: p.GetMessages(), Bytes: p.GetBytes(), Groups: p.GetGroups(),
	}
}

// GroupToProto converts a group description.
func GroupToProto(g broker.GroupInfo) *v1.GroupInfo {
	return &v1.GroupInfo{
		Name: g.Name, Topic: g.Topic, Consumers: int32(g.Consumers), Lag: g.Lag,
		InFlight: int32(g.InFlight), Cursors: g.Cursors, DeadLetters: g.DeadLetters,
	}
}

// GroupFromProto converts a group description.
func GroupFromProto(p *v1.GroupInfo) broker.GroupInfo {
	return broker.GroupInfo{
		Name: p.GetName(), Topic: p.GetTopic(), Consumers: int(p.GetConsumers()), Lag: p.GetLag(),
		InFlight: int(p.GetInFlight()), Cursors: p.GetCursors(), DeadLetters: p.GetDeadLetters(),
	}
}

// BackoffSchedule samples f for attempts 1..n: the API carries a schedule
// (the last entry repeats), not a function.
func BackoffSchedule(f func(attempt int) time.Duration, n int) []*durationpb.Duration {
	if f == nil {
		return nil
	}
	out := make([]*durationpb.Duration, n)
	for i := range out {
		out[i] = durationpb.New(f(i + 1))
	}
	return out
}

// BackoffFunc turns a schedule back into a function; empty gives nil (the
// backend default).
func BackoffFunc(schedule []*durationpb.Duration) func(attempt int) time.Duration {
	if len(schedule) == 0 {
		return nil
	}
	ds := make([]time.Duration, len(schedule))
	for i, d := range schedule {
		ds[i] = d.AsDuration()
	}
	return func(attempt int) time.Duration {
		i := attempt - 1
		if i < 0 {
			i = 0
		}
		if i >= len(ds) {
			i = len(ds) - 1
		}
		return ds[i]
	}
}

// DeliveryBuf converts deliveries into protobuf structs that it reuses, for
// a stream that sends (marshals) each batch before it converts the next: no
// allocation per delivery once the buffer has grown to the batch size.
type DeliveryBuf struct {
	parts []*deliveryParts
}

type deliveryParts struct {
	d                              v1.Delivery
	m                              v1.Message
	payload                        v1.Message_Payload
	text                           v1.Message_Text
	pub, deliverAt, expiresAt, ddl timestamppb.Timestamp
}

// Delivery converts d, identified by token, into the i-th reused struct
// (valid until the next call with the same i). With text, a payload that is
// valid UTF-8 is sent as text (for JSON clients); otherwise as bytes.
func (b *DeliveryBuf) Delivery(i int, d *broker.Delivery, token string, text bool) *v1.Delivery {
	for len(b.parts) <= i {
		b.parts = append(b.parts, &deliveryParts{})
	}
	p := b.parts[i]
	m := d.Message
	pm := &p.m
	pm.Id, pm.Topic, pm.Key, pm.Headers, pm.ContentType = m.ID, m.Topic, m.Key, m.Headers, m.ContentType
	pm.PublishedAt = reuseTimestamp(&p.pub, m.PublishedAt)
	pm.DeliverAt = reuseTimestamp(&p.deliverAt, m.DeliverAt)
	pm.ExpiresAt = reuseTimestamp(&p.expiresAt, m.ExpiresAt)
	if text && utf8.Valid(m.Payload) {
		p.text.Text = string(m.Payload)
		p.payload.Payload = nil
		pm.Body = &p.text
	} else {
		p.payload.Payload = m.Payload
		p.text.Text = ""
		pm.Body = &p.payload
	}
	pd := &p.d
	pd.Token, pd.Message, pd.Group = token, pm, d.Info.Group
	pd.Seq, pd.Attempt, pd.Redelivered = d.Info.Seq, int32(d.Info.Attempt), d.Info.Redelivered
	pd.Deadline = reuseTimestamp(&p.ddl, d.Info.Deadline)
	return pd
}

// Release drops the references the reused structs hold to the messages
// converted last (so that they can be collected while the stream idles).
func (b *DeliveryBuf) Release(n int) {
	for _, p := range b.parts[:min(n, len(b.parts))] {
		p.m.Headers, p.payload.Payload, p.text.Text = nil, nil, ""
	}
}

func reuseTimestamp(ts *timestamppb.Timestamp, t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	ts.Seconds, ts.Nanos = t.Unix(), int32(t.Nanosecond())
	return ts
}
