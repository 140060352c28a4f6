package call_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	"github.com/switchboard-dev/switchboard/call"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
	"github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1/paymentsv1connect"
)

// latePanic sends one charge event, then panics: the response has started,
// so it cannot become an error answer any more.
type latePanic struct {
	paymentsv1connect.UnimplementedPaymentServiceHandler
}

func (latePanic) WatchCharges(_ context.Context, _ *connect.Request[paymentsv1.WatchChargesRequest], st *connect.ServerStream[paymentsv1.ChargeEvent]) error {
	if err := st.Send(&paymentsv1.ChargeEvent{Type: "created", Charge: &paymentsv1.Charge{Id: "ch_1"}}); err != nil {
		return err
	}
	panic("ledger: cannot connect to " + secret)
}

func (latePanic) GetCharge(_ context.Context, req *connect.Request[paymentsv1.GetChargeRequest]) (*connect.Response[paymentsv1.GetChargeResponse], error) {
	return connect.NewResponse(&paymentsv1.GetChargeResponse{Charge: &paymentsv1.Charge{Id: req.Msg.GetId()}}), nil
}

// A panic after the response started aborts that response — over the
// network and in process (a GraphQL subscription) — without crashing the
// server or showing the panic to anyone.
func TestHandlerPanicAfterResponseStarted(t *testing.T) {
	srv, err := call.NewServer(call.WithService(paymentsv1connect.NewPaymentServiceHandler(latePanic{})), call.WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	defer func() { stop(); <-done }()
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// gRPC: the event arrives, then the stream fails.
	c := paymentsv1connect.NewPaymentServiceClient(h2cClient(), base, connect.WithGRPC())
	stream, err := c.WatchCharges(ctx, connect.NewRequest(&paymentsv1.WatchChargesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() || stream.Msg().GetCharge().GetId() != "ch_1" {
		t.Fatalf("first event: %v", stream.Err())
	}
	if stream.Receive() || stream.Err() == nil {
		t.Fatal("an aborted stream must end with an error")
	}
	if strings.Contains(stream.Err().Error(), secret) {
		t.Errorf("grpc leaks the panic: %v", stream.Err())
	}
	_ = stream.Close()

	// GraphQL subscription: the in-process stream is aborted the same way.
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/graphql", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	wsWrite(t, ctx, ws, `{"type":"connection_init"}`)
	if m := wsRead(t, ctx, ws); m["type"] != "connection_ack" {
		t.Fatalf("want connection_ack, got %v", m)
	}
	wsWrite(t, ctx, ws, `{"id":"1","type":"subscribe","payload":{"query":"subscription { payments_v1_WatchCharges { charge { id } } }"}}`)
	var seen []string
	for {
		m := wsRead(t, ctx, ws)
		b, _ := json.Marshal(m)
		seen = append(seen, string(b))
		if m["type"] == "complete" || m["type"] == "error" {
			break
		}
	}
	all := strings.Join(seen, "\n")
	if !strings.Contains(all, `"id":"ch_1"`) || !strings.Contains(all, `"errors"`) && !strings.Contains(all, `"type":"error"`) {
		t.Errorf("want the event, then an error:\n%s", all)
	}
	if strings.Contains(all, secret) {
		t.Errorf("graphql leaks the panic:\n%s", all)
	}

	// The server is still up.
	res, err := c.GetCharge(ctx, connect.NewRequest(&paymentsv1.GetChargeRequest{Id: "x"}))
	if err != nil || res.Msg.GetCharge().GetId() != "x" {
		t.Fatalf("after the panics: %v", err)
	}
	st, _, body := do(t, http.MethodGet, base+"/soap/payments.v1.PaymentService?wsdl", "", "")
	if st != http.StatusOK {
		t.Fatalf("wsdl after the panics: %d %s", st, body)
	}
}
