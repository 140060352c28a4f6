package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite"

	"github.com/switchboard-dev/switchboard"
	"github.com/switchboard-dev/switchboard/message"
	"github.com/switchboard-dev/switchboard/outbox"
)

// An order and its "orders.placed" event are saved in one SQLite
// transaction; the relay forwards the event to the embedded broker.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "outbox-example-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if err := outbox.Migrate(ctx, db, outbox.SQLite); err != nil {
		panic(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)`); err != nil {
		panic(err)
	}

	sb, err := switchboard.Open(ctx, "embedded://?memory")
	if err != nil {
		panic(err)
	}
	defer sb.Close()

	// The application's transaction: the order row and its event commit
	// together, or neither does.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, total) VALUES ('o-1', 4200)`); err != nil {
		panic(err)
	}
	if _, err := outbox.Publish(ctx, tx, message.Message{
		Topic: "orders.placed", Key: "o-1", ContentType: "application/json",
		Payload: []byte(`{"id":"o-1","total":4200}`),
	}); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}

	// The relay, normally started once at program start.
	relay, err := outbox.NewRelay(db, outbox.SQLite, sb.Broker())
	if err != nil {
		panic(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()

	sub, err := sb.Subscribe(ctx, "orders.placed", "billing", switchboard.FromEarliest())
	if err != nil {
		panic(err)
	}
	d := <-sub.Deliveries()
	fmt.Printf("%s %s %s\n", d.Message.Topic, d.Message.Key, d.Message.Payload)
	_ = d.Ack(ctx)
	_ = sub.Close()

	// The row is deleted once the broker acknowledged the publish.
	for {
		lag, err := relay.Lag(ctx)
		if err != nil {
			panic(err)
		}
		if lag.Pending == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("outbox empty")

	stop()
	if err := <-done; err != nil {
		panic(err)
	}
	// Output:
	// orders.placed o-1 {"id":"o-1","total":4200}
	// outbox empty
}
