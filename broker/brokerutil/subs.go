package brokerutil

import (
	"fmt"
	"sync"

	"github.com/switchboard-dev/switchboard/broker"
)

// Subs is the set of a backend's live subscriptions, so that the backend's
// Close can end them all. The zero value is ready to use; it is safe for
// concurrent use.
type Subs struct {
	mu     sync.Mutex
	set    map[*Sub]struct{}
	closed bool
}

// Track adds sub. It fails with broker.ErrClosed once CloseAll has run.
func (s *Subs) Track(sub *Sub, backend string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("%s: %w", backend, broker.ErrClosed)
	}
	if s.set == nil {
		s.set = map[*Sub]struct{}{}
	}
	s.set[sub] = struct{}{}
	return nil
}

// Untrack removes sub (a subscription that ended by itself).
func (s *Subs) Untrack(sub *Sub) {
	s.mu.Lock()
	delete(s.set, sub)
	s.mu.Unlock()
}

// CloseAll refuses new subscriptions and closes every tracked one (their
// unsettled deliveries are released as each Sub's Close defines).
func (s *Subs) CloseAll() {
	s.mu.Lock()
	s.closed = true
	subs := make([]*Sub, 0, len(s.set))
	for sub := range s.set {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		_ = sub.Close()
	}
}
