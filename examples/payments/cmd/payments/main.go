// Command payments serves the payments example on one port (default
// 127.0.0.1:8080) as gRPC, gRPC-Web, Connect, REST, GraphQL and SOAP.
//
//	go run ./examples/payments/cmd/payments --addr 127.0.0.1:8080
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/switchboard-dev/switchboard/examples/payments"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	srv, err := payments.NewServer(payments.NewStore(nil), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	fmt.Fprintf(os.Stderr, "payments: serving on %s (gRPC, Connect, REST, GraphQL at /graphql, SOAP at /soap/payments.v1.PaymentService)\n", *addr)
	if err := srv.ListenAndServe(ctx, *addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
