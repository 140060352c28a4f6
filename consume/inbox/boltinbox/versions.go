package boltinbox

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-dev/switchboard/consume"
)

// Versions is a consume.VersionStore in the inbox's bbolt file (bucket
// "versions"): per (group, key) the highest version applied and when the
// record expires. Every Record is a read-compare-write inside one bbolt
// write transaction, and bbolt has one writer at a time, so concurrent
// Records never lower a record. The file is locked by one process: share
// the Versions between the runtimes of that process; for several processes
// use redisinbox or sqlinbox. Expired records are deleted by Sweep (the
// runtime calls it while Run runs). Safe for concurrent use; valid until
// the inbox is closed.
type Versions struct {
	x *Inbox
}

var (
	_ consume.VersionStore = (*Versions)(nil)
	_ consume.Sweeper      = (*Versions)(nil)
)

// Versions returns the version store in x's file, for
// consume.DropStale(consume.VersionsIn(x.Versions(), ttl)).
func (x *Inbox) Versions() *Versions { return &Versions{x: x} }

// versionValue is a record: the version, then the expiry in Unix
// nanoseconds, both big-endian.
func versionValue(v uint64, exp time.Time) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, v)
	binary.BigEndian.PutUint64(b[8:], uint64(exp.UnixNano()))
	return b
}

func parseVersion(b []byte) (v uint64, exp time.Time, ok bool) {
	if len(b) != 16 {
		return 0, time.Time{}, false
	}
	return binary.BigEndian.Uint64(b), time.Unix(0, int64(binary.BigEndian.Uint64(b[8:]))), true
}

// live returns the unexpired version stored in b.
func live(b []byte, now time.Time) (uint64, bool) {
	v, exp, ok := parseVersion(b)
	if !ok || !exp.After(now) {
		return 0, false
	}
	return v, true
}

// Version implements consume.VersionStore.
func (s *Versions) Version(ctx context.Context, group, k string) (uint64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	var v uint64
	var ok bool
	err := s.x.db.View(func(tx *bolt.Tx) error {
		v, ok = live(tx.Bucket(versionsBucket).Get(key(group, k)), time.Now())
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("boltinbox: version %s/%s: %w", group, k, err)
	}
	return v, ok, nil
}

// Record implements consume.VersionStore.
func (s *Versions) Record(ctx context.Context, group, k string, v uint64, ttl time.Duration) (bool, error) {
	bk := key(group, k)
	var recorded bool
	err := s.x.batch(ctx, versionsBucket, func(b *bolt.Bucket) error {
		now := time.Now()
		if cur, ok := live(b.Get(bk), now); ok && cur >= v {
			recorded = false
			return nil
		}
		recorded = true
		return b.Put(bk, versionValue(v, now.Add(ttl)))
	})
	if err != nil {
		return false, err // the write did not commit
	}
	return recorded, nil
}

// Sweep deletes expired version records; the runtime calls it periodically.
func (s *Versions) Sweep(ctx context.Context) (int64, error) {
	return s.x.sweep(ctx, versionsBucket, func(b []byte) (time.Time, bool) {
		_, exp, ok := parseVersion(b)
		return exp, ok
	})
}
