// Package switchboardv1 is the generated Go code of the hub API
// (switchboard.proto): messages, and the Connect client and handler in
// switchboardv1connect. Do not edit the generated files; change the .proto
// and run `go generate ./api/...` (needs protoc: apt-get install -y
// protobuf-compiler).
package switchboardv1

//go:generate bash ../../generate.sh
