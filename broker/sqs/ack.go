package sqs

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
)

// Asynchronous acks (broker.Delivery.AckAsync) are coalesced into
// DeleteMessageBatch calls of up to maxDeleteBatch entries (SQS's limit),
// with at most deleteCalls calls in flight per subscription: an ack that
// finds a free call goes out at once, and those made while calls are in
// flight form the next ones. A plain Ack is still one DeleteMessage.
const (
	maxDeleteBatch = 10
	deleteCalls    = 4
	// deleteTimeout bounds one DeleteMessageBatch call; nobody waits
	// with a deadline of their own.
	deleteTimeout = 30 * time.Second
)

// pendingDelete is one asynchronous ack waiting for its batch.
type pendingDelete struct {
	handle string
	then   func(error)
}

// deleter coalesces the asynchronous acks of a sub.
type deleter struct {
	mu       sync.Mutex
	queue    []pendingDelete
	inFlight int
}

// AckAsync implements broker.AsyncAcker: the delete joins the next
// DeleteMessageBatch call of the subscription, and its own entry's result
// goes to done.
func (a acker) AckAsync(ctx context.Context, d *broker.Delivery, done func(error)) {
	t, err := a.settle("ack", d)
	if err != nil {
		done(err)
		return
	}
	if err := ctx.Err(); err != nil {
		done(brokerutil.CtxErr(ctx, "sqs: delete message", err))
		return
	}
	s := a.s
	s.dels.mu.Lock()
	s.dels.queue = append(s.dels.queue, pendingDelete{handle: t.handle, then: done})
	start := s.dels.inFlight < deleteCalls
	if start {
		s.dels.inFlight++
	}
	s.dels.mu.Unlock()
	if start {
		go s.deleteQueued()
	}
}

// deleteQueued sends the queued deletes, maxDeleteBatch per call, until
// none are left.
func (s *sub) deleteQueued() {
	for {
		s.dels.mu.Lock()
		n := min(len(s.dels.queue), maxDeleteBatch)
		if n == 0 {
			s.dels.inFlight--
			s.dels.mu.Unlock()
			return
		}
		batch := make([]pendingDelete, n)
		copy(batch, s.dels.queue)
		rest := copy(s.dels.queue, s.dels.queue[n:])
		clear(s.dels.queue[rest:])
		s.dels.queue = s.dels.queue[:rest]
		s.dels.mu.Unlock()
		s.deleteBatch(batch)
	}
}

// deleteBatch makes one DeleteMessageBatch call and gives each ack the
// result of its own entry.
func (s *sub) deleteBatch(batch []pendingDelete) {
	entries := make([]types.DeleteMessageBatchRequestEntry, len(batch))
	for i, p := range batch {
		entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(p.handle)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	out, err := s.b.c.DeleteMessageBatch(ctx, &awssqs.DeleteMessageBatchInput{QueueUrl: aws.String(s.queue), Entries: entries})
	err = brokerutil.CtxErr(ctx, "sqs: delete message batch", err)
	cancel()
	if err != nil {
		for _, p := range batch {
			p.then(err)
		}
		return
	}
	results := make([]error, len(batch))
	for i := range results {
		results[i] = fmt.Errorf("sqs: delete message batch: no result for entry %d of %d", i, len(batch))
	}
	for _, ok := range out.Successful {
		if i, err := strconv.Atoi(aws.ToString(ok.Id)); err == nil && i >= 0 && i < len(batch) {
			results[i] = nil
		}
	}
	for _, f := range out.Failed {
		if i, err := strconv.Atoi(aws.ToString(f.Id)); err == nil && i >= 0 && i < len(batch) {
			results[i] = fmt.Errorf("sqs: delete message: %s: %s", aws.ToString(f.Code), aws.ToString(f.Message))
		}
	}
	for i, p := range batch {
		p.then(results[i])
	}
}
