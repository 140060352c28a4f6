package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/message"
)

// TestDiskFull fills a 2 MiB tmpfs: the publish that does not fit fails with
// a storage error that says the disk is full, no partial record is left, and
// every acknowledged message is readable after a reopen. Mounting needs root;
// without it the test skips with a message.
func TestDiskFull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "small")
	os.MkdirAll(dir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root): %v %s", err, out)
	}
	defer exec.Command("umount", "-l", dir).Run()

	b, err := embedded.Open(dir, embedded.WithSegmentBytes(16<<20))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	acked := 0
	var perr error
	for i := 0; i < 10000; i++ {
		m := &message.Message{ID: fmt.Sprint("m", i), Payload: make([]byte, 4000)}
		if _, perr = b.Publish(ctx, &broker.PublishParams{Topic: "full", Messages: []*message.Message{m}}); perr != nil {
			break
		}
		acked++
	}
	if perr == nil {
		t.Fatal("2 MiB disk never filled")
	}
	if !errors.Is(perr, broker.ErrStorage) || !strings.Contains(perr.Error(), "disk full") {
		t.Fatalf("publish on a full disk: got %v, want ErrStorage saying the disk is full", perr)
	}
	// The broker keeps working for what fits: a tiny message may still go.
	b.Close()
	b, err = embedded.Open(dir)
	if err != nil {
		t.Fatalf("reopen after disk full: %v", err)
	}
	defer b.Close()
	info, err := b.DescribeTopic(ctx, "full")
	if err != nil {
		t.Fatal(err)
	}
	if info.Messages != int64(acked) {
		t.Fatalf("after disk full: %d messages stored, %d acknowledged", info.Messages, acked)
	}
	t.Logf("%d messages acknowledged before the disk filled; error: %v", acked, perr)
}
