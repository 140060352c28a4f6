package cli

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// fakeProgress is a progress over a clock the test moves, with total input
// bytes (0: unknown) of which read were read.
func fakeProgress(tty bool, total, read int64) (*progress, *bytes.Buffer, *time.Time) {
	var out bytes.Buffer
	p, _ := newProgress(&out, strings.NewReader(""), func(string) string { return "" })
	clock := p.start
	p.now = func() time.Time { return clock }
	p.tty, p.total = tty, total
	p.read.n.Store(read)
	return p, &out, &clock
}

func TestProgressLines(t *testing.T) {
	p, out, clock := fakeProgress(false, 1000, 250)
	*clock = clock.Add(900 * time.Millisecond)
	p.update(100)
	if out.Len() != 0 {
		t.Fatalf("report before a second: %q", out)
	}
	*clock = clock.Add(100 * time.Millisecond)
	p.update(2000)
	if got, want := out.String(), "published 2000 messages (25%), 2000 msg/s, 250 B/s\n"; got != want {
		t.Fatalf("line = %q, want %q", got, want)
	}
	p.update(2100) // same instant: nothing
	p.done()       // no bar to clear
	if strings.Count(out.String(), "\n") != 1 || strings.Contains(out.String(), "\r") {
		t.Fatalf("output = %q, want one line", out)
	}
}

func TestProgressBar(t *testing.T) {
	p, out, clock := fakeProgress(true, 2_000_000, 1_000_000)
	*clock = clock.Add(400 * time.Millisecond)
	p.update(10) // a small input never shows a bar
	if out.Len() != 0 {
		t.Fatalf("bar before %s: %q", progressDelay, out)
	}
	*clock = clock.Add(600 * time.Millisecond) // 1 s in, half read
	p.update(50_000)
	want := "[" + strings.Repeat("#", 15) + strings.Repeat(".", 15) + "]  50%  50000 msgs  50.0k msg/s  1.0 MB/s  ETA 1s"
	if got := out.String(); !strings.HasPrefix(got, "\r"+want) {
		t.Fatalf("bar = %q, want %q", got, want)
	}
	out.Reset()
	p.update(50_001) // within the redraw interval: nothing
	if out.Len() != 0 {
		t.Fatalf("redrawn too soon: %q", out)
	}
	p.done()
	if got := out.String(); !strings.HasPrefix(got, "\r ") || !strings.HasSuffix(got, "\r") {
		t.Fatalf("done = %q, want the bar cleared", got)
	}
}

// Without a known size (a pipe) the bar has no percentage; a marker moves.
func TestProgressBarUnknownSize(t *testing.T) {
	p, out, clock := fakeProgress(true, 0, 5000)
	*clock = clock.Add(time.Second)
	p.update(100)
	got := out.String()
	if strings.Contains(got, "%") || strings.Contains(got, "ETA") || strings.Count(got, "#") != 1 || !strings.Contains(got, "100 msgs  100 msg/s  5.0 kB/s") {
		t.Fatalf("bar = %q", got)
	}
}

// A pipe or buffer is not a terminal.
func TestIsTerminal(t *testing.T) {
	if isTerminal(io.Discard) || isTerminal(&bytes.Buffer{}) {
		t.Fatal("a buffer is not a terminal")
	}
}
