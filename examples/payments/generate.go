// Package payments is the example service of the call package: one protobuf
// service (payments.v1, and payments.v2 beside it) and one Go handler,
// served at once as gRPC, gRPC-Web, Connect, REST+JSON, GraphQL and SOAP.
// See README.md.
//
// The generated code in gen/ is committed; regenerate it with
// `go generate ./examples/payments/` (needs protoc: apt-get install -y
// protobuf-compiler).
package payments

//go:generate bash ./generate.sh
