#!/usr/bin/env bash
# Regenerates the Go code of the payments example (gen/payments/v1, v2) from
# proto/. Run through `go generate ./examples/payments/...` (see generate.go).
#
# The same toolchain as api/generate.sh: protoc from Debian
# (apt-get install -y protobuf-compiler) and the plugins at pinned versions,
# installed into a temporary directory. google/api/*.proto come from the
# repository's api/third_party.
set -euo pipefail

PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_CONNECT_GO=connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v protoc >/dev/null 2>&1; then
	echo "generate.sh: protoc not found; install it with: apt-get install -y protobuf-compiler" >&2
	exit 1
fi
wkt=""
for d in /usr/include /usr/local/include; do
	if [ -f "$d/google/protobuf/timestamp.proto" ]; then wkt="$d"; break; fi
done
if [ -z "$wkt" ]; then
	echo "generate.sh: google/protobuf/timestamp.proto not found; install protobuf-compiler (Debian ships them in /usr/include)" >&2
	exit 1
fi

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "$PROTOC_GEN_GO"
GOBIN="$bin" go install "$PROTOC_GEN_CONNECT_GO"

cd "$here/proto"
protoc \
	-I . -I "$root/api/third_party" -I "$wkt" \
	--plugin=protoc-gen-go="$bin/protoc-gen-go" \
	--plugin=protoc-gen-connect-go="$bin/protoc-gen-connect-go" \
	--go_out="$root" --go_opt=module=github.com/switchboard-dev/switchboard \
	--connect-go_out="$root" --connect-go_opt=module=github.com/switchboard-dev/switchboard \
	payments/v1/payments.proto payments/v2/payments.proto
