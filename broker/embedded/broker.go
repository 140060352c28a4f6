package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

var errStorage = broker.ErrStorage

func init() {
	broker.Register("embedded", func(ctx context.Context, u *url.URL) (broker.Broker, error) {
		opts, memory, err := optionsFromURL(u)
		if err != nil {
			return nil, err
		}
		dir := u.Path
		if u.Host != "" {
			return nil, fmt.Errorf("%w: embedded URL %q has a host %q; use three slashes for an absolute path (embedded:///var/lib/sb) or embedded://?memory", broker.ErrBadURL, u.String(), u.Host)
		}
		if memory {
			if dir != "" {
				return nil, fmt.Errorf("%w: embedded URL %q gives both a path and ?memory; choose one", broker.ErrBadURL, u.String())
			}
			return OpenMemory(opts...)
		}
		if dir == "" {
			return nil, fmt.Errorf("%w: embedded URL %q has no directory; use embedded:///path/to/dir or embedded://?memory", broker.ErrBadURL, u.String())
		}
		return Open(dir, opts...)
	})
}

// Broker is the embedded engine. It is safe for concurrent use.
type Broker struct {
	dir     string
	opts    options
	lock    *os.File
	meta    *bolt.DB
	log     *slog.Logger
	metrics *Metrics
	memory  bool

	mu        sync.RWMutex
	topics    map[string]*topic
	groups    map[string]*group
	ephemeral map[*ephemeralSub]struct{}
	closed    bool

	replies *replyTable
	sched   *scheduler

	stop      chan struct{}
	closeDone chan struct{} // closed when Close has finished
	wg        sync.WaitGroup
}

var _ broker.Broker = (*Broker)(nil)

// Open opens (creating when needed) the broker stored in dir. The directory is
// locked: a second Open of the same directory, from this process or another,
// fails with broker.ErrLocked. Recovery runs before Open returns: torn tails
// of segments are cut, cursors and pending deliveries are restored.
func Open(dir string, opts ...Option) (*Broker, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "topics"), 0o755); err != nil {
		return nil, fmt.Errorf("%w: create data directory %s: %v", errStorage, dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	b := &Broker{
		dir: dir, opts: o, lock: lock,
		log:       slog.Default().With("component", "switchboard-embedded"),
		metrics:   &Metrics{},
		topics:    map[string]*topic{},
		groups:    map[string]*group{},
		ephemeral: map[*ephemeralSub]struct{}{},
		replies:   newReplyTable(),
		stop:      make(chan struct{}),
		closeDone: make(chan struct{}),
	}
	b.meta, err = bolt.Open(filepath.Join(dir, "meta.db"), 0o644, &bolt.Options{Timeout: time.Second, NoFreelistSync: true})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w: open metadata %s: %v", errStorage, filepath.Join(dir, "meta.db"), err)
	}
	if err := b.recover(); err != nil {
		b.closeFiles()
		return nil, err
	}
	if o.durability == DurabilityNone {
		b.log.Warn("durability relaxed: publishes are acknowledged before fsync; a power failure can lose acknowledged messages", "dir", dir)
	}
	b.sched = newScheduler(b)
	b.wg.Add(3)
	go b.checkpointLoop()
	go b.janitorLoop()
	go b.sched.run()
	return b, nil
}

// OpenMemory opens a broker in a new temporary directory that is removed on
// Close, without fsync: for tests and demos, not for data that must survive.
func OpenMemory(opts ...Option) (*Broker, error) {
	dir, err := os.MkdirTemp("", "switchboard-memory-")
	if err != nil {
		return nil, fmt.Errorf("%w: create temporary directory: %v", errStorage, err)
	}
	b, err := Open(dir, append([]Option{WithDurability(DurabilityNone)}, opts...)...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	b.memory = true
	return b, nil
}

func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: open lock file %s: %v", errStorage, path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		who := strings.TrimSpace(string(holder))
		if who == "" {
			who = "another process"
		} else {
			who = "process " + who
		}
		return nil, fmt.Errorf("%w: %s is in use by %s; stop it or use another directory", broker.ErrLocked, dir, who)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// Dir returns the data directory.
func (b *Broker) Dir() string { return b.dir }

// Metrics returns the broker's counters.
func (b *Broker) Metrics() *Metrics { return b.metrics }

// Capabilities reports that everything is native.
func (b *Broker) Capabilities() broker.Capabilities {
	return broker.Capabilities{
		Name: "embedded", Durable: true, Groups: true, Ephemeral: true, Patterns: true,
		Ack: true, NackDelay: true, Extend: true, DeadLetter: true, Delay: true, Expiry: true,
		Dedup: b.opts.dedupWindow > 0, OrderedByKey: true, StartPositions: true, AtomicBatch: true,
		Request: true, MaxPayload: b.opts.limits.MaxPayload,
	}
}

// Durability reports the configured durability.
func (b *Broker) Durability() Durability { return b.opts.durability }

func (b *Broker) closedErr() error {
	return fmt.Errorf("embedded broker %s: %w", b.dir, broker.ErrClosed)
}

// topic returns the open topic name, creating it when create is set.
func (b *Broker) topic(name string, create bool) (*topic, error) {
	b.mu.RLock()
	t, ok := b.topics[name]
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return nil, b.closedErr()
	}
	if ok {
		return t, nil
	}
	if !create {
		return nil, fmt.Errorf("topic %q: %w; create it first or enable auto-creation", name, broker.ErrTopicNotFound)
	}
	return b.createTopic(broker.TopicConfig{Name: name}, false)
}

// createTopic opens a new topic and attaches matching pattern groups.
func (b *Broker) createTopic(cfg broker.TopicConfig, explicit bool) (*topic, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, b.closedErr()
	}
	if t, ok := b.topics[cfg.Name]; ok {
		if explicit {
			return t, fmt.Errorf("topic %q: %w", cfg.Name, broker.ErrAlreadyExists)
		}
		return t, nil
	}
	if err := b.saveTopicConfig(cfg); err != nil {
		return nil, err
	}
	t, err := b.openTopic(cfg.Name, cfg)
	if err != nil {
		return nil, err
	}
	b.topics[cfg.Name] = t
	for _, g := range b.groups {
		if message.Match(g.pattern, cfg.Name) {
			g.attach(t, broker.StartPosition{Kind: broker.StartEarliest}) // a new topic: everything in it is new to the group
		}
	}
	return t, nil
}

// Publish stores the messages on their topic with one group commit. The batch
// is atomic: after a crash either all of it is there or none. Messages with a
// deliver-at in the future go to the delay schedule and reach the topic when
// due.
func (b *Broker) Publish(ctx context.Context, p *broker.PublishParams) (*broker.PublishResult, error) {
	explicit := make([]bool, len(p.Messages))
	for i, m := range p.Messages {
		explicit[i] = m != nil && m.ID != ""
	}
	if err := broker.PrepareMessages(b.Capabilities(), b.opts.limits, p); err != nil {
		return nil, err
	}
	if strings.HasPrefix(p.Topic, "$") {
		return nil, &message.ValidationError{Field: "topic", Value: p.Topic, Reason: "topics starting with '$' are written by the broker only (dead letters); publish to a normal topic"}
	}
	t, err := b.topic(p.Topic, b.opts.autoCreate)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var delayed []int
	for i, m := range p.Messages {
		if m.DeliverAt.After(now) {
			delayed = append(delayed, i)
		}
	}
	if len(delayed) > 0 {
		return b.sched.publish(ctx, t, p.Messages, explicit, delayed)
	}
	req := &appendReq{msgs: p.Messages, explicit: explicit}
	if err := t.append(ctx, req); err != nil {
		return nil, err
	}
	b.metrics.Published.Add(int64(len(p.Messages)))
	return &broker.PublishResult{Results: req.res}, nil
}

var _ broker.AsyncPublisher = (*Broker)(nil)

// PublishAsync queues a publish and returns; done is called from the topic's
// writer once the messages are fsynced (or failed), so one caller can keep
// many publishes in one group commit. done must not block. Refused input is
// returned at once and done is not called. Messages with a future deliver-at
// take the synchronous path in a goroutine.
func (b *Broker) PublishAsync(ctx context.Context, p *broker.PublishParams, done func(*broker.PublishResult, error)) error {
	explicit := make([]bool, len(p.Messages))
	for i, m := range p.Messages {
		explicit[i] = m != nil && m.ID != ""
	}
	if err := broker.PrepareMessages(b.Capabilities(), b.opts.limits, p); err != nil {
		return err
	}
	if strings.HasPrefix(p.Topic, "$") {
		return &message.ValidationError{Field: "topic", Value: p.Topic, Reason: "topics starting with '$' are written by the broker only (dead letters); publish to a normal topic"}
	}
	t, err := b.topic(p.Topic, b.opts.autoCreate)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, m := range p.Messages {
		if m.DeliverAt.After(now) {
			go func() {
				var idx []int
				for i, m := range p.Messages {
					if m.DeliverAt.After(now) {
						idx = append(idx, i)
					}
				}
				done(b.sched.publish(ctx, t, p.Messages, explicit, idx))
			}()
			return nil
		}
	}
	req := &appendReq{msgs: p.Messages, explicit: explicit}
	req.cb = func(err error) {
		if err != nil {
			done(nil, err)
			return
		}
		b.metrics.Published.Add(int64(len(req.msgs)))
		done(&broker.PublishResult{Results: req.res}, nil)
	}
	return t.appendAsync(ctx, req)
}

// Close stops the engine: subscriptions end, unsettled deliveries are kept
// for redelivery, group positions are saved, files are closed and the
// directory is unlocked. Publishes that were acknowledged are on disk. A
// second Close waits for the first to finish and returns nil.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.closeDone
		return nil
	}
	b.closed = true
	defer close(b.closeDone)
	groups := make([]*group, 0, len(b.groups))
	for _, g := range b.groups {
		groups = append(groups, g)
	}
	eph := make([]*ephemeralSub, 0, len(b.ephemeral))
	for s := range b.ephemeral {
		eph = append(eph, s)
	}
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
	for _, s := range eph {
		s.Close()
	}
	for _, g := range groups {
		g.shutdown()
	}
	var errs []error
	if err := b.checkpoint(); err != nil {
		errs = append(errs, err)
	}
	b.mu.RLock()
	topics := make([]*topic, 0, len(b.topics))
	for _, t := range b.topics {
		topics = append(topics, t)
	}
	b.mu.RUnlock()
	for _, t := range topics { // outside b.mu: a writer finishing its last commit takes it
		t.close()
	}
	errs = append(errs, b.closeFiles())
	if b.memory {
		errs = append(errs, os.RemoveAll(b.dir))
	}
	return errors.Join(errs...)
}

func (b *Broker) closeFiles() error {
	var errs []error
	if b.meta != nil {
		errs = append(errs, b.meta.Close())
	}
	errs = append(errs, b.lock.Close())
	return errors.Join(errs...)
}

// committed is called by a topic's writer after a group commit: it wakes the
// groups reading the topic and fans live messages out to ephemeral
// subscribers.
func (b *Broker) committed(t *topic, batch []*appendReq) {
	b.mu.RLock()
	for _, g := range b.groups {
		if g.follows(t.name) {
			g.signal()
		}
	}
	var subs []*ephemeralSub
	for s := range b.ephemeral {
		if message.Match(s.pattern, t.name) {
			subs = append(subs, s)
		}
	}
	b.mu.RUnlock()
	if len(subs) == 0 {
		return
	}
	for _, r := range batch {
		for i, m := range r.msgs {
			if r.res[i].Duplicate {
				continue
			}
			for _, s := range subs {
				s.offer(m, r.res[i].Seq)
			}
		}
	}
}
