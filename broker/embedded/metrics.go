package embedded

import (
	"sync/atomic"
	"time"
)

// Metrics are the engine's counters since Open. All fields are safe to read
// concurrently.
type Metrics struct {
	Published        atomic.Int64 // messages stored by Publish (duplicates excluded)
	Duplicates       atomic.Int64 // publishes skipped by the dedup window
	Delivered        atomic.Int64 // deliveries to group consumers
	Redelivered      atomic.Int64 // deliveries with attempt > 1
	Acked            atomic.Int64
	Nacked           atomic.Int64
	DeadlineExpired  atomic.Int64 // deliveries not settled before their deadline
	DeadLettered     atomic.Int64
	Expired          atomic.Int64 // messages past expires-at, never delivered
	EphemeralDropped atomic.Int64 // live messages dropped for a full ephemeral subscriber
	Syncs            atomic.Int64 // fdatasync calls
	SyncNanos        atomic.Int64 // total time in fdatasync
}

func (m *Metrics) observeSync(d time.Duration) {
	m.Syncs.Add(1)
	m.SyncNanos.Add(int64(d))
}
