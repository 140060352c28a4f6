package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// Relay forwards the rows of an outbox table to a backend. Several relays
// (in one process or many) may run on the same table: one is active, the
// others stand by and take over when it stops (see Dialect).
type Relay struct {
	db    *sql.DB
	d     Dialect
	b     broker.Broker
	cfg   config
	owner string
	log   *slog.Logger
	m     *metrics

	fetchSQL, deleteSQL, failSQL, lagSQL string

	running atomic.Bool
}

// NewRelay returns a relay of the outbox table in db (WithTable; default
// DefaultTable, created by Migrate) to backend b. With a *switchboard.Client,
// pass client.Broker(). Start it with Run.
func NewRelay(db *sql.DB, d Dialect, b broker.Broker, opts ...Option) (*Relay, error) {
	if db == nil || d == nil || b == nil {
		return nil, errors.New("outbox: NewRelay needs a database, a dialect and a backend")
	}
	c := defaults()
	for _, o := range opts {
		o(&c)
	}
	t, err := checkTable(c.table)
	if err != nil {
		return nil, err
	}
	c.table = t
	r := &Relay{db: db, d: d, b: b, cfg: c, owner: message.NewID(), log: c.log}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("component", "outbox-relay", "table", t)
	r.fetchSQL = `SELECT seq, id, topic, msg_key, headers, payload, content_type, deliver_at, expires_at FROM ` + t +
		` WHERE failed_at IS NULL ORDER BY seq LIMIT $1`
	r.deleteSQL = `DELETE FROM ` + t + ` WHERE seq IN (`
	r.failSQL = `UPDATE ` + t + ` SET failed_at = $1, last_error = $2 WHERE seq = $3`
	r.lagSQL = `SELECT COALESCE(SUM(CASE WHEN failed_at IS NULL THEN 1 ELSE 0 END), 0),
	MIN(CASE WHEN failed_at IS NULL THEN created_at END),
	COALESCE(SUM(CASE WHEN failed_at IS NULL THEN 0 ELSE 1 END), 0) FROM ` + t
	r.m = newMetrics(r)
	return r, nil
}

// Collector returns a prometheus.Collector of the relay's metrics, to be
// registered on the caller's registry (the relay never touches the global
// one; wrap reg with prometheus.WrapRegistererWith to tell several relays
// apart):
//
//	reg.MustRegister(relay.Collector())
//
//	switchboard_outbox_pending_rows          rows waiting to be relayed (gauge, read from the table at scrape)
//	switchboard_outbox_oldest_age_seconds    age of the oldest waiting row (gauge, read at scrape)
//	switchboard_outbox_failed_rows           rows the backend refused for good (gauge, read at scrape)
//	switchboard_outbox_leader                1 while this relay is the active one
//	switchboard_outbox_relayed_total         messages acknowledged by the backend and deleted
//	switchboard_outbox_duplicates_total      of those, reported as duplicates by the backend's dedup window
//	switchboard_outbox_publish_errors_total  failed publish attempts (rows kept, retried)
//	switchboard_outbox_refused_total         messages refused for good (rows marked failed)
func (r *Relay) Collector() prometheus.Collector { return r.m }

// Lag is how far the relay is behind.
type Lag struct {
	// Pending counts rows waiting to be relayed (failed rows excluded).
	Pending int64
	// Oldest is the insert time of the oldest pending row (zero when none).
	// It is the writer's clock at Publish, not the commit time.
	Oldest time.Time
	// Failed counts rows the backend refused for good (see the package doc).
	Failed int64
}

// Age is how long the oldest pending row has waited (zero when none).
func (l Lag) Age() time.Duration {
	if l.Oldest.IsZero() {
		return 0
	}
	return max(0, time.Since(l.Oldest))
}

// Lag reads the relay's backlog from the table (one aggregate query over it).
// It works whether or not this relay is the active one, or running at all.
func (r *Relay) Lag(ctx context.Context) (Lag, error) {
	var l Lag
	var oldest sql.NullInt64
	if err := r.db.QueryRowContext(ctx, r.lagSQL).Scan(&l.Pending, &oldest, &l.Failed); err != nil {
		return Lag{}, fmt.Errorf("outbox: read lag of %s: %w", r.cfg.table, err)
	}
	l.Oldest = fromMicros(oldest)
	return l, nil
}

// Run relays until ctx is cancelled, then returns nil. It takes the active
// role when it can, and otherwise stands by, trying again every
// StandbyInterval. While active it reads up to BatchSize rows in insert
// order, publishes them (one batch per topic, topics in parallel), and
// deletes the rows the backend acknowledged; when the backend or the
// database fails it backs off (Backoff) and tries again, keeping the rows.
// It returns an error only when the backend is closed (broker.ErrClosed) or
// when it is already running.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("outbox: relay is already running")
	}
	defer r.running.Store(false)
	failures := 0
	for ctx.Err() == nil {
		l, err := r.d.acquire(ctx, r.db, r.cfg.table, r.owner, r.cfg.leaseTTL)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			failures++
			r.log.Warn("outbox relay: cannot take the active role", "err", err)
			sleep(ctx, r.backoff(failures))
			continue
		}
		if l == nil {
			failures = 0
			sleep(ctx, r.cfg.standbyPoll)
			continue
		}
		r.log.Info("outbox relay: active", "dialect", r.d.Name())
		r.m.leader.Set(1)
		err = r.lead(ctx, l)
		l.release()
		r.m.leader.Set(0)
		if errors.Is(err, broker.ErrClosed) {
			return fmt.Errorf("outbox: relay stopped: %w", err)
		}
		if ctx.Err() != nil {
			break
		}
		failures++
		r.log.Warn("outbox relay: gave up the active role", "err", err)
		sleep(ctx, r.backoff(failures))
	}
	return nil
}

// dbError marks an error of the outbox database (rather than the backend).
type dbError struct{ err error }

func (e *dbError) Error() string { return e.err.Error() }
func (e *dbError) Unwrap() error { return e.err }

// lead runs cycles while l is held. It returns when ctx ends, the role is
// lost, the leader's connection fails, or the backend is closed.
func (r *Relay) lead(ctx context.Context, l leader) error {
	failures := 0
	for ctx.Err() == nil {
		until, err := l.hold(ctx)
		if err != nil && (until.IsZero() || errors.Is(err, errLostLease)) {
			return err
		}
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if !until.IsZero() {
			// Never publish past the lease: after it another relay may run.
			cctx, cancel = context.WithDeadline(ctx, until)
		}
		n, err := r.cycle(cctx, l.q())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, broker.ErrClosed) {
				return err
			}
			var de *dbError
			if errors.As(err, &de) && r.d == Postgres {
				return err // the lock's connection may be gone: take the lock again
			}
			failures++
			d := r.backoff(failures)
			r.log.Warn("outbox relay: cycle failed; rows kept, retrying", "err", err, "retry_in", d, "failures", failures)
			sleep(ctx, d)
			continue
		}
		failures = 0
		if n == 0 {
			sleep(ctx, r.cfg.poll)
		}
	}
	return nil
}

// row is one outbox row as the relay reads it.
type row struct {
	seq int64
	msg message.Message
}

// cycle relays one batch and returns how many rows it settled (published
// and deleted, or marked failed).
func (r *Relay) cycle(ctx context.Context, q querier) (int, error) {
	rows, err := r.fetch(ctx, q)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	// One publish per topic, in insert order inside it: a topic's batch is
	// stored in order, which keeps every key's order.
	var topics []string
	byTopic := map[string][]row{}
	for _, rw := range rows {
		if _, ok := byTopic[rw.msg.Topic]; !ok {
			topics = append(topics, rw.msg.Topic)
		}
		byTopic[rw.msg.Topic] = append(byTopic[rw.msg.Topic], rw)
	}
	errs := r.publishAll(ctx, topics, byTopic)

	var done []int64
	type refused struct {
		seq int64
		err error
	}
	var failed []refused
	var pubErr error
	for i, t := range topics {
		group := byTopic[t]
		err := errs[i]
		if err == nil {
			for _, rw := range group {
				done = append(done, rw.seq)
			}
			continue
		}
		r.m.publishErrors.Inc()
		if !permanent(err) {
			pubErr = errors.Join(pubErr, err)
			continue
		}
		// The backend refused the batch for its content: find the
		// message(s) at fault, one at a time, in order.
		for _, rw := range group {
			if len(group) > 1 {
				err = r.publish(ctx, t, []row{rw})
			}
			if err == nil {
				done = append(done, rw.seq)
				continue
			}
			if !permanent(err) {
				r.m.publishErrors.Inc()
				pubErr = errors.Join(pubErr, err)
				break
			}
			r.log.Error("outbox relay: backend refused a message for good; marked failed, not retried",
				"seq", rw.seq, "id", rw.msg.ID, "topic", t, "err", err)
			failed = append(failed, refused{rw.seq, err})
		}
	}
	// Settle what the backend acknowledged even when something else failed.
	// The database work must not be cut short by ctx after a publish.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := r.delete(sctx, q, done); err != nil {
		return 0, err
	}
	r.m.relayed.Add(float64(len(done)))
	for _, f := range failed {
		if _, err := q.ExecContext(sctx, r.failSQL, time.Now().UnixMicro(), f.err.Error(), f.seq); err != nil {
			return len(done), &dbError{fmt.Errorf("outbox: mark row %d failed: %w", f.seq, err)}
		}
		r.m.refused.Inc()
	}
	return len(done) + len(failed), pubErr
}

func (r *Relay) fetch(ctx context.Context, q querier) ([]row, error) {
	rs, err := q.QueryContext(ctx, r.fetchSQL, r.cfg.batch)
	if err != nil {
		return nil, &dbError{fmt.Errorf("outbox: read %s: %w", r.cfg.table, err)}
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var rw row
		var headers sql.NullString
		var deliverAt, expiresAt sql.NullInt64
		m := &rw.msg
		if err := rs.Scan(&rw.seq, &m.ID, &m.Topic, &m.Key, &headers, &m.Payload, &m.ContentType, &deliverAt, &expiresAt); err != nil {
			return nil, &dbError{fmt.Errorf("outbox: read %s: %w", r.cfg.table, err)}
		}
		if headers.Valid && headers.String != "" {
			if err := json.Unmarshal([]byte(headers.String), &m.Headers); err != nil {
				return nil, &dbError{fmt.Errorf("outbox: row %d of %s: headers: %w", rw.seq, r.cfg.table, err)}
			}
		}
		m.DeliverAt, m.ExpiresAt = fromMicros(deliverAt), fromMicros(expiresAt)
		out = append(out, rw)
	}
	if err := rs.Err(); err != nil {
		return nil, &dbError{fmt.Errorf("outbox: read %s: %w", r.cfg.table, err)}
	}
	return out, nil
}

func (r *Relay) delete(ctx context.Context, q querier, seqs []int64) error {
	for len(seqs) > 0 {
		n := min(len(seqs), 1000)
		var b strings.Builder
		b.WriteString(r.deleteSQL)
		for i, s := range seqs[:n] {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(s, 10))
		}
		b.WriteByte(')')
		if _, err := q.ExecContext(ctx, b.String()); err != nil {
			return &dbError{fmt.Errorf("outbox: delete relayed rows from %s: %w", r.cfg.table, err)}
		}
		seqs = seqs[n:]
	}
	return nil
}

// publishAll publishes each topic's rows as one batch, the topics
// concurrently (asynchronously where the backend can), and returns the error
// of each topic, in the order of topics.
func (r *Relay) publishAll(ctx context.Context, topics []string, byTopic map[string][]row) []error {
	errs := make([]error, len(topics))
	if len(topics) == 1 {
		errs[0] = r.publish(ctx, topics[0], byTopic[topics[0]])
		return errs
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.publishTimeout)
	defer cancel()
	type outcome struct {
		i   int
		err error
	}
	ch := make(chan outcome, len(topics))
	ap, async := r.b.(broker.AsyncPublisher)
	for i, t := range topics {
		p := r.params(t, byTopic[t])
		if async {
			err := ap.PublishAsync(ctx, p, func(res *broker.PublishResult, err error) {
				ch <- outcome{i, r.result(res, err)}
			})
			if err != nil {
				ch <- outcome{i, err}
			}
			continue
		}
		go func() {
			res, err := r.b.Publish(ctx, p)
			ch <- outcome{i, r.result(res, err)}
		}()
	}
	for range topics {
		select {
		case o := <-ch:
			errs[o.i] = o.err
		case <-ctx.Done():
			// Abandon the waits: whatever is still unconfirmed is
			// published again later with the same IDs.
			for i := range errs {
				if errs[i] == nil {
					errs[i] = fmt.Errorf("outbox: publish to %q: %w", topics[i], ctx.Err())
				}
			}
			// ch is buffered: late callbacks do not block.
			return errs
		}
	}
	return errs
}

func (r *Relay) params(topic string, rows []row) *broker.PublishParams {
	p := &broker.PublishParams{Topic: topic, Messages: make([]*message.Message, len(rows))}
	for i := range rows {
		p.Messages[i] = &rows[i].msg
	}
	return p
}

func (r *Relay) publish(ctx context.Context, topic string, rows []row) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.publishTimeout)
	defer cancel()
	res, err := r.b.Publish(ctx, r.params(topic, rows))
	return r.result(res, err)
}

func (r *Relay) result(res *broker.PublishResult, err error) error {
	if err != nil {
		return err
	}
	if res != nil {
		for _, mr := range res.Results {
			if mr.Duplicate {
				r.m.duplicates.Inc()
			}
		}
	}
	return nil
}

// permanent reports whether the backend refused a publish for its content
// (retrying the same message cannot succeed).
func permanent(err error) bool {
	return errors.Is(err, message.ErrInvalid) || errors.Is(err, broker.ErrNotSupported)
}

func (r *Relay) backoff(failures int) time.Duration {
	d := r.cfg.minBackoff
	for i := 1; i < failures && d < r.cfg.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.cfg.maxBackoff)
	return d - d/5 + time.Duration(rand.Int64N(int64(d)/5*2+1))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
