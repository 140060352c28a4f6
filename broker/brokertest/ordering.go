package brokertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// testOrdering: with OrderedByKey a group has at most one message per key in
// flight, in sequence order, and keys proceed in parallel (a failing message
// holds back only its own key).
func (s *suite) testOrdering(t *testing.T) {
	s.run(t, "PerKeyUnderConcurrency", s.testOrderingConcurrent)
	s.run(t, "NoHeadOfLineBlocking", s.testNoHeadOfLine)
}

func (s *suite) testOrderingConcurrent(t *testing.T) {
	s.needAck(t)
	s.need(t, "OrderedByKey", s.caps.OrderedByKey)
	const keys, perKey, consumers = 20, 30, 4
	b := s.open(t)
	topic, group := Topic(t), Group(t)
	retry := 5 * time.Millisecond
	p := broker.SubscribeParams{Topic: topic, Group: group, OrderedByKey: true, MaxAttempts: 10,
		AckDeadline: s.scale(30 * time.Second), Backoff: constBackoff(retry)}
	subs := make([]*sub, consumers)
	for i := range subs {
		subs[i] = s.subscribe(t, b, p)
	}
	for i := range perKey {
		batch := make([]*message.Message, keys)
		for k := range batch {
			batch[k] = &message.Message{Key: fmt.Sprintf("k%02d", k), Payload: []byte(strconv.Itoa(i))}
		}
		Publish(t, b, topic, batch...)
	}

	var (
		mu         sync.Mutex
		inFlight   = map[string]int{}
		acked      = map[string][]int{}
		total      int
		nacks      int
		violations []string
		done       = make(chan struct{})
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, x := range subs {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
		wg.Go(func() {
			for {
				var d *broker.Delivery
				select {
				case <-ctx.Done():
					return
				case dd, ok := <-x.Deliveries():
					if !ok {
						return
					}
					d = dd
				}
				key := d.Message.Key
				n, err := strconv.Atoi(string(d.Message.Payload))
				if err != nil {
					t.Errorf("unexpected payload %q", d.Message.Payload)
					continue
				}
				mu.Lock()
				inFlight[key]++
				if c := inFlight[key]; c > 1 {
					violations = append(violations, fmt.Sprintf("key %s: %d messages in flight at once (consumer %d got #%d)", key, c, i, n))
				}
				mu.Unlock()

				time.Sleep(time.Duration(rng.IntN(4000)) * time.Microsecond)
				nack := d.Info.Attempt == 1 && rng.IntN(8) == 0

				// Record and leave the key before settling: once settled the
				// backend may hand the key's next message to another consumer.
				mu.Lock()
				inFlight[key]--
				if nack {
					nacks++
				} else {
					acked[key] = append(acked[key], n)
					total++
					if total == keys*perKey {
						close(done)
					}
				}
				mu.Unlock()
				if nack {
					d2 := retry
					if !s.caps.NackDelay {
						d2 = 0
					}
					err = bounded(s.wait(), "Nack", func() error { return d.Nack(ctx, d2) })
				} else {
					err = bounded(s.wait(), "Ack", func() error { return d.Ack(ctx) })
				}
				if err != nil && ctx.Err() == nil {
					t.Errorf("consumer %d: settling %s: %v", i, describe(d), err)
				}
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()

	timeout := s.scale(20 * time.Second)
	select {
	case <-done:
	case <-time.After(timeout):
		mu.Lock()
		got := total
		mu.Unlock()
		t.Fatalf("acked %d of %d messages within %s", got, keys*perKey, timeout)
	}
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	for k := range keys {
		key := fmt.Sprintf("k%02d", k)
		seq := acked[key]
		ok := len(seq) == perKey
		for i := 0; ok && i < len(seq); i++ {
			ok = seq[i] == i
		}
		if !ok {
			t.Errorf("key %s: acked order %v, want 0..%d each once, in order", key, seq, perKey-1)
		}
	}
	t.Logf("%d messages, %d nacks, %d consumers", keys*perKey, nacks, consumers)
}

func (s *suite) testNoHeadOfLine(t *testing.T) {
	s.needAck(t)
	s.need(t, "OrderedByKey", s.caps.OrderedByKey)
	b := s.open(t)
	topic := Topic(t)
	hold := s.scale(time.Second)
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t), OrderedByKey: true, MaxAttempts: 5,
		AckDeadline: s.scale(30 * time.Second), Backoff: constBackoff(hold)})
	batch := []*message.Message{{Key: "A", Payload: []byte("A0")}, {Key: "A", Payload: []byte("A1")}}
	for i := range 5 {
		batch = append(batch, &message.Message{Key: "B", Payload: []byte(fmt.Sprintf("B%d", i))})
	}
	Publish(t, b, topic, batch...)

	var (
		nackedAt time.Time
		a0Back   time.Time
		bDone    int
		log      []string
	)
	deadline := time.Now().Add(hold + s.wait())
	for bDone < 5 || a0Back.IsZero() || len(log) < 8 {
		if time.Now().After(deadline) {
			t.Fatalf("incomplete after %s: got %v", hold+s.wait(), log)
		}
		d := Receive(t, x, time.Until(deadline))
		p := string(d.Message.Payload)
		log = append(log, fmt.Sprintf("%s#%d", p, d.Info.Attempt))
		switch {
		case p == "A0" && d.Info.Attempt == 1:
			nackedAt = time.Now()
			s.nackAfter(t, d, hold)
		case p == "A0":
			a0Back = time.Now()
			if since := a0Back.Sub(nackedAt); since < hold-10*time.Millisecond {
				t.Errorf("A0 redelivered %s after a nack of %s", since, hold)
			}
			s.ack(t, d)
		case p == "A1":
			if a0Back.IsZero() {
				t.Fatalf("A1 delivered while A0 waits for redelivery (key A out of order); sequence %v", log)
			}
			s.ack(t, d)
		default: // B
			if !a0Back.IsZero() && bDone < 5 {
				t.Errorf("%s delivered only after A0's redelivery: key B was held back by key A's failure; sequence %v", p, log)
			}
			if want := fmt.Sprintf("B%d", bDone); p != want {
				t.Errorf("key B out of order: got %s, want %s; sequence %v", p, want, log)
			}
			bDone++
			s.ack(t, d)
		}
	}
	ExpectNone(t, x, s.quiet())
	t.Logf("sequence %v", log)
}
