package hub

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// sseBatch is the most deliveries written to an event stream at one flush.
const sseBatch = 64

// serveEvents streams a subscription as Server-Sent Events, for REST
// clients:
//
//	GET /v1/topics/{topic}/groups/{group}/events   a durable group
//	GET /v1/topics/{topic}/events                  ephemeral (live only)
//
// Query parameters: from (earliest, latest, a sequence number or an RFC 3339
// time), max_in_flight, ack_deadline (e.g. 30s), max_attempts,
// ordered_by_key (true/false). The first event is "subscribed"; each
// "delivery" event carries a Delivery as JSON and has the delivery token as
// its id. Settle with POST /v1/deliveries/{token}:ack (or :nack, :term,
// :extend). At most max_in_flight deliveries are unsettled at a time.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var err error
	defer func() {
		s.metrics.observe("SSE", err, time.Since(start))
		reqInfoFrom(r.Context()).set("SSE", err)
	}()
	req, err := eventsRequest(r)
	if err != nil {
		writeError(w, err)
		return
	}
	rc := http.NewResponseController(w)
	ls, err := s.attach(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	defer ls.close()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var buf bytes.Buffer
	enc := protojson.MarshalOptions{}
	write := func(name, id string, m proto.Message) error {
		if id != "" {
			buf.WriteString("id: " + id + "\n")
		}
		buf.WriteString("event: " + name + "\ndata: ")
		b, err := enc.MarshalAppend(buf.AvailableBuffer(), m)
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteString("\n\n")
		return nil
	}
	flush := func() error {
		defer buf.Reset()
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := write("subscribed", "", &v1.Subscribed{SubscriptionId: ls.st.id, MaxInFlight: int32(ls.maxInFlight)}); err != nil || flush() != nil {
		return
	}
	// Deliveries ready together are written together, with one flush.
	err = ls.pump(r.Context(), sseBatch, func(ds []*v1.Delivery) error {
		for _, d := range ds {
			if err := write("delivery", d.GetToken(), d); err != nil {
				return err
			}
		}
		return flush()
	}, s.cfg.SSEKeepAlive, func() error {
		if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil {
		// The status line is gone; say why in a final event.
		if ce, ok := err.(*connect.Error); ok {
			_, _ = fmt.Fprintf(w, "event: error\ndata: {\"code\":%d,\"message\":%q}\n\n", int(ce.Code()), ce.Message())
			_ = rc.Flush()
		}
	}
}

// eventsRequest parses the path and query of an events request, strictly:
// an unknown parameter is an error.
func eventsRequest(r *http.Request) (*v1.SubscribeRequest, error) {
	req := &v1.SubscribeRequest{Topic: r.PathValue("topic"), Group: r.PathValue("group")}
	for k, vs := range r.URL.Query() {
		v := vs[len(vs)-1]
		switch k {
		case "from":
			st, err := parseFrom(v)
			if err != nil {
				return nil, err
			}
			req.Start = st
		case "max_in_flight", "max_attempts":
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return nil, invalid("%s=%q is not a whole number", k, v)
			}
			if k == "max_in_flight" {
				req.MaxInFlight = int32(n)
			} else {
				req.MaxAttempts = int32(n)
			}
		case "ack_deadline":
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, invalid("ack_deadline=%q is not a duration; use e.g. 30s or 2m", v)
			}
			req.AckDeadline = durationpb.New(d)
		case "ordered_by_key":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, invalid("ordered_by_key=%q is not true or false", v)
			}
			req.OrderedByKey = b
		default:
			return nil, invalid("unknown query parameter %q; use from, max_in_flight, ack_deadline, max_attempts or ordered_by_key", k)
		}
	}
	return req, nil
}

// parseFrom reads a start position: earliest, latest, a sequence number or
// an RFC 3339 time.
func parseFrom(v string) (*v1.StartPosition, error) {
	switch strings.ToLower(v) {
	case "", "latest":
		return nil, nil
	case "earliest":
		return &v1.StartPosition{Position: &v1.StartPosition_Earliest{Earliest: true}}, nil
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		return &v1.StartPosition{Position: &v1.StartPosition_Seq{Seq: n}}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return &v1.StartPosition{Position: &v1.StartPosition_Time{Time: timestamppb.New(t)}}, nil
	}
	return nil, apiconv.NewError(connect.CodeInvalidArgument, apiconv.ReasonInvalid,
		fmt.Sprintf("from=%q: use earliest, latest, a sequence number (e.g. 42) or an RFC 3339 time (e.g. 2025-01-02T15:04:05Z)", v))
}
