package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

// DefaultTable is the outbox table's name unless WithTable gives another.
const DefaultTable = "sb_outbox"

// columns of the outbox table written by Publish, in insert order.
const insertColumns = "id, topic, msg_key, headers, payload, content_type, deliver_at, expires_at, created_at"

const nInsertColumns = 9

// maxRowsPerInsert bounds one multi-row INSERT. SQLite looks "$n" parameters
// up by name while it parses, a cost quadratic in their number, so a few
// rows a statement is faster there than hundreds; on PostgreSQL 16 rows a
// round trip is already cheap.
const maxRowsPerInsert = 16

// Outbox writes messages into one outbox table. Its methods are safe for
// concurrent use. The package-level Publish and PublishBatch use the default
// table (DefaultTable).
type Outbox struct {
	table  string
	limits message.Limits
}

var defaultOutbox = &Outbox{table: DefaultTable, limits: message.DefaultLimits()}

// New returns the writer of the outbox table named table ("" is
// DefaultTable): letters, digits and '_', optionally schema-qualified
// ("app.outbox").
func New(table string) (*Outbox, error) {
	t, err := checkTable(table)
	if err != nil {
		return nil, err
	}
	return &Outbox{table: t, limits: message.DefaultLimits()}, nil
}

// Table returns the name of the table o writes to.
func (o *Outbox) Table() string { return o.table }

func checkTable(t string) (string, error) {
	if t == "" {
		return DefaultTable, nil
	}
	for part := range strings.SplitSeq(t, ".") {
		if part == "" || len(part) > 50 || part[0] >= '0' && part[0] <= '9' {
			return "", fmt.Errorf("outbox: table name %q: use letters, digits and '_' (optionally schema.table), not starting with a digit, segments up to 50 characters", t)
		}
		for _, c := range part {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
				return "", fmt.Errorf("outbox: table name %q: use letters, digits and '_' (optionally schema.table)", t)
			}
		}
	}
	if strings.Count(t, ".") > 1 {
		return "", fmt.Errorf("outbox: table name %q: at most schema.table", t)
	}
	return t, nil
}

// Publish inserts m into the default outbox table inside tx, the
// application's own transaction: the message exists (and will be relayed)
// if and only if tx commits. m.Topic is required. An empty m.ID is replaced
// by a new UUIDv7 now, so that every copy the relay may send carries the same
// ID. It returns the ID. The message is validated here (topic, sizes,
// headers), so a message the backend would refuse for its form never enters
// the outbox. The W3C traceparent of ctx, if any, is added to the headers.
// The statement is the same on SQLite and PostgreSQL.
func Publish(ctx context.Context, tx *sql.Tx, m message.Message) (string, error) {
	return defaultOutbox.Publish(ctx, tx, m)
}

// PublishBatch inserts msgs, in order, into the default outbox table inside
// tx (see Publish). It returns their IDs.
func PublishBatch(ctx context.Context, tx *sql.Tx, msgs []message.Message) ([]string, error) {
	return defaultOutbox.PublishBatch(ctx, tx, msgs)
}

// Publish inserts m into o's table inside tx; see the package-level Publish.
func (o *Outbox) Publish(ctx context.Context, tx *sql.Tx, m message.Message) (string, error) {
	ids, err := o.PublishBatch(ctx, tx, []message.Message{m})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// PublishBatch inserts msgs, in order, into o's table inside tx; see the
// package-level PublishBatch. Consecutive insert sequence numbers are not
// guaranteed, only increasing ones.
func (o *Outbox) PublishBatch(ctx context.Context, tx *sql.Tx, msgs []message.Message) ([]string, error) {
	if tx == nil {
		return nil, fmt.Errorf("outbox: publish needs the application's transaction (tx is nil)")
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(msgs))
	args := make([]any, 0, min(len(msgs), maxRowsPerInsert)*nInsertColumns)
	now := time.Now().UnixMicro()
	for start := 0; start < len(msgs); start += maxRowsPerInsert {
		end := min(start+maxRowsPerInsert, len(msgs))
		args = args[:0]
		for i := start; i < end; i++ {
			m := msgs[i]
			if err := o.check(&m); err != nil {
				if len(msgs) > 1 {
					return nil, fmt.Errorf("outbox: message %d of batch: %w", i, err)
				}
				return nil, fmt.Errorf("outbox: %w", err)
			}
			consume.InjectTrace(ctx, &m)
			if m.ID == "" {
				m.ID = message.NewID()
			}
			ids[i] = m.ID
			var headers any
			if len(m.Headers) > 0 {
				h, err := json.Marshal(m.Headers)
				if err != nil {
					return nil, fmt.Errorf("outbox: encode headers: %w", err)
				}
				headers = string(h)
			}
			payload := m.Payload
			if payload == nil {
				payload = []byte{}
			}
			args = append(args, m.ID, m.Topic, m.Key, headers, payload, m.ContentType,
				micros(m.DeliverAt), micros(m.ExpiresAt), now)
		}
		if _, err := tx.ExecContext(ctx, o.insertSQL(end-start), args...); err != nil {
			return nil, fmt.Errorf("outbox: insert into %s: %w", o.table, err)
		}
	}
	return ids, nil
}

func (o *Outbox) check(m *message.Message) error {
	if err := message.ValidateTopic(m.Topic); err != nil {
		return err
	}
	return o.limits.Validate(m)
}

// insertSQL returns the INSERT of n rows, with $n placeholders (which both
// PostgreSQL and SQLite understand).
func (o *Outbox) insertSQL(n int) string {
	var b strings.Builder
	b.Grow(64 + n*40)
	b.WriteString("INSERT INTO " + o.table + " (" + insertColumns + ") VALUES ")
	p := 1
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for j := range nInsertColumns {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(p))
			p++
		}
		b.WriteByte(')')
	}
	return b.String()
}

func micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64)
}

// Schema returns the DDL that Migrate runs for table ("" is DefaultTable),
// for managed migrations. Every statement is idempotent.
func Schema(d Dialect, table string) ([]string, error) {
	t, err := checkTable(table)
	if err != nil {
		return nil, err
	}
	return d.schema(t), nil
}

// Migrate creates the outbox table (and what the dialect's relay election
// needs) in db unless it exists. Only WithTable matters among opts.
func Migrate(ctx context.Context, db *sql.DB, d Dialect, opts ...Option) error {
	c := defaults()
	for _, o := range opts {
		o(&c)
	}
	stmts, err := Schema(d, c.table)
	if err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("outbox: migrate %s (%s): %w", c.table, d.Name(), err)
		}
	}
	return nil
}
