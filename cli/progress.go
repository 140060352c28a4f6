package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// progress reports how a long publish goes, on stderr: on a terminal a bar
// redrawn in place (with the percentage and ETA when the input size is
// known, a file), otherwise one line per interval (logs and pipes stay
// readable). Nothing is shown for inputs done within the first delay, so
// small inputs print only their summary.
type progress struct {
	w     io.Writer
	tty   bool
	total int64        // input bytes; 0 when unknown (a pipe)
	read  *countReader // bytes read so far
	now   func() time.Time
	start time.Time
	last  time.Time // of the last report
	drawn bool      // a bar is on screen
	width int       // of the bar, in cells
}

const (
	progressDelay    = 500 * time.Millisecond // before the first report
	barInterval      = 100 * time.Millisecond // terminal redraws
	lineInterval     = time.Second            // rate lines otherwise
	defaultBarWidth  = 30
	progressLineSize = 100 // columns cleared by a redraw
)

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// newProgress wraps in to count what is read; stderr decides the style.
func newProgress(stderr io.Writer, in io.Reader, getenv func(string) string) (*progress, io.Reader) {
	p := &progress{w: stderr, now: time.Now, width: defaultBarWidth}
	p.read = &countReader{r: in}
	p.tty = isTerminal(stderr) && getenv("TERM") != "dumb"
	if f, ok := in.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			p.total = st.Size()
		}
	}
	p.start = p.now()
	p.last = p.start
	return p, p.read
}

// isTerminal reports whether w is a character device (a terminal), without
// a dependency: good enough to choose between a bar and plain lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// update reports msgs published so far, when it is time to.
func (p *progress) update(msgs int) {
	now := p.now()
	interval := lineInterval
	if p.tty {
		interval = barInterval
	}
	if now.Sub(p.start) < progressDelay || now.Sub(p.last) < interval {
		return
	}
	p.last = now
	if p.tty {
		fmt.Fprintf(p.w, "\r%-*s", progressLineSize, p.bar(msgs, now))
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, p.line(msgs, now))
}

// done clears the bar (the caller prints the summary).
func (p *progress) done() {
	if p.drawn {
		fmt.Fprintf(p.w, "\r%*s\r", progressLineSize, "")
		p.drawn = false
	}
}

func rate(n float64, el time.Duration) float64 { return n / max(el.Seconds(), 1e-9) }

// line is the report of a non-terminal: "published 120000 messages (45%),
// 61234 msg/s, 7.1 MB/s".
func (p *progress) line(msgs int, now time.Time) string {
	el := now.Sub(p.start)
	read := p.read.n.Load()
	s := fmt.Sprintf("published %d messages", msgs)
	if p.total > 0 {
		s += fmt.Sprintf(" (%d%%)", percent(read, p.total))
	}
	return s + fmt.Sprintf(", %.0f msg/s, %s/s", rate(float64(msgs), el), humanBytes(rate(float64(read), el)))
}

// bar is the terminal report: "[#########.........]  45%  120000 msgs
// 61.2k msg/s  7.1 MB/s  ETA 3s"; without a known size the bar is a
// marker moving back and forth.
func (p *progress) bar(msgs int, now time.Time) string {
	el := now.Sub(p.start)
	read := p.read.n.Load()
	var b strings.Builder
	b.WriteByte('[')
	if p.total > 0 {
		fill := int(int64(p.width) * min(read, p.total) / p.total)
		b.WriteString(strings.Repeat("#", fill))
		b.WriteString(strings.Repeat(".", p.width-fill))
	} else {
		pos := int(el/barInterval) % (2 * (p.width - 1))
		if pos >= p.width {
			pos = 2*(p.width-1) - pos
		}
		b.WriteString(strings.Repeat(".", pos))
		b.WriteByte('#')
		b.WriteString(strings.Repeat(".", p.width-pos-1))
	}
	b.WriteByte(']')
	if p.total > 0 {
		fmt.Fprintf(&b, " %3d%%", percent(read, p.total))
	}
	fmt.Fprintf(&b, "  %d msgs  %s msg/s  %s/s", msgs, humanCount(rate(float64(msgs), el)), humanBytes(rate(float64(read), el)))
	if p.total > 0 && read > 0 && read < p.total {
		eta := time.Duration(float64(el) * float64(p.total-read) / float64(read))
		fmt.Fprintf(&b, "  ETA %s", eta.Round(time.Second))
	}
	return b.String()
}

func percent(n, total int64) int64 { return min(100, 100*n/max(total, 1)) }

// humanCount prints 61234 as 61.2k.
func humanCount(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// humanBytes prints 7100000 as 7.1 MB.
func humanBytes(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.1f GB", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1f MB", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f kB", v/1e3)
	}
	return fmt.Sprintf("%.0f B", v)
}
