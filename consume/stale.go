package consume

import (
	"container/list"
	"context"
	"database/sql"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

// VersionStore keeps, per consumer group and message key, the highest
// version (message.HeaderVersion) the group applied, for DropStale with
// VersionsIn. Implementations: consume/inbox/boltinbox (Inbox.Versions, one
// process), consume/inbox/redisinbox (NewVersions) and
// consume/inbox/sqlinbox (NewVersions, also a TxVersionStore).
//
// All methods are safe for concurrent use, from many processes where the
// store is shared. Versions passed by the runtime are at most math.MaxInt64.
// An error means "unknown": the runtime then leaves the message unhandled
// and unacknowledged so it is retried (no loss), or, after a successful
// handler, logs that the version could not be recorded.
type VersionStore interface {
	// Version returns the version recorded for (group, key); ok is false
	// when there is none, because none was recorded or the record expired.
	Version(ctx context.Context, group, key string) (v uint64, ok bool, err error)
	// Record sets the version of (group, key) to v if none is recorded or
	// the recorded one is below v, kept for ttl; it reports whether it did.
	// The comparison and the write are one atomic step with respect to
	// every other Record and RecordTx on the store, from any process: a
	// record never goes down while it is kept. An expired record counts as
	// none.
	Record(ctx context.Context, group, key string, v uint64, ttl time.Duration) (recorded bool, err error)
}

// TxVersionStore is a VersionStore in an SQL database that can record a
// version inside a transaction the handler also writes in (TxFunc), so that
// the handler's writes and the version commit together or not at all.
type TxVersionStore interface {
	VersionStore
	// RecordTx is Record inside tx: the version is written only if tx
	// commits. It locks the (group, key) record until tx ends, so a
	// concurrent RecordTx or Record of the same key waits for tx and then
	// compares with what tx committed.
	RecordTx(ctx context.Context, tx *sql.Tx, group, key string, v uint64, ttl time.Duration) (recorded bool, err error)
	// DB returns the database the store writes to. A TxFunc handler's
	// transaction must be in the same database (Handle checks it against
	// the inbox's DB when the inbox has such a method).
	DB() *sql.DB
}

// versionOf reads m's per-key version (message.HeaderVersion, an unsigned
// decimal integer up to math.MaxInt64). ok is false when the message has no
// key or no valid version: such messages are never dropped as stale.
func versionOf(m *message.Message) (uint64, bool) {
	v := m.Header(message.HeaderVersion)
	if v == "" || m.Key == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > math.MaxInt64 {
		return 0, false
	}
	return n, true
}

// memVersions is the VersionStore of DropStale without VersionsIn: the last
// applied version per key of one registration, in memory, bounded: beyond
// max keys the least recently used key is forgotten (a forgotten key
// accepts the next version it sees). The group and TTL are ignored: each
// registration has its own.
type memVersions struct {
	mu  sync.Mutex
	max int
	m   map[string]*list.Element
	lru *list.List
}

type versionEntry struct {
	key string
	v   uint64
}

var _ VersionStore = (*memVersions)(nil)

func newMemVersions(max int) *memVersions {
	return &memVersions{max: max, m: map[string]*list.Element{}, lru: list.New()}
}

// Version implements VersionStore.
func (s *memVersions) Version(_ context.Context, _, key string) (uint64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return 0, false, nil
	}
	s.lru.MoveToFront(e)
	return e.Value.(*versionEntry).v, true, nil
}

// Record implements VersionStore.
func (s *memVersions) Record(_ context.Context, _, key string, v uint64, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		s.lru.MoveToFront(e)
		ve := e.Value.(*versionEntry)
		if v <= ve.v {
			return false, nil
		}
		ve.v = v
		return true, nil
	}
	s.m[key] = s.lru.PushFront(&versionEntry{key: key, v: v})
	for s.lru.Len() > s.max {
		old := s.lru.Back()
		s.lru.Remove(old)
		delete(s.m, old.Value.(*versionEntry).key)
	}
	return true, nil
}

// recordVersion records version v of m's key after its handler succeeded
// (outside the handler's transaction). A failure is logged and counted: the
// effect happened, so the message is acked anyway. A record refused because
// a version at or above v was recorded while the handler ran means two
// versions of the key were handled at once (no OrderedByKey, or several
// processes with emulated ordering): v's effect may have landed after the
// newer one's, which is logged and counted as Overtaken.
func (g *registration) recordVersion(ctx context.Context, m *message.Message, v uint64) {
	if !g.versLocal {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.rt.cfg.SettleTimeout)
		defer cancel()
		ctx = c
	}
	ok, err := g.vers.Record(ctx, g.cfg.sub.Group, m.Key, v, g.cfg.versionTTL)
	switch {
	case err != nil:
		g.stats.versionErrors.Add(1)
		g.log.Error("version record failed after the handler succeeded; an older version of this key may be applied later",
			"id", m.ID, "key", m.Key, "version", v, "err", err)
	case !ok:
		g.stats.overtaken.Add(1)
		g.log.Warn("a version at or above this one was recorded for the key while the handler ran; its effect may have overwritten a newer one (use OrderedByKey)",
			"id", m.ID, "key", m.Key, "version", v)
	}
}
