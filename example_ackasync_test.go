package switchboard_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/switchboard-dev/switchboard"
)

// Acking without waiting for each round trip: every ack is started with
// AckAsync and its confirmed outcome arrives in the callback, so one
// goroutine keeps many acks in flight. (consume.Runtime acks this way.)
func ExampleClient_Subscribe_ackAsync() {
	ctx := context.Background()
	sb, err := switchboard.Open(ctx, "embedded://?memory")
	if err != nil {
		panic(err)
	}
	defer sb.Close()

	sub, err := sb.Subscribe(ctx, "orders.placed", "billing", switchboard.FromEarliest())
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	for i := range 3 {
		if _, err := sb.Publish(ctx, "orders.placed", switchboard.Msg{Payload: fmt.Appendf(nil, "order %d", i)}); err != nil {
			panic(err)
		}
	}

	var pending sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for range 3 {
		d := <-sub.Deliveries()
		pending.Add(1)
		d.AckAsync(ctx, func(err error) { // must not block
			defer pending.Done()
			if err != nil {
				fmt.Println("ack failed; the message comes back:", err)
				return
			}
			mu.Lock()
			acked++
			mu.Unlock()
		})
	}
	pending.Wait() // before closing the subscription
	fmt.Println("acked:", acked)
	// Output:
	// acked: 3
}
