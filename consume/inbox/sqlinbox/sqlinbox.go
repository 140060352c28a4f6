// Package sqlinbox is a consume.Inbox and consume.TxInbox in an SQL table,
// on SQLite (modernc.org/sqlite) or PostgreSQL (pgx's database/sql driver),
// and (NewVersions) a consume.VersionStore and consume.TxVersionStore for
// DropStale in another table of the same database.
//
// With consume.TxFunc (switchboard.HandleTx) the "handled" row is inserted
// in the transaction the handler writes in: both commit or neither, and a
// concurrent redelivery of the same message waits on the row's primary key
// and then sees it, so the handler's effect happens exactly once.
//
// SQLite needs writers to queue rather than fail: open it with a busy
// timeout and immediate transactions, e.g.
//
//	sql.Open("sqlite", "file:app.db?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
package sqlinbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/consume"
)

// Dialect is the SQL flavour.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

// DefaultTable is the table name when Options.Table is empty.
const DefaultTable = "sb_inbox"

// Options configure New and NewVersions.
type Options struct {
	// Table name (default "sb_inbox" for New, "sb_versions" for
	// NewVersions); letters, digits and '_' only.
	Table string
	// NoCreate skips CREATE TABLE IF NOT EXISTS (for managed migrations;
	// see Schema and VersionsSchema).
	NoCreate bool
}

// Inbox is the SQL inbox. Safe for concurrent use.
type Inbox struct {
	db      *sql.DB
	dialect Dialect
	table   string
	q       queries
}

var (
	_ consume.TxInbox = (*Inbox)(nil)
	_ consume.Sweeper = (*Inbox)(nil)
)

type queries struct {
	claim, state, mark, release, begin, sweep string
}

// Schema returns the DDL of the inbox table.
func Schema(table string) string {
	if table == "" {
		table = DefaultTable
	}
	return `CREATE TABLE IF NOT EXISTS ` + table + ` (
	grp        TEXT     NOT NULL,
	id         TEXT     NOT NULL,
	state      SMALLINT NOT NULL,  -- 0 claimed, 1 handled
	expires_at BIGINT   NOT NULL,  -- unix milliseconds
	PRIMARY KEY (grp, id)
)`
}

// tableOf returns opts's table name (def when empty) once checked, and
// whether to create it.
func tableOf(opts *Options, def string) (table string, create bool, err error) {
	if opts == nil {
		opts = &Options{}
	}
	t := opts.Table
	if t == "" {
		t = def
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return "", false, fmt.Errorf("sqlinbox: table name %q: use letters, digits and '_'", t)
		}
	}
	return t, !opts.NoCreate, nil
}

// createTable runs ddl, the DDL of table, when do is set.
func createTable(ctx context.Context, db *sql.DB, do bool, table, ddl string) error {
	if !do {
		return nil
	}
	if _, err := db.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("sqlinbox: create table %s: %w", table, err)
	}
	return nil
}

// New returns an inbox in db, creating its table unless opts.NoCreate.
func New(ctx context.Context, db *sql.DB, dialect Dialect, opts *Options) (*Inbox, error) {
	t, mk, err := tableOf(opts, DefaultTable)
	if err != nil {
		return nil, err
	}
	x := &Inbox{db: db, dialect: dialect, table: t}
	x.q = queries{
		claim: x.rebind(`INSERT INTO ` + t + ` (grp, id, state, expires_at) VALUES (?, ?, 0, ?)
			ON CONFLICT (grp, id) DO UPDATE SET state = 0, expires_at = excluded.expires_at WHERE ` + t + `.expires_at <= ?`),
		state: x.rebind(`SELECT state, expires_at FROM ` + t + ` WHERE grp = ? AND id = ?`),
		mark: x.rebind(`INSERT INTO ` + t + ` (grp, id, state, expires_at) VALUES (?, ?, 1, ?)
			ON CONFLICT (grp, id) DO UPDATE SET state = 1, expires_at = excluded.expires_at`),
		release: x.rebind(`DELETE FROM ` + t + ` WHERE grp = ? AND id = ? AND state = 0`),
		begin: x.rebind(`INSERT INTO ` + t + ` (grp, id, state, expires_at) VALUES (?, ?, 1, ?)
			ON CONFLICT (grp, id) DO UPDATE SET state = 1, expires_at = excluded.expires_at WHERE ` + t + `.expires_at <= ?`),
		sweep: x.rebind(`DELETE FROM ` + t + ` WHERE expires_at <= ?`),
	}
	if err := createTable(ctx, db, mk, t, Schema(t)); err != nil {
		return nil, err
	}
	return x, nil
}

// DB returns the database the inbox writes to.
func (x *Inbox) DB() *sql.DB { return x.db }

func (x *Inbox) rebind(q string) string { return rebind(x.dialect, q) }

// rebind turns '?' placeholders into $1, $2, ... for PostgreSQL.
func rebind(d Dialect, q string) string {
	if d != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func msAt(t time.Time) int64 { return t.UnixMilli() }

// Claim implements consume.Inbox.
func (x *Inbox) Claim(ctx context.Context, group, id string, lease time.Duration) (consume.ClaimState, error) {
	now := time.Now()
	for range 2 {
		res, err := x.db.ExecContext(ctx, x.q.claim, group, id, msAt(now.Add(lease)), msAt(now))
		if err != nil {
			return 0, fmt.Errorf("sqlinbox: claim %s/%s: %w", group, id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return 0, fmt.Errorf("sqlinbox: claim %s/%s: %w", group, id, err)
		} else if n == 1 {
			return consume.Claimed, nil
		}
		var st int
		var exp int64
		err = x.db.QueryRowContext(ctx, x.q.state, group, id).Scan(&st, &exp)
		if errors.Is(err, sql.ErrNoRows) {
			continue // released or swept meanwhile: try again
		}
		if err != nil {
			return 0, fmt.Errorf("sqlinbox: claim %s/%s: %w", group, id, err)
		}
		if st == 1 {
			return consume.Handled, nil
		}
		return consume.Busy, nil
	}
	return consume.Busy, nil
}

// Mark implements consume.Inbox.
func (x *Inbox) Mark(ctx context.Context, group, id string, ttl time.Duration) error {
	if _, err := x.db.ExecContext(ctx, x.q.mark, group, id, msAt(time.Now().Add(ttl))); err != nil {
		return fmt.Errorf("sqlinbox: mark %s/%s: %w", group, id, err)
	}
	return nil
}

// Release implements consume.Inbox.
func (x *Inbox) Release(ctx context.Context, group, id string) error {
	if _, err := x.db.ExecContext(ctx, x.q.release, group, id); err != nil {
		return fmt.Errorf("sqlinbox: release %s/%s: %w", group, id, err)
	}
	return nil
}

// ErrBusy is returned by BeginMark when another worker holds a live
// (non-transactional) claim on the message.
var ErrBusy = errors.New("sqlinbox: message claimed by another worker")

// BeginMark implements consume.TxInbox.
func (x *Inbox) BeginMark(ctx context.Context, group, id string, ttl time.Duration) (*sql.Tx, bool, error) {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, false, fmt.Errorf("sqlinbox: begin: %w", err)
	}
	now := time.Now()
	res, err := tx.ExecContext(ctx, x.q.begin, group, id, msAt(now.Add(ttl)), msAt(now))
	if err != nil {
		_ = tx.Rollback()
		return nil, false, fmt.Errorf("sqlinbox: mark %s/%s in transaction: %w", group, id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		_ = tx.Rollback()
		return nil, false, fmt.Errorf("sqlinbox: mark %s/%s in transaction: %w", group, id, err)
	}
	if n == 1 {
		return tx, false, nil
	}
	var st int
	var exp int64
	err = tx.QueryRowContext(ctx, x.q.state, group, id).Scan(&st, &exp)
	_ = tx.Rollback()
	if err != nil {
		return nil, false, fmt.Errorf("sqlinbox: read %s/%s: %w", group, id, err)
	}
	if st == 1 {
		return nil, true, nil
	}
	return nil, false, fmt.Errorf("%w: %s/%s", ErrBusy, group, id)
}

// Sweep deletes expired entries; the runtime calls it periodically.
func (x *Inbox) Sweep(ctx context.Context) (int64, error) {
	res, err := x.db.ExecContext(ctx, x.q.sweep, msAt(time.Now()))
	if err != nil {
		return 0, fmt.Errorf("sqlinbox: sweep: %w", err)
	}
	return res.RowsAffected()
}
