package client_test

import (
	"context"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
	_ "github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/hub"
)

// runningHub is a hub process stand-in: an embedded broker in dir served on
// a random loopback port.
type runningHub struct {
	dir    string
	addr   string
	b      broker.Broker
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startHub(t *testing.T, dir string) *runningHub {
	t.Helper()
	u := (&url.URL{Scheme: "embedded", Path: dir}).String()
	b, err := broker.Open(context.Background(), u)
	if err != nil {
		t.Fatalf("open %s: %v", u, err)
	}
	s, err := hub.New(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &runningHub{dir: dir, addr: ln.Addr().String(), b: b, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// stop shuts the hub down and closes its broker (once).
func (h *runningHub) stop(t *testing.T) {
	h.once.Do(func() {
		h.cancel()
		if err := <-h.done; err != nil {
			t.Errorf("hub Serve: %v", err)
		}
		if err := h.b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
}

func (h *runningHub) url() string { return "switchboard://" + h.addr }
