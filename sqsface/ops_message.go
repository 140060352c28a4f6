package sqsface

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

const maxBatch = 10

// shortPollGrace is how long a short poll (WaitTimeSeconds 0) waits for a
// message that the queue has but the engine has not handed over yet.
const shortPollGrace = time.Second

// publishError maps a broker failure of a send.
func publishError(err error) *apiError {
	switch {
	case errors.Is(err, message.ErrTooLarge):
		return errInvalidParameterValue("One or more parameters are invalid. Reason: %v", err)
	case errors.Is(err, message.ErrInvalid):
		return errInvalidParameterValue("One or more parameters are invalid. Reason: %v", err)
	case errors.Is(err, broker.ErrClosed), errors.Is(err, broker.ErrUnavailable):
		return errUnavailable(err)
	}
	return errInternal(err)
}

// publish stores msgs on q's topic and completes the results.
func (q *queue) publish(ctx context.Context, msgs []*message.Message, res []*sendResult) *apiError {
	pr, err := q.f.b.Publish(ctx, &broker.PublishParams{Topic: q.topic, Messages: msgs})
	if err != nil {
		return publishError(err)
	}
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, r := range pr.Results {
		if !q.fifo {
			res[i].MessageID = r.ID
		} else {
			res[i].SequenceNumber = fmt.Sprintf("%020d", r.Seq)
		}
		if !msgs[i].DeliverAt.IsZero() && msgs[i].DeliverAt.After(now) && !r.Duplicate {
			q.delayed = append(q.delayed, msgs[i].DeliverAt)
		}
	}
	return nil
}

// Inputs of the message operations (encoding/json tags; jsonin.go reads
// them faster).
type (
	sendInput struct {
		QueueURL string `json:"QueueUrl"`
		sendEntry
	}
	sendBatchInput struct {
		QueueURL string      `json:"QueueUrl"`
		Entries  []sendEntry `json:"Entries"`
	}
	receiveInput struct {
		QueueURL                    string   `json:"QueueUrl"`
		AttributeNames              []string `json:"AttributeNames"`
		MessageSystemAttributeNames []string `json:"MessageSystemAttributeNames"`
		MessageAttributeNames       []string `json:"MessageAttributeNames"`
		MaxNumberOfMessages         *int     `json:"MaxNumberOfMessages"`
		VisibilityTimeout           *int     `json:"VisibilityTimeout"`
		WaitTimeSeconds             *int     `json:"WaitTimeSeconds"`
		ReceiveRequestAttemptID     string   `json:"ReceiveRequestAttemptId"`
	}
	deleteInput struct {
		QueueURL      string `json:"QueueUrl"`
		ReceiptHandle string `json:"ReceiptHandle"`
	}
	// batchInput is DeleteMessageBatch's and ChangeMessageVisibilityBatch's.
	batchInput struct {
		QueueURL string       `json:"QueueUrl"`
		Entries  []batchEntry `json:"Entries"`
	}
)

func (f *Face) sendMessage(ctx context.Context, r *request) (any, *apiError) {
	var in sendInput
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	m, res, aerr := q.buildMessage(&in.sendEntry)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := q.publish(ctx, []*message.Message{m}, []*sendResult{&res}); aerr != nil {
		return nil, aerr
	}
	return res, nil
}

type sendBatchResult struct {
	Successful []sendResult   `json:"Successful" xml:"SendMessageBatchResultEntry"`
	Failed     []batchFailure `json:"Failed" xml:"BatchResultErrorEntry"`
}

// checkBatchIDs applies the rules every batch call shares.
func checkBatchIDs(ids []string) *apiError {
	if len(ids) == 0 {
		return errEmptyBatch()
	}
	if len(ids) > maxBatch {
		return errTooManyEntries(len(ids))
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if id == "" || len(id) > 80 {
			return errInvalidBatchEntryID(id)
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return errInvalidBatchEntryID(id)
			}
		}
		if seen[id] {
			return errBatchIDsNotDistinct(id)
		}
		seen[id] = true
	}
	return nil
}

func (f *Face) sendMessageBatch(ctx context.Context, r *request) (any, *apiError) {
	var in sendBatchInput
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	ids := make([]string, len(in.Entries))
	total := 0
	for i, e := range in.Entries {
		ids[i] = e.ID
		if e.MessageBody != nil {
			total += len(*e.MessageBody)
		}
	}
	if aerr := checkBatchIDs(ids); aerr != nil {
		return nil, aerr
	}
	q.mu.Lock()
	limit := max(q.attrs.maxSize, 262144)
	q.mu.Unlock()
	if total > limit {
		return nil, errBatchRequestTooLong(total, limit)
	}
	out := sendBatchResult{Successful: []sendResult{}, Failed: []batchFailure{}}
	var msgs []*message.Message
	var res []*sendResult
	for i := range in.Entries {
		e := &in.Entries[i]
		m, sr, aerr := q.buildMessage(e)
		if aerr != nil {
			out.Failed = append(out.Failed, failure(e.ID, aerr))
			continue
		}
		sr.ID = e.ID
		msgs = append(msgs, m)
		res = append(res, &sr)
	}
	if len(msgs) > 0 {
		if aerr := q.publish(ctx, msgs, res); aerr != nil {
			if aerr.Status >= 500 {
				return nil, aerr
			}
			for _, sr := range res {
				out.Failed = append(out.Failed, failure(sr.ID, aerr))
			}
			res = nil
		}
	}
	for _, sr := range res {
		out.Successful = append(out.Successful, *sr)
	}
	return out, nil
}

type receiveResult struct {
	Messages []msgOut `json:"Messages,omitempty" xml:"Message,omitempty"`
}

func (f *Face) receiveMessage(ctx context.Context, r *request) (any, *apiError) {
	var in receiveInput
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	n := 1
	if in.MaxNumberOfMessages != nil {
		n = *in.MaxNumberOfMessages
		if n < 1 || n > maxBatch {
			return nil, errInvalidParameterValue("Value %d for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided.", n)
		}
	}
	q.mu.Lock()
	vis, wait := q.attrs.visibility, q.attrs.wait
	q.mu.Unlock()
	if in.VisibilityTimeout != nil {
		if *in.VisibilityTimeout < 0 || *in.VisibilityTimeout > maxVisibility {
			return nil, errInvalidParameterValue("Value %d for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200, if provided.", *in.VisibilityTimeout)
		}
		vis = time.Duration(*in.VisibilityTimeout) * time.Second
	}
	if in.WaitTimeSeconds != nil {
		if *in.WaitTimeSeconds < 0 || *in.WaitTimeSeconds > 20 {
			return nil, errInvalidParameterValue("Value %d for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided.", *in.WaitTimeSeconds)
		}
		wait = time.Duration(*in.WaitTimeSeconds) * time.Second
	}
	if in.ReceiveRequestAttemptID != "" {
		if !validToken(in.ReceiveRequestAttemptID) {
			return nil, errInvalidParameterValue("Value %s for parameter ReceiveRequestAttemptId is invalid.", in.ReceiveRequestAttemptID)
		}
		if q.fifo {
			q.mu.Lock()
			a, ok := q.attempt[in.ReceiveRequestAttemptID]
			valid := ok
			for _, m := range a.msgs {
				valid = valid && q.handles[m.ReceiptHandle] != nil
			}
			q.mu.Unlock()
			if valid {
				return receiveResult{Messages: a.msgs}, nil
			}
		}
	}
	if wait == 0 {
		// Short poll: the engine hands messages over asynchronously, so
		// wait a little when the queue holds visible messages.
		if gi, err := f.groups.DescribeGroup(ctx, q.topic); err == nil && q.counts(gi).visible > 0 {
			wait = shortPollGrace
		}
	}
	sys := map[string]bool{}
	for _, s := range append(in.AttributeNames, in.MessageSystemAttributeNames...) {
		sys[s] = true
	}
	deadline := time.Now().Add(wait)
	out := receiveResult{}
	for len(out.Messages) == 0 {
		ds, err := q.take(ctx, n, time.Until(deadline))
		if errors.Is(err, errQueueGone) {
			return nil, errNonExistentQueue()
		}
		if err != nil {
			return nil, errUnavailable(err)
		}
		for _, d := range ds {
			h, count, first, ok := q.admit(ctx, d, vis)
			if !ok {
				continue
			}
			out.Messages = append(out.Messages, q.render(d, h, count, first, sys, in.MessageAttributeNames))
		}
		if len(ds) == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
	}
	if q.fifo && in.ReceiveRequestAttemptID != "" && len(out.Messages) > 0 {
		q.mu.Lock()
		q.attempt[in.ReceiveRequestAttemptID] = attempt{at: time.Now(), msgs: out.Messages}
		q.mu.Unlock()
	}
	return out, nil
}

func (f *Face) deleteMessage(ctx context.Context, r *request) (any, *apiError) {
	var in deleteInput
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	if in.ReceiptHandle == "" {
		return nil, errMissingParameter("ReceiptHandle")
	}
	return nil, q.deleteMessage(ctx, in.ReceiptHandle)
}

type batchEntry struct {
	ID                string `json:"Id"`
	ReceiptHandle     string `json:"ReceiptHandle"`
	VisibilityTimeout *int   `json:"VisibilityTimeout"`
}

type idResult struct {
	ID string `json:"Id" xml:"Id"`
}

type deleteBatchResult struct {
	Successful []idResult     `json:"Successful" xml:"DeleteMessageBatchResultEntry"`
	Failed     []batchFailure `json:"Failed" xml:"BatchResultErrorEntry"`
}

type visibilityBatchResult struct {
	Successful []idResult     `json:"Successful" xml:"ChangeMessageVisibilityBatchResultEntry"`
	Failed     []batchFailure `json:"Failed" xml:"BatchResultErrorEntry"`
}

// eachEntry decodes a batch of receipt-handle entries and runs fn per entry.
func (f *Face) eachEntry(r *request, fn func(q *queue, e batchEntry) *apiError) (ok []idResult, failed []batchFailure, aerr *apiError) {
	var in batchInput
	if aerr := r.decode(&in); aerr != nil {
		return nil, nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, nil, aerr
	}
	ids := make([]string, len(in.Entries))
	for i, e := range in.Entries {
		ids[i] = e.ID
	}
	if aerr := checkBatchIDs(ids); aerr != nil {
		return nil, nil, aerr
	}
	ok, failed = []idResult{}, []batchFailure{}
	for _, e := range in.Entries {
		if e.ReceiptHandle == "" {
			failed = append(failed, failure(e.ID, errMissingParameter("ReceiptHandle")))
			continue
		}
		if aerr := fn(q, e); aerr != nil {
			if aerr.Status >= 500 {
				return nil, nil, aerr
			}
			failed = append(failed, failure(e.ID, aerr))
			continue
		}
		ok = append(ok, idResult{e.ID})
	}
	return ok, failed, nil
}

func (f *Face) deleteMessageBatch(ctx context.Context, r *request) (any, *apiError) {
	ok, failed, aerr := f.eachEntry(r, func(q *queue, e batchEntry) *apiError {
		return q.deleteMessage(ctx, e.ReceiptHandle)
	})
	if aerr != nil {
		return nil, aerr
	}
	return deleteBatchResult{ok, failed}, nil
}

func (f *Face) changeMessageVisibility(ctx context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueURL          string `json:"QueueUrl"`
		ReceiptHandle     string `json:"ReceiptHandle"`
		VisibilityTimeout *int   `json:"VisibilityTimeout"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	if in.ReceiptHandle == "" {
		return nil, errMissingParameter("ReceiptHandle")
	}
	if in.VisibilityTimeout == nil {
		return nil, errMissingParameter("VisibilityTimeout")
	}
	return nil, q.changeVisibility(ctx, in.ReceiptHandle, *in.VisibilityTimeout)
}

func (f *Face) changeMessageVisibilityBatch(ctx context.Context, r *request) (any, *apiError) {
	ok, failed, aerr := f.eachEntry(r, func(q *queue, e batchEntry) *apiError {
		if e.VisibilityTimeout == nil {
			return errMissingParameter("VisibilityTimeout")
		}
		return q.changeVisibility(ctx, e.ReceiptHandle, *e.VisibilityTimeout)
	})
	if aerr != nil {
		return nil, aerr
	}
	return visibilityBatchResult{ok, failed}, nil
}
