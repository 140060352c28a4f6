package cli_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var sqsLine = regexp.MustCompile(`sqs on (http://[0-9.:\[\]]+); (signatures [a-z ]+)`)

// sqsCall makes one AWS JSON 1.0 call and decodes the answer into out.
func sqsCall(t *testing.T, endpoint, op string, in any, out any) int {
	t.Helper()
	body, _ := json.Marshal(in)
	req, _ := http.NewRequest(http.MethodPost, endpoint+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	req.Header.Set("X-Amz-Target", "AmazonSQS."+op)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s: %v: %s", op, err, raw)
		}
	}
	if resp.StatusCode != http.StatusOK {
		t.Logf("%s: HTTP %d: %s", op, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

// serve --sqs-addr answers the SQS API over the hub's backend: create a
// queue, send, receive, delete; the queue's metadata lives in <data>/sqs.
func TestServeSQS(t *testing.T) {
	data := t.TempDir()
	_, code, out := serveWith(t, nil, "--addr", "127.0.0.1:0", "--data", data, "--sqs-addr", "127.0.0.1:0")
	if code != 0 {
		t.Fatalf("serve exited %d: %s", code, out)
	}
	m := sqsLine.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no sqs line in: %s", out)
	}
	endpoint := m[1]
	if m[2] != "signatures accepted unverified" {
		t.Errorf("auth: %q", m[2])
	}

	var created struct{ QueueUrl string }
	if c := sqsCall(t, endpoint, "CreateQueue", map[string]any{"QueueName": "orders"}, &created); c != 200 {
		t.Fatalf("CreateQueue: HTTP %d", c)
	}
	if created.QueueUrl != endpoint+"/000000000000/orders" {
		t.Errorf("QueueUrl %q", created.QueueUrl)
	}
	var sent struct{ MessageId, MD5OfMessageBody string }
	if c := sqsCall(t, endpoint, "SendMessage", map[string]any{"QueueUrl": created.QueueUrl, "MessageBody": "hello"}, &sent); c != 200 || sent.MessageId == "" {
		t.Fatalf("SendMessage: HTTP %d %+v", c, sent)
	}
	if sent.MD5OfMessageBody != "5d41402abc4b2a76b9719d911017c592" {
		t.Errorf("MD5OfMessageBody %q", sent.MD5OfMessageBody)
	}
	var got struct {
		Messages []struct{ MessageId, Body, ReceiptHandle string }
	}
	if c := sqsCall(t, endpoint, "ReceiveMessage", map[string]any{"QueueUrl": created.QueueUrl, "WaitTimeSeconds": 5, "MaxNumberOfMessages": 10}, &got); c != 200 {
		t.Fatalf("ReceiveMessage: HTTP %d", c)
	}
	if len(got.Messages) != 1 || got.Messages[0].Body != "hello" || got.Messages[0].MessageId != sent.MessageId {
		t.Fatalf("received %+v", got.Messages)
	}
	if c := sqsCall(t, endpoint, "DeleteMessage", map[string]any{"QueueUrl": created.QueueUrl, "ReceiptHandle": got.Messages[0].ReceiptHandle}, nil); c != 200 {
		t.Fatalf("DeleteMessage: HTTP %d", c)
	}
	var attrs struct{ Attributes map[string]string }
	if c := sqsCall(t, endpoint, "GetQueueAttributes", map[string]any{"QueueUrl": created.QueueUrl, "AttributeNames": []string{"All"}}, &attrs); c != 200 {
		t.Fatalf("GetQueueAttributes: HTTP %d", c)
	}
	if attrs.Attributes["ApproximateNumberOfMessages"] != "0" || attrs.Attributes["ApproximateNumberOfMessagesNotVisible"] != "0" {
		t.Errorf("after delete: %v", attrs.Attributes)
	}
	if c := sqsCall(t, endpoint, "NoSuchOperation", map[string]any{}, nil); c != 400 {
		t.Errorf("unknown operation: HTTP %d, want 400", c)
	}
	if _, err := os.Stat(filepath.Join(data, "sqs", "queues.json")); err != nil {
		t.Errorf("queue metadata not in <data>/sqs: %v", err)
	}
}

// With credentials (here from the environment), unsigned requests are
// refused.
func TestServeSQSCredentials(t *testing.T) {
	env := map[string]string{"SWITCHBOARD_SQS_ADDR": "127.0.0.1:0", "SWITCHBOARD_SQS_ACCESS_KEY": "AKIDTEST", "SWITCHBOARD_SQS_SECRET_KEY": "secret"}
	_, code, out := serveWith(t, env, "--addr", "127.0.0.1:0", "--data", t.TempDir())
	if code != 0 {
		t.Fatalf("serve exited %d: %s", code, out)
	}
	m := sqsLine.FindStringSubmatch(out.String())
	if m == nil || m[2] != "signatures verified" {
		t.Fatalf("sqs line: %q in %s", m, out)
	}
	if c := sqsCall(t, m[1], "ListQueues", map[string]any{}, nil); c != http.StatusForbidden && c != http.StatusBadRequest {
		t.Errorf("unsigned ListQueues: HTTP %d, want 403 or 400", c)
	}
}

// The config file's sqs section turns the face on.
func TestServeSQSConfigFile(t *testing.T) {
	config := writeFile(t, `{"sqs": {"addr": "127.0.0.1:0"}}`, 0o600)
	_, code, out := serveWith(t, nil, "--config", config, "--addr", "127.0.0.1:0", "--data", t.TempDir())
	if code != 0 {
		t.Fatalf("serve exited %d: %s", code, out)
	}
	if !sqsLine.MatchString(out.String()) {
		t.Fatalf("no sqs line in: %s", out)
	}
}

// A non-loopback --sqs-addr without credentials is refused unless
// --insecure; half a key pair is a usage error.
func TestServeSQSRefusals(t *testing.T) {
	for _, args := range [][]string{
		{"--sqs-addr", "0.0.0.0:0"},
		{"--sqs-addr", "127.0.0.1:0", "--sqs-access-key", "AKID"},
		{"--sqs-secret-key", "s"},
		{"--sqs-addr", "nonsense"},
	} {
		all := append([]string{"--addr", "127.0.0.1:0", "--data", t.TempDir()}, args...)
		_, code, out := serveWith(t, nil, all...)
		if code == 0 {
			t.Errorf("%v: serve started: %s", args, out)
			continue
		}
		if !strings.Contains(out.String(), "sqs") {
			t.Errorf("%v: error does not mention sqs: %s", args, out)
		}
	}
	_, code, out := serveWith(t, nil, "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--sqs-addr", "0.0.0.0:0", "--insecure")
	if code != 0 {
		t.Fatalf("--insecure: serve exited %d: %s", code, out)
	}
	if !strings.Contains(out.String(), "SQS auth OFF") {
		t.Errorf("no warning: %s", out)
	}
}
