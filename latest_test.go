package switchboard_test

import (
	"context"
	"errors"
	"testing"

	"github.com/switchboard-dev/switchboard"
	"github.com/switchboard-dev/switchboard/broker/embedded"
)

func TestClientLatest(t *testing.T) {
	b, err := embedded.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	sb := switchboard.New(b)
	defer sb.Close()
	ctx := context.Background()
	for _, m := range []switchboard.Msg{{Key: "sku-2", Payload: []byte("7")}, {Key: "sku-1", Payload: []byte("5")}, {Key: "sku-1", Payload: []byte("4")}} {
		if _, err := sb.Publish(ctx, "stock", m); err != nil {
			t.Fatal(err)
		}
	}
	m, age, err := sb.Latest(ctx, "stock", "sku-1")
	if err != nil || string(m.Payload) != "4" || age < 0 {
		t.Fatalf("Latest(sku-1): %v, %s, %v; want payload 4", m, age, err)
	}
	if _, _, err := sb.Latest(ctx, "stock", "sku-3"); !errors.Is(err, switchboard.ErrNoValue) {
		t.Fatalf("Latest(sku-3): %v, want ErrNoValue", err)
	}
}
