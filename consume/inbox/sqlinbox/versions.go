package sqlinbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/switchboard-dev/switchboard/consume"
)

// DefaultVersionsTable is the table of NewVersions when Options.Table is
// empty.
const DefaultVersionsTable = "sb_versions"

// Versions is a consume.VersionStore and consume.TxVersionStore in an SQL
// table: one row per (group, message key) with the highest version applied
// and an expiry. Record and RecordTx are one conditional upsert
//
//	INSERT ... ON CONFLICT (grp, msg_key) DO UPDATE ... WHERE stored < new
//
// so the comparison and the write are atomic: on PostgreSQL a concurrent
// writer of the same row waits for the other transaction and then compares
// with what it committed; SQLite has one writer at a time. With
// consume.TxFunc the row is written in the handler's transaction (RecordTx)
// and stays locked until it ends, which serializes a key's handlers across
// processes. Expired rows are deleted by Sweep (the runtime calls it while
// Run runs). Safe for concurrent use.
//
// SQLite needs the same connection settings as the inbox (busy timeout,
// immediate transactions; see the package doc).
type Versions struct {
	db *sql.DB
	q  struct{ version, record, sweep string }
}

var (
	_ consume.TxVersionStore = (*Versions)(nil)
	_ consume.Sweeper        = (*Versions)(nil)
)

// VersionsSchema returns the DDL of the versions table.
func VersionsSchema(table string) string {
	if table == "" {
		table = DefaultVersionsTable
	}
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
	grp        TEXT   NOT NULL,
	msg_key    TEXT   NOT NULL,
	version    BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,  -- unix milliseconds
	PRIMARY KEY (grp, msg_key)
)`
}

// NewVersions returns a version store in db, creating its table (default
// "sb_versions") unless opts.NoCreate. For TxFunc handlers use the inbox's
// database, so that the version commits in the handler's transaction.
func NewVersions(ctx context.Context, db *sql.DB, dialect Dialect, opts *Options) (*Versions, error) {
	t, mk, err := tableOf(opts, DefaultVersionsTable)
	if err != nil {
		return nil, err
	}
	s := &Versions{db: db}
	s.q.version = rebind(dialect, `SELECT version FROM `+t+` WHERE grp = ? AND msg_key = ? AND expires_at > ?`)
	s.q.record = rebind(dialect, `INSERT INTO `+t+` (grp, msg_key, version, expires_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (grp, msg_key) DO UPDATE SET version = excluded.version, expires_at = excluded.expires_at
		WHERE `+t+`.version < excluded.version OR `+t+`.expires_at <= ?`)
	s.q.sweep = rebind(dialect, `DELETE FROM `+t+` WHERE expires_at <= ?`)
	if err := createTable(ctx, db, mk, t, VersionsSchema(t)); err != nil {
		return nil, err
	}
	return s, nil
}

// DB implements consume.TxVersionStore.
func (s *Versions) DB() *sql.DB { return s.db }

// Version implements consume.VersionStore.
func (s *Versions) Version(ctx context.Context, group, key string) (uint64, bool, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, s.q.version, group, key, msAt(time.Now())).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("sqlinbox: version %s/%s: %w", group, key, err)
	}
	return uint64(v), true, nil
}

// Record implements consume.VersionStore.
func (s *Versions) Record(ctx context.Context, group, key string, v uint64, ttl time.Duration) (bool, error) {
	return s.record(ctx, s.db, group, key, v, ttl)
}

// RecordTx implements consume.TxVersionStore.
func (s *Versions) RecordTx(ctx context.Context, tx *sql.Tx, group, key string, v uint64, ttl time.Duration) (bool, error) {
	return s.record(ctx, tx, group, key, v, ttl)
}

// execer is a *sql.DB or a *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *Versions) record(ctx context.Context, e execer, group, key string, v uint64, ttl time.Duration) (bool, error) {
	if v > math.MaxInt64 {
		return false, fmt.Errorf("sqlinbox: record version %s/%s: %d does not fit a BIGINT", group, key, v)
	}
	now := time.Now()
	res, err := e.ExecContext(ctx, s.q.record, group, key, int64(v), msAt(now.Add(ttl)), msAt(now))
	if err != nil {
		return false, fmt.Errorf("sqlinbox: record version %s/%s: %w", group, key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlinbox: record version %s/%s: %w", group, key, err)
	}
	return n == 1, nil
}

// Sweep deletes expired version rows; the runtime calls it periodically.
func (s *Versions) Sweep(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.q.sweep, msAt(time.Now()))
	if err != nil {
		return 0, fmt.Errorf("sqlinbox: sweep versions: %w", err)
	}
	return res.RowsAffected()
}
