package nats

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/broker/brokerutil"
)

// fetchWait bounds one pull request; Close waits for the outstanding ones to
// end so that no message is left delivered to a dead inbox.
const fetchWait = 500 * time.Millisecond

// pullWait is the expiry of one pull request: fetchWait less a random fifth,
// so that expiries do not keep lining up with redeliveries that fall due
// after round delays (a nack delay of 1 s, a backoff of 2 s). nats-server
// before 2.10.14 mishandles a redelivery that falls due just as the only
// waiting pull request has expired: it drops it until the next AckWait and
// hands out the consumer's previous message again as a first delivery
// (nats-server#5305).
func pullWait() time.Duration { return fetchWait - rand.N(fetchWait/5) }

// pull is one outstanding pull request and the slots (MaxInFlight) it
// reserved: it asks for no more messages than it has slots, so every message
// it brings can be handed out at once.
type pull struct {
	msgs  <-chan jetstream.Msg // closed when the request has ended
	n     int                  // messages asked for
	got   int                  // messages received
	owned int                  // slots still reserved: n minus the messages handed out or settled here
	start time.Time
}

// loop pulls as many messages as the subscription has free slots. While the
// messages of one pull request are being handed out it keeps a second one
// outstanding (once half of the first has arrived and enough slots are
// free), so that the handlers do not wait for a round trip between two
// requests. Messages received after Close are not handed out; they are
// nak'ed once no pull request is outstanding any more (releaseLate), and no
// pull request is made after Close.
func (g *groupSub) loop(ctx context.Context, cons jetstream.Consumer) error {
	var (
		cur, next *pull
		late      []jetstream.Msg // received after Close
		stale     bool            // a request ended on the client's timeout after Close: the server may still hold it
		failures  int
	)
	minNext := max(1, cap(g.sem)/8)
	defer func() { g.releaseLate(late, stale) }()
	for {
		if cur == nil {
			cur, next = next, nil
		}
		if cur == nil {
			// Check Closing before and after taking a slot: when both
			// are ready, select picks at random, and each pull made
			// after Close would fetch the messages released by the
			// previous one again, nak them again and so spend one of
			// their attempts, until JetStream's MaxDeliver drops them.
			if g.Closing() {
				return nil
			}
			select {
			case g.sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			if g.Closing() {
				<-g.sem
				return nil
			}
			p, err := g.fetch(cons, 1+g.takeSlots(cap(g.sem)-1))
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, natsgo.ErrConnectionClosed) {
					return fmt.Errorf("%s: group %s on %s ended: %w", backendName, g.group, g.topic, err)
				}
				failures++
				select { // transient (reconnecting): back off
				case <-time.After(brokerutil.ReconnectBackoff(failures)):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			failures = 0
			cur = p
		}
		m, ok := <-cur.msgs
		if !ok {
			if g.Closing() && time.Since(cur.start) > fetchWait+fetchWait/2 {
				stale = true
			}
			g.freeSlots(cur.owned)
			cur = nil
			continue
		}
		cur.got++
		if g.Closing() {
			late = append(late, m) // its slot is freed with the request's
			continue
		}
		handed, release := g.handle(ctx, m)
		if release {
			late = append(late, m)
		}
		cur.owned--
		if !handed {
			<-g.sem
		}
		// Pipeline: the next request goes out while this one's messages
		// are being handed out, with the slots freed meanwhile.
		if next == nil && cur.got*2 >= cur.n && cur.got < cur.n && cap(g.sem)-len(g.sem) >= minNext && !g.Closing() {
			if k := g.takeSlots(cap(g.sem)); k > 0 {
				next, _ = g.fetch(cons, k) // on error: tried again when this request ends
			}
		}
	}
}

// fetch sends a pull request for n messages, for which n slots are taken;
// on error it frees them.
func (g *groupSub) fetch(cons jetstream.Consumer, n int) (*pull, error) {
	start := time.Now()
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(pullWait()))
	if err != nil {
		g.freeSlots(n)
		return nil, err
	}
	return &pull{msgs: batch.Messages(), n: n, owned: n, start: start}, nil
}

// takeSlots takes up to n free slots without waiting and returns how many.
func (g *groupSub) takeSlots(n int) int {
	for i := range n {
		select {
		case g.sem <- struct{}{}:
		default:
			return i
		}
	}
	return n
}

func (g *groupSub) freeSlots(n int) {
	for range n {
		<-g.sem
	}
}

// releaseLate naks the messages that were received but not handed out
// because the subscription closed. It runs once no pull request is
// outstanding: the server answered them (fully served, or expired with a
// 408 status), so a plain Nak cannot send the messages back to this
// subscription. Only when the client gave up waiting on a request (fetchWait
// plus its own margin) may the server still hold it; then the nak is
// delayed past the request's expiry.
func (g *groupSub) releaseLate(late []jetstream.Msg, stale bool) {
	for _, m := range late {
		if stale {
			_ = m.NakWithDelay(fetchWait)
		} else {
			_ = m.Nak()
		}
	}
}
