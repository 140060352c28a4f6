package embedded_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/embedded"
	"github.com/switchboard-dev/switchboard/message"
)

const (
	crashTopic     = "crash.orders"
	crashProducers = 8
	crashBatch     = 4 // producer 0 publishes atomic batches of this size
)

// TestCrashChild is the child process of TestCrashRecovery: it publishes
// until killed and prints one line per acknowledged publish. It does nothing
// when run normally.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("SB_CRASH_DIR")
	if dir == "" {
		t.Skip("child process of TestCrashRecovery")
	}
	b, err := embedded.Open(dir, embedded.WithSegmentBytes(64<<10))
	if err != nil {
		fmt.Println("OPEN-ERROR", err)
		os.Exit(3)
	}
	round := os.Getenv("SB_CRASH_ROUND")
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	ack := func(line string) {
		mu.Lock()
		out.WriteString(line + "\n")
		out.Flush() // written before the next publish: every printed line was acknowledged
		mu.Unlock()
	}
	fmt.Println("READY")
	var wg sync.WaitGroup
	for p := 0; p < crashProducers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for n := 0; ; n++ {
				key := fmt.Sprintf("p%d", p)
				if p == 0 {
					msgs := make([]*message.Message, crashBatch)
					for i := range msgs {
						msgs[i] = &message.Message{ID: fmt.Sprintf("%s-%s-%d-%d", round, key, n, i), Key: key, Payload: []byte(fmt.Sprintf("%s/%d/%d", round, n, i))}
					}
					if _, err := b.Publish(ctx, &broker.PublishParams{Topic: crashTopic, Messages: msgs}); err != nil {
						return
					}
					ack(fmt.Sprintf("B %s %d", key, n))
					continue
				}
				m := &message.Message{ID: fmt.Sprintf("%s-%s-%d", round, key, n), Key: key, Payload: []byte(fmt.Sprintf("%s/%d", round, n))}
				if _, err := b.Publish(ctx, &broker.PublishParams{Topic: crashTopic, Messages: []*message.Message{m}}); err != nil {
					return
				}
				ack(fmt.Sprintf("M %s %d", key, n))
			}
		}()
	}
	wg.Wait()
}

// TestCrashRecovery runs a real child process that publishes under load,
// SIGKILLs it at random points, reopens the directory and checks that every
// acknowledged message is there exactly once, in order per key, that no
// batch is partial and that no record is corrupt.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test is not short")
	}
	dir := t.TempDir()
	rounds := 20
	acked := map[string]bool{} // message IDs acknowledged to the child
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "SB_CRASH_DIR="+dir, "SB_CRASH_ROUND="+strconv.Itoa(round))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() || sc.Text() != "READY" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child did not start: %q", round, sc.Text())
		}
		lines := make(chan string, 1<<16)
		go func() {
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		time.Sleep(time.Duration(20+rand.IntN(200)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		n := 0
		for l := range lines {
			f := strings.Fields(l)
			if len(f) != 3 {
				t.Fatalf("round %d: bad child line %q", round, l)
			}
			if f[0] == "B" {
				for i := 0; i < crashBatch; i++ {
					acked[fmt.Sprintf("%d-%s-%s-%d", round, f[1], f[2], i)] = true
				}
			} else {
				acked[fmt.Sprintf("%d-%s-%s", round, f[1], f[2])] = true
			}
			n++
		}
		cmd.Wait()
		verifyCrashDir(t, dir, round, acked)
		t.Logf("round %d: %d acknowledged publishes, %d acknowledged messages in total", round, n, len(acked))
	}
}

func verifyCrashDir(t *testing.T, dir string, round int, acked map[string]bool) {
	t.Helper()
	b, err := embedded.Open(dir, embedded.WithSegmentBytes(64<<10))
	if err != nil {
		t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
	}
	defer b.Close()
	ctx := context.Background()
	info, err := b.DescribeTopic(ctx, crashTopic)
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	group := fmt.Sprintf("verify-%d", round)
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{Topic: crashTopic, Group: group, Start: broker.StartPosition{Kind: broker.StartEarliest}, MaxInFlight: 4096})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	lastPerKey := map[string]uint64{}
	batches := map[string]int{}
	for got := uint64(0); got < info.LastSeq; got++ {
		select {
		case d := <-sub.Deliveries():
			m := d.Message
			seen[m.ID]++
			if seen[m.ID] > 1 {
				t.Fatalf("round %d: message %s stored twice", round, m.ID)
			}
			if d.Info.Seq <= lastPerKey[m.Key] {
				t.Fatalf("round %d: key %s out of order: seq %d after %d", round, m.Key, d.Info.Seq, lastPerKey[m.Key])
			}
			lastPerKey[m.Key] = d.Info.Seq
			if m.Key == "p0" {
				batches[m.ID[:strings.LastIndexByte(m.ID, '-')]]++
			}
			d.Ack(ctx)
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: only %d of %d messages readable", round, got, info.LastSeq)
		}
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Fatalf("round %d: acknowledged message %s is missing after SIGKILL", round, id)
		}
	}
	for b, n := range batches {
		if n != crashBatch {
			t.Fatalf("round %d: batch %s is partial: %d of %d messages", round, b, n, crashBatch)
		}
	}
	sub.Close()
	if err := b.DeleteGroup(ctx, group); err != nil {
		t.Fatal(err)
	}
}
