// Package boltinbox is a consume.Inbox in a bbolt file, and a
// consume.VersionStore in the same file (Inbox.Versions). It suits one
// process (the file is locked while open), typically next to the embedded
// engine's data (ForBroker). Writes from concurrent workers are committed
// together (bbolt batches), each commit fsynced unless NoSync is set.
package boltinbox

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/consume"
)

var (
	bucket         = []byte("inbox")
	versionsBucket = []byte("versions")
)

const (
	stClaim byte = 0
	stDone  byte = 1
)

// Options configure Open.
type Options struct {
	// NoSync skips fsync on commit: faster, but a power failure can forget
	// recent marks and versions, so those messages could be handled again
	// if they are redelivered (delivery stays at least once), and an older
	// version could be applied again. Default false.
	NoSync bool
	// MaxBatchDelay is how long a write waits to share a commit with
	// concurrent writes (default 500µs).
	MaxBatchDelay time.Duration
}

// Inbox is a consume.Inbox in a bbolt file. Safe for concurrent use.
type Inbox struct {
	db *bolt.DB
}

var _ consume.Inbox = (*Inbox)(nil)
var _ consume.Sweeper = (*Inbox)(nil)

// Open opens (creating) the inbox file at path. opts may be nil.
func Open(path string, opts *Options) (*Inbox, error) {
	if opts == nil {
		opts = &Options{}
	}
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: time.Second, NoSync: opts.NoSync, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("boltinbox: open %s: %w", path, err)
	}
	db.MaxBatchDelay = opts.MaxBatchDelay
	if db.MaxBatchDelay <= 0 {
		db.MaxBatchDelay = 500 * time.Microsecond
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucket, versionsBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("boltinbox: init %s: %w", path, err)
	}
	return &Inbox{db: db}, nil
}

// ForBroker opens the inbox file "inbox.db" in the embedded engine's data
// directory, so the inbox lives (and is backed up) with the messages. Close
// the inbox before the broker when the broker is an in-memory one (its
// directory is removed on Close).
func ForBroker(b *embedded.Broker, opts *Options) (*Inbox, error) {
	return Open(filepath.Join(b.Dir(), "inbox.db"), opts)
}

// Close closes the file.
func (x *Inbox) Close() error { return x.db.Close() }

func key(group, id string) []byte {
	k := make([]byte, 0, len(group)+1+len(id))
	k = append(k, group...)
	k = append(k, 0)
	return append(k, id...)
}

func value(st byte, exp time.Time) []byte {
	v := make([]byte, 9)
	v[0] = st
	binary.BigEndian.PutUint64(v[1:], uint64(exp.UnixNano()))
	return v
}

func parse(v []byte) (byte, time.Time, bool) {
	if len(v) != 9 {
		return 0, time.Time{}, false
	}
	return v[0], time.Unix(0, int64(binary.BigEndian.Uint64(v[1:]))), true
}

// batch runs fn in a write transaction on bucket name, shared with
// concurrent writers (bbolt may run fn more than once: it must set its
// results from scratch each time).
func (x *Inbox) batch(ctx context.Context, name []byte, fn func(*bolt.Bucket) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := x.db.Batch(func(tx *bolt.Tx) error { return fn(tx.Bucket(name)) }); err != nil {
		return fmt.Errorf("boltinbox: %w", err)
	}
	return nil
}

// Claim implements consume.Inbox.
func (x *Inbox) Claim(ctx context.Context, group, id string, lease time.Duration) (consume.ClaimState, error) {
	k := key(group, id)
	var st consume.ClaimState
	err := x.batch(ctx, bucket, func(b *bolt.Bucket) error {
		now := time.Now()
		if s, exp, ok := parse(b.Get(k)); ok && exp.After(now) {
			if s == stDone {
				st = consume.Handled
			} else {
				st = consume.Busy
			}
			return nil
		}
		st = consume.Claimed
		return b.Put(k, value(stClaim, now.Add(lease)))
	})
	return st, err
}

// Mark implements consume.Inbox.
func (x *Inbox) Mark(ctx context.Context, group, id string, ttl time.Duration) error {
	k := key(group, id)
	return x.batch(ctx, bucket, func(b *bolt.Bucket) error { return b.Put(k, value(stDone, time.Now().Add(ttl))) })
}

// Release implements consume.Inbox.
func (x *Inbox) Release(ctx context.Context, group, id string) error {
	k := key(group, id)
	return x.batch(ctx, bucket, func(b *bolt.Bucket) error {
		if s, _, ok := parse(b.Get(k)); ok && s == stClaim {
			return b.Delete(k)
		}
		return nil
	})
}

// Sweep deletes expired entries; the runtime calls it periodically.
func (x *Inbox) Sweep(ctx context.Context) (int64, error) {
	return x.sweep(ctx, bucket, func(v []byte) (time.Time, bool) {
		_, exp, ok := parse(v)
		return exp, ok
	})
}

// sweep deletes the entries of bucket name whose expiry (read by expiry) is
// past or unreadable, stopping early when ctx is done.
func (x *Inbox) sweep(ctx context.Context, name []byte, expiry func(v []byte) (time.Time, bool)) (int64, error) {
	var n int64
	err := x.db.Update(func(tx *bolt.Tx) error {
		n = 0
		c := tx.Bucket(name).Cursor()
		now := time.Now()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if exp, ok := expiry(v); !ok || !exp.After(now) {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
			if n%1024 == 0 && ctx.Err() != nil {
				return nil // the rest next time
			}
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("boltinbox: sweep: %w", err)
	}
	return n, nil
}
