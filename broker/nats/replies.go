package nats

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/broker"
)

// replyTimeout bounds the wait for an answer when the caller's ctx has no
// deadline (jetstream's default API timeout).
const replyTimeout = 5 * time.Second

// A publish is sent again this many times, this far apart, when no stream
// answers it (a blip in leadership), as jetstream's publish does.
const (
	pubRetries   = 2
	pubRetryWait = 250 * time.Millisecond
)

// replies routes the answers to the requests the Broker makes itself
// (publishes and ack confirmations): one subscription on "<inbox>.*", one
// reply subject per request ("<inbox>.<number>"), read by one handler that
// hands each answer to its waiter. A request costs one map entry and one
// channel, less than nats.go's request/reply that jetstream's synchronous
// publish goes through (a random token, a map entry and a channel in the
// connection's response table under the connection's lock, and a timer per
// request when ctx has no deadline); in a profile of 32 concurrent
// publishers that is most of the client-side difference.
type replies struct {
	nc     *natsgo.Conn
	prefix string // "<inbox>."
	sub    *natsgo.Subscription

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*answer
	closed  bool
}

// answer is one request's wait for its answer.
type answer struct {
	done chan struct{} // closed once msg or err is set
	msg  *natsgo.Msg
	err  error
	// ordered marks an ack confirmation: it counts only if the connection
	// was not re-established between writing the request and its answer
	// (see ack.go); gen is the reconnect count before it was written.
	ordered bool
	gen     uint64
	// thens are called with the outcome once it is in (asynchronous acks
	// sharing this answer); they see msg and err set.
	thens []func(error)
}

func newAnswer() *answer { return &answer{done: make(chan struct{})} }

func newReplies(nc *natsgo.Conn) (*replies, error) {
	r := &replies{nc: nc, prefix: nc.NewInbox() + ".", pending: map[uint64]*answer{}}
	sub, err := nc.Subscribe(r.prefix+"*", r.onReply)
	if err != nil {
		return nil, err
	}
	// Never drop an answer as a slow consumer: waiters would time out.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	r.sub = sub
	return r, nil
}

// add registers a and returns its id and reply subject. For an ordered
// answer it records the reconnect count first, so the caller must write the
// request (and everything it confirms) only after add.
func (r *replies) add(a *answer) (uint64, string, error) {
	if a.ordered {
		a.gen = r.nc.Stats().Reconnects
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return 0, "", fmt.Errorf("the connection is closing: %w", broker.ErrClosed)
	}
	r.next++
	id := r.next
	r.pending[id] = a
	r.mu.Unlock()
	return id, r.prefix + strconv.FormatUint(id, 36), nil
}

// take removes and returns the answer of id, if still pending.
func (r *replies) take(id uint64) *answer {
	r.mu.Lock()
	a := r.pending[id]
	delete(r.pending, id)
	r.mu.Unlock()
	return a
}

// fail completes id's answer with err (a request that could not be written).
func (r *replies) fail(id uint64, err error) {
	if a := r.take(id); a != nil {
		a.complete(nil, err)
	}
}

func (a *answer) complete(msg *natsgo.Msg, err error) {
	a.msg, a.err = msg, err
	close(a.done)
	if len(a.thens) > 0 {
		out := ackOutcome(a)
		for _, then := range a.thens {
			then(out)
		}
	}
}

// onReply hands an answer to its waiter.
func (r *replies) onReply(m *natsgo.Msg) {
	id, err := strconv.ParseUint(m.Subject[len(r.prefix):], 36, 64)
	if err != nil {
		return
	}
	a := r.take(id)
	if a == nil {
		return // its waiter gave up
	}
	// The answer is in: a reconnect after it makes a false failure at worst.
	if a.ordered && r.nc.Stats().Reconnects != a.gen {
		a.complete(nil, fmt.Errorf("%s: ack not confirmed: the connection was re-established while it was sent: %w", backendName, broker.ErrUnavailable))
		return
	}
	a.complete(m, nil)
}

// wait waits for a's answer and reports whether it came; otherwise it
// returns ctx's error. A ctx without deadline waits at most replyTimeout.
func (a *answer) wait(ctx context.Context) (bool, error) {
	select {
	case <-a.done:
		return true, a.err
	default:
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, replyTimeout)
		defer cancel()
	}
	select {
	case <-a.done:
		return true, a.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// failOrderedBefore fails the ordered answers written before the connection
// reached reconnect count gen: they may never come (called on reconnect).
// Other requests keep waiting for their answer or their deadline.
func (r *replies) failOrderedBefore(gen uint64) {
	r.mu.Lock()
	var lost []*answer
	for id, a := range r.pending {
		if a.ordered && a.gen < gen {
			lost = append(lost, a)
			delete(r.pending, id)
		}
	}
	r.mu.Unlock()
	for _, a := range lost {
		a.complete(nil, fmt.Errorf("%s: ack not confirmed: the connection was lost: %w", backendName, broker.ErrUnavailable))
	}
}

// failAll fails every pending answer and refuses new requests.
func (r *replies) failAll(err error) {
	r.mu.Lock()
	r.closed = true
	rest := r.pending
	r.pending = map[uint64]*answer{}
	r.mu.Unlock()
	for _, a := range rest {
		a.complete(nil, err)
	}
}

// close waits up to timeout for the answers still expected (none come
// while the connection is down), then fails the rest with ErrClosed.
func (r *replies) close(timeout time.Duration) {
	if r.nc.Status() != natsgo.CONNECTED {
		timeout = 0
	}
	r.mu.Lock()
	waits := make([]*answer, 0, len(r.pending))
	for _, a := range r.pending {
		waits = append(waits, a)
	}
	r.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
wait:
	for _, a := range waits {
		select {
		case <-a.done:
		case <-t.C:
			break wait
		}
	}
	r.failAll(fmt.Errorf("%s: no answer before Close: %w", backendName, broker.ErrClosed))
	_ = r.sub.Unsubscribe()
}

// sentPub is a publish written and waiting for its ack.
type sentPub struct {
	nm *natsgo.Msg
	id uint64
	a  *answer
}

// sendPub writes nm with a reply subject of its own.
func (b *Broker) sendPub(nm *natsgo.Msg) (sentPub, error) {
	a := newAnswer()
	id, reply, err := b.replies.add(a)
	if err != nil {
		return sentPub{}, err
	}
	nm.Reply = reply
	if err := b.nc.PublishMsg(nm); err != nil {
		b.replies.take(id)
		return sentPub{}, err
	}
	return sentPub{nm: nm, id: id, a: a}, nil
}

// awaitPub waits for the stream's ack of s. When no stream answers it
// publishes again, as jetstream's PublishMsg does, up to pubRetries times.
func (b *Broker) awaitPub(ctx context.Context, s sentPub) (*jetstream.PubAck, error) {
	for attempt := 0; ; attempt++ {
		resp, err := b.await(ctx, s.id, s.a)
		if err != nil {
			return nil, err
		}
		if len(resp.Data) > 0 || resp.Header.Get("Status") != "503" {
			return parsePubAck(resp)
		}
		if attempt >= pubRetries {
			return nil, jetstream.ErrNoStreamResponse
		}
		t := time.NewTimer(pubRetryWait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		if s, err = b.sendPub(s.nm); err != nil {
			return nil, err
		}
	}
}

// publish sends nm to its stream and waits for the stream's ack.
func (b *Broker) publish(ctx context.Context, nm *natsgo.Msg) (*jetstream.PubAck, error) {
	s, err := b.sendPub(nm)
	if err != nil {
		return nil, err
	}
	return b.awaitPub(ctx, s)
}

// await waits for the answer of request id; when ctx ends first, the
// answer is forgotten and ctx's error returned.
func (b *Broker) await(ctx context.Context, id uint64, a *answer) (*natsgo.Msg, error) {
	if answered, err := a.wait(ctx); !answered && b.replies.take(id) != nil {
		return nil, err // the answer, if it comes, is dropped
	}
	<-a.done
	return a.msg, a.err
}

// forget drops the answers of publishes nobody waits for any more.
func (b *Broker) forget(sent []sentPub) {
	for _, s := range sent {
		b.replies.take(s.id)
	}
}
