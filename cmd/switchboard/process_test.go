package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain removes the binary that binary built once the tests are done.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// hubStartTimeout bounds how long a serve process may take to be ready.
const hubStartTimeout = 60 * time.Second

// hubStopTimeout bounds how long a serve process may take to exit after
// SIGTERM (its shutdown grace is 10 s by default).
const hubStopTimeout = 30 * time.Second

// hubProc is a `switchboard serve` process that a test can restart on the
// same address with the same flags (and so the same data). Its output,
// across restarts, is logged when the test fails.
type hubProc struct {
	bin  string
	args []string    // serve flags besides --addr
	addr string      // host:port it listens on (the same after a restart)
	out  *syncBuffer // stdout and stderr of every run
	run  *hubRun     // the current process
}

// hubRun is one run of the process.
type hubRun struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited
	err    error         // of cmd.Wait, set before exited is closed
	ready  chan string   // the address serve printed, once it is about to serve
	once   sync.Once     // guards stop and kill: the process is ended once
	stop   error         // the result of that stop

	// Set by scan, which runs on exec's stdout goroutine; stopped is read
	// after Wait returned, which waits for that goroutine.
	listen  string // the address serve printed
	stopped bool   // serve printed "stopped" (a clean shutdown)
}

// startHub starts `switchboard serve --addr 127.0.0.1:0 args...` and waits
// until it is ready: it printed its address and /readyz answers 200. At
// cleanup the process gets SIGTERM (SIGKILL when it does not exit in time)
// and the test fails unless it exits cleanly; when the test failed, the
// process's output is logged.
func startHub(t *testing.T, bin string, args ...string) *hubProc {
	t.Helper()
	h := &hubProc{bin: bin, args: args, addr: "127.0.0.1:0", out: &syncBuffer{}}
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if t.Failed() {
			t.Logf("output of switchboard serve %s:\n%s", strings.Join(h.args, " "), h.out)
		}
	})
	if err := h.start(); err != nil {
		t.Fatal(err)
	}
	return h
}

// url is the hub as a switchboard:// backend URL.
func (h *hubProc) url() string { return "switchboard://" + h.addr }

// start runs the process on h.addr and waits until it is ready.
func (h *hubProc) start() error {
	args := append([]string{"serve", "--addr", h.addr}, h.args...)
	cmd := exec.Command(h.bin, args...)
	cmd.Env = env()
	r := &hubRun{cmd: cmd, exited: make(chan struct{}), ready: make(chan string, 1)}
	cmd.Stdout = &lineWriter{w: h.out, line: r.scan}
	cmd.Stderr = h.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start switchboard serve: %w", err)
	}
	h.run = r
	go func() {
		r.err = cmd.Wait()
		close(r.exited)
	}()

	timeout := time.NewTimer(hubStartTimeout)
	defer timeout.Stop()
	select {
	case addr := <-r.ready:
		if h.addr != "127.0.0.1:0" && addr != h.addr {
			return fmt.Errorf("switchboard serve restarted on %s, want %s", addr, h.addr)
		}
		h.addr = addr
	case <-r.exited:
		return fmt.Errorf("switchboard serve exited before listening: %w", r.err)
	case <-timeout.C:
		return fmt.Errorf("switchboard serve did not listen within %s", hubStartTimeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hubStartTimeout)
	defer cancel()
	if err := waitReady(ctx, h.addr); err != nil {
		return fmt.Errorf("switchboard serve on %s: %w", h.addr, err)
	}
	return nil
}

// scan watches serve's stdout: it prints where it listens, then whether
// auth is on (the last line before it serves).
func (r *hubRun) scan(line string) {
	if rest, ok := strings.CutPrefix(line, "listening on http://"); ok {
		if f := strings.Fields(rest); len(f) > 0 {
			r.listen = f[0]
		}
	}
	if line == "stopped" {
		r.stopped = true
	}
	if strings.HasPrefix(line, "auth ") {
		select {
		case r.ready <- r.listen:
		default:
		}
	}
}

// waitReady polls GET /readyz on addr until it answers 200 or ctx ends.
func waitReady(ctx context.Context, addr string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("readyz request: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready (%w): %w", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM to the current process and waits for it to exit; it
// kills the process when it does not exit within hubStopTimeout. It returns
// an error unless the process exited cleanly (status 0, "stopped"). Calling
// it again returns the first result.
func (h *hubProc) stop() error {
	r := h.run
	if r == nil {
		return nil
	}
	r.once.Do(func() { r.stop = r.terminate() })
	return r.stop
}

func (r *hubRun) terminate() error {
	select {
	case <-r.exited:
		return fmt.Errorf("switchboard serve had exited before it was stopped: %w", r.exitErr())
	default:
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = r.cmd.Process.Kill()
		<-r.exited
		return fmt.Errorf("SIGTERM to switchboard serve: %w", err)
	}
	timer := time.NewTimer(hubStopTimeout)
	defer timer.Stop()
	select {
	case <-r.exited:
	case <-timer.C:
		_ = r.cmd.Process.Kill()
		<-r.exited
		return fmt.Errorf("switchboard serve did not exit within %s of SIGTERM; killed", hubStopTimeout)
	}
	if err := r.exitErr(); err != nil {
		return fmt.Errorf("switchboard serve after SIGTERM: %w", err)
	}
	if !r.stopped {
		return errors.New("switchboard serve exited after SIGTERM without reporting a clean stop")
	}
	return nil
}

// exitErr is the process's exit error, or nil for status 0.
func (r *hubRun) exitErr() error {
	if r.err != nil {
		return fmt.Errorf("exited with %w", r.err)
	}
	return nil
}

// restart stops the process gracefully (SIGTERM) and starts it again on
// the same address with the same flags. The test fails when the process
// does not stop cleanly or does not come back.
func (h *hubProc) restart(t *testing.T) {
	t.Helper()
	if err := h.stop(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	h.startAgain(t)
}

// kill ends the current process with SIGKILL, as a crash would, and waits
// for it to exit.
func (h *hubProc) kill(t *testing.T) {
	t.Helper()
	r := h.run
	r.once.Do(func() {
		if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			r.stop = fmt.Errorf("SIGKILL to switchboard serve: %w", err)
		}
		<-r.exited
	})
	if r.stop != nil {
		t.Fatal(r.stop)
	}
	fmt.Fprintln(h.out, "--- killed by the test (SIGKILL) ---")
}

// startAgain starts the process again, after stop or kill, on the same
// address with the same flags, and waits until it is ready.
func (h *hubProc) startAgain(t *testing.T) {
	t.Helper()
	fmt.Fprintf(h.out, "--- started again by the test on %s ---\n", h.addr)
	if err := h.start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
}

// lineWriter passes what is written to w and calls line with each complete
// line. exec.Cmd writes a child's stdout from one goroutine, and Wait
// returns only after the last write, so nothing is lost at exit.
type lineWriter struct {
	w       *syncBuffer
	line    func(string)
	partial []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	l.partial = append(l.partial, p[:n]...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return n, err
}
