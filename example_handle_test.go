package switchboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard"
	"github.com/switchboard-dev/switchboard/consume"
)

type OrderPlaced struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

// A typed handler with retries: the first attempt fails, the retry succeeds.
func ExampleClient_Handle() {
	ctx := context.Background()
	sb, err := switchboard.Open(ctx, "embedded://?memory")
	if err != nil {
		panic(err)
	}
	defer sb.Close()

	done := make(chan struct{})
	attempts := 0
	err = sb.Handle("orders.placed", "email", func(ctx context.Context, m *OrderPlaced) error {
		attempts++
		if attempts == 1 {
			return errors.New("mail server busy")
		}
		fmt.Printf("email for order %s (%d), attempt %d\n", m.ID, m.Total, consume.DeliveryFrom(ctx).Info.Attempt)
		close(done)
		return nil
	}, switchboard.Concurrency(1), switchboard.Retry(switchboard.Exponential(10*time.Millisecond, time.Second), 5),
		switchboard.FromEarliest())
	if err != nil {
		panic(err)
	}

	payload, _ := json.Marshal(OrderPlaced{ID: "o-1", Total: 42})
	if _, err := sb.Publish(ctx, "orders.placed", switchboard.Msg{Payload: payload, ContentType: "application/json"}); err != nil {
		panic(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error)
	go func() { ran <- sb.Run(runCtx) }()
	<-done
	stop() // graceful: in-flight work finishes and is acked
	fmt.Println("run:", <-ran)
	// Output:
	// email for order o-1 (42), attempt 2
	// run: <nil>
}

// A message that cannot be decoded goes to the dead-letter topic at once.
func ExampleClient_Handle_deadLetter() {
	ctx := context.Background()
	sb, _ := switchboard.Open(ctx, "embedded://?memory")
	defer sb.Close()

	_ = sb.Handle("orders.placed", "billing", func(ctx context.Context, m *OrderPlaced) error { return nil },
		switchboard.FromEarliest())
	sb.Publish(ctx, "orders.placed", switchboard.Msg{Payload: []byte("{oops"), ContentType: "application/json"})

	dlq, _ := sb.Subscribe(ctx, "$dlq.billing", "ops", switchboard.FromEarliest())
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error)
	go func() { ran <- sb.Run(runCtx) }()
	d := <-dlq.Deliveries()
	info := consume.DeadLetterInfo(d.Message)
	fmt.Println(info.Reason, info.Attempts, info.Topic)
	d.Ack(ctx)
	stop()
	<-ran
	// Output: decode 1 orders.placed
}
