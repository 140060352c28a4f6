package outbox

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"
)

// Dialect is the SQL flavour of the outbox database: its DDL and how relays
// elect the one that runs. The outbox supports SQLite and PostgreSQL; the
// interface is sealed.
type Dialect interface {
	// Name is "sqlite" or "postgres".
	Name() string

	// schema returns the DDL statements that create the outbox table (and
	// what the dialect's leader election needs), all idempotent.
	schema(table string) []string
	// acquire tries once to become the active relay of table. It returns
	// (nil, nil) when another relay holds the role.
	acquire(ctx context.Context, db *sql.DB, table, owner string, ttl time.Duration) (leader, error)
}

// querier is what the relay runs its statements on: the leader's dedicated
// connection (PostgreSQL) or the pool (SQLite).
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// leader is the active-relay role, held until release or until hold fails.
type leader interface {
	// q is where the leader runs its statements.
	q() querier
	// hold confirms (and where needed renews) the role before a cycle. It
	// returns the time until which the role is guaranteed (zero: for as long
	// as the connection lives), or errLostLease.
	hold(ctx context.Context) (time.Time, error)
	// release gives the role up; it never blocks for long.
	release()
}

var errLostLease = errors.New("outbox: relay lease lost to another relay")

// SQLite is the dialect of modernc.org/sqlite (driver name "sqlite"). Open
// the database so that writers queue instead of failing, e.g.
//
//	sql.Open("sqlite", "file:app.db?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
//
// SQLite has a single writer, so insert order is commit order. Relays elect
// the active one with a lease row (<table>_lease) that the active relay
// renews; a relay that dies without releasing it is replaced after the
// lease's TTL (RelayOption LeaseTTL).
var SQLite Dialect = sqliteDialect{}

// Postgres is the dialect of PostgreSQL through pgx's database/sql driver
// (github.com/jackc/pgx/v5/stdlib, driver name "pgx"). The active relay holds
// a session-level advisory lock (pg_try_advisory_lock on a hash of the
// schema and table name) on a dedicated connection and runs its statements
// on that connection: when it dies, its connection closes, the server frees
// the lock and a standby relay takes over at its next try.
var Postgres Dialect = postgresDialect{}

type sqliteDialect struct{}

func (sqliteDialect) Name() string { return "sqlite" }

func (sqliteDialect) schema(t string) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + t + ` (
	seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- insert order
	id           TEXT    NOT NULL,
	topic        TEXT    NOT NULL,
	msg_key      TEXT    NOT NULL DEFAULT '',
	headers      TEXT,                              -- JSON object
	payload      BLOB    NOT NULL,
	content_type TEXT    NOT NULL DEFAULT '',
	deliver_at   BIGINT,                            -- unix microseconds
	expires_at   BIGINT,                            -- unix microseconds
	created_at   BIGINT  NOT NULL,                  -- unix microseconds
	failed_at    BIGINT,                            -- set when the backend refused the message for good
	last_error   TEXT
)`,
		`CREATE TABLE IF NOT EXISTS ` + t + `_lease (
	name       TEXT   PRIMARY KEY,
	owner      TEXT   NOT NULL,
	expires_at BIGINT NOT NULL                      -- unix milliseconds
)`,
	}
}

func (sqliteDialect) acquire(ctx context.Context, db *sql.DB, table, owner string, ttl time.Duration) (leader, error) {
	l := &sqliteLease{db: db, owner: owner, ttl: ttl,
		claim: `INSERT INTO ` + table + `_lease (name, owner, expires_at) VALUES ('relay', $1, $2)
	ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
	WHERE ` + table + `_lease.expires_at <= $3 OR ` + table + `_lease.owner = excluded.owner`,
		drop: `DELETE FROM ` + table + `_lease WHERE name = 'relay' AND owner = $1`,
	}
	ok, err := l.renew(ctx)
	if err != nil || !ok {
		return nil, err
	}
	return l, nil
}

// sqliteLease is a lease row: held while expires_at is in the future and
// owner is ours.
type sqliteLease struct {
	db          *sql.DB
	owner       string
	ttl         time.Duration
	claim, drop string
	renewed     time.Time // when the lease was last written
	until       time.Time // our conservative view of its expiry
}

func (l *sqliteLease) q() querier { return l.db }

func (l *sqliteLease) renew(ctx context.Context) (bool, error) {
	now := time.Now()
	exp := now.Add(l.ttl)
	res, err := l.db.ExecContext(ctx, l.claim, l.owner, exp.UnixMilli(), now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("outbox: claim relay lease: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("outbox: claim relay lease: %w", err)
	}
	if n != 1 {
		return false, nil
	}
	l.renewed, l.until = now, exp
	return true, nil
}

func (l *sqliteLease) hold(ctx context.Context) (time.Time, error) {
	if time.Since(l.renewed) < l.ttl/3 {
		return l.until, nil
	}
	ok, err := l.renew(ctx)
	if err != nil {
		if time.Now().Before(l.until) {
			return l.until, err // still ours for now, but the database failed
		}
		return time.Time{}, err
	}
	if !ok {
		return time.Time{}, errLostLease
	}
	return l.until, nil
}

func (l *sqliteLease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = l.db.ExecContext(ctx, l.drop, l.owner)
}

type postgresDialect struct{}

func (postgresDialect) Name() string { return "postgres" }

func (postgresDialect) schema(t string) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + t + ` (
	seq          BIGSERIAL PRIMARY KEY,             -- insert order
	id           TEXT      NOT NULL,
	topic        TEXT      NOT NULL,
	msg_key      TEXT      NOT NULL DEFAULT '',
	headers      TEXT,                              -- JSON object
	payload      BYTEA     NOT NULL,
	content_type TEXT      NOT NULL DEFAULT '',
	deliver_at   BIGINT,                            -- unix microseconds
	expires_at   BIGINT,                            -- unix microseconds
	created_at   BIGINT    NOT NULL,                -- unix microseconds
	failed_at    BIGINT,                            -- set when the backend refused the message for good
	last_error   TEXT
)`,
	}
}

// pgLockKey is the advisory lock's key: one per schema and table.
const pgLockKey = `hashtextextended('switchboard.outbox:' || current_schema() || '.' || $1, 0)`

func (postgresDialect) acquire(ctx context.Context, db *sql.DB, table, _ string, _ time.Duration) (leader, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox: connect for the relay lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(`+pgLockKey+`)`, table).Scan(&ok); err != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		_ = conn.Close()
		return nil, fmt.Errorf("outbox: take the relay lock: %w", err)
	}
	if !ok {
		_ = conn.Close()
		return nil, nil
	}
	return &pgLock{conn: conn, table: table}, nil
}

// pgLock is the advisory lock held by the session of conn.
type pgLock struct {
	conn  *sql.Conn
	table string
}

func (l *pgLock) q() querier { return l.conn }

func (l *pgLock) hold(context.Context) (time.Time, error) { return time.Time{}, nil }

func (l *pgLock) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var ok bool
	if err := l.conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock(`+pgLockKey+`)`, l.table).Scan(&ok); err != nil || !ok {
		// Unsure whether the session still holds the lock: close the
		// session rather than pool it, so the server frees the lock.
		_ = l.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = l.conn.Close()
}
