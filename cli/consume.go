package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

type consumeFlags struct {
	group       string
	from        string
	max         int
	ackDeadline time.Duration
	maxInFlight int
	idle        time.Duration
}

// deliveryLine is how consume prints one delivery (one JSON object a line).
type deliveryLine struct {
	Topic       string            `json:"topic"`
	ID          string            `json:"id"`
	Key         string            `json:"key,omitempty"`
	Seq         uint64            `json:"seq,omitempty"`
	Group       string            `json:"group,omitempty"`
	Attempt     int               `json:"attempt,omitempty"`
	Redelivered bool              `json:"redelivered,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	ContentType string            `json:"contentType,omitempty"`
	PublishedAt *time.Time        `json:"publishedAt,omitempty"`
	Text        *string           `json:"text,omitempty"`
	Payload     string            `json:"payload,omitempty"` // base64, when not UTF-8
}

func toLine(d *broker.Delivery) deliveryLine {
	m := d.Message
	l := deliveryLine{
		Topic: m.Topic, ID: m.ID, Key: m.Key, Seq: d.Info.Seq, Group: d.Info.Group,
		Attempt: d.Info.Attempt, Redelivered: d.Info.Redelivered, Headers: m.Headers, ContentType: m.ContentType,
	}
	if !m.PublishedAt.IsZero() {
		t := m.PublishedAt
		l.PublishedAt = &t
	}
	if utf8.Valid(m.Payload) {
		s := string(m.Payload)
		l.Text = &s
	} else {
		l.Payload = base64.StdEncoding.EncodeToString(m.Payload)
	}
	return l
}

func (a *app) consumeCmd() *cobra.Command {
	f := &consumeFlags{}
	cmd := &cobra.Command{
		Use:   "consume TOPIC",
		Short: "Print messages of a topic as JSON lines, acknowledging each once printed",
		Long: `Consume TOPIC (a name or a pattern with '*' and '>') in consumer group --group and print
each delivery as one JSON line; a delivery is acknowledged once its line is written. Without
--group the subscription is ephemeral (live messages only, like tail). Stops after --max
messages, after --idle without a message, or on Ctrl-C.`,
		Example: `  switchboard consume orders.placed --group email --from earliest
  switchboard consume 'orders.>' --group audit --from 2025-01-02T15:04:05Z --max 10
  switchboard consume orders.placed --group replay --from 42 --idle 2s | jq .text`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return a.consume(cmd.Context(), args[0], f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.group, "group", "", "consumer group (durable); empty: ephemeral")
	fl.StringVar(&f.from, "from", "latest", "where a new group starts: earliest, latest, a sequence number or an RFC 3339 time")
	fl.IntVar(&f.max, "max", 0, "stop after this many messages (0: no limit)")
	fl.DurationVar(&f.ackDeadline, "ack-deadline", 0, "redeliver a message not acknowledged within this time (default: backend's)")
	fl.IntVar(&f.maxInFlight, "max-in-flight", 0, "unacknowledged messages at a time (default: hub's)")
	fl.DurationVar(&f.idle, "idle", 0, "stop after this long without a message (0: wait forever)")
	return cmd
}

func (a *app) tailCmd() *cobra.Command {
	f := &consumeFlags{}
	cmd := &cobra.Command{
		Use:   "tail TOPIC",
		Short: "Print live messages of a topic (ephemeral: nothing is kept or acknowledged)",
		Example: `  switchboard tail 'orders.>'
  switchboard tail orders.placed --max 5`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return a.consume(cmd.Context(), args[0], f) },
	}
	cmd.Flags().IntVar(&f.max, "max", 0, "stop after this many messages (0: no limit)")
	cmd.Flags().DurationVar(&f.idle, "idle", 0, "stop after this long without a message (0: wait forever)")
	f.from = "latest"
	return cmd
}

// parseStart reads --from.
func parseStart(v string) (broker.StartPosition, error) {
	switch strings.ToLower(v) {
	case "", "latest":
		return broker.StartPosition{Kind: broker.StartLatest}, nil
	case "earliest":
		return broker.StartPosition{Kind: broker.StartEarliest}, nil
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		return broker.StartPosition{Kind: broker.StartSeq, Seq: n}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return broker.StartPosition{Kind: broker.StartTime, Time: t}, nil
	}
	return broker.StartPosition{}, usageError{fmt.Errorf("--from %q: use earliest, latest, a sequence number (e.g. 42) or an RFC 3339 time (e.g. 2025-01-02T15:04:05Z)", v)}
}

func (a *app) consume(ctx context.Context, topic string, f *consumeFlags) error {
	start, err := parseStart(f.from)
	if err != nil {
		return err
	}
	if f.group == "" && start.Kind != broker.StartLatest {
		return usageError{fmt.Errorf("--from needs --group: an ephemeral subscription sees live messages only")}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	sub, err := b.Subscribe(ctx, &broker.SubscribeParams{
		Topic: topic, Group: f.group, Start: start, AckDeadline: f.ackDeadline, MaxInFlight: f.maxInFlight,
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	enc := json.NewEncoder(a.cfg.Stdout)
	var idle <-chan time.Time
	var timer *time.Timer
	if f.idle > 0 {
		timer = time.NewTimer(f.idle)
		defer timer.Stop()
		idle = timer.C
	}
	for n := 0; f.max == 0 || n < f.max; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-idle:
			return nil
		case d, ok := <-sub.Deliveries():
			if !ok {
				if err := sub.Err(); err != nil {
					return fmt.Errorf("subscription ended: %w", err)
				}
				return nil
			}
			if err := enc.Encode(toLine(d)); err != nil {
				_ = d.Nack(context.WithoutCancel(ctx), 0)
				return err
			}
			if err := d.Ack(context.WithoutCancel(ctx)); err != nil {
				return fmt.Errorf("ack of message %s: %w", d.Message.ID, err)
			}
			if timer != nil {
				timer.Reset(f.idle)
			}
		}
	}
	return nil
}

type requestFlags struct {
	timeout     time.Duration
	contentType string
	headers     []string
}

func (a *app) requestCmd() *cobra.Command {
	f := &requestFlags{}
	cmd := &cobra.Command{
		Use:   "request TOPIC PAYLOAD",
		Short: "Send a request and print the reply as JSON",
		Long: `Publish PAYLOAD to TOPIC as a request and wait up to --timeout for one reply. With
nobody subscribed to TOPIC it fails at once instead of waiting.`,
		Example: `  switchboard request prices.quote '{"sku": "A-1"}' --timeout 2s`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			m := &message.Message{Payload: []byte(args[1]), ContentType: f.contentType}
			for _, h := range f.headers {
				k, v, ok := strings.Cut(h, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("--header %q: use name=value", h)}
				}
				m.SetHeader(k, v)
			}
			resp, err := b.Request(cmd.Context(), args[0], m, f.timeout)
			if err != nil {
				return err
			}
			resp.Topic = args[0]
			return json.NewEncoder(a.cfg.Stdout).Encode(toLine(&broker.Delivery{Message: resp}))
		},
	}
	cmd.Flags().DurationVar(&f.timeout, "timeout", 5*time.Second, "how long to wait for the reply")
	cmd.Flags().StringVar(&f.contentType, "content-type", "", "content type of the payload")
	cmd.Flags().StringArrayVar(&f.headers, "header", nil, "header name=value (repeatable)")
	return cmd
}
