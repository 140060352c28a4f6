// Drives Switchboard's SQS face with @aws-sdk/client-sqs (JSON protocol).
// Run by sqsface's node_test.go: SQS_ENDPOINT=http://127.0.0.1:PORT node sqs.mjs
// It prints one JSON line with what it saw and exits 1 on any failure.
import {
  SQSClient, CreateQueueCommand, GetQueueAttributesCommand, SendMessageCommand,
  SendMessageBatchCommand, ReceiveMessageCommand, DeleteMessageCommand,
  DeleteMessageBatchCommand, ChangeMessageVisibilityCommand, ChangeMessageVisibilityBatchCommand,
  GetQueueUrlCommand, DeleteQueueCommand, ListQueuesCommand, PurgeQueueCommand,
  TagQueueCommand, ListQueueTagsCommand, QueueDoesNotExist,
} from "@aws-sdk/client-sqs";

const sqs = new SQSClient({
  endpoint: process.env.SQS_ENDPOINT,
  region: "us-east-1",
  credentials: { accessKeyId: "AKIDNODE", secretAccessKey: "dummy" },
  maxAttempts: 1,
});
const out = {};
const check = (cond, what) => { if (!cond) throw new Error("check failed: " + what); };

async function receiveAll(QueueUrl, n, extra = {}) {
  const got = {};
  const until = Date.now() + 20000;
  while (Object.keys(got).length < n && Date.now() < until) {
    const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 2, ...extra }));
    for (const m of r.Messages ?? []) got[m.Body] = m;
  }
  return got;
}

try {
  const dlq = (await sqs.send(new CreateQueueCommand({ QueueName: "node-dlq" }))).QueueUrl;
  const arn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: dlq, AttributeNames: ["QueueArn"] }))).Attributes.QueueArn;
  const q = (await sqs.send(new CreateQueueCommand({ QueueName: "node-std", Attributes: {
    VisibilityTimeout: "1", RedrivePolicy: JSON.stringify({ deadLetterTargetArn: arn, maxReceiveCount: 1 }) } }))).QueueUrl;
  const fq = (await sqs.send(new CreateQueueCommand({ QueueName: "node.fifo", Attributes: { FifoQueue: "true" } }))).QueueUrl;

  const sent = await sqs.send(new SendMessageCommand({ QueueUrl: q, MessageBody: "this is a test message",
    MessageAttributes: { timestamp: { DataType: "Number", StringValue: "1493147359900" } } }));
  out.sendMD5OfMessageAttributes = sent.MD5OfMessageAttributes;
  const batch = await sqs.send(new SendMessageBatchCommand({ QueueUrl: q, Entries: [
    { Id: "a", MessageBody: "one", MessageAttributes: { bin: { DataType: "Binary", BinaryValue: new Uint8Array([2, 3, 4]) } } },
    { Id: "b", MessageBody: "two", DelaySeconds: 1 },
  ] }));
  check(batch.Successful.length === 2, "batch send");

  const got = await receiveAll(q, 3, { VisibilityTimeout: 300, MessageAttributeNames: ["All"], MessageSystemAttributeNames: ["All"] });
  out.received = Object.keys(got).sort();
  const m = got["this is a test message"];
  check(m && m.MD5OfMessageAttributes === "235c5c510d26fb653d073faed50ae77c", "receive MD5OfMessageAttributes");
  check(m.Attributes.ApproximateReceiveCount === "1", "ApproximateReceiveCount");
  check(Buffer.from(got["one"].MessageAttributes.bin.BinaryValue).equals(Buffer.from([2, 3, 4])), "binary attribute");

  const attrs = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: q, AttributeNames: ["All"] }))).Attributes;
  out.notVisible = attrs.ApproximateNumberOfMessagesNotVisible;

  await sqs.send(new DeleteMessageCommand({ QueueUrl: q, ReceiptHandle: m.ReceiptHandle }));
  await sqs.send(new DeleteMessageBatchCommand({ QueueUrl: q, Entries: [{ Id: "x", ReceiptHandle: got["two"].ReceiptHandle }] }));
  await sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl: q, ReceiptHandle: got["one"].ReceiptHandle, VisibilityTimeout: 0 }));
  // "one" was received once (maxReceiveCount 1): the next receive moves it.
  let dead;
  for (let i = 0; i < 5 && !dead; i++) {
    await sqs.send(new ReceiveMessageCommand({ QueueUrl: q, WaitTimeSeconds: 1 }));
    const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl: dlq, WaitTimeSeconds: 1 }));
    dead = r.Messages?.[0];
  }
  out.deadLetter = dead?.Body;

  for (const body of ["f1", "f2", "f1"]) {
    await sqs.send(new SendMessageCommand({ QueueUrl: fq, MessageBody: body, MessageGroupId: "g", MessageDeduplicationId: body }));
  }
  out.fifoOrder = [];
  for (let i = 0; i < 6 && out.fifoOrder.length < 2; i++) {
    const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl: fq, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));
    for (const x of r.Messages ?? []) {
      out.fifoOrder.push(x.Body);
      await sqs.send(new ChangeMessageVisibilityBatchCommand({ QueueUrl: fq, Entries: [{ Id: "v", ReceiptHandle: x.ReceiptHandle, VisibilityTimeout: 30 }] }));
      await sqs.send(new DeleteMessageCommand({ QueueUrl: fq, ReceiptHandle: x.ReceiptHandle }));
    }
  }
  await sqs.send(new TagQueueCommand({ QueueUrl: q, Tags: { team: "node" } }));
  out.tags = (await sqs.send(new ListQueueTagsCommand({ QueueUrl: q }))).Tags;
  out.queues = (await sqs.send(new ListQueuesCommand({ QueueNamePrefix: "node" }))).QueueUrls.length;
  await sqs.send(new PurgeQueueCommand({ QueueUrl: dlq }));
  await sqs.send(new DeleteQueueCommand({ QueueUrl: fq }));
  try {
    await sqs.send(new GetQueueUrlCommand({ QueueName: "node.fifo" }));
  } catch (e) {
    out.deletedError = { name: e.name, code: e.Code ?? e.name, isQueueDoesNotExist: e instanceof QueueDoesNotExist };
  }
  try {
    await sqs.send(new SendMessageBatchCommand({ QueueUrl: q, Entries: Array.from({ length: 11 }, (_, i) => ({ Id: "e" + i, MessageBody: "m" })) }));
  } catch (e) {
    out.batch11Error = e.name;
  }
  console.log(JSON.stringify(out));
} catch (e) {
  console.log(JSON.stringify({ ...out, error: String(e), stack: e.stack }));
  process.exit(1);
}
