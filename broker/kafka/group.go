package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/message"
)

// A group subscription is one member of a Kafka consumer group. kgo fetches
// the records of the partitions assigned to it; the subscription keeps them
// in memory (at most max_buffered) until they are done (acked,
// dead-lettered, or skipped), emulating what Kafka does not have:
//
//   - ack deadlines, nack delays and Extend are timers per delivery;
//     redelivery hands the buffered record out again;
//   - attempts are counted per record; after MaxAttempts the record goes to
//     the dead-letter topic with brokerutil's format;
//   - with OrderedByKey only the first unfinished record of a key (per
//     partition) is handed out; later ones wait;
//   - the committed offset of a partition is the first record that is not
//     done, so a later ack never commits past an earlier unsettled record.
//     The commit metadata carries the attempts of delivered records and the
//     records acked beyond that offset, so that a clean close or rebalance
//     neither redelivers acked records nor forgets attempts.

// record states.
const (
	stReady   = iota // in the ready queue
	stHeld           // waiting for an earlier record of the same key
	stFlight         // handed to the consumer
	stDelayed        // waiting for a redelivery timer
	stDLQ            // being dead-lettered
	stDone           // acked, dead-lettered or skipped
	stDropped        // its partition was revoked or the subscription closed
)

type rec struct {
	r        *kgo.Record
	ps       *partState
	msg      *message.Message
	attempts int // deliveries made so far (restored from commit metadata)
	state    int
	gen      int // delivery generation; a stale delivery has an older one
	timer    *time.Timer
	deadline time.Time
}

type partState struct {
	p     int32
	recs  []*rec // tracked records in offset order; recs[0] is the first not done
	next  int64  // offset after the last record taken; -1 until known
	first int64  // committed offset when assigned; -1 when none
	// restored bookkeeping from the commit metadata, for offsets not yet
	// re-read.
	restoredDone     map[int64]bool
	restoredAttempts map[int64]int
	dirty            bool
	// revoking: the partition is being handed to another member; its
	// records are no longer handed out, its deliveries may still settle.
	revoking bool
}

type keyID struct {
	p int32
	k string
}

// token is broker.Delivery.Token of a group delivery.
type token struct {
	r   *rec
	gen int
}

type groupSub struct {
	*brokerutil.Sub
	b       *Broker
	cl      *kgo.Client
	adm     *kadm.Client
	kt      string
	topic   string
	group   string
	set     brokerutil.Settings
	ordered bool
	cancel  context.CancelFunc
	ctx     context.Context

	mu       sync.Mutex
	parts    map[int32]*partState
	ready    []*rec
	keys     map[keyID][]*rec
	inflight int
	tracked  int
	closed   bool
	wake     chan struct{} // dispatcher
	room     chan struct{} // poller
	commitCh chan struct{} // committer
	commitMu sync.Mutex    // one commit at a time
	clReady  chan struct{} // closed once cl and adm are set
	joined   chan struct{} // closed after the first assignment
	joinOnce sync.Once
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (b *Broker) subscribeGroup(ctx context.Context, kt string, p *broker.SubscribeParams) (broker.Subscription, error) {
	if err := b.initGroup(ctx, kt, p); err != nil {
		return nil, err
	}
	gctx, cancel := context.WithCancel(context.Background())
	g := &groupSub{
		b: b, kt: kt, topic: p.Topic, group: p.Group, set: brokerutil.SettingsOf(p), ordered: p.OrderedByKey,
		ctx: gctx, cancel: cancel,
		parts: map[int32]*partState{}, keys: map[keyID][]*rec{},
		wake: make(chan struct{}, 1), room: make(chan struct{}, 1), commitCh: make(chan struct{}, 1),
		clReady: make(chan struct{}), joined: make(chan struct{}),
	}
	opts := append(b.baseOpts(),
		kgo.ConsumerGroup(p.Group),
		kgo.ConsumeTopics(kt),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(g.assigned),
		kgo.OnPartitionsRevoked(g.revoked),
		kgo.OnPartitionsLost(g.lost),
		kgo.HeartbeatInterval(b.cfg.heartbeat),
		kgo.SessionTimeout(b.cfg.sessionTimeout),
		kgo.RebalanceTimeout(b.cfg.rebalanceTimeout),
		kgo.FetchMaxWait(time.Second),
		kgo.FetchMaxBytes(int32(max(b.maxMessageBytes*4, 50<<20))),
		kgo.FetchMaxPartitionBytes(int32(max(b.maxMessageBytes, 1<<20))),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s: group %s: %w", backendName, p.Group, err)
	}
	g.cl = cl
	g.adm = kadm.NewClient(cl)
	close(g.clReady) // the group callbacks wait for it
	g.Sub = brokerutil.NewSub(g.stop)
	if err := b.subs.Track(g.Sub, backendName); err != nil {
		cancel()
		cl.Close()
		return nil, err
	}
	g.Run(func() error {
		defer b.subs.Untrack(g.Sub)
		var wg sync.WaitGroup
		wg.Go(g.dispatch)
		wg.Go(g.committer)
		go func() { <-g.Done(); cancel() }()
		err := g.poll()
		cancel()
		wg.Wait()
		return err
	})
	// Return once the member has joined the group and got its partitions
	// (possibly none), so that the consumer is attached when Subscribe
	// returns. Nothing is lost if the join takes longer: the group's
	// position was committed above.
	wait := time.NewTimer(b.cfg.rebalanceTimeout)
	defer wait.Stop()
	select {
	case <-g.joined:
	case <-ctx.Done():
	case <-wait.C:
	case <-g.Done():
	}
	return g, nil
}

// initGroup commits the group's start position on kt when the group has no
// committed offset on kt yet (it is new), so that the group exists from
// now on and keeps its position across restarts.
func (b *Broker) initGroup(ctx context.Context, kt string, p *broker.SubscribeParams) error {
	committed, err := b.adm.FetchOffsetsForTopics(ctx, p.Group, kt)
	if errors.Is(err, kerr.GroupIDNotFound) {
		committed, err = nil, nil
	}
	if err != nil {
		return b.opErr(ctx, "fetch the offsets of group "+p.Group, err)
	}
	exists := false
	committed.Each(func(o kadm.OffsetResponse) {
		if o.Topic == kt && o.Err == nil && o.At >= 0 {
			exists = true
		}
	})
	if exists {
		return nil
	}
	var listed kadm.ListedOffsets
	switch p.Start.Kind {
	case broker.StartEarliest:
		listed, err = b.adm.ListStartOffsets(ctx, kt)
	case broker.StartTime:
		listed, err = b.adm.ListOffsetsAfterMilli(ctx, p.Start.Time.UnixMilli(), kt)
	case broker.StartSeq:
		listed, err = b.seqOffsets(ctx, kt, p.Start.Seq)
	default:
		listed, err = b.adm.ListEndOffsets(ctx, kt)
	}
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return b.opErr(ctx, "list the start offsets of "+p.Topic, err)
	}
	offs := kadm.Offsets{}
	listed.Each(func(l kadm.ListedOffset) {
		if l.Offset >= 0 {
			offs.Add(kadm.Offset{Topic: kt, Partition: l.Partition, At: l.Offset, LeaderEpoch: -1})
		}
	})
	resp, err := b.adm.CommitOffsets(ctx, p.Group, offs)
	if err == nil {
		err = resp.Error()
	}
	if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.RebalanceInProgress) {
		return nil // the group has active members: it exists already
	}
	if err != nil {
		return b.opErr(ctx, "create group "+p.Group+" on "+p.Topic, err)
	}
	return nil
}

// seqOffsets resolves a start sequence: its partition starts at its offset,
// the other partitions at the first record at or after its timestamp.
func (b *Broker) seqOffsets(ctx context.Context, kt string, seq uint64) (kadm.ListedOffsets, error) {
	part, off := partitionOffset(seq)
	starts, err := b.adm.ListStartOffsets(ctx, kt)
	if err != nil {
		return nil, err
	}
	ends, err := b.adm.ListEndOffsets(ctx, kt)
	if err != nil {
		return nil, err
	}
	if _, ok := ends.Lookup(kt, part); !ok {
		return nil, &message.ValidationError{Field: "start", Reason: fmt.Sprintf("sequence %d names partition %d, which topic %q does not have", seq, part, topicOf(kt))}
	}
	out := kadm.ListedOffsets{}
	var ts int64 = -1
	if len(ends[kt]) > 1 {
		ts = b.recordTime(ctx, kt, part, off)
	}
	var byTime kadm.ListedOffsets
	if ts >= 0 {
		if byTime, err = b.adm.ListOffsetsAfterMilli(ctx, ts, kt); err != nil {
			return nil, err
		}
	}
	ends.Each(func(e kadm.ListedOffset) {
		o := e
		switch {
		case e.Partition == part:
			s, _ := starts.Lookup(kt, part)
			o.Offset = min(max(off, s.Offset), e.Offset)
		case ts >= 0:
			if l, ok := byTime.Lookup(kt, e.Partition); ok {
				o.Offset = l.Offset
			}
		default:
			s, _ := starts.Lookup(kt, e.Partition)
			o.Offset = s.Offset
		}
		if out[kt] == nil {
			out[kt] = map[int32]kadm.ListedOffset{}
		}
		out[kt][o.Partition] = o
	})
	return out, nil
}

// recordTime returns the timestamp (ms) of the record at off, or -1.
func (b *Broker) recordTime(ctx context.Context, kt string, part int32, off int64) int64 {
	cl, err := kgo.NewClient(append(b.baseOpts(), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{kt: {part: kgo.NewOffset().At(off)}}))...)
	if err != nil {
		return -1
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for rctx.Err() == nil {
		fs := cl.PollRecords(rctx, 1)
		for _, r := range fs.Records() {
			return r.Timestamp.UnixMilli()
		}
	}
	return -1
}

// assigned sets up the state of newly assigned partitions, restoring the
// bookkeeping kept in the commit metadata.
func (g *groupSub) assigned(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
	defer g.joinOnce.Do(func() { close(g.joined) })
	parts := m[g.kt]
	if len(parts) == 0 {
		return
	}
	<-g.clReady
	committed, err := g.adm.FetchOffsetsForTopics(ctx, g.group, g.kt)
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range parts {
		ps := &partState{p: p, next: -1, first: -1}
		if err == nil {
			if o, ok := committed.Lookup(g.kt, p); ok && o.Err == nil && o.At >= 0 {
				ps.first = o.At
				ps.restoredDone, ps.restoredAttempts = decodeMeta(o.Metadata)
			}
		}
		g.parts[p] = ps
	}
}

// revoked hands partitions over to another member: their records are no
// longer handed out, the deliveries in flight get until their deadline
// (at most half the rebalance timeout) to settle, and then the final state
// is committed and the partitions are dropped. So a rebalance does not
// normally redeliver what this member is still working on.
func (g *groupSub) revoked(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
	parts := m[g.kt]
	if len(parts) == 0 {
		return
	}
	<-g.clReady
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	for _, p := range parts {
		if ps := g.parts[p]; ps != nil {
			ps.revoking = true
		}
	}
	g.mu.Unlock()
	limit := time.Now().Add(min(g.set.AckDeadline, g.b.cfg.rebalanceTimeout/2))
	for time.Now().Before(limit) && ctx.Err() == nil && g.inflightOf(parts) > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	offs, metas := g.snapshotLocked(parts, true)
	g.dropLocked(parts)
	g.mu.Unlock()
	g.commit(ctx, offs, metas)
	signal(g.room)
}

// inflightOf counts the deliveries in flight of parts.
func (g *groupSub) inflightOf(parts []int32) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, p := range parts {
		if ps := g.parts[p]; ps != nil {
			for _, r := range ps.recs {
				if r.state == stFlight || r.state == stDLQ {
					n++
				}
			}
		}
	}
	return n
}

// lost drops partitions whose ownership was lost without a commit.
func (g *groupSub) lost(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	g.mu.Lock()
	g.dropLocked(m[g.kt])
	g.mu.Unlock()
	signal(g.room)
}

// dropLocked forgets partitions; their deliveries become stale.
func (g *groupSub) dropLocked(parts []int32) {
	for _, p := range parts {
		ps := g.parts[p]
		if ps == nil {
			continue
		}
		delete(g.parts, p)
		for _, r := range ps.recs {
			g.dropRecLocked(r)
		}
		g.tracked -= len(ps.recs)
		ps.recs = nil
		for k := range g.keys {
			if k.p == p {
				delete(g.keys, k)
			}
		}
	}
}

func (g *groupSub) dropRecLocked(r *rec) {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.state == stFlight {
		g.inflight--
	}
	r.state = stDropped
}

// poll feeds records from kgo into the subscription while there is room.
func (g *groupSub) poll() error {
	for {
		g.mu.Lock()
		room := g.b.cfg.maxTracked - g.tracked
		g.mu.Unlock()
		if room <= 0 {
			select {
			case <-g.room:
				continue
			case <-g.ctx.Done():
				return nil
			}
		}
		fs := g.cl.PollRecords(g.ctx, room)
		if g.ctx.Err() != nil || fs.IsClientClosed() {
			g.cl.AllowRebalance()
			return nil
		}
		g.mu.Lock()
		fs.EachRecord(g.addLocked)
		g.mu.Unlock()
		g.cl.AllowRebalance()
		signal(g.wake)
	}
}

// addLocked starts tracking a fetched record.
func (g *groupSub) addLocked(r *kgo.Record) {
	ps := g.parts[r.Partition]
	if ps == nil || r.Topic != g.kt || (ps.next >= 0 && r.Offset < ps.next) || (ps.first >= 0 && r.Offset < ps.first) {
		return // not ours (any more), or already taken
	}
	ps.next = r.Offset + 1
	x := &rec{r: r, ps: ps, msg: fromRecord(r)}
	ps.recs = append(ps.recs, x)
	g.tracked++
	if ps.restoredDone[r.Offset] {
		delete(ps.restoredDone, r.Offset)
		x.state = stDone
		g.advanceLocked(ps)
		return
	}
	if n, ok := ps.restoredAttempts[r.Offset]; ok {
		delete(ps.restoredAttempts, r.Offset)
		x.attempts = n
	}
	if rf := x.msg.Header(message.HeaderReplayFor); rf != "" && rf != g.group {
		x.state = stDone // a dead letter replayed for another group
		ps.dirty = true
		g.advanceLocked(ps)
		return
	}
	if g.ordered && x.msg.Key != "" {
		k := keyID{r.Partition, x.msg.Key}
		q := append(g.keys[k], x)
		g.keys[k] = q
		if len(q) > 1 {
			x.state = stHeld
			return
		}
	}
	x.state = stReady
	g.ready = append(g.ready, x)
}

// advanceLocked pops the done records at the head of ps.
func (g *groupSub) advanceLocked(ps *partState) {
	n := 0
	for n < len(ps.recs) && ps.recs[n].state == stDone {
		n++
	}
	if n > 0 {
		clear(ps.recs[:n])
		ps.recs = ps.recs[n:]
		g.tracked -= n
		ps.dirty = true
		signal(g.room)
		signal(g.commitCh)
	}
}

// doneLocked marks r done, lets the next record of its key go and advances
// the partition's commit point.
func (g *groupSub) doneLocked(r *rec) {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.state == stFlight {
		g.inflight--
	}
	r.state = stDone
	if g.ordered && r.msg.Key != "" {
		k := keyID{r.r.Partition, r.msg.Key}
		q := g.keys[k]
		if len(q) > 0 && q[0] == r {
			q = q[1:]
		}
		if len(q) == 0 {
			delete(g.keys, k)
		} else {
			g.keys[k] = q
			if q[0].state == stHeld {
				q[0].state = stReady
				g.ready = append(g.ready, q[0])
			}
		}
	}
	r.ps.dirty = true
	g.advanceLocked(r.ps)
	signal(g.wake)
}

// dispatch hands ready records to the consumer, at most MaxInFlight at once.
func (g *groupSub) dispatch() {
	for {
		g.mu.Lock()
		var d *broker.Delivery
		for d == nil && !g.closed && g.inflight < g.set.MaxInFlight && len(g.ready) > 0 {
			x := g.ready[0]
			g.ready[0] = nil
			g.ready = g.ready[1:]
			if x.state != stReady || x.ps.revoking {
				continue
			}
			if x.msg.Expired(time.Now()) {
				x.state = stDLQ
				info := g.infoLocked(x, max(x.attempts, 1))
				go g.deadLetterAsync(x, info, brokerutil.ReasonExpired)
				continue
			}
			x.attempts++
			x.gen++
			x.state = stFlight
			x.deadline = time.Now().Add(g.set.AckDeadline)
			g.inflight++
			x.ps.dirty = true
			gen := x.gen
			x.timer = time.AfterFunc(g.set.AckDeadline, func() { g.expire(x, gen) })
			d = broker.NewDelivery(x.msg, g.infoLocked(x, x.attempts), g, &token{r: x, gen: gen})
		}
		g.mu.Unlock()
		if d == nil {
			select {
			case <-g.wake:
				continue
			case <-g.Done():
				return
			}
		}
		if !g.Send(d) {
			return
		}
	}
}

func (g *groupSub) infoLocked(x *rec, attempt int) message.Info {
	return message.Info{
		Group:       g.group,
		Seq:         seqOf(x.r.Partition, x.r.Offset),
		Attempt:     attempt,
		Redelivered: attempt > 1,
		Deadline:    x.deadline,
	}
}

// expire handles a missed ack deadline.
func (g *groupSub) expire(x *rec, gen int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if x.gen != gen || x.state != stFlight || g.closed {
		return
	}
	x.timer = nil
	g.inflight--
	g.retryLocked(x, 0)
}

// retryLocked schedules the redelivery of x after a failed attempt, or
// dead-letters it when its attempts are exhausted.
func (g *groupSub) retryLocked(x *rec, delay time.Duration) {
	if g.set.Exhausted(x.attempts) {
		x.state = stDLQ
		go g.deadLetterAsync(x, g.infoLocked(x, x.attempts), brokerutil.ReasonMaxAttempts)
		signal(g.wake)
		return
	}
	x.state = stDelayed
	d := g.set.Delay(x.attempts, delay)
	x.timer = time.AfterFunc(d, func() { g.requeue(x) })
	signal(g.wake)
}

// requeue puts a delayed record back in the ready queue.
func (g *groupSub) requeue(x *rec) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if x.state != stDelayed {
		return
	}
	x.timer = nil
	x.state = stReady
	g.ready = append(g.ready, x)
	signal(g.wake)
}

// deadLetterAsync dead-letters x outside any settlement call (expiry, a
// missed last deadline); on failure the record is retried later.
func (g *groupSub) deadLetterAsync(x *rec, info message.Info, reason string) {
	ctx, cancel := context.WithTimeout(g.ctx, 30*time.Second)
	defer cancel()
	err := g.b.deadLetter(ctx, x.msg, info, reason)
	g.mu.Lock()
	defer g.mu.Unlock()
	if x.state != stDLQ {
		return
	}
	if err != nil {
		x.state = stDelayed
		x.timer = time.AfterFunc(time.Second, func() { g.requeue(x) })
		return
	}
	g.doneLocked(x)
}

// deadLetter publishes the dead letter of m to the group's dead-letter topic.
func (b *Broker) deadLetter(ctx context.Context, m *message.Message, info message.Info, reason string) error {
	dl := brokerutil.DeadLetter(m, info, reason)
	kt, err := kafkaTopic(dl.Topic)
	if err != nil {
		return err
	}
	if err := b.ensureTopic(ctx, kt); err != nil {
		return err
	}
	if err := b.cl.ProduceSync(ctx, toRecord(kt, dl)).FirstErr(); err != nil {
		return b.opErr(ctx, "dead-letter "+m.ID+" to "+dl.Topic, err)
	}
	return nil
}

// claim checks that d is still the current delivery of its record and
// returns the record with the lock held; on error the lock is released.
func (g *groupSub) claim(d *broker.Delivery, op string) (*rec, error) {
	t := d.Token.(*token)
	g.mu.Lock()
	x := t.r
	switch {
	case g.closed:
		g.mu.Unlock()
		return nil, fmt.Errorf("%s of message %s: %w (the subscription was closed and the message released)", op, d.Message.ID, broker.ErrClosed)
	case x.gen != t.gen || x.state != stFlight:
		g.mu.Unlock()
		return nil, fmt.Errorf("%s of message %s (attempt %d): %w", op, d.Message.ID, d.Info.Attempt, broker.ErrDeliveryExpired)
	case time.Now().After(x.deadline):
		g.mu.Unlock()
		return nil, fmt.Errorf("%s of message %s (attempt %d, deadline %s): %w", op, d.Message.ID, d.Info.Attempt, x.deadline.Format(time.RFC3339Nano), broker.ErrDeliveryExpired)
	}
	return x, nil
}

// Ack implements broker.Acker: the record is done; the partition's commit
// point moves past it once every earlier record is done too.
func (g *groupSub) Ack(_ context.Context, d *broker.Delivery) error {
	x, err := g.claim(d, "ack")
	if err != nil {
		return err
	}
	g.doneLocked(x)
	g.mu.Unlock()
	return nil
}

// Nack implements broker.Acker: the record is handed out again after the
// delay (or the backoff), or dead-lettered after the last attempt.
func (g *groupSub) Nack(ctx context.Context, d *broker.Delivery, delay time.Duration) error {
	x, err := g.claim(d, "nack")
	if err != nil {
		return err
	}
	if g.set.Exhausted(x.attempts) {
		return g.termLocked(ctx, x, d, brokerutil.ReasonMaxAttempts)
	}
	x.timer.Stop()
	x.timer = nil
	g.inflight--
	g.retryLocked(x, delay)
	g.mu.Unlock()
	return nil
}

// Term implements broker.Acker: the record goes to the dead-letter topic.
func (g *groupSub) Term(ctx context.Context, d *broker.Delivery, reason string) error {
	x, err := g.claim(d, "term")
	if err != nil {
		return err
	}
	return g.termLocked(ctx, x, d, reason)
}

// termLocked dead-letters x (called with the lock held, releases it).
func (g *groupSub) termLocked(ctx context.Context, x *rec, d *broker.Delivery, reason string) error {
	x.timer.Stop()
	x.timer = nil
	g.inflight--
	x.state = stDLQ
	signal(g.wake)
	g.mu.Unlock()
	err := g.b.deadLetter(ctx, x.msg, d.Info, reason)
	g.mu.Lock()
	defer g.mu.Unlock()
	if x.state != stDLQ {
		return err
	}
	if err != nil {
		// Not lost: handed out again after the backoff.
		x.state = stDelayed
		x.timer = time.AfterFunc(g.set.Delay(x.attempts, 0), func() { g.requeue(x) })
		return err
	}
	g.doneLocked(x)
	return nil
}

// Extend implements broker.Acker by moving the delivery's timer.
func (g *groupSub) Extend(_ context.Context, d *broker.Delivery, by time.Duration) error {
	x, err := g.claim(d, "extend")
	if err != nil {
		return err
	}
	defer g.mu.Unlock()
	x.deadline = time.Now().Add(by)
	x.timer.Reset(by)
	return nil
}

// committer commits the partitions' commit points every commit_interval
// while something changed.
func (g *groupSub) committer() {
	t := time.NewTicker(g.b.cfg.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			return
		}
		offs, metas := g.snapshotLocked(nil, false)
		g.mu.Unlock()
		if len(offs) > 0 {
			g.commit(g.ctx, offs, metas)
		}
	}
}

// snapshotLocked returns the commit points and metadata of parts (nil: all
// assigned partitions), only of the dirty ones unless all.
func (g *groupSub) snapshotLocked(parts []int32, all bool) (map[int32]kgo.EpochOffset, map[int32]string) {
	offs := map[int32]kgo.EpochOffset{}
	metas := map[int32]string{}
	if parts == nil {
		for p := range g.parts {
			parts = append(parts, p)
		}
	}
	for _, p := range parts {
		ps := g.parts[p]
		if ps == nil || (!all && !ps.dirty) {
			continue
		}
		at := ps.next
		if len(ps.recs) > 0 {
			at = ps.recs[0].r.Offset
		}
		if at < 0 {
			at = ps.first
		}
		if at < 0 {
			continue
		}
		ps.dirty = false
		offs[p] = kgo.EpochOffset{Epoch: -1, Offset: at}
		metas[p] = encodeMeta(ps)
	}
	return offs, metas
}

// commit commits offs with metas as the offsets' metadata.
func (g *groupSub) commit(ctx context.Context, offs map[int32]kgo.EpochOffset, metas map[int32]string) {
	if len(offs) == 0 {
		return
	}
	g.commitMu.Lock()
	defer g.commitMu.Unlock()
	cctx := kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			if t.Topic != g.kt {
				continue
			}
			for j := range t.Partitions {
				pp := &t.Partitions[j]
				if m, ok := metas[pp.Partition]; ok {
					pp.Metadata = &m
				}
			}
		}
		return nil
	})
	var failed bool
	g.cl.CommitOffsetsSync(cctx, map[string]map[int32]kgo.EpochOffset{g.kt: offs}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			failed = true
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					failed = true
				}
			}
		}
	})
	if failed {
		// Commit again at the next tick (or the next rebalance).
		g.mu.Lock()
		for p := range offs {
			if ps := g.parts[p]; ps != nil {
				ps.dirty = true
			}
		}
		g.mu.Unlock()
	}
}

// stop runs once when the subscription closes: the unsettled deliveries are
// released (they come back to the group: the commit point stays before
// them, and the metadata keeps their attempts), the state is committed and
// the member leaves the group.
func (g *groupSub) stop() {
	g.cancel()
	g.mu.Lock()
	var offs map[int32]kgo.EpochOffset
	var metas map[int32]string
	if !g.closed {
		offs, metas = g.snapshotLocked(nil, true)
	}
	g.closed = true
	for _, ps := range g.parts {
		for _, r := range ps.recs {
			if r.state != stDone {
				g.dropRecLocked(r)
			}
		}
	}
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.commit(ctx, offs, metas)
	g.cl.CloseAllowingRebalance()
}
