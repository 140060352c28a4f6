package sqsface_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// awsCLI finds the AWS CLI: $SWITCHBOARD_AWS_CLI, Debian's /usr/bin/aws
// (package awscli, Query protocol), or aws on PATH.
func awsCLI(t *testing.T) string {
	if p := os.Getenv("SWITCHBOARD_AWS_CLI"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/aws"); err == nil {
		return "/usr/bin/aws"
	}
	return needTool(t, "aws", "install Debian's awscli: apt-get install -y awscli")
}

type cli struct {
	t        *testing.T
	bin, url string
	env      []string
}

func (c *cli) run(args ...string) (map[string]any, string, error) {
	c.t.Helper()
	start := time.Now()
	defer func() { c.t.Logf("%5dms aws sqs %s", time.Since(start).Milliseconds(), args[0]) }()
	cmd := exec.Command(c.bin, append([]string{"--endpoint-url", c.url, "--output", "json", "sqs"}, args...)...)
	cmd.Env = c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var m map[string]any
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &m); jerr != nil {
			c.t.Fatalf("aws sqs %v: output is not JSON: %s", args, out.String())
		}
	}
	return m, errb.String(), err
}

func (c *cli) must(args ...string) map[string]any {
	c.t.Helper()
	m, stderr, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("aws sqs %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return m
}

func TestAWSCLI(t *testing.T) {
	t.Parallel()
	bin := awsCLI(t)
	s := newServer(t, nil)
	home := t.TempDir()
	c := &cli{t: t, bin: bin, url: s.URL, env: []string{
		"HOME=" + home, "PATH=" + os.Getenv("PATH"), "AWS_ACCESS_KEY_ID=AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY=dummy",
		"AWS_DEFAULT_REGION=us-east-1", "AWS_PAGER=", "AWS_CONFIG_FILE=" + home + "/none", "AWS_SHARED_CREDENTIALS_FILE=" + home + "/none",
	}}

	dlq := c.must("create-queue", "--queue-name", "cli-dlq")["QueueUrl"].(string)
	arn := c.must("get-queue-attributes", "--queue-url", dlq, "--attribute-names", "QueueArn")["Attributes"].(map[string]any)["QueueArn"].(string)
	attrs, _ := json.Marshal(map[string]string{"VisibilityTimeout": "1", "RedrivePolicy": fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"1"}`, arn)})
	q := c.must("create-queue", "--queue-name", "cli-std", "--attributes", string(attrs))["QueueUrl"].(string)
	fq := c.must("create-queue", "--queue-name", "cli.fifo", "--attributes", `{"FifoQueue":"true","ContentBasedDeduplication":"true"}`)["QueueUrl"].(string)

	sent := c.must("send-message", "--queue-url", q, "--message-body", "this is a test message",
		"--message-attributes", `{"timestamp":{"DataType":"Number","StringValue":"1493147359900"}}`)
	if sent["MD5OfMessageAttributes"] != "235c5c510d26fb653d073faed50ae77c" || sent["MD5OfMessageBody"] != "905ed04ee04ac9a8b461f9f3b10eec6d" {
		t.Fatalf("send digests: %v", sent)
	}
	b := c.must("send-message-batch", "--queue-url", q, "--entries", `[{"Id":"a","MessageBody":"one"},{"Id":"b","MessageBody":"two","DelaySeconds":1}]`)
	if ok, _ := b["Successful"].([]any); len(ok) != 2 {
		t.Fatalf("batch: %v", b)
	}
	got := map[string]map[string]any{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < 3 && time.Now().Before(deadline) {
		r := c.must("receive-message", "--queue-url", q, "--max-number-of-messages", "10", "--wait-time-seconds", "2",
			"--visibility-timeout", "300", "--attribute-names", "All", "--message-attribute-names", "All")
		ms, _ := r["Messages"].([]any)
		for _, m := range ms {
			mm := m.(map[string]any)
			got[mm["Body"].(string)] = mm
		}
	}
	if len(got) != 3 {
		t.Fatalf("received %d of 3: %v", len(got), got)
	}
	m := got["this is a test message"]
	if m["MD5OfMessageAttributes"] != "235c5c510d26fb653d073faed50ae77c" || m["Attributes"].(map[string]any)["ApproximateReceiveCount"] != "1" {
		t.Fatalf("received message: %v", m)
	}
	all := c.must("get-queue-attributes", "--queue-url", q, "--attribute-names", "All")["Attributes"].(map[string]any)
	if all["ApproximateNumberOfMessagesNotVisible"] != "3" || all["VisibilityTimeout"] != "1" {
		t.Fatalf("attributes: %v", all)
	}
	c.must("delete-message", "--queue-url", q, "--receipt-handle", m["ReceiptHandle"].(string))
	c.must("delete-message-batch", "--queue-url", q, "--entries", fmt.Sprintf(`[{"Id":"x","ReceiptHandle":%q}]`, got["two"]["ReceiptHandle"]))
	// "one": visible again at once, received a second time → dead-letter queue.
	c.must("change-message-visibility", "--queue-url", q, "--receipt-handle", got["one"]["ReceiptHandle"].(string), "--visibility-timeout", "0")
	for i := 0; i < 5; i++ {
		r := c.must("receive-message", "--queue-url", dlq, "--wait-time-seconds", "1", "--attribute-names", "All")
		if ms, _ := r["Messages"].([]any); len(ms) == 1 {
			if body := ms[0].(map[string]any)["Body"]; body != "one" {
				t.Fatalf("dead letter %v", body)
			}
			goto fifo
		}
		c.must("receive-message", "--queue-url", q, "--wait-time-seconds", "1")
	}
	t.Fatal("message did not reach the dead-letter queue")
fifo:
	for _, body := range []string{"f1", "f2", "f1"} {
		c.must("send-message", "--queue-url", fq, "--message-body", body, "--message-group-id", "g")
	}
	var order []string
	for i := 0; i < 6 && len(order) < 2; i++ {
		r := c.must("receive-message", "--queue-url", fq, "--max-number-of-messages", "10", "--wait-time-seconds", "1", "--attribute-names", "All")
		ms, _ := r["Messages"].([]any)
		for _, x := range ms {
			mm := x.(map[string]any)
			order = append(order, mm["Body"].(string))
			c.must("change-message-visibility-batch", "--queue-url", fq, "--entries", fmt.Sprintf(`[{"Id":"v","ReceiptHandle":%q,"VisibilityTimeout":30}]`, mm["ReceiptHandle"]))
			c.must("delete-message", "--queue-url", fq, "--receipt-handle", mm["ReceiptHandle"].(string))
		}
	}
	if strings.Join(order, ",") != "f1,f2" {
		t.Fatalf("FIFO order %v, want f1,f2 (the second f1 is a duplicate)", order)
	}
	c.must("tag-queue", "--queue-url", q, "--tags", "team=cli")
	if tags := c.must("list-queue-tags", "--queue-url", q)["Tags"].(map[string]any); tags["team"] != "cli" {
		t.Fatalf("tags %v", tags)
	}
	if l := c.must("list-queues", "--queue-name-prefix", "cli")["QueueUrls"].([]any); len(l) != 3 {
		t.Fatalf("list-queues %v", l)
	}
	c.must("purge-queue", "--queue-url", dlq)
	c.must("delete-queue", "--queue-url", fq)
	if _, stderr, err := c.run("get-queue-url", "--queue-name", "cli.fifo"); err == nil || !strings.Contains(stderr, "NonExistentQueue") {
		t.Fatalf("get-queue-url of a deleted queue: %v %s", err, stderr)
	}
	big := home + "/big.txt"
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 300<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := c.run("send-message", "--queue-url", q, "--message-body", "file://"+big); err == nil || !strings.Contains(stderr, "InvalidParameterValue") {
		t.Fatalf("300 KiB message: %v %s", err, stderr)
	}
	t.Logf("%s: %d Query protocol and %d JSON protocol requests", bin, s.requests("query"), s.requests("json"))
	if bin == "/usr/bin/aws" && s.requests("json") > 0 {
		t.Fatalf("Debian's awscli was expected to speak the Query protocol")
	}
}
