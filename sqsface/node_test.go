package sqsface_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeSDK drives the face with @aws-sdk/client-sqs (JSON protocol).
// Install it once with: npm install --prefix sqsface/testdata/node
func TestNodeSDK(t *testing.T) {
	t.Parallel()
	node := needTool(t, "node", "install Debian's nodejs")
	if _, err := os.Stat(filepath.Join("testdata", "node", "node_modules", "@aws-sdk", "client-sqs")); err != nil {
		if os.Getenv("SWITCHBOARD_REQUIRE_SERVICES") == "1" {
			t.Fatal("@aws-sdk/client-sqs is not installed: run npm install --prefix sqsface/testdata/node")
		}
		t.Skip("@aws-sdk/client-sqs is not installed (npm install --prefix sqsface/testdata/node); skipping")
	}
	s := newServer(t, nil)
	cmd := exec.Command(node, "sqs.mjs")
	cmd.Dir = filepath.Join("testdata", "node")
	cmd.Env = append(os.Environ(), "SQS_ENDPOINT="+s.URL, "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent")
	outb, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(outb)), "\n")
	var out struct {
		Error                      string
		SendMD5OfMessageAttributes string
		Received                   []string
		NotVisible                 string
		DeadLetter                 string
		FifoOrder                  []string
		Tags                       map[string]string
		Queues                     int
		DeletedError               struct {
			Name, Code          string
			IsQueueDoesNotExist bool
		}
		Batch11Error string
	}
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &out); jerr != nil || err != nil || out.Error != "" {
		t.Fatalf("node script: %v %v\n%s", err, jerr, outb)
	}
	t.Logf("node: %s", lines[len(lines)-1])
	switch {
	case out.SendMD5OfMessageAttributes != "235c5c510d26fb653d073faed50ae77c":
		t.Errorf("MD5OfMessageAttributes %s", out.SendMD5OfMessageAttributes)
	case strings.Join(out.Received, ",") != "one,this is a test message,two":
		t.Errorf("received %v", out.Received)
	case out.NotVisible != "3":
		t.Errorf("NotVisible %s", out.NotVisible)
	case out.DeadLetter != "one":
		t.Errorf("dead letter %q", out.DeadLetter)
	case strings.Join(out.FifoOrder, ",") != "f1,f2":
		t.Errorf("FIFO order %v", out.FifoOrder)
	case out.Tags["team"] != "node" || out.Queues != 3:
		t.Errorf("tags %v queues %d", out.Tags, out.Queues)
	case !out.DeletedError.IsQueueDoesNotExist:
		t.Errorf("deleted queue error %+v", out.DeletedError)
	case out.Batch11Error != "TooManyEntriesInBatchRequest":
		t.Errorf("batch of 11: %s", out.Batch11Error)
	}
	if s.requests("query") > 0 {
		t.Errorf("@aws-sdk/client-sqs sent %d Query protocol requests; expected JSON only", s.requests("query"))
	}
}
