package broker

import (
	"context"
	"time"
)

// Retention says how long a topic keeps messages. Zero fields mean "no limit
// of that kind". Limits apply per whole segment on the embedded engine, so a
// topic may keep somewhat more than asked, never less.
type Retention struct {
	MaxAge   time.Duration
	MaxBytes int64
	MaxCount int64
	// WorkQueue removes messages once every group of the topic has settled
	// them.
	WorkQueue bool
}

// TopicConfig configures a topic.
type TopicConfig struct {
	Name       string
	Retention  Retention
	Partitions int // for backends with partitions; 0 = backend default
}

// TopicInfo describes a topic.
type TopicInfo struct {
	Config   TopicConfig
	FirstSeq uint64 // oldest retained sequence (0 if empty)
	LastSeq  uint64 // newest sequence (0 if empty)
	Messages int64  // retained messages
	Bytes    int64  // retained bytes on disk
	Groups   []string
}

// TopicAdmin is implemented by backends that manage topics explicitly.
type TopicAdmin interface {
	CreateTopic(ctx context.Context, cfg TopicConfig) error
	DeleteTopic(ctx context.Context, name string) error
	ListTopics(ctx context.Context) ([]TopicInfo, error)
	DescribeTopic(ctx context.Context, name string) (TopicInfo, error)
}

// GroupInfo describes a consumer group.
type GroupInfo struct {
	Name      string
	Topic     string // topic or pattern the group follows
	Consumers int    // attached subscriptions
	// Lag is the number of messages not yet settled by the group (published
	// and not acked, including in flight).
	Lag int64
	// InFlight counts deliveries handed out and not settled.
	InFlight int
	// Cursors is, per topic, the next sequence to deliver.
	Cursors map[string]uint64
	// DeadLetters counts messages in the group's dead-letter topic.
	DeadLetters int64
}

// GroupAdmin is implemented by backends that can inspect and manage groups.
type GroupAdmin interface {
	CreateGroup(ctx context.Context, topic, group string, start StartPosition) error
	DescribeGroup(ctx context.Context, group string) (GroupInfo, error)
	ListGroups(ctx context.Context) ([]GroupInfo, error)
	DeleteGroup(ctx context.Context, group string) error
	// ResetGroup moves the group to start; in-flight deliveries are dropped
	// and redelivered from the new position.
	ResetGroup(ctx context.Context, group string, start StartPosition) error
}

// DeadLetterAdmin is implemented by backends whose dead letters can be
// replayed and purged.
type DeadLetterAdmin interface {
	// ReplayDeadLetters republishes up to max dead letters of group (0: all)
	// to their original topics, for that group only, and removes them from
	// the dead-letter topic. It returns how many were replayed.
	ReplayDeadLetters(ctx context.Context, group string, max int) (int, error)
	// PurgeDeadLetters deletes the dead letters of group and returns how
	// many were removed.
	PurgeDeadLetters(ctx context.Context, group string) (int, error)
}
