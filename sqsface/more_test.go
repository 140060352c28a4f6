package sqsface_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/sqsface"
)

// Digests that AWS returned for these attributes (pinned by moto's and
// LocalStack's test suites, which were checked against AWS).
func TestMD5OfMessageAttributesKnownAWSValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, value, want string
	}{
		{"timestamp", "1493147359900", "235c5c510d26fb653d073faed50ae77c"},
		{"timestamp", "1493147359901", "994258b45346a2cc3f9cbb611aa7af30"},
		{"SOME_Valid.attribute-Name", "1493147359900", "36655e7e9d7c0e8479fa3f3f42247ae7"},
	} {
		if got := sqsface.MD5OfAttributes(map[string][3]string{tc.name: {"Number", tc.value}}); got != tc.want {
			t.Errorf("%s=%s: got %s, want %s", tc.name, tc.value, got, tc.want)
		}
	}
	if got := sqsface.MD5OfAttributes(nil); got != "" {
		t.Errorf("no attributes: got %q, want no digest", got)
	}
}

// TestSigV4Query signs Query protocol requests with the SDK's signer.
func TestSigV4Query(t *testing.T) {
	t.Parallel()
	s := newServer(t, &sqsface.Config{Credentials: map[string]string{"AKIDQ": "secret-q"}})
	send := func(secret, form string, tamper bool) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		sum := sha256.Sum256([]byte(form))
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: "AKIDQ", SecretAccessKey: secret}, req, hex.EncodeToString(sum[:]), "sqs", "us-east-1", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if tamper {
			req.Body = io.NopCloser(strings.NewReader(form + "&x=1"))
			req.ContentLength += 4
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	form := url.Values{"Action": {"CreateQueue"}, "QueueName": {"signed-q"}, "Version": {"2012-11-05"}}.Encode()
	if st, body := send("secret-q", form, false); st != 200 {
		t.Fatalf("signed request: %d %s", st, body)
	}
	if st, body := send("wrong", form, false); st != 403 || !strings.Contains(body, "<Code>SignatureDoesNotMatch</Code>") {
		t.Fatalf("wrong secret: %d %s", st, body)
	}
	if st, body := send("secret-q", form, true); st != 403 || !strings.Contains(body, "<Code>SignatureDoesNotMatch</Code>") {
		t.Fatalf("tampered body: %d %s", st, body)
	}
	if st, body := rawQuery(t, s.URL, "/", form); st != 403 || !strings.Contains(body, "<Code>MissingAuthenticationToken</Code>") {
		t.Fatalf("unsigned: %d %s", st, body)
	}
}

// TestRestartKeepsQueues: queue metadata is persisted under Config.Dir and
// messages in the engine.
func TestRestartKeepsQueues(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := ctxT(t)
	open := func() (*sqs.Client, func()) {
		b, err := broker.Open(ctx, "embedded://"+dir+"/engine")
		if err != nil {
			t.Fatal(err)
		}
		f, err := sqsface.NewFace(b, &sqsface.Config{Dir: dir + "/sqs", BaseURL: "http://sqs.example"})
		if err != nil {
			t.Fatal(err)
		}
		srv := newHTTP(f)
		c := newClient(t, srv.URL, "AKID", "SECRET")
		return c, func() { srv.Close(); _ = f.Close(); _ = b.Close() }
	}
	c, stop := open()
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("durable"), Attributes: map[string]string{"VisibilityTimeout": "17"}, Tags: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if *q.QueueUrl != "http://sqs.example/000000000000/durable" {
		t.Fatalf("BaseURL not used: %s", *q.QueueUrl)
	}
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("kept")}); err != nil {
		t.Fatal(err)
	}
	// Received but not deleted: after the restart it is delivered again.
	if r, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 5}); err != nil || len(r.Messages) != 1 {
		t.Fatalf("receive before restart: %v %v", r, err)
	}
	stop()
	c, stop = open()
	defer stop()
	a, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl, AttributeNames: []types.QueueAttributeName{"VisibilityTimeout"}})
	if err != nil || a.Attributes["VisibilityTimeout"] != "17" {
		t.Fatalf("attributes after restart: %v %v", a, err)
	}
	tags, err := c.ListQueueTags(ctx, &sqs.ListQueueTagsInput{QueueUrl: q.QueueUrl})
	if err != nil || tags.Tags["k"] != "v" {
		t.Fatalf("tags after restart: %v %v", tags, err)
	}
	r, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 10,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount}})
	if err != nil || len(r.Messages) != 1 || *r.Messages[0].Body != "kept" || r.Messages[0].Attributes["ApproximateReceiveCount"] != "2" {
		t.Fatalf("receive after restart: %+v %v", r, err)
	}
}

// TestIdleRelease: a queue's subscription is closed when idle; messages it
// held unseen are not counted as received.
func TestIdleRelease(t *testing.T) {
	t.Parallel()
	s := newServer(t, &sqsface.Config{IdleRelease: 300 * time.Millisecond})
	c := newClient(t, s.URL, "AKID", "SECRET")
	ctx := ctxT(t)
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("idle")})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"1", "2", "3"} {
		if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String(b)}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 5})
	if err != nil || len(r.Messages) != 1 {
		t.Fatalf("first receive: %v %v", r, err)
	}
	if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: r.Messages[0].ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // idle: released with two messages buffered
	got := 0
	for got < 2 {
		r, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 5, MaxNumberOfMessages: 10,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount}})
		if err != nil || len(r.Messages) == 0 {
			t.Fatalf("receive after release: %v %v", r, err)
		}
		for _, m := range r.Messages {
			if m.Attributes["ApproximateReceiveCount"] != "1" {
				t.Fatalf("message %s: ApproximateReceiveCount %s, want 1", *m.Body, m.Attributes["ApproximateReceiveCount"])
			}
			got++
		}
	}
}

// TestLongPollWakesOnSend: a waiting ReceiveMessage returns the message
// sent while it waits.
func TestLongPollWakesOnSend(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c := newClient(t, s.URL, "AKID", "SECRET")
	ctx := ctxT(t)
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("poll"), Attributes: map[string]string{"ReceiveMessageWaitTimeSeconds": "20"}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *sqs.ReceiveMessageOutput, 1)
	go func() {
		r, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl}) // queue default: 20 s
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("wake")}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r == nil || len(r.Messages) != 1 || *r.Messages[0].Body != "wake" {
		t.Fatalf("long poll: %+v", r)
	}
}
