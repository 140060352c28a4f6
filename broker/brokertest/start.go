package brokertest

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

// testStartPositions: a new group starts at latest, earliest, a time or a
// sequence. Ordering without keys is not promised, so each group is checked
// for the exact set of messages it gets.
func (s *suite) testStartPositions(t *testing.T) {
	s.run(t, "Latest", func(t *testing.T) {
		s.need(t, "Groups", s.caps.Groups)
		b := s.open(t)
		topic := Topic(t)
		Publish(t, b, topic, msgs("old", 5)...)
		x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t), Start: broker.StartPosition{Kind: broker.StartLatest}})
		ExpectNone(t, x, s.quiet())
		Publish(t, b, topic, msg("new"))
		d := s.recv(t, x)
		payloadIs(t, d, "new")
		s.ack(t, d)
		ExpectNone(t, x, s.quiet())
	})
	s.run(t, "EarliestTimeSeq", s.testStartEarliestTimeSeq)
}

func (s *suite) testStartEarliestTimeSeq(t *testing.T) {
	s.need(t, "Groups", s.caps.Groups)
	s.need(t, "StartPositions", s.caps.StartPositions)
	b := s.open(t)
	topic := Topic(t)
	res := Publish(t, b, topic, msgs("m", 5)...)
	time.Sleep(50 * time.Millisecond) // so that the two batches have distinct publish times
	res2 := Publish(t, b, topic, msgs("n", 5)...)
	res.Results = append(res.Results, res2.Results...)
	all := map[string]bool{}
	for i := range 5 {
		all[fmt.Sprintf("m%d", i)] = true
		all[fmt.Sprintf("n%d", i)] = true
	}

	// Earliest: all ten.
	x := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t) + "-earliest", Start: broker.StartPosition{Kind: broker.StartEarliest}})
	publishedAt := map[string]time.Time{}
	got := map[string]bool{}
	for _, d := range ReceiveN(t, x, 10, s.wait()) {
		publishedAt[string(d.Message.Payload)] = d.Message.PublishedAt
		got[string(d.Message.Payload)] = true
		s.ack(t, d)
	}
	if !maps.Equal(got, all) {
		t.Errorf("StartEarliest: got %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(all)))
	}
	ExpectNone(t, x, s.quiet())

	// Time: the first message published at or after n0's publish time.
	if at := publishedAt["n0"]; at.IsZero() || !publishedAt["m4"].Before(at) {
		t.Errorf("StartTime: cannot pick a start time: PublishedAt of m4 = %s, of n0 = %s", publishedAt["m4"], at)
	} else {
		y := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t) + "-time", Start: broker.StartPosition{Kind: broker.StartTime, Time: at}})
		s.expectSet(t, y, "StartTime", "n0", "n1", "n2", "n3", "n4")
	}

	// Seq: from the eighth message on.
	if seq := res.Results[7].Seq; seq == 0 {
		t.Logf("StartSeq not checked: the backend returned no sequence numbers")
	} else {
		z := s.subscribe(t, b, broker.SubscribeParams{Topic: topic, Group: Group(t) + "-seq", Start: broker.StartPosition{Kind: broker.StartSeq, Seq: seq}})
		s.expectSet(t, z, fmt.Sprintf("StartSeq %d", seq), "n2", "n3", "n4")
	}
}

// expectSet receives exactly the payloads want (in any order), acks them and
// checks that nothing else follows.
func (s *suite) expectSet(t *testing.T, x *sub, what string, want ...string) {
	t.Helper()
	got := map[string]bool{}
	for _, d := range ReceiveN(t, x, len(want), s.wait()) {
		got[string(d.Message.Payload)] = true
		s.ack(t, d)
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("%s: got %v, want %v", what, slices.Sorted(maps.Keys(got)), want)
			break
		}
	}
	ExpectNone(t, x, s.quiet())
}
