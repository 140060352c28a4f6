package consume

import (
	"context"
	"database/sql"
	"time"
)

// ClaimState is the answer of Inbox.Claim.
type ClaimState int

const (
	// Claimed: the caller now holds the message for the lease; it runs the
	// handler and then calls Mark (success) or Release (failure).
	Claimed ClaimState = iota
	// Handled: the group already handled the message; skip it.
	Handled
	// Busy: another worker holds a live claim on the message (a concurrent
	// redelivery); try again later.
	Busy
)

func (s ClaimState) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case Handled:
		return "handled"
	case Busy:
		return "busy"
	}
	return "unknown"
}

// Inbox remembers, per consumer group, which message IDs were handled, so
// that redeliveries and re-publishes of the same ID are skipped. Entries
// expire after a TTL. Implementations: consume/inbox/boltinbox (a bbolt
// file, e.g. next to the embedded engine's data), consume/inbox/redisinbox
// (SET NX PX) and consume/inbox/sqlinbox (SQLite, PostgreSQL).
//
// All methods are safe for concurrent use, from many processes where the
// store is shared. An error means "unknown": the runtime then leaves the
// message unacknowledged so it is retried (no loss).
type Inbox interface {
	// Claim takes (group, id) for lease unless it is handled or claimed by
	// a live lease. A claim whose lease passed can be taken again.
	Claim(ctx context.Context, group, id string, lease time.Duration) (ClaimState, error)
	// Mark records (group, id) as handled, kept for ttl.
	Mark(ctx context.Context, group, id string, ttl time.Duration) error
	// Release drops the caller's claim after a failed attempt so that the
	// redelivery can claim it at once. Releasing a handled entry does
	// nothing.
	Release(ctx context.Context, group, id string) error
}

// TxInbox is an Inbox in an SQL database that can write its "handled" mark
// inside a transaction the handler also writes in (consume.TxFunc).
type TxInbox interface {
	Inbox
	// BeginMark starts a transaction and inserts the handled mark of
	// (group, id), kept for ttl, in it. When the group already handled the
	// message it returns (nil, true, nil). A concurrent transaction marking
	// the same message makes this call wait for it (a unique key), so two
	// redeliveries can never both commit.
	BeginMark(ctx context.Context, group, id string, ttl time.Duration) (tx *sql.Tx, handled bool, err error)
}

// Sweeper is implemented by inboxes whose expired entries must be deleted
// explicitly; the runtime calls Sweep about once a minute while it runs.
type Sweeper interface {
	Sweep(ctx context.Context) (int64, error)
}
