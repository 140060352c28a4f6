package sqsface

import (
	"encoding/json"
	"maps"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

const (
	maxMessageSizeLimit = 1 << 20 // largest MaximumMessageSize accepted
	maxVisibility       = 43200   // seconds (12 hours)
	fifoSuffix          = ".fifo"
)

// queue is one SQS queue: a topic plus one consumer group, both named
// TopicPrefix+name.
type queue struct {
	f     *Face
	name  string
	topic string
	fifo  bool
	// handlePrefix starts the queue's receipt handles: "SB1.<base64url(name)>.".
	handlePrefix string

	mu      sync.Mutex
	meta    queueMeta
	attrs   queueAttrs
	cons    *consumer            // nil while released
	handles map[string]*held     // receipt handle → delivery held by a client
	phantom map[uint64]int       // seq → deliveries a release handed back unseen
	recv    map[uint64]*recvInfo // seq → receives by clients
	delayed []time.Time          // deliver-at of delayed sends (approximate count)
	attempt map[string]attempt   // FIFO ReceiveRequestAttemptId → answer
	deleted bool
}

// queueAttrs are the parsed attributes that drive behaviour.
type queueAttrs struct {
	visibility time.Duration
	delay      time.Duration
	retention  time.Duration
	maxSize    int
	wait       time.Duration
	cbd        bool // ContentBasedDeduplication
	redrive    *redrivePolicy
}

type redrivePolicy struct {
	target          string // queue name
	targetARN       string
	maxReceiveCount int
}

func newQueue(f *Face, m queueMeta) *queue {
	q := &queue{
		f: f, name: m.Name, topic: f.cfg.TopicPrefix + m.Name, fifo: strings.HasSuffix(m.Name, fifoSuffix),
		meta: m, handles: map[string]*held{}, phantom: map[uint64]int{}, recv: map[uint64]*recvInfo{}, attempt: map[string]attempt{},
	}
	q.handlePrefix = "SB1." + handleEnc.EncodeToString([]byte(m.Name)) + "."
	q.attrs = f.parseAttrs(m.Attributes)
	return q
}

func (q *queue) arn() string { return q.f.arn(q.name) }

func (f *Face) arn(name string) string {
	return "arn:aws:sqs:" + f.cfg.Region + ":" + f.cfg.AccountID + ":" + name
}

func (f *Face) queueURL(base, name string) string {
	return base + "/" + f.cfg.AccountID + "/" + name
}

// validQueueName applies SQS's rule: 1 to 80 characters of letters, digits,
// '-' and '_', with the suffix ".fifo" for FIFO queues.
func validQueueName(name string) bool {
	base := strings.TrimSuffix(name, fifoSuffix)
	if base == "" || len(name) > 80 {
		return false
	}
	for i := 0; i < len(base); i++ {
		c := base[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// lookup finds the queue a request names by QueueUrl (or, on the Query
// protocol, by the path it was sent to).
func (f *Face) lookup(r *request, queueURL string) (*queue, *apiError) {
	ref := queueURL
	if ref == "" && !r.json {
		ref = r.path
	}
	if ref == "" || ref == "/" {
		return nil, errMissingParameter("QueueUrl")
	}
	name := ref
	if u, err := url.Parse(ref); err == nil {
		name = u.Path
	}
	name = strings.TrimSuffix(name, "/")
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	f.mu.Lock()
	q := f.queues[name]
	f.mu.Unlock()
	if q == nil {
		return nil, errNonExistentQueue()
	}
	return q, nil
}

// queueByARN finds a queue by its ARN (for redrive policies).
func (f *Face) queueByARN(arn string) *queue {
	i := strings.LastIndexByte(arn, ':')
	if i < 0 || arn[:i+1] != "arn:aws:sqs:"+f.cfg.Region+":"+f.cfg.AccountID+":" {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queues[arn[i+1:]]
}

// Settable attributes with their ranges (seconds or bytes) and defaults.
var intAttrs = map[string]struct{ min, max, def int }{
	"DelaySeconds":                  {0, 900, 0},
	"MaximumMessageSize":            {1024, maxMessageSizeLimit, 0}, // default from Config
	"MessageRetentionPeriod":        {60, 1209600, 345600},
	"ReceiveMessageWaitTimeSeconds": {0, 20, 0},
	"VisibilityTimeout":             {0, maxVisibility, 30},
	"KmsDataKeyReusePeriodSeconds":  {60, 86400, 300},
}

// Attributes that are stored and reported but change nothing here.
var storedAttrs = map[string]bool{
	"Policy": true, "KmsMasterKeyId": true, "SqsManagedSseEnabled": true, "RedriveAllowPolicy": true,
}

var fifoOnlyAttrs = map[string][]string{
	"ContentBasedDeduplication": {"true", "false"},
	"DeduplicationScope":        {"messageGroup", "queue"},
	"FifoThroughputLimit":       {"perQueue", "perMessageGroupId"},
}

// checkAttrs validates attributes given to CreateQueue (creating) or
// SetQueueAttributes and returns them normalised.
func (f *Face) checkAttrs(attrs map[string]string, name string, creating bool) (map[string]string, *apiError) {
	fifo := strings.HasSuffix(name, fifoSuffix)
	out := make(map[string]string, len(attrs))
	for k, v := range attrs {
		switch {
		case k == "FifoQueue":
			if !creating {
				return nil, errInvalidAttributeName(k)
			}
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, errInvalidAttributeValue("Invalid value for the parameter FifoQueue.")
			}
			if b != fifo {
				return nil, errInvalidParameterValue("The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.")
			}
			if !b {
				continue // "false" on a standard queue is the default
			}
			v = "true"
		case fifoOnlyAttrs[k] != nil:
			if !fifo {
				return nil, errInvalidAttributeName(k)
			}
			ok := false
			for _, a := range fifoOnlyAttrs[k] {
				ok = ok || a == v
			}
			if !ok {
				return nil, errInvalidAttributeValue("Invalid value for the parameter %s.", k)
			}
		case k == "RedrivePolicy":
			if v == "" {
				break
			}
			rp, aerr := f.parseRedrive(v)
			if aerr != nil {
				return nil, aerr
			}
			dlq := f.queueByARN(rp.targetARN)
			if dlq == nil {
				return nil, errInvalidParameterValue("Value %s for parameter RedrivePolicy is invalid. Reason: Dead-letter target does not exist.", v)
			}
			if dlq.fifo != fifo {
				return nil, errInvalidParameterValue("Value %s for parameter RedrivePolicy is invalid. Reason: Dead-letter queue must be of the same type as the source queue.", v)
			}
		case storedAttrs[k]:
		default:
			spec, ok := intAttrs[k]
			if !ok {
				return nil, errInvalidAttributeName(k)
			}
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < spec.min || n > spec.max {
				return nil, errInvalidAttributeValue("Invalid value for the parameter %s.", k)
			}
			v = strconv.Itoa(n)
		}
		out[k] = v
	}
	return out, nil
}

func (f *Face) parseRedrive(v string) (*redrivePolicy, *apiError) {
	var raw struct {
		Target string          `json:"deadLetterTargetArn"`
		Max    json.RawMessage `json:"maxReceiveCount"`
	}
	bad := func(reason string) *apiError {
		return errInvalidParameterValue("Value %s for parameter RedrivePolicy is invalid. Reason: %s", v, reason)
	}
	if err := json.Unmarshal([]byte(v), &raw); err != nil {
		return nil, bad("Redrive policy is not a valid JSON map.")
	}
	if raw.Target == "" || len(raw.Max) == 0 {
		return nil, bad("Redrive policy does not contain mandatory attribute: deadLetterTargetArn and maxReceiveCount.")
	}
	n, err := strconv.Atoi(strings.Trim(string(raw.Max), `"`))
	if err != nil || n < 1 || n > 1000 {
		return nil, bad("Invalid value for maxReceiveCount: " + string(raw.Max) + ", valid values are from 1 to 1000 both inclusive.")
	}
	i := strings.LastIndexByte(raw.Target, ':')
	return &redrivePolicy{target: raw.Target[i+1:], targetARN: raw.Target, maxReceiveCount: n}, nil
}

// parseAttrs turns stored (already validated) attributes into queueAttrs.
func (f *Face) parseAttrs(a map[string]string) queueAttrs {
	num := func(k string) int {
		if v, ok := a[k]; ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
		if k == "MaximumMessageSize" {
			return f.cfg.DefaultMaximumMessageSize
		}
		return intAttrs[k].def
	}
	qa := queueAttrs{
		visibility: time.Duration(num("VisibilityTimeout")) * time.Second,
		delay:      time.Duration(num("DelaySeconds")) * time.Second,
		retention:  time.Duration(num("MessageRetentionPeriod")) * time.Second,
		maxSize:    num("MaximumMessageSize"),
		wait:       time.Duration(num("ReceiveMessageWaitTimeSeconds")) * time.Second,
		cbd:        a["ContentBasedDeduplication"] == "true",
	}
	if v := a["RedrivePolicy"]; v != "" {
		qa.redrive, _ = f.parseRedrive(v)
	}
	return qa
}

// attributeValues returns every attribute of q as GetQueueAttributes
// reports it. counts may be nil.
func (q *queue) attributeValues(c *counts) map[string]string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := maps.Clone(q.meta.Attributes)
	if out == nil {
		out = map[string]string{}
	}
	set := func(k, v string) {
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	a := q.attrs
	set("VisibilityTimeout", strconv.Itoa(int(a.visibility/time.Second)))
	set("DelaySeconds", strconv.Itoa(int(a.delay/time.Second)))
	set("MessageRetentionPeriod", strconv.Itoa(int(a.retention/time.Second)))
	set("MaximumMessageSize", strconv.Itoa(a.maxSize))
	set("ReceiveMessageWaitTimeSeconds", strconv.Itoa(int(a.wait/time.Second)))
	set("SqsManagedSseEnabled", "false")
	if q.fifo {
		set("FifoQueue", "true")
		set("ContentBasedDeduplication", "false")
		set("DeduplicationScope", "queue")
		set("FifoThroughputLimit", "perQueue")
	}
	if out["RedrivePolicy"] == "" {
		delete(out, "RedrivePolicy")
	} else if a.redrive != nil { // AWS reports maxReceiveCount as a number
		b, _ := json.Marshal(map[string]any{"deadLetterTargetArn": a.redrive.targetARN, "maxReceiveCount": a.redrive.maxReceiveCount})
		out["RedrivePolicy"] = string(b)
	}
	out["QueueArn"] = q.arn()
	out["CreatedTimestamp"] = strconv.FormatInt(q.meta.Created, 10)
	out["LastModifiedTimestamp"] = strconv.FormatInt(q.meta.Modified, 10)
	if c != nil {
		out["ApproximateNumberOfMessages"] = strconv.FormatInt(c.visible, 10)
		out["ApproximateNumberOfMessagesNotVisible"] = strconv.FormatInt(c.notVisible, 10)
		out["ApproximateNumberOfMessagesDelayed"] = strconv.FormatInt(c.delayed, 10)
	}
	return out
}

type counts struct{ visible, notVisible, delayed int64 }

// counts estimates the approximate numbers of messages.
func (q *queue) counts(gi broker.GroupInfo) *counts {
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	c := &counts{}
	for _, h := range q.handles {
		if h.deadline.After(now) {
			c.notVisible++
		}
	}
	keep := q.delayed[:0]
	for _, t := range q.delayed {
		if t.After(now) {
			keep = append(keep, t)
		}
	}
	q.delayed = keep
	c.delayed = int64(len(keep))
	c.visible = max(gi.Lag-c.notVisible, 0)
	return c
}
