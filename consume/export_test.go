package consume

import (
	"context"

	"github.com/switchboard-dev/switchboard/message"
)

// CallHandler calls h's plain function (for benchmarks and tests).
func CallHandler(ctx context.Context, h Handler, m *message.Message) error { return h.plain(ctx, m) }
