// Package sqs is the Amazon SQS backend of Switchboard, registered for the
// URL scheme "sqs":
//
//	sqs://[ACCESS_KEY:SECRET@]?region=us-east-1[&endpoint=http://127.0.0.1:9324][&fifo=true][&prefix=app-][&wait_time=1s][&dial_timeout=5s]
//
// # Mapping
//
//   - SQS has queues, not topics: one SQS queue per (topic, group). Its name
//     is <prefix><T>__<G>[.fifo], where T is the topic and G the group, each
//     with every character other than letters, digits and '-' written '-',
//     cut to 20 characters and followed by '-' and 10 hex digits of the
//     SHA-256 of the exact name. T and G contain no '_', so "<prefix><T>__"
//     names exactly the queues of one topic.
//   - Publish lists the queues named "<prefix><T>__" (ListQueues with that
//     prefix, on every publish) and sends each message to each of them: that
//     is the fan-out across groups. A topic with no group queue yet has its
//     messages sent to the holding queue <prefix><T>__held, created on
//     demand, so a publish is never acknowledged and then dropped. Held
//     messages are not delivered to groups created later (a new group starts
//     at the latest message); they stay for the queue's retention period
//     (4 days by default) for plain SQS tools.
//   - Subscribe with a group creates (or reuses) the group's queue and long
//     polls it (ReceiveMessage with WaitTimeSeconds = wait_time) with the
//     visibility timeout = AckDeadline (whole seconds, at least 1).
//     Ack = DeleteMessage; Nack(delay) and Extend = ChangeMessageVisibility;
//     the attempt number is ApproximateReceiveCount. A settlement after the
//     deadline returns ErrDeliveryExpired (checked locally: SQS accepts a
//     stale receipt handle silently).
//   - Dead letters (MaxAttempts, Term, expired messages) are built with
//     brokerutil.DeadLetter and published to the topic "$dlq.<group>" like
//     any other message, then the original is deleted.
//   - fifo=true uses FIFO queues: MessageGroupId = the key (the message ID
//     for a keyless message), MessageDeduplicationId = the message ID.
//
// Headers travel as String message attributes; see docs/backends.md.
package sqs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdkhttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokerutil"
	"github.com/switchboard-dev/switchboard/internal/awshttp"
	"github.com/switchboard-dev/switchboard/message"
)

func init() {
	broker.Register("sqs", func(ctx context.Context, u *url.URL) (broker.Broker, error) { return Open(ctx, u.String()) })
}

// SQS limits.
const (
	// MaxMessageSize is SQS's limit on one message: body plus attributes
	// (the default MaximumMessageSize before 2025, and what this backend
	// assumes of every queue).
	MaxMessageSize = 256 << 10
	// attrRoom is kept out of MaxMessageSize for the attributes: the
	// headers (16 KiB by default), the key, the ID and the envelope.
	attrRoom = 20 << 10
	// MaxPayload is the payload limit: a binary payload is sent base64
	// encoded, so it is 3/4 of what remains after attrRoom.
	MaxPayload = (MaxMessageSize - attrRoom) / 4 * 3
	// maxDelay is SQS's DelaySeconds limit.
	maxDelay = 15 * time.Minute
	// maxAttrs is SQS's limit of message attributes per message.
	maxAttrs = 10
)

// Broker is the SQS backend. It is safe for concurrent use.
type Broker struct {
	c      *awssqs.Client
	cfg    cfg
	caps   broker.Capabilities
	limits message.Limits

	mu     sync.Mutex
	urls   map[string]string // queue name → URL
	closed bool
	subs   brokerutil.Subs
}

var _ broker.Broker = (*Broker)(nil)

type cfg struct {
	endpoint string
	fifo     bool
	prefix   string
	wait     time.Duration
}

// Open connects to SQS as rawURL says. Credentials come from the URL's user
// information when given, else from the SDK's default chain (environment,
// shared files, roles). dial_timeout bounds the first request (ListQueues),
// which checks that the endpoint answers. ctx bounds Open only.
func Open(ctx context.Context, rawURL string) (*Broker, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: sqs: %q: %v", broker.ErrBadURL, broker.Redact(rawURL), err)
	}
	q := brokerutil.NewQuery("sqs", u)
	c := cfg{
		endpoint: q.String("endpoint", ""),
		fifo:     q.Bool("fifo", false),
		prefix:   q.String("prefix", ""),
		wait:     q.Duration("wait_time", time.Second),
	}
	region := q.String("region", "")
	dial := q.Duration("dial_timeout", brokerutil.DefaultDialTimeout)
	if err := q.Err(); err != nil {
		return nil, err
	}
	name := "sqs"
	if c.fifo {
		name = "sqs-fifo"
	}
	switch {
	case u.Scheme != "sqs":
		return nil, brokerutil.BadURL(name, u, "scheme must be sqs://")
	case u.Host != "":
		return nil, brokerutil.BadURL(name, u, "host %q: give the server as ?endpoint=http://host:port (or none for AWS), e.g. sqs://?endpoint=http://127.0.0.1:9324&region=us-east-1", u.Host)
	case region == "":
		return nil, brokerutil.BadURL(name, u, "no region; add ?region=us-east-1")
	case len(c.prefix) > 14 || strings.Trim(c.prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "":
		return nil, brokerutil.BadURL(name, u, "prefix=%q: use at most 14 letters, digits, '-' or '_'", c.prefix)
	case c.wait > 20*time.Second || c.wait < time.Second:
		return nil, brokerutil.BadURL(name, u, "wait_time=%s: SQS long polls 1s to 20s", c.wait)
	}
	if c.endpoint != "" {
		eu, err := url.Parse(c.endpoint)
		if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" {
			return nil, brokerutil.BadURL(name, u, "endpoint=%q is not an http:// or https:// URL", c.endpoint)
		}
	}
	opts := []func(*config.LoadOptions) error{config.WithRegion(region)}
	if u.User != nil {
		secret, _ := u.User.Password()
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(u.User.Username(), secret, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, brokerutil.BadURL(name, u, "AWS configuration: %v", err)
	}
	// The configured client (CA bundle, proxy) with more idle connections
	// (one per concurrent poll, publish and settle), sending its own copy
	// of each request body: see internal/awshttp.
	if awsCfg.HTTPClient == nil {
		awsCfg.HTTPClient = awshttp.NewClient(64)
	} else {
		if bc, ok := awsCfg.HTTPClient.(*sdkhttp.BuildableClient); ok {
			awsCfg.HTTPClient = bc.WithTransportOptions(func(tr *http.Transport) { tr.MaxIdleConnsPerHost = 64 })
		}
		awsCfg.HTTPClient = awshttp.Wrap(awsCfg.HTTPClient)
	}
	client := awssqs.NewFromConfig(awsCfg, func(o *awssqs.Options) {
		if c.endpoint != "" {
			o.BaseEndpoint = aws.String(c.endpoint)
		}
	})
	addr := c.endpoint
	if addr == "" {
		addr = "sqs." + region + ".amazonaws.com"
	}
	pctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if _, err := client.ListQueues(pctx, &awssqs.ListQueuesInput{MaxResults: aws.Int32(1)}, func(o *awssqs.Options) { o.RetryMaxAttempts = 1 }); err != nil {
		var apiErr interface{ ErrorCode() string }
		if errors.As(err, &apiErr) {
			return nil, fmt.Errorf("sqs: %s refused the request: %w (check the credentials and region)", addr, err)
		}
		return nil, brokerutil.Unreachable(name, addr, err)
	}
	b := &Broker{c: client, cfg: c, limits: message.DefaultLimits(), urls: map[string]string{}}
	b.caps = broker.Capabilities{
		Name:         name,
		Durable:      true,
		Groups:       true,
		Ack:          true,
		NackDelay:    true,
		Extend:       true,
		DeadLetter:   true,
		Delay:        !c.fifo, // FIFO queues have no per-message DelaySeconds
		Expiry:       true,
		OrderedByKey: c.fifo,
		MaxPayload:   MaxPayload,
	}
	return b, nil
}

// Capabilities implements broker.Broker.
func (b *Broker) Capabilities() broker.Capabilities { return b.caps }

// Close closes every subscription (their unsettled messages become visible
// again at once). Publishes in progress complete or fail.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.subs.CloseAll()
	return nil
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// part encodes a topic or group name for a queue name: letters, digits and
// '-' only, at most 20 of them, then '-' and 10 hex digits of its SHA-256.
func part(name string) string {
	var sb strings.Builder
	for i := 0; i < len(name) && sb.Len() < 20; i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			sb.WriteByte(c)
		} else {
			sb.WriteByte('-')
		}
	}
	h := sha256.Sum256([]byte(name))
	return sb.String() + "-" + hex.EncodeToString(h[:5])
}

// topicPrefix is the name prefix of every queue of topic.
func (b *Broker) topicPrefix(topic string) string { return b.cfg.prefix + part(topic) + "__" }

func (b *Broker) suffix() string {
	if b.cfg.fifo {
		return ".fifo"
	}
	return ""
}

// QueueName returns the name of the SQS queue of (topic, group); group ""
// names the topic's holding queue.
func (b *Broker) QueueName(topic, group string) string {
	if group == "" {
		return b.topicPrefix(topic) + "held" + b.suffix()
	}
	return b.topicPrefix(topic) + part(group) + b.suffix()
}

// ensureQueue creates the queue (or finds it) and returns its URL.
func (b *Broker) ensureQueue(ctx context.Context, name string) (string, error) {
	b.mu.Lock()
	u, ok := b.urls[name]
	b.mu.Unlock()
	if ok {
		return u, nil
	}
	in := &awssqs.CreateQueueInput{QueueName: aws.String(name)}
	if b.cfg.fifo {
		in.Attributes = map[string]string{"FifoQueue": "true"}
	}
	out, err := b.c.CreateQueue(ctx, in)
	if err != nil {
		return "", brokerutil.CtxErr(ctx, "sqs: create queue "+name, err)
	}
	b.mu.Lock()
	b.urls[name] = *out.QueueUrl
	b.mu.Unlock()
	return *out.QueueUrl, nil
}

// topicQueues lists the URLs of the group queues of topic (not the holding
// queue).
func (b *Broker) topicQueues(ctx context.Context, topic string) ([]string, error) {
	prefix := b.topicPrefix(topic)
	held := b.QueueName(topic, "")
	var urls []string
	in := &awssqs.ListQueuesInput{QueueNamePrefix: aws.String(prefix), MaxResults: aws.Int32(1000)}
	for {
		out, err := b.c.ListQueues(ctx, in)
		if err != nil {
			return nil, brokerutil.CtxErr(ctx, "sqs: list the queues of topic "+topic, err)
		}
		for _, u := range out.QueueUrls {
			n := u[strings.LastIndexByte(u, '/')+1:]
			if n == held || strings.HasSuffix(n, ".fifo") != b.cfg.fifo {
				continue
			}
			urls = append(urls, u)
		}
		if out.NextToken == nil || *out.NextToken == "" {
			return urls, nil
		}
		in.NextToken = out.NextToken
	}
}
