package brokerutil

import (
	"sync"

	"github.com/switchboard-dev/switchboard/broker"
)

// Sub is the plumbing of a broker.Subscription: a deliveries channel that
// the adapter's receive loop feeds, a done channel that tells the loop to
// stop, and the error the subscription ended with. Embed *Sub and give
// NewSub the adapter's own stop func.
type Sub struct {
	ch       chan *broker.Delivery
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex
	err      error
	stop     func() // adapter cleanup, called once by Close
	loopDone chan struct{}
}

// NewSub makes a Sub. stop runs once when the subscription closes, after
// the receive loop has been told to stop and before Deliveries is closed.
func NewSub(stop func()) *Sub {
	return &Sub{ch: make(chan *broker.Delivery), done: make(chan struct{}), stop: stop, loopDone: make(chan struct{})}
}

// Deliveries implements broker.Subscription.
func (s *Sub) Deliveries() <-chan *broker.Delivery { return s.ch }

// Done is closed when the subscription is closing.
func (s *Sub) Done() <-chan struct{} { return s.done }

// Closing reports whether Close has been called.
func (s *Sub) Closing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Send hands d to the consumer; it returns false (and d is not delivered)
// when the subscription is closing.
func (s *Sub) Send(d *broker.Delivery) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case s.ch <- d:
		return true
	case <-s.done:
		return false
	}
}

// Run runs the adapter's receive loop in a goroutine; when it returns the
// subscription closes with its error (nil when closed by Close).
func (s *Sub) Run(loop func() error) {
	go func() {
		err := loop()
		close(s.loopDone)
		s.end(err)
	}()
}

func (s *Sub) end(err error) {
	s.once.Do(func() {
		s.mu.Lock()
		select {
		case <-s.done:
		default:
			s.err = err
		}
		s.mu.Unlock()
		close(s.done)
		if s.stop != nil {
			s.stop()
		}
		close(s.ch)
	})
}

// Close implements broker.Subscription: it stops the loop and waits for it.
func (s *Sub) Close() error {
	s.once.Do(func() {
		close(s.done)
		<-s.loopDone
		if s.stop != nil {
			s.stop()
		}
		close(s.ch)
	})
	return nil
}

// Err implements broker.Subscription.
func (s *Sub) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
