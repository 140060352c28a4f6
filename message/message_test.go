package message_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard-dev/switchboard/message"
)

func TestNewIDIsUUIDv7AndIncreasing(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := ""
			for i := 0; i < 5000; i++ {
				id := message.NewID()
				if len(id) != 36 || id[14] != '7' || !strings.ContainsRune("89ab", rune(id[19])) {
					t.Errorf("not a UUIDv7: %s", id)
					return
				}
				if id <= prev {
					t.Errorf("IDs not increasing in one goroutine: %s after %s", id, prev)
					return
				}
				prev = id
				mu.Lock()
				if seen[id] {
					t.Errorf("duplicate ID %s", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestValidateTopic(t *testing.T) {
	for _, ok := range []string{"orders", "orders.placed", "a-b_c:d.e", "$dlq.email"} {
		if err := message.ValidateTopic(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "orders placed", "orders..placed", "orders.*", "orders.>", ".a", "a.", "é", strings.Repeat("a", 250)} {
		err := message.ValidateTopic(bad)
		if !errors.Is(err, message.ErrInvalid) {
			t.Errorf("%q: got %v, want ErrInvalid", bad, err)
		}
	}
	if err := message.ValidateTopic("orders placed"); !strings.Contains(err.Error(), `character ' ' is not allowed`) {
		t.Errorf("unclear error: %v", err)
	}
}

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, topic string
		want           bool
	}{
		{"orders.*", "orders.placed", true},
		{"orders.*", "orders.placed.eu", false},
		{"orders.>", "orders.placed.eu", true},
		{"orders.>", "orders", false},
		{"*.placed", "orders.placed", true},
		{">", "orders.placed", true},
		{">", "$dlq.email", false},
		{"$dlq.*", "$dlq.email", true},
		{"orders", "orders", true},
		{"orders", "orders.x", false},
	}
	for _, c := range cases {
		if got := message.Match(c.pattern, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.topic, got, c.want)
		}
	}
}

func TestLimits(t *testing.T) {
	l := message.DefaultLimits()
	big := &message.Message{Payload: make([]byte, l.MaxPayload+1)}
	err := l.Validate(big)
	if !errors.Is(err, message.ErrTooLarge) || !strings.Contains(err.Error(), "exceeds the limit of 1048576 bytes") {
		t.Fatalf("oversized payload: %v", err)
	}
	if err := l.Validate(&message.Message{Headers: map[string]string{"bad name": "x"}}); !errors.Is(err, message.ErrInvalid) {
		t.Fatalf("bad header name: %v", err)
	}
	if err := l.Validate(&message.Message{}); err != nil {
		t.Fatalf("empty message: %v", err)
	}
	l.MaxPayload = 3 << 30
	if err := l.Check(); err == nil {
		t.Fatal("a 3 GiB payload limit was accepted")
	}
}
