package hub

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// tokens finds deliveries by the token handed to the consumer, so that Ack,
// Nack, Term, Extend and Reply can arrive on other requests than the stream
// that carried the delivery. A token is "<subscription id>.<n>": the
// subscription id is 128 random bits, so tokens cannot be guessed, and n
// counts deliveries of that subscription.
//
// Entries live while their subscription is attached: durable deliveries
// until settled (or long past their deadline: the broker has redelivered
// them, so they can only fail), ephemeral requests until replied or evicted
// (at most maxEphemeral per subscription).
type tokens struct {
	mu   sync.RWMutex
	subs map[string]*subTokens
}

const maxEphemeral = 1024

// staleAfter is how long past its deadline a durable delivery's token is
// kept; settling it after the deadline fails with ErrDeliveryExpired anyway.
const staleAfter = time.Minute

func newTokens() *tokens { return &tokens{subs: map[string]*subTokens{}} }

// subTokens holds the deliveries of one subscription.
type subTokens struct {
	id    string
	who   *principal // the bearer token that subscribed, as it was then (nil with auth off)
	topic string     // the topic or pattern subscribed to

	// ended is closed, once, when the subscription must end (its bearer
	// token was revoked); endErr, set before, says why.
	ended  chan struct{}
	endErr error

	mu      sync.Mutex
	next    uint64
	m       map[uint64]entry // by value: one allocation less per delivery
	ephem   []uint64         // ephemeral request tokens, oldest first
	sweepAt int
	closed  bool
}

type entry struct {
	d        *broker.Delivery
	deadline time.Time // moved by Extend
	durable  bool
}

func newSubID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// attach registers a new subscription to topic by who (nil with auth off).
func (t *tokens) attach(maxInFlight int, who *principal, topic string) *subTokens {
	st := &subTokens{id: newSubID(), who: who, topic: topic, ended: make(chan struct{}), m: map[uint64]entry{}, sweepAt: 2*maxInFlight + 64}
	t.mu.Lock()
	t.subs[st.id] = st
	t.mu.Unlock()
	return st
}

// detach forgets a subscription and all its tokens.
func (t *tokens) detach(st *subTokens) {
	t.mu.Lock()
	delete(t.subs, st.id)
	t.mu.Unlock()
	st.mu.Lock()
	st.closeLocked()
	st.mu.Unlock()
}

// closeLocked makes every token of st stop working; st.mu is held.
func (st *subTokens) closeLocked() {
	st.closed = true
	st.m = nil
	st.ephem = nil
}

// ownerName is the name of the bearer token that subscribed ("" with auth
// off).
func (st *subTokens) ownerName() string { return st.who.nameOf() }

// end makes the subscription end with err: its delivery tokens stop working
// at once, and its stream returns err (see liveSub.pump). It reports
// whether it did so (false when the subscription had ended already).
func (st *subTokens) end(err error) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return false
	}
	st.closeLocked()
	st.endErr = err
	close(st.ended)
	return true
}

// isEnded reports whether end was called; once it returns true, endErr may
// be read.
func (st *subTokens) isEnded() bool {
	select {
	case <-st.ended:
		return true
	default:
		return false
	}
}

// endEach ends, with the error check returns, every attached subscription
// for which check returns one; it returns how many it ended.
func (t *tokens) endEach(check func(*subTokens) error) int {
	t.mu.RLock()
	subs := make([]*subTokens, 0, len(t.subs))
	for _, st := range t.subs {
		subs = append(subs, st)
	}
	t.mu.RUnlock()
	n := 0
	for _, st := range subs {
		if err := check(st); err != nil && st.end(err) {
			n++
		}
	}
	return n
}

// register gives d a token. Ephemeral deliveries that are not requests need
// no settlement and are not kept; their token is still unique.
func (st *subTokens) register(d *broker.Delivery, durable bool) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.next++
	n := st.next
	var b [64]byte
	tok := string(strconv.AppendUint(append(append(b[:0], st.id...), '.'), n, 36))
	if st.closed {
		return tok
	}
	if durable {
		st.m[n] = entry{d: d, deadline: d.Info.Deadline, durable: true}
		if len(st.m) > st.sweepAt {
			st.sweepLocked(time.Now())
		}
		return tok
	}
	if d.Message.Header(message.HeaderReplyTo) == "" {
		return tok
	}
	st.m[n] = entry{d: d}
	st.ephem = append(st.ephem, n)
	if len(st.ephem) > maxEphemeral {
		delete(st.m, st.ephem[0])
		st.ephem = st.ephem[1:]
	}
	return tok
}

// sweepLocked drops durable entries long past their deadline: the broker has
// handed those messages out again.
func (st *subTokens) sweepLocked(now time.Time) {
	for n, e := range st.m {
		if e.durable && !e.deadline.IsZero() && now.Sub(e.deadline) > staleAfter {
			delete(st.m, n)
		}
	}
	if l := 2 * len(st.m); l > st.sweepAt {
		st.sweepAt = l
	}
}

// lookup finds the delivery of tok. With remove, the token is forgotten
// (a final settlement). owner is the name of the caller's bearer token: only
// the token that subscribed may settle (errForeign otherwise).
func (t *tokens) lookup(tok string, remove bool, owner string) (*broker.Delivery, *subTokens, error) {
	id, num, ok := strings.Cut(tok, ".")
	if !ok {
		return nil, nil, errUnknownToken
	}
	n, err := strconv.ParseUint(num, 36, 64)
	if err != nil {
		return nil, nil, errUnknownToken
	}
	t.mu.RLock()
	st := t.subs[id]
	t.mu.RUnlock()
	if st == nil {
		return nil, nil, errUnknownToken
	}
	if st.ownerName() != owner {
		return nil, st, errForeign
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.m[n]
	if !ok {
		return nil, nil, errUnknownToken
	}
	if remove {
		delete(st.m, n)
	}
	return e.d, st, nil
}

var (
	errUnknownToken = errors.New("unknown delivery token")
	errForeign      = errors.New("delivery of another bearer token")
)

// extended records a new deadline for tok.
func (t *tokens) extended(tok string, deadline time.Time) {
	id, num, _ := strings.Cut(tok, ".")
	n, _ := strconv.ParseUint(num, 36, 64)
	t.mu.RLock()
	st := t.subs[id]
	t.mu.RUnlock()
	if st == nil {
		return
	}
	st.mu.Lock()
	if e, ok := st.m[n]; ok {
		e.deadline = deadline
		st.m[n] = e
	}
	st.mu.Unlock()
}
