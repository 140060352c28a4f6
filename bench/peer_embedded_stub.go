//go:build noembedded

package main

import (
	"context"
	"errors"
)

// Built with -tags noembedded (for benchmarking the peers while the engine
// does not compile): the embedded system is reported as skipped.
func openEmbeddedPeer(ctx context.Context, parent string) (brokerPeer, error) {
	return nil, errors.New("built with -tags noembedded")
}
