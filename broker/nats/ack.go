package nats

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/broker"
)

// Confirmed acks.
//
// Delivery.Ack returns nil only once the server has processed the ack, which
// is what jetstream's DoubleAck gives: the server answers an ack that
// carries a reply subject after processing it. Asking for an answer to every
// ack doubles the server's work and the messages the client reads, so the
// acks that the callers of one subscription make at about the same time
// share one answer (ackQueue): they go out as one batch, plain acks followed
// by a last ack that carries the reply subject, and the answer to that last
// ack confirms the whole batch. Each Ack call still returns only after an
// answer that covers its own ack.
//
// This relies on two orderings. NATS delivers the messages that one
// connection publishes to one subscriber in the order they were published,
// and JetStream processes the acks of one consumer in the order it receives
// them before answering the ack that asked for an answer (nats-server
// 2.9.10, server/consumer.go: pushAck queues every ack of the consumer on
// one FIFO, processInboundAcks runs processAck on each in turn, and
// processAck sends the answer after processing). So when the last ack is
// answered, every ack of the batch before it has been processed too. The one way around this is a reconnect in the
// middle of the batch: acks written to the old connection may be lost while
// the last one reaches the server on the new one. A batch therefore records
// the connection's reconnect count before its first ack is written and
// counts as confirmed only if its answer arrives with the same count;
// otherwise, or when the connection is re-established before the answer
// came, its acks fail with ErrUnavailable (the messages come back after
// their deadline, as after an ack that was lost).

// ackBody is the payload of a positive ack.
var ackBody = []byte("+ACK")

// ackQueue gathers the acks of one subscription. The first caller that
// finds nobody sending becomes the sender: after one yield to the scheduler
// it writes every queued ack as one batch, and again for the acks queued
// meanwhile, until the queue is empty. Writing does not wait for the server,
// so a caller queues only for that yield or while another one is writing;
// under load that is what forms the batches, and alone an ack goes out at
// once, as a DoubleAck would.
type ackQueue struct {
	r *replies

	mu      sync.Mutex
	msgs    []jetstream.Msg // queued, not yet written
	batch   *answer         // the answer msgs will share
	sending bool
	spare   []jetstream.Msg
}

// ack sends m's ack and returns once the server confirmed it (nil), or
// why not.
func (q *ackQueue) ack(ctx context.Context, m jetstream.Msg) error {
	a := q.enqueue(m, nil)
	if _, err := a.wait(ctx); err != nil {
		return err
	}
	return ackOutcome(a)
}

// ackAsync sends m's ack without waiting: then receives what ack would
// have returned, from the goroutine that completes the batch's answer.
func (q *ackQueue) ackAsync(m jetstream.Msg, then func(error)) {
	q.enqueue(m, then)
}

// enqueue queues m's ack (and then, to be called with its outcome) in the
// next batch, sending the batch when nobody else is, and returns the
// answer that will confirm it.
func (q *ackQueue) enqueue(m jetstream.Msg, then func(error)) *answer {
	q.mu.Lock()
	q.msgs = append(q.msgs, m)
	if q.batch == nil {
		q.batch = newAnswer()
		q.batch.ordered = true
	}
	a := q.batch
	if then != nil {
		// a is not sent yet (it is still q.batch), so it cannot complete
		// before then is recorded.
		a.thens = append(a.thens, then)
	}
	if q.sending {
		q.mu.Unlock()
		return a
	}
	// Become the sender, but first let the other callers that are runnable
	// now (an answer releases a whole batch of them at once) queue their
	// acks too: one yield turns a trickle of single acks into batches.
	q.sending = true
	q.mu.Unlock()
	runtime.Gosched()
	q.mu.Lock()
	q.flushLocked()
	return a
}

// ackOutcome is the outcome of the acks that the completed answer a
// confirms.
func ackOutcome(a *answer) error {
	if a.err != nil {
		return a.err
	}
	if st := a.msg.Header.Get("Status"); st != "" && len(a.msg.Data) == 0 {
		// 503: nobody listens on the ack subject (the group's consumer is gone).
		return fmt.Errorf("%s: ack not confirmed: status %s %s: %w", backendName, st, a.msg.Header.Get("Description"), broker.ErrUnavailable)
	}
	return nil
}

// flushLocked writes the queued batches; it is called with q.mu held and
// returns with it released.
func (q *ackQueue) flushLocked() {
	for len(q.msgs) > 0 {
		msgs, a := q.msgs, q.batch
		q.msgs, q.batch = q.spare, nil
		q.mu.Unlock()
		q.send(msgs, a)
		clear(msgs)
		q.mu.Lock()
		q.spare = msgs[:0]
	}
	q.sending = false
	q.mu.Unlock()
}

// send writes the acks of msgs, the last one asking for the answer a.
func (q *ackQueue) send(msgs []jetstream.Msg, a *answer) {
	id, reply, err := q.r.add(a) // before the first ack is written
	if err != nil {
		a.complete(nil, err)
		return
	}
	if len(a.thens) > 0 {
		// Nobody waits with a deadline for the acks sent asynchronously:
		// give up on the answer after replyTimeout, as ack does when its
		// ctx has no deadline. (A late timer finds the answer gone.)
		time.AfterFunc(replyTimeout, func() {
			q.r.fail(id, fmt.Errorf("%s: ack not confirmed within %s: %w", backendName, replyTimeout, broker.ErrUnavailable))
		})
	}
	last := len(msgs) - 1
	for _, m := range msgs[:last] {
		if err = q.r.nc.Publish(m.Reply(), ackBody); err != nil {
			break
		}
	}
	if err == nil {
		err = q.r.nc.PublishRequest(msgs[last].Reply(), reply, ackBody)
	}
	if err != nil {
		q.r.fail(id, err)
	}
}

// ackErr maps a failed ack: the errors of the confirmation say already what
// happened; others are the connection's.
func (g *groupSub) ackErr(ctx context.Context, id string, err error) error {
	if errors.Is(err, broker.ErrClosed) || errors.Is(err, broker.ErrUnavailable) {
		return fmt.Errorf("ack of %s: %w", id, err)
	}
	return g.b.opErr(ctx, "ack of "+id, err)
}
