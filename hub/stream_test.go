package hub_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/broker"
)

// h2cClient speaks cleartext HTTP/2, as gRPC clients do.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// Each RPC protocol on the one port: gRPC (h2c), gRPC-Web and Connect.
func TestRPCProtocols(t *testing.T) {
	h := startHub(t, nil)
	protocols := map[string][]connect.ClientOption{
		"grpc":         {connect.WithGRPC()},
		"grpc-web":     {connect.WithGRPCWeb()},
		"connect":      nil,
		"connect-json": {connect.WithProtoJSON()},
	}
	for name, opts := range protocols {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := switchboardv1connect.NewSwitchboardServiceClient(h2cClient(), h.URL, opts...)
			topic := uniqueTopic(t)
			sub, err := c.Subscribe(ctx, connect.NewRequest(&v1.SubscribeRequest{
				Topic: topic, Group: "g-" + name, Start: &v1.StartPosition{Position: &v1.StartPosition_Earliest{Earliest: true}},
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			if !sub.Receive() || sub.Msg().GetSubscribed() == nil {
				t.Fatalf("first event is not subscribed: %v %v", sub.Msg(), sub.Err())
			}
			if _, err := c.Publish(ctx, connect.NewRequest(&v1.PublishRequest{Topic: topic, Message: &v1.Message{Body: &v1.Message_Text{Text: "hi " + name}}})); err != nil {
				t.Fatal(err)
			}
			if !sub.Receive() {
				t.Fatalf("no delivery: %v", sub.Err())
			}
			d := sub.Msg().GetDelivery()
			if d.GetMessage().GetText() != "hi "+name || d.GetAttempt() != 1 || d.GetToken() == "" {
				t.Fatalf("delivery = %v", d)
			}
			if _, err := c.Ack(ctx, connect.NewRequest(&v1.AckRequest{Token: d.GetToken()})); err != nil {
				t.Fatal(err)
			}
			_, err = c.Ack(ctx, connect.NewRequest(&v1.AckRequest{Token: d.GetToken()}))
			if connect.CodeOf(err) != connect.CodeFailedPrecondition {
				t.Fatalf("second ack: %v, want FailedPrecondition", err)
			}
			// A broker error keeps its code.
			_, err = c.DescribeGroup(ctx, connect.NewRequest(&v1.DescribeGroupRequest{Group: "nope"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("describe unknown group: %v, want NotFound", err)
			}
		})
	}
}

func TestHealthAndReflection(t *testing.T) {
	h := startHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := grpchealth.NewClient(h2cClient(), h.URL, connect.WithGRPC())
	res, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: switchboardv1connect.SwitchboardServiceName})
	if err != nil || res.Status != grpchealth.StatusServing {
		t.Fatalf("health check: %v %v", res, err)
	}
	rc := grpcreflect.NewClient(h2cClient(), h.URL, connect.WithGRPC())
	stream := rc.NewStream(ctx)
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(names), switchboardv1connect.SwitchboardServiceName) {
		t.Fatalf("reflection lists %v, want %s", names, switchboardv1connect.SwitchboardServiceName)
	}
}

// A consumer that never reads its stream costs bounded state: the hub hands
// out at most max_in_flight deliveries.
func TestSlowConsumerBounded(t *testing.T) {
	h := startHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := switchboardv1connect.NewSwitchboardServiceClient(h2cClient(), h.URL, connect.WithGRPC())
	topic := uniqueTopic(t)
	sub, err := c.Subscribe(ctx, connect.NewRequest(&v1.SubscribeRequest{Topic: topic, Group: "slow", MaxInFlight: 5}))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if !sub.Receive() {
		t.Fatal(sub.Err())
	}
	msgs := make([]*v1.Message, 200)
	for i := range msgs {
		msgs[i] = &v1.Message{Body: &v1.Message_Payload{Payload: make([]byte, 1024)}}
	}
	if _, err := c.PublishBatch(ctx, connect.NewRequest(&v1.PublishBatchRequest{Topic: topic, Messages: msgs})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the hub push what it may
	ga := h.Broker.(broker.GroupAdmin)
	gi, err := ga.DescribeGroup(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	if gi.InFlight > 5 || gi.InFlight == 0 {
		t.Fatalf("in flight = %d, want 1..5 (max_in_flight)", gi.InFlight)
	}
	if gi.Lag != 200 {
		t.Fatalf("lag = %d, want 200", gi.Lag)
	}
}

func TestSSEConsume(t *testing.T) {
	h := startHub(t, nil)
	topic := uniqueTopic(t)
	for i := range 3 {
		if code, body := h.call(t, "POST", "/v1/topics/"+topic+"/messages", fmt.Sprintf(`{"text": "m%d"}`, i)); code != 200 {
			t.Fatalf("publish: %d %v", code, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/v1/topics/"+topic+"/groups/sse/events?from=earliest&max_in_flight=2&ack_deadline=30s", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var event, id string
	var got []string
	for len(got) < 3 && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: ") && event == "delivery":
			var d struct {
				Token   string `json:"token"`
				Message struct {
					Text string `json:"text"`
				} `json:"message"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d); err != nil {
				t.Fatal(err)
			}
			if d.Token != id {
				t.Fatalf("event id %q != token %q", id, d.Token)
			}
			got = append(got, d.Message.Text)
			if code, body := h.call(t, "POST", "/v1/deliveries/"+d.Token+":ack", `{}`); code != 200 {
				t.Fatalf("ack: %d %v", code, body)
			}
		}
	}
	if strings.Join(got, ",") != "m0,m1,m2" {
		t.Fatalf("got %v, want m0,m1,m2", got)
	}
	_, body := h.call(t, "GET", "/v1/groups/sse", nil)
	if lag := body["group"].(map[string]any)["lag"]; lag != "0" {
		t.Fatalf("lag after acks = %v, want 0", lag)
	}
}
