package hub

import (
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/message"
)

func TestCovers(t *testing.T) {
	// For plain topics, covers is message.Match.
	perms := []string{">", "orders.>", "orders.*", "orders.*.eu", "*.placed", "orders.placed", "$dlq.>", "$dlq.*"}
	topics := []string{"orders", "orders.placed", "orders.placed.eu", "orders.x.eu", "payments.placed", "$dlq.billing", "$dlq.a.b"}
	for _, p := range perms {
		for _, tp := range topics {
			if got, want := covers(p, tp), message.Match(p, tp); got != want {
				t.Errorf("covers(%q, %q) = %v, message.Match = %v", p, tp, got, want)
			}
		}
	}
	// Patterns: a permission covers a pattern only if it covers every topic
	// the pattern can name.
	for _, c := range []struct {
		perm, pat string
		want      bool
	}{
		{">", "orders.*", true},
		{">", ">", true},
		{"orders.>", "orders.*", true},
		{"orders.>", "orders.>", true},
		{"orders.>", "orders.*.eu", true},
		{"orders.*", "orders.*", true},
		{"orders.*", "orders.>", false}, // orders.a.b is not covered
		{"orders.*", ">", false},
		{"orders.placed", "orders.*", false},
		{"orders.>", ">", false},
		{"orders.>", "*.placed", false},
		{"*.placed", "orders.*", false},
		{"*.*", "orders.*", true},
		{">", "$dlq.*", false}, // system topics need a '$' permission
		{"$dlq.>", "$dlq.*", true},
	} {
		if got := covers(c.perm, c.pat); got != c.want {
			t.Errorf("covers(%q, %q) = %v, want %v", c.perm, c.pat, got, c.want)
		}
	}
}

func TestBucket(t *testing.T) {
	b := newBucket(10, 2) // 10/s, burst 2
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := b.take(now); !ok {
			t.Fatalf("take %d within the burst refused", i)
		}
	}
	ok, wait := b.take(now)
	if ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("take over the burst = %v, wait %v; want refused, wait (0, 100ms]", ok, wait)
	}
	if ok, _ := b.take(now.Add(100 * time.Millisecond)); !ok {
		t.Fatal("take after refill refused")
	}
	// A long pause refills to the burst, not beyond.
	now = now.Add(time.Hour)
	for i := range 2 {
		if ok, _ := b.take(now); !ok {
			t.Fatalf("take %d after a pause refused", i)
		}
	}
	if ok, _ := b.take(now); ok {
		t.Fatal("bucket grew beyond its burst")
	}
}
