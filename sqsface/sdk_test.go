package sqsface_test

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/switchboard-dev/switchboard/sqsface"
)

func TestSDKStandardQueue(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c := newClient(t, s.URL, "AKID", "SECRET")
	ctx := ctxT(t)

	dlq, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("orders-dlq")})
	if err != nil {
		t.Fatal(err)
	}
	dlqAttrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: dlq.QueueUrl, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	redrive := fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"2"}`, dlqAttrs.Attributes["QueueArn"])
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName:  aws.String("orders"),
		Attributes: map[string]string{"VisibilityTimeout": "1", "RedrivePolicy": redrive},
		Tags:       map[string]string{"team": "billing"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Creating again with the same attributes returns the same URL.
	again, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("orders"), Attributes: map[string]string{"VisibilityTimeout": "1"}})
	if err != nil || *again.QueueUrl != *q.QueueUrl {
		t.Fatalf("create again: %v %v", again, err)
	}
	_, err = c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("orders"), Attributes: map[string]string{"VisibilityTimeout": "5"}})
	var exists *types.QueueNameExists
	if !errors.As(err, &exists) {
		t.Fatalf("create with other attributes: want QueueNameExists, got %v", err)
	}
	u, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("orders")})
	if err != nil || *u.QueueUrl != *q.QueueUrl {
		t.Fatalf("GetQueueUrl: %v %v", u, err)
	}
	lq, err := c.ListQueues(ctx, &sqs.ListQueuesInput{QueueNamePrefix: aws.String("ord")})
	if err != nil || len(lq.QueueUrls) != 2 {
		t.Fatalf("ListQueues: %v %v", lq, err)
	}
	src, err := c.ListDeadLetterSourceQueues(ctx, &sqs.ListDeadLetterSourceQueuesInput{QueueUrl: dlq.QueueUrl})
	if err != nil || len(src.QueueUrls) != 1 || src.QueueUrls[0] != *q.QueueUrl {
		t.Fatalf("ListDeadLetterSourceQueues: %v %v", src, err)
	}
	tags, err := c.ListQueueTags(ctx, &sqs.ListQueueTagsInput{QueueUrl: q.QueueUrl})
	if err != nil || tags.Tags["team"] != "billing" {
		t.Fatalf("ListQueueTags: %v %v", tags, err)
	}
	if _, err := c.TagQueue(ctx, &sqs.TagQueueInput{QueueUrl: q.QueueUrl, Tags: map[string]string{"env": "ci"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UntagQueue(ctx, &sqs.UntagQueueInput{QueueUrl: q.QueueUrl, TagKeys: []string{"team"}}); err != nil {
		t.Fatal(err)
	}
	tags, _ = c.ListQueueTags(ctx, &sqs.ListQueueTagsInput{QueueUrl: q.QueueUrl})
	if len(tags.Tags) != 1 || tags.Tags["env"] != "ci" {
		t.Fatalf("tags after tag/untag: %v", tags.Tags)
	}

	// Send one with attributes; the SDK checks MD5OfMessageBody itself.
	sent, err := c.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:    q.QueueUrl,
		MessageBody: aws.String("this is a test message"),
		MessageAttributes: map[string]types.MessageAttributeValue{
			"timestamp": {DataType: aws.String("Number"), StringValue: aws.String("1493147359900")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(sent.MD5OfMessageAttributes); got != "235c5c510d26fb653d073faed50ae77c" {
		t.Fatalf("MD5OfMessageAttributes = %s, want AWS's 235c5c510d26fb653d073faed50ae77c", got)
	}
	batch, err := c.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: q.QueueUrl, Entries: []types.SendMessageBatchRequestEntry{
		{Id: aws.String("a"), MessageBody: aws.String("one"), MessageAttributes: map[string]types.MessageAttributeValue{
			"bin": {DataType: aws.String("Binary"), BinaryValue: []byte{2, 3, 4}},
			"s":   {DataType: aws.String("String.custom"), StringValue: aws.String("x")},
		}},
		{Id: aws.String("b"), MessageBody: aws.String("two")},
		{Id: aws.String("c"), MessageBody: aws.String("delayed"), DelaySeconds: 1},
	}})
	if err != nil || len(batch.Successful) != 3 || len(batch.Failed) != 0 {
		t.Fatalf("SendMessageBatch: %+v %v", batch, err)
	}

	// Long polling gets the four messages (the delayed one after ~1 s).
	got := map[string]types.Message{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < 4 && time.Now().Before(deadline) {
		rm, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 2, VisibilityTimeout: 300,
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range rm.Messages {
			got[*m.Body] = m
		}
	}
	if len(got) != 4 {
		t.Fatalf("received %d messages, want 4: %v", len(got), got)
	}
	m := got["this is a test message"]
	if aws.ToString(m.MD5OfMessageAttributes) != "235c5c510d26fb653d073faed50ae77c" || *m.MessageAttributes["timestamp"].StringValue != "1493147359900" {
		t.Fatalf("received attributes: %v %v", aws.ToString(m.MD5OfMessageAttributes), m.MessageAttributes)
	}
	if m.Attributes["ApproximateReceiveCount"] != "1" || m.Attributes["SentTimestamp"] == "" {
		t.Fatalf("system attributes: %v", m.Attributes)
	}
	one := got["one"]
	if string(one.MessageAttributes["bin"].BinaryValue) != "\x02\x03\x04" || *one.MessageAttributes["s"].DataType != "String.custom" {
		t.Fatalf("binary/custom attributes: %+v", one.MessageAttributes)
	}
	if aws.ToString(one.MD5OfMessageAttributes) != aws.ToString(batch.Successful[0].MD5OfMessageAttributes) {
		t.Fatalf("receive MD5OfMessageAttributes %s != send %s", aws.ToString(one.MD5OfMessageAttributes), aws.ToString(batch.Successful[0].MD5OfMessageAttributes))
	}

	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameAll}})
	if err != nil {
		t.Fatal(err)
	}
	if attrs.Attributes["ApproximateNumberOfMessagesNotVisible"] != "4" || attrs.Attributes["ApproximateNumberOfMessages"] != "0" || attrs.Attributes["VisibilityTimeout"] != "1" {
		t.Fatalf("attributes while in flight: %v", attrs.Attributes)
	}

	// Delete two (one alone, one in a batch with a stale handle), make one
	// visible again at once, and let "two" exceed maxReceiveCount.
	if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: m.ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	db, err := c.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: q.QueueUrl, Entries: []types.DeleteMessageBatchRequestEntry{
		{Id: aws.String("x"), ReceiptHandle: got["delayed"].ReceiptHandle},
		{Id: aws.String("y"), ReceiptHandle: m.ReceiptHandle},
	}})
	if err != nil || len(db.Successful) != 2 {
		t.Fatalf("DeleteMessageBatch: %+v %v", db, err)
	}
	if _, err := c.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: q.QueueUrl, ReceiptHandle: one.ReceiptHandle, VisibilityTimeout: 0}); err != nil {
		t.Fatal(err)
	}
	cb, err := c.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: q.QueueUrl, Entries: []types.ChangeMessageVisibilityBatchRequestEntry{
		{Id: aws.String("t"), ReceiptHandle: got["two"].ReceiptHandle, VisibilityTimeout: 1},
	}})
	if err != nil || len(cb.Successful) != 1 {
		t.Fatalf("ChangeMessageVisibilityBatch: %+v %v", cb, err)
	}
	rm, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 5, MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount}})
	if err != nil || len(rm.Messages) != 1 || *rm.Messages[0].Body != "one" || rm.Messages[0].Attributes["ApproximateReceiveCount"] != "2" {
		t.Fatalf("receive after visibility 0: %+v %v", rm, err)
	}
	if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: rm.Messages[0].ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	// "two": received once; two more receives without deleting (visibility
	// 1 s); the next receive moves it to the dead-letter queue.
	for i := 2; i <= 2; i++ {
		rm, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, WaitTimeSeconds: 5, MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount}})
		if err != nil || len(rm.Messages) != 1 || rm.Messages[0].Attributes["ApproximateReceiveCount"] != strconv.Itoa(i) {
			t.Fatalf("receive %d of two: %+v %v", i, rm, err)
		}
	}
	waitDLQ(t, c, q.QueueUrl, dlq.QueueUrl, "two")

	if _, err := c.PurgeQueue(ctx, &sqs.PurgeQueueInput{QueueUrl: dlq.QueueUrl}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: q.QueueUrl}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("orders")})
	var nq *types.QueueDoesNotExist
	var ae smithy.APIError
	if !errors.As(err, &nq) || !errors.As(err, &ae) || ae.ErrorCode() != "AWS.SimpleQueueService.NonExistentQueue" {
		t.Fatalf("after delete: want QueueDoesNotExist with the legacy code, got %v", err)
	}
}

// waitDLQ receives from src until body is gone from it and appears in dlq.
func waitDLQ(t *testing.T, c *sqs.Client, src, dlq *string, body string) {
	t.Helper()
	ctx := ctxT(t)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		rm, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: src, WaitTimeSeconds: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(rm.Messages) > 0 {
			continue // not yet over maxReceiveCount
		}
		dm, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: dlq, WaitTimeSeconds: 1,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}})
		if err != nil {
			t.Fatal(err)
		}
		if len(dm.Messages) == 1 && *dm.Messages[0].Body == body {
			if dm.Messages[0].Attributes["DeadLetterQueueSourceArn"] == "" {
				t.Fatalf("dead letter lacks DeadLetterQueueSourceArn: %v", dm.Messages[0].Attributes)
			}
			return
		}
	}
	t.Fatalf("%q did not reach the dead-letter queue", body)
}

func TestSDKFIFOQueue(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	c := newClient(t, s.URL, "AKID", "SECRET")
	ctx := ctxT(t)
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("jobs.fifo"), Attributes: map[string]string{"FifoQueue": "true", "ContentBasedDeduplication": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		for _, g := range []string{"A", "B"} {
			r, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String(fmt.Sprintf("%s%d", g, i)), MessageGroupId: aws.String(g)})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, *r.MessageId)
			if r.SequenceNumber == nil {
				t.Fatal("FIFO send without SequenceNumber")
			}
		}
	}
	// Same content (content-based dedup) and an explicit dedup ID: duplicates.
	dup, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: q.QueueUrl, MessageBody: aws.String("A0"), MessageGroupId: aws.String("A")})
	if err != nil || *dup.MessageId != ids[0] {
		t.Fatalf("duplicate send: %v %v (want MessageId %s)", dup, err, ids[0])
	}
	b, err := c.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: q.QueueUrl, Entries: []types.SendMessageBatchRequestEntry{
		{Id: aws.String("1"), MessageBody: aws.String("C0"), MessageGroupId: aws.String("C"), MessageDeduplicationId: aws.String("d1")},
		{Id: aws.String("2"), MessageBody: aws.String("C1"), MessageGroupId: aws.String("C"), MessageDeduplicationId: aws.String("d1")},
	}})
	if err != nil || len(b.Successful) != 2 {
		t.Fatalf("batch: %+v %v", b, err)
	}
	// Per group order; a group's next message waits until the previous is deleted.
	next := map[string]int{"A": 0, "B": 0, "C": 0}
	deadline := time.Now().Add(30 * time.Second)
	for next["A"]+next["B"]+next["C"] < 7 && time.Now().Before(deadline) {
		rm, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
			ReceiveRequestAttemptId:     aws.String(fmt.Sprint("try", time.Now().UnixNano())),
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}})
		if err != nil {
			t.Fatal(err)
		}
		inBatch := map[string]bool{}
		for _, m := range rm.Messages {
			g := m.Attributes["MessageGroupId"]
			if inBatch[g] {
				t.Fatalf("two messages of group %s in flight at once", g)
			}
			inBatch[g] = true
			if want := fmt.Sprintf("%s%d", g, next[g]); *m.Body != want {
				t.Fatalf("group %s: got %s, want %s", g, *m.Body, want)
			}
			next[g]++
			if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if next["A"] != 3 || next["B"] != 3 || next["C"] != 1 {
		t.Fatalf("received per group %v, want A:3 B:3 C:1 (C1 is a duplicate)", next)
	}
	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameAll}})
	if err != nil || attrs.Attributes["FifoQueue"] != "true" || attrs.Attributes["ApproximateNumberOfMessages"] != "0" {
		t.Fatalf("FIFO attributes: %v %v", attrs, err)
	}
}

func TestSDKSignatureVerified(t *testing.T) {
	t.Parallel()
	s := newServer(t, &sqsface.Config{Credentials: map[string]string{"AKIDGOOD": "right-secret"}})
	ctx := ctxT(t)
	good := newClient(t, s.URL, "AKIDGOOD", "right-secret")
	if _, err := good.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("signed")}); err != nil {
		t.Fatalf("correctly signed request refused: %v", err)
	}
	for _, tc := range []struct{ key, secret, code string }{
		{"AKIDGOOD", "wrong-secret", "SignatureDoesNotMatch"},
		{"AKIDOTHER", "right-secret", "InvalidClientTokenId"},
	} {
		_, err := newClient(t, s.URL, tc.key, tc.secret).ListQueues(ctx, &sqs.ListQueuesInput{})
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != tc.code {
			t.Fatalf("key %s: want %s, got %v", tc.key, tc.code, err)
		}
	}
}
