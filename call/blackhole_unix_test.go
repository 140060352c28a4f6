//go:build unix

package call_test

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// blackhole returns the address of a TCP listener whose accept queue is
// full and never drained: the kernel drops further SYNs, so a dial to it
// hangs until the dialer gives up, exactly as with a blackholed route.
// ok is false where the kernel does not behave so.
func blackhole(t *testing.T) (addr string, ok bool) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue; a dial that then times out proves the blackhole.
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		// A dial timeout is os.ErrDeadlineExceeded or net's own timeout
		// error, depending on which fires first (golang/go#64449).
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr, true
		}
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	return "", false
}
