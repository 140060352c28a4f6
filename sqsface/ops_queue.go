package sqsface

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/broker"
)

var handlers map[string]handlerFunc

func init() {
	handlers = map[string]handlerFunc{
		"CreateQueue":                  (*Face).createQueue,
		"GetQueueUrl":                  (*Face).getQueueURL,
		"ListQueues":                   (*Face).listQueues,
		"GetQueueAttributes":           (*Face).getQueueAttributes,
		"SetQueueAttributes":           (*Face).setQueueAttributes,
		"DeleteQueue":                  (*Face).deleteQueue,
		"PurgeQueue":                   (*Face).purgeQueue,
		"ListDeadLetterSourceQueues":   (*Face).listDeadLetterSourceQueues,
		"TagQueue":                     (*Face).tagQueue,
		"UntagQueue":                   (*Face).untagQueue,
		"ListQueueTags":                (*Face).listQueueTags,
		"SendMessage":                  (*Face).sendMessage,
		"SendMessageBatch":             (*Face).sendMessageBatch,
		"ReceiveMessage":               (*Face).receiveMessage,
		"DeleteMessage":                (*Face).deleteMessage,
		"DeleteMessageBatch":           (*Face).deleteMessageBatch,
		"ChangeMessageVisibility":      (*Face).changeMessageVisibility,
		"ChangeMessageVisibilityBatch": (*Face).changeMessageVisibilityBatch,
		"AddPermission":                unsupported,
		"RemovePermission":             unsupported,
		"StartMessageMoveTask":         unsupported,
		"CancelMessageMoveTask":        unsupported,
		"ListMessageMoveTasks":         unsupported,
	}
}

func unsupported(_ *Face, _ context.Context, r *request) (any, *apiError) {
	return nil, errUnsupportedOperation("%s is not supported by Switchboard's SQS face.", r.op)
}

type queueURLResult struct {
	QueueURL string `json:"QueueUrl" xml:"QueueUrl"`
}

// saveMeta persists every queue's metadata.
func (f *Face) saveMeta() *apiError {
	f.mu.Lock()
	all := make([]queueMeta, 0, len(f.queues))
	for _, n := range slices.Sorted(maps.Keys(f.queues)) {
		q := f.queues[n]
		q.mu.Lock()
		m := q.meta
		m.Attributes, m.Tags = maps.Clone(m.Attributes), maps.Clone(m.Tags)
		q.mu.Unlock()
		all = append(all, m)
	}
	f.mu.Unlock()
	if err := f.meta.save(all); err != nil {
		return errInternal(err)
	}
	return nil
}

func (f *Face) createQueue(ctx context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueName  string            `json:"QueueName"`
		Attributes map[string]string `json:"Attributes"`
		Tags       map[string]string `json:"tags"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	if in.QueueName == "" {
		return nil, errMissingParameter("QueueName")
	}
	if !validQueueName(in.QueueName) {
		return nil, errInvalidParameterValue("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length")
	}
	if strings.HasSuffix(in.QueueName, fifoSuffix) && in.Attributes["FifoQueue"] != "true" {
		return nil, errInvalidParameterValue("The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.")
	}
	attrs, aerr := f.checkAttrs(in.Attributes, in.QueueName, true)
	if aerr != nil {
		return nil, aerr
	}
	if len(in.Tags) > 50 {
		return nil, errInvalidParameterValue("Too many tags added for queue %s.", in.QueueName)
	}
	f.mu.Lock()
	if q := f.queues[in.QueueName]; q != nil {
		f.mu.Unlock()
		cur := q.attributeValues(nil)
		for k, v := range attrs {
			if cur[k] != v && !(k == "RedrivePolicy" && q.attrs.redrive != nil && redriveEqual(f, v, q.attrs.redrive)) {
				return nil, errQueueNameExists(in.QueueName)
			}
		}
		return queueURLResult{f.queueURL(r.base, in.QueueName)}, nil
	}
	f.mu.Unlock()
	q := newQueue(f, queueMeta{Name: in.QueueName, Created: time.Now().Unix(), Modified: time.Now().Unix(), Attributes: attrs, Tags: in.Tags})
	err := f.topics.CreateTopic(ctx, broker.TopicConfig{Name: q.topic, Retention: broker.Retention{MaxAge: q.attrs.retention, WorkQueue: true}})
	if err != nil && !errors.Is(err, broker.ErrAlreadyExists) {
		return nil, errInternal(err)
	}
	if err := f.groups.CreateGroup(ctx, q.topic, q.topic, broker.StartPosition{Kind: broker.StartEarliest}); err != nil && !errors.Is(err, broker.ErrAlreadyExists) {
		return nil, errInternal(err)
	}
	f.mu.Lock()
	if f.queues[in.QueueName] == nil { // a concurrent create of the same name wins
		f.queues[in.QueueName] = q
	}
	f.mu.Unlock()
	if aerr := f.saveMeta(); aerr != nil {
		return nil, aerr
	}
	return queueURLResult{f.queueURL(r.base, in.QueueName)}, nil
}

func redriveEqual(f *Face, v string, rp *redrivePolicy) bool {
	p, aerr := f.parseRedrive(v)
	return aerr == nil && p.targetARN == rp.targetARN && p.maxReceiveCount == rp.maxReceiveCount
}

func (f *Face) getQueueURL(_ context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueName string `json:"QueueName"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	if in.QueueName == "" {
		return nil, errMissingParameter("QueueName")
	}
	f.mu.Lock()
	q := f.queues[in.QueueName]
	f.mu.Unlock()
	if q == nil {
		return nil, errNonExistentQueue()
	}
	return queueURLResult{f.queueURL(r.base, in.QueueName)}, nil
}

type queueListResult struct {
	QueueUrls []string `json:"QueueUrls,omitempty" xml:"QueueUrl"`
	NextToken string   `json:"NextToken,omitempty" xml:"NextToken,omitempty"`
}

// page applies MaxResults/NextToken (the token is the last name returned).
func page(names []string, maxResults *int, token string) ([]string, string, *apiError) {
	slices.Sort(names)
	if token != "" {
		i, _ := slices.BinarySearch(names, token)
		for i < len(names) && names[i] <= token {
			i++
		}
		names = names[i:]
	}
	if maxResults == nil {
		return names, "", nil
	}
	if *maxResults < 1 || *maxResults > 1000 {
		return nil, "", errInvalidParameterValue("Value %d for parameter MaxResults is invalid. Reason: MaxResults must be an integer between 1 and 1000.", *maxResults)
	}
	if len(names) > *maxResults {
		return names[:*maxResults], names[*maxResults-1], nil
	}
	return names, "", nil
}

func (f *Face) listQueues(_ context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueNamePrefix string `json:"QueueNamePrefix"`
		MaxResults      *int   `json:"MaxResults"`
		NextToken       string `json:"NextToken"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	f.mu.Lock()
	var names []string
	for n := range f.queues {
		if strings.HasPrefix(n, in.QueueNamePrefix) {
			names = append(names, n)
		}
	}
	f.mu.Unlock()
	if in.MaxResults == nil && len(names) > 1000 {
		slices.Sort(names)
		names = names[:1000]
	}
	names, next, aerr := page(names, in.MaxResults, in.NextToken)
	if aerr != nil {
		return nil, aerr
	}
	res := queueListResult{NextToken: next}
	for _, n := range names {
		res.QueueUrls = append(res.QueueUrls, f.queueURL(r.base, n))
	}
	return res, nil
}

type attributesResult struct {
	Attributes attrMap `json:"Attributes,omitempty" xml:"Attribute,omitempty"`
}

func (f *Face) getQueueAttributes(ctx context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueURL       string   `json:"QueueUrl"`
		AttributeNames []string `json:"AttributeNames"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	var c *counts
	want := map[string]bool{}
	for _, n := range in.AttributeNames {
		want[n] = true
	}
	if want["All"] || want["ApproximateNumberOfMessages"] || want["ApproximateNumberOfMessagesNotVisible"] || want["ApproximateNumberOfMessagesDelayed"] {
		gi, err := f.groups.DescribeGroup(ctx, q.topic)
		if err != nil && !errors.Is(err, broker.ErrGroupNotFound) {
			return nil, errInternal(err)
		}
		c = q.counts(gi)
	}
	all := q.attributeValues(c)
	out := attrMap{}
	for n := range want {
		if n == "All" {
			maps.Copy(out, all)
			continue
		}
		v, ok := all[n]
		if !ok && !knownQueueAttr(n) {
			return nil, errInvalidAttributeName(n)
		}
		if ok {
			out[n] = v
		}
	}
	return attributesResult{out}, nil
}

func knownQueueAttr(n string) bool {
	switch n {
	case "Policy", "RedrivePolicy", "RedriveAllowPolicy", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds",
		"ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit", "FifoQueue":
		return true
	}
	return false
}

func (f *Face) setQueueAttributes(ctx context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueURL   string            `json:"QueueUrl"`
		Attributes map[string]string `json:"Attributes"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	if in.Attributes == nil {
		return nil, errMissingParameter("Attributes")
	}
	attrs, aerr := f.checkAttrs(in.Attributes, q.name, false)
	if aerr != nil {
		return nil, aerr
	}
	q.mu.Lock()
	if q.meta.Attributes == nil {
		q.meta.Attributes = map[string]string{}
	}
	maps.Copy(q.meta.Attributes, attrs)
	q.meta.Modified = time.Now().Unix()
	q.attrs = f.parseAttrs(q.meta.Attributes)
	q.mu.Unlock()
	return nil, f.saveMeta()
}

func (f *Face) deleteQueue(ctx context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueURL string `json:"QueueUrl"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	f.mu.Lock()
	if f.queues[q.name] == q {
		delete(f.queues, q.name)
	}
	f.mu.Unlock()
	q.mu.Lock()
	q.deleted = true
	q.mu.Unlock()
	q.release()
	if err := f.groups.DeleteGroup(ctx, q.topic); err != nil && !errors.Is(err, broker.ErrGroupNotFound) {
		return nil, errInternal(err)
	}
	if err := f.topics.DeleteTopic(ctx, q.topic); err != nil && !errors.Is(err, broker.ErrTopicNotFound) {
		return nil, errInternal(err)
	}
	return nil, f.saveMeta()
}

func (f *Face) purgeQueue(ctx context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueURL string `json:"QueueUrl"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	if err := q.purge(ctx); err != nil {
		return nil, errInternal(err)
	}
	return nil, nil
}

type dlqSourcesResult struct {
	QueueUrls []string `json:"queueUrls" xml:"QueueUrl"`
	NextToken string   `json:"NextToken,omitempty" xml:"NextToken,omitempty"`
}

func (f *Face) listDeadLetterSourceQueues(_ context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueURL   string `json:"QueueUrl"`
		MaxResults *int   `json:"MaxResults"`
		NextToken  string `json:"NextToken"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	dlq, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	f.mu.Lock()
	qs := slices.Collect(maps.Values(f.queues))
	f.mu.Unlock()
	var names []string
	for _, q := range qs {
		q.mu.Lock()
		if rp := q.attrs.redrive; rp != nil && rp.target == dlq.name {
			names = append(names, q.name)
		}
		q.mu.Unlock()
	}
	names, next, aerr := page(names, in.MaxResults, in.NextToken)
	if aerr != nil {
		return nil, aerr
	}
	res := dlqSourcesResult{QueueUrls: []string{}, NextToken: next}
	for _, n := range names {
		res.QueueUrls = append(res.QueueUrls, f.queueURL(r.base, n))
	}
	return res, nil
}

func (f *Face) tagQueue(_ context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueURL string            `json:"QueueUrl"`
		Tags     map[string]string `json:"Tags"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	if len(in.Tags) == 0 {
		return nil, errMissingParameter("Tags")
	}
	q.mu.Lock()
	if q.meta.Tags == nil {
		q.meta.Tags = map[string]string{}
	}
	maps.Copy(q.meta.Tags, in.Tags)
	n := len(q.meta.Tags)
	if n > 50 {
		for k := range in.Tags {
			delete(q.meta.Tags, k)
		}
	}
	q.mu.Unlock()
	if n > 50 {
		return nil, errInvalidParameterValue("Too many tags added for queue %s.", q.name)
	}
	return nil, f.saveMeta()
}

func (f *Face) untagQueue(_ context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueURL string   `json:"QueueUrl"`
		TagKeys  []string `json:"TagKeys"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	if len(in.TagKeys) == 0 {
		return nil, errMissingParameter("TagKeys")
	}
	q.mu.Lock()
	for _, k := range in.TagKeys {
		delete(q.meta.Tags, k)
	}
	q.mu.Unlock()
	return nil, f.saveMeta()
}

type tagsResult struct {
	Tags tagMap `json:"Tags,omitempty" xml:"Tag,omitempty"`
}

func (f *Face) listQueueTags(_ context.Context, r *request) (any, *apiError) {
	var in struct {
		QueueURL string `json:"QueueUrl"`
	}
	if aerr := r.decode(&in); aerr != nil {
		return nil, aerr
	}
	q, aerr := f.lookup(r, in.QueueURL)
	if aerr != nil {
		return nil, aerr
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return tagsResult{tagMap(maps.Clone(q.meta.Tags))}, nil
}
