package sqsface_test

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// rawJSON sends one JSON protocol request and returns status, the
// x-amzn-query-error header and the decoded body.
func rawJSON(t *testing.T, base, target, body string) (int, string, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	if target != "" {
		req.Header.Set("X-Amz-Target", target)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: answer is not JSON: %s", target, b)
	}
	return resp.StatusCode, resp.Header.Get("x-amzn-query-error"), out
}

type queryError struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	Error   struct {
		Type, Code, Message string
	}
	RequestID string `xml:"RequestId"`
}

// rawQuery sends one Query protocol request (form body as given).
func rawQuery(t *testing.T, base, path, form string) (int, string) {
	t.Helper()
	resp, err := http.Post(base+path, "application/x-www-form-urlencoded; charset=utf-8", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	qurl := s.URL + "/000000000000/bad"
	furl := s.URL + "/000000000000/bad.fifo"
	for _, body := range []string{`{"QueueName":"bad"}`, `{"QueueName":"bad.fifo","Attributes":{"FifoQueue":"true"}}`} {
		if st, _, out := rawJSON(t, s.URL, "AmazonSQS.CreateQueue", body); st != 200 {
			t.Fatalf("create: %d %v", st, out)
		}
	}
	entries := func(n int, sameID bool) (js string, form string) {
		var je []string
		f := url.Values{"Action": {"SendMessageBatch"}, "QueueUrl": {qurl}}
		for i := 1; i <= n; i++ {
			id := fmt.Sprintf("e%d", i)
			if sameID {
				id = "same"
			}
			je = append(je, fmt.Sprintf(`{"Id":%q,"MessageBody":"m%d"}`, id, i))
			f.Set(fmt.Sprintf("SendMessageBatchRequestEntry.%d.Id", i), id)
			f.Set(fmt.Sprintf("SendMessageBatchRequestEntry.%d.MessageBody", i), fmt.Sprintf("m%d", i))
		}
		return fmt.Sprintf(`{"QueueUrl":%q,"Entries":[%s]}`, qurl, strings.Join(je, ",")), f.Encode()
	}
	batch11J, batch11Q := entries(11, false)
	dupJ, dupQ := entries(2, true)
	big := strings.Repeat("x", 300<<10)
	cases := []struct {
		name              string
		target, jsonBody  string
		form              string
		shape, code       string // JSON __type suffix, Query code (also x-amzn-query-error)
		jsonCode          string // when the JSON protocol's code differs
		noQuery, noJSON   bool
		wantStatus        int
		wantMessageSubstr string
	}{
		{name: "unknown operation", target: "AmazonSQS.Frobnicate", jsonBody: `{}`, form: "Action=Frobnicate", shape: "UnknownOperationException", code: "InvalidAction", jsonCode: "UnknownOperationException"},
		{name: "malformed body", target: "AmazonSQS.CreateQueue", jsonBody: `{"QueueName":`, form: "Action=CreateQueue&QueueName=%zz", shape: "SerializationException", code: "MalformedQueryString", jsonCode: "SerializationException"},
		{name: "batch of 11", target: "AmazonSQS.SendMessageBatch", jsonBody: batch11J, form: batch11Q, shape: "TooManyEntriesInBatchRequest", code: "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"},
		{name: "duplicate batch ids", target: "AmazonSQS.SendMessageBatch", jsonBody: dupJ, form: dupQ, shape: "BatchEntryIdsNotDistinct", code: "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"},
		{name: "300 KiB message", target: "AmazonSQS.SendMessage", jsonBody: fmt.Sprintf(`{"QueueUrl":%q,"MessageBody":%q}`, qurl, big),
			form: url.Values{"Action": {"SendMessage"}, "QueueUrl": {qurl}, "MessageBody": {big}}.Encode(), shape: "InvalidParameterValue", code: "InvalidParameterValue", wantMessageSubstr: "Message must be shorter than 262144 bytes"},
		{name: "invalid receipt handle", target: "AmazonSQS.DeleteMessage", jsonBody: fmt.Sprintf(`{"QueueUrl":%q,"ReceiptHandle":"garbage"}`, qurl),
			form: url.Values{"Action": {"DeleteMessage"}, "QueueUrl": {qurl}, "ReceiptHandle": {"garbage"}}.Encode(), shape: "ReceiptHandleIsInvalid", code: "ReceiptHandleIsInvalid"},
		{name: "FIFO send without MessageGroupId", target: "AmazonSQS.SendMessage", jsonBody: fmt.Sprintf(`{"QueueUrl":%q,"MessageBody":"x","MessageDeduplicationId":"d"}`, furl),
			form: url.Values{"Action": {"SendMessage"}, "QueueUrl": {furl}, "MessageBody": {"x"}, "MessageDeduplicationId": {"d"}}.Encode(), shape: "MissingParameter", code: "MissingParameter"},
		{name: "forbidden queue name", target: "AmazonSQS.CreateQueue", jsonBody: `{"QueueName":"no spaces/or slashes!"}`,
			form: url.Values{"Action": {"CreateQueue"}, "QueueName": {"no spaces/or slashes!"}}.Encode(), shape: "InvalidParameterValue", code: "InvalidParameterValue"},
		{name: "nonexistent queue", target: "AmazonSQS.SendMessage", jsonBody: fmt.Sprintf(`{"QueueUrl":%q,"MessageBody":"x"}`, s.URL+"/000000000000/nope"),
			form: url.Values{"Action": {"SendMessage"}, "QueueUrl": {s.URL + "/000000000000/nope"}, "MessageBody": {"x"}}.Encode(), shape: "QueueDoesNotExist", code: "AWS.SimpleQueueService.NonExistentQueue"},
		{name: "receive 11", target: "AmazonSQS.ReceiveMessage", jsonBody: fmt.Sprintf(`{"QueueUrl":%q,"MaxNumberOfMessages":11}`, qurl),
			form: url.Values{"Action": {"ReceiveMessage"}, "QueueUrl": {qurl}, "MaxNumberOfMessages": {"11"}}.Encode(), shape: "InvalidParameterValue", code: "InvalidParameterValue"},
		{name: "unknown queue attribute", target: "AmazonSQS.SetQueueAttributes", jsonBody: fmt.Sprintf(`{"QueueUrl":%q,"Attributes":{"Colour":"blue"}}`, qurl),
			form: url.Values{"Action": {"SetQueueAttributes"}, "QueueUrl": {qurl}, "Attribute.1.Name": {"Colour"}, "Attribute.1.Value": {"blue"}}.Encode(), shape: "InvalidAttributeName", code: "InvalidAttributeName"},
		{name: "wrong type", target: "AmazonSQS.ReceiveMessage", jsonBody: fmt.Sprintf(`{"QueueUrl":%q,"MaxNumberOfMessages":"many"}`, qurl),
			form: url.Values{"Action": {"ReceiveMessage"}, "QueueUrl": {qurl}, "MaxNumberOfMessages": {"many"}}.Encode(), shape: "InvalidParameterValue", code: "InvalidParameterValue"},
		{name: "missing action", form: "QueueName=x", code: "MissingParameter", noJSON: true},
		{name: "missing target", jsonBody: `{}`, shape: "UnknownOperationException", noQuery: true},
	}
	for _, tc := range cases {
		want := tc.wantStatus
		if want == 0 {
			want = 400
		}
		if !tc.noJSON {
			st, qe, out := rawJSON(t, s.URL, tc.target, tc.jsonBody)
			code := tc.code
			if tc.jsonCode != "" {
				code = tc.jsonCode
			}
			if st != want || out["__type"] != "com.amazonaws.sqs#"+tc.shape || (code != "" && qe != code+";Sender") {
				t.Errorf("%s (JSON): got %d %q %v, want %d __type %s, x-amzn-query-error %s;Sender", tc.name, st, qe, out, want, tc.shape, code)
			}
			if msg, _ := out["message"].(string); msg == "" || !strings.Contains(msg, tc.wantMessageSubstr) {
				t.Errorf("%s (JSON): message %q lacks %q", tc.name, msg, tc.wantMessageSubstr)
			}
		}
		if !tc.noQuery {
			st, body := rawQuery(t, s.URL, "/", tc.form)
			var qe queryError
			if err := xml.Unmarshal([]byte(body), &qe); err != nil {
				t.Fatalf("%s (Query): not an ErrorResponse: %s", tc.name, body)
			}
			if st != want || qe.Error.Code != tc.code || qe.Error.Type != "Sender" || qe.RequestID == "" || !strings.Contains(body, `xmlns="http://queue.amazonaws.com/doc/2012-11-05/"`) {
				t.Errorf("%s (Query): got %d %s", tc.name, st, body)
			}
			if !strings.Contains(qe.Error.Message, tc.wantMessageSubstr) {
				t.Errorf("%s (Query): message %q lacks %q", tc.name, qe.Error.Message, tc.wantMessageSubstr)
			}
		}
	}
	// Nothing of the refused sends was stored.
	st, _, out := rawJSON(t, s.URL, "AmazonSQS.GetQueueAttributes", fmt.Sprintf(`{"QueueUrl":%q,"AttributeNames":["ApproximateNumberOfMessages"]}`, qurl))
	if attrs, _ := out["Attributes"].(map[string]any); st != 200 || attrs["ApproximateNumberOfMessages"] != "0" {
		t.Fatalf("after bad input: %d %v", st, out)
	}
}

// TestQueryPathStyle: older SDKs post Query calls to the queue URL itself
// without a QueueUrl parameter.
func TestQueryPathStyle(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil)
	if st, body := rawQuery(t, s.URL, "/", "Action=CreateQueue&QueueName=paths&Attribute.1.Name=VisibilityTimeout&Attribute.1.Value=7"); st != 200 || !strings.Contains(body, "<CreateQueueResult><QueueUrl>"+s.URL+"/000000000000/paths</QueueUrl>") {
		t.Fatalf("create: %d %s", st, body)
	}
	st, body := rawQuery(t, s.URL, "/000000000000/paths", "Action=SendMessage&MessageBody=hello&MessageAttribute.1.Name=k&MessageAttribute.1.Value.DataType=String&MessageAttribute.1.Value.StringValue=v")
	if st != 200 || !strings.Contains(body, "<MD5OfMessageBody>5d41402abc4b2a76b9719d911017c592</MD5OfMessageBody>") {
		t.Fatalf("send: %d %s", st, body)
	}
	st, body = rawQuery(t, s.URL, "/000000000000/paths", "Action=ReceiveMessage&MessageAttributeName.1=All&AttributeName.1=All")
	for _, want := range []string{"<Body>hello</Body>", "<MessageAttribute><Name>k</Name><Value><StringValue>v</StringValue><DataType>String</DataType></Value></MessageAttribute>", "<Attribute><Name>ApproximateReceiveCount</Name><Value>1</Value></Attribute>"} {
		if st != 200 || !strings.Contains(body, want) {
			t.Fatalf("receive: %d %s\nlacks %s", st, body, want)
		}
	}
	st, body = rawQuery(t, s.URL, "/000000000000/paths", "Action=GetQueueAttributes&AttributeName.1=VisibilityTimeout")
	if st != 200 || !strings.Contains(body, "<Attribute><Name>VisibilityTimeout</Name><Value>7</Value></Attribute>") {
		t.Fatalf("attributes: %d %s", st, body)
	}
}
