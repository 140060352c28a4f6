package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/client"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
	"github.com/switchboard-dev/switchboard/message"
)

type publishFlags struct {
	id, key, contentType string
	headers              []string
	delay, ttl           time.Duration
	file                 string
	jsonl                bool
	batch                int
}

func (a *app) publishCmd() *cobra.Command {
	f := &publishFlags{}
	cmd := &cobra.Command{
		Use:   "publish TOPIC [PAYLOAD]",
		Short: "Publish a message, or one message per line of stdin or a file",
		Long: `Publish PAYLOAD to TOPIC and print the result as JSON. Without PAYLOAD, every line of
stdin (or --file) is one message, sent in batches of --batch; with --jsonl each line is a
message as JSON ({"id", "key", "headers", "text" or base64 "payload", "contentType",
"deliverAt", "expiresAt"}). Large inputs show their progress and rate on stderr: a
progress bar on a terminal (with percentage and ETA for a file), a line per second
otherwise.`,
		Example: `  switchboard publish orders.placed '{"order": 42}' --key customer-7 --header source=web
  seq 1 100000 | switchboard publish numbers
  switchboard publish orders.placed --jsonl --file orders.jsonl`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			if len(args) == 2 {
				if f.file != "" {
					return usageError{fmt.Errorf("give a PAYLOAD or --file, not both")}
				}
				return a.publishOne(cmd.Context(), b, args[0], []byte(args[1]), f)
			}
			in := a.cfg.Stdin
			if f.file != "" {
				fh, err := os.Open(f.file)
				if err != nil {
					return err
				}
				defer fh.Close()
				in = fh
			}
			return a.publishLines(cmd.Context(), b, args[0], in, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.id, "id", "", "message ID (dedup key); default a new UUIDv7")
	fl.StringVar(&f.key, "key", "", "ordering key")
	fl.StringVar(&f.contentType, "content-type", "", "content type of the payload, e.g. application/json")
	fl.StringArrayVar(&f.headers, "header", nil, "header name=value (repeatable)")
	fl.DurationVar(&f.delay, "delay", 0, "deliver after this delay, e.g. 10s")
	fl.DurationVar(&f.ttl, "ttl", 0, "expire after this long, e.g. 1h")
	fl.StringVar(&f.file, "file", "", "read messages from this file instead of stdin")
	fl.BoolVar(&f.jsonl, "jsonl", false, "each input line is a message as JSON")
	fl.IntVar(&f.batch, "batch", 100, "messages per batch when reading lines")
	return cmd
}

// template builds a message with the flags applied.
func (f *publishFlags) template(payload []byte) (*message.Message, error) {
	m := &message.Message{ID: f.id, Key: f.key, ContentType: f.contentType, Payload: payload}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("--header %q: use name=value", h)}
		}
		m.SetHeader(k, v)
	}
	now := time.Now()
	if f.delay > 0 {
		m.DeliverAt = now.Add(f.delay)
	}
	if f.ttl > 0 {
		m.ExpiresAt = now.Add(f.ttl)
	}
	return m, nil
}

type resultLine struct {
	ID        string `json:"id"`
	Seq       uint64 `json:"seq,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

func (a *app) publishOne(ctx context.Context, b *client.Broker, topic string, payload []byte, f *publishFlags) error {
	m, err := f.template(payload)
	if err != nil {
		return err
	}
	res, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: []*message.Message{m}})
	if err != nil {
		return fmt.Errorf("publish to %q: %w", topic, err)
	}
	r := res.Results[0]
	return json.NewEncoder(a.cfg.Stdout).Encode(resultLine{ID: r.ID, Seq: r.Seq, Duplicate: r.Duplicate})
}

func (a *app) publishLines(ctx context.Context, b *client.Broker, topic string, in io.Reader, f *publishFlags) error {
	if f.batch < 1 {
		return usageError{fmt.Errorf("--batch %d must be at least 1", f.batch)}
	}
	if f.id != "" {
		return usageError{fmt.Errorf("--id applies to one message; give IDs in --jsonl lines instead")}
	}
	tmpl, err := f.template(nil)
	if err != nil {
		return err
	}
	prog, in := newProgress(a.cfg.Stderr, in, a.cfg.Getenv)
	defer prog.done() // clear the bar before an error line
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), message.HardMaxPayload+1<<20)
	var (
		batch      []*message.Message
		total, dup int
		line       int
		start      = time.Now()
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		res, err := b.Publish(ctx, &broker.PublishParams{Topic: topic, Messages: batch})
		if err != nil {
			return fmt.Errorf("publish to %q (batch ending at line %d; the %d messages before it were stored): %w", topic, line, total, err)
		}
		for _, r := range res.Results {
			if r.Duplicate {
				dup++
			}
		}
		total += len(batch)
		batch = batch[:0]
		prog.update(total)
		return nil
	}
	for sc.Scan() {
		line++
		text := sc.Bytes()
		var m *message.Message
		if f.jsonl {
			if len(strings.TrimSpace(string(text))) == 0 {
				continue
			}
			var pm v1.Message
			if err := protojson.Unmarshal(text, &pm); err != nil {
				return fmt.Errorf("line %d is not a message as JSON: %v", line, err)
			}
			m = apiconv.MessageFromProto(&pm)
			if m.Key == "" {
				m.Key = tmpl.Key
			}
			if m.ContentType == "" {
				m.ContentType = tmpl.ContentType
			}
			if m.DeliverAt.IsZero() {
				m.DeliverAt = tmpl.DeliverAt
			}
			if m.ExpiresAt.IsZero() {
				m.ExpiresAt = tmpl.ExpiresAt
			}
			for k, v := range tmpl.Headers {
				if _, set := m.Headers[k]; !set {
					m.SetHeader(k, v)
				}
			}
		} else {
			m = tmpl.Clone()
			m.Payload = append([]byte(nil), text...)
		}
		batch = append(batch, m)
		if len(batch) >= f.batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read input at line %d: %w", line+1, err)
	}
	if err := flush(); err != nil {
		return err
	}
	prog.done()
	el := time.Since(start)
	fmt.Fprintf(a.cfg.Stderr, "published %d messages (%d duplicates) to %s in %s, %.0f msg/s\n",
		total, dup, topic, el.Round(time.Millisecond), float64(total)/max(el.Seconds(), 1e-9))
	return nil
}
