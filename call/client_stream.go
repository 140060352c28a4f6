package call

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

	"connectrpc.com/connect"
)

// WrapStreamingClient implements connect.Interceptor. A stream meets its
// target's circuit breaker as a unary call does: while the breaker is
// open, opening a stream fails at once (Unavailable, ErrCircuitOpen)
// without reaching the server, and a half-open breaker lets one stream
// through as its probe. A stream's outcome counts once: its first message
// (or a clean end) is a success, an error from Receive a failure by the
// same rule as for unary calls; a stream the caller closes before either
// counts as a success. Streams get no default deadline (they may be
// long-lived) and no retries (a stream cannot be replayed safely).
func (ci *ClientInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		t := ci.target(conn.Peer().Addr)
		if err := t.allow(ci); err != nil {
			// Nothing is sent: connect's client conn starts its request
			// on the first Send or CloseRequest, which never come.
			return &refusedStream{StreamingClientConn: conn, err: err}
		}
		return &breakerStream{StreamingClientConn: conn, ci: ci, t: t}
	}
}

// breakerStream reports a stream's outcome to its target's breaker once.
type breakerStream struct {
	connect.StreamingClientConn
	ci   *ClientInterceptor
	t    *target
	once sync.Once
}

func (s *breakerStream) done(err error) { s.once.Do(func() { s.t.record(s.ci, err) }) }

func (s *breakerStream) Receive(m any) error {
	err := s.StreamingClientConn.Receive(m)
	if errors.Is(err, io.EOF) {
		s.done(nil)
	} else {
		s.done(err)
	}
	return err
}

func (s *breakerStream) CloseResponse() error {
	err := s.StreamingClientConn.CloseResponse()
	s.done(nil) // closed by the caller before an outcome: not the target's fault
	return err
}

// refusedStream is a stream an open breaker refused: every call fails
// with err, and nothing reaches the network.
type refusedStream struct {
	connect.StreamingClientConn
	err error
}

func (s *refusedStream) Send(any) error               { return s.err }
func (s *refusedStream) Receive(any) error            { return s.err }
func (s *refusedStream) CloseRequest() error          { return nil }
func (s *refusedStream) CloseResponse() error         { return nil }
func (s *refusedStream) ResponseHeader() http.Header  { return http.Header{} }
func (s *refusedStream) ResponseTrailer() http.Header { return http.Header{} }
