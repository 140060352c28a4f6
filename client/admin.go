package client

import (
	"context"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
	"github.com/switchboard-dev/switchboard/message"
)

// CreateTopic creates a topic on the hub's backend.
func (b *Broker) CreateTopic(ctx context.Context, cfg broker.TopicConfig) error {
	_, err := b.rpc.CreateTopic(ctx, connect.NewRequest(&v1.CreateTopicRequest{
		Topic: cfg.Name, Retention: apiconv.RetentionToProto(cfg.Retention), Partitions: int32(cfg.Partitions),
	}))
	return apiconv.FromConnect(err)
}

// DeleteTopic deletes a topic.
func (b *Broker) DeleteTopic(ctx context.Context, name string) error {
	_, err := b.rpc.DeleteTopic(ctx, connect.NewRequest(&v1.DeleteTopicRequest{Topic: name}))
	return apiconv.FromConnect(err)
}

// ListTopics lists topics.
func (b *Broker) ListTopics(ctx context.Context) ([]broker.TopicInfo, error) {
	resp, err := b.rpc.ListTopics(ctx, connect.NewRequest(&v1.ListTopicsRequest{}))
	if err != nil {
		return nil, apiconv.FromConnect(err)
	}
	out := make([]broker.TopicInfo, len(resp.Msg.GetTopics()))
	for i, t := range resp.Msg.GetTopics() {
		out[i] = apiconv.TopicFromProto(t)
	}
	return out, nil
}

// DescribeTopic describes a topic.
func (b *Broker) DescribeTopic(ctx context.Context, name string) (broker.TopicInfo, error) {
	resp, err := b.rpc.DescribeTopic(ctx, connect.NewRequest(&v1.DescribeTopicRequest{Topic: name}))
	if err != nil {
		return broker.TopicInfo{}, apiconv.FromConnect(err)
	}
	return apiconv.TopicFromProto(resp.Msg.GetTopic()), nil
}

// CreateGroup creates a consumer group.
func (b *Broker) CreateGroup(ctx context.Context, topic, group string, start broker.StartPosition) error {
	_, err := b.rpc.CreateGroup(ctx, connect.NewRequest(&v1.CreateGroupRequest{Group: group, Topic: topic, Start: apiconv.StartToProto(start)}))
	return apiconv.FromConnect(err)
}

// DescribeGroup describes a consumer group.
func (b *Broker) DescribeGroup(ctx context.Context, group string) (broker.GroupInfo, error) {
	resp, err := b.rpc.DescribeGroup(ctx, connect.NewRequest(&v1.DescribeGroupRequest{Group: group}))
	if err != nil {
		return broker.GroupInfo{}, apiconv.FromConnect(err)
	}
	return apiconv.GroupFromProto(resp.Msg.GetGroup()), nil
}

// ListGroups lists consumer groups.
func (b *Broker) ListGroups(ctx context.Context) ([]broker.GroupInfo, error) {
	resp, err := b.rpc.ListGroups(ctx, connect.NewRequest(&v1.ListGroupsRequest{}))
	if err != nil {
		return nil, apiconv.FromConnect(err)
	}
	out := make([]broker.GroupInfo, len(resp.Msg.GetGroups()))
	for i, g := range resp.Msg.GetGroups() {
		out[i] = apiconv.GroupFromProto(g)
	}
	return out, nil
}

// DeleteGroup deletes a consumer group.
func (b *Broker) DeleteGroup(ctx context.Context, group string) error {
	_, err := b.rpc.DeleteGroup(ctx, connect.NewRequest(&v1.DeleteGroupRequest{Group: group}))
	return apiconv.FromConnect(err)
}

// ResetGroup moves a group to start.
func (b *Broker) ResetGroup(ctx context.Context, group string, start broker.StartPosition) error {
	_, err := b.rpc.ResetGroup(ctx, connect.NewRequest(&v1.ResetGroupRequest{Group: group, Start: apiconv.StartToProto(start)}))
	return apiconv.FromConnect(err)
}

// ReplayDeadLetters republishes up to max dead letters of group (0: all).
func (b *Broker) ReplayDeadLetters(ctx context.Context, group string, max int) (int, error) {
	resp, err := b.rpc.ReplayDeadLetters(ctx, connect.NewRequest(&v1.ReplayDeadLettersRequest{Group: group, Max: int32(max)}))
	if err != nil {
		return 0, apiconv.FromConnect(err)
	}
	return int(resp.Msg.GetReplayed()), nil
}

// PurgeDeadLetters deletes the dead letters of group.
func (b *Broker) PurgeDeadLetters(ctx context.Context, group string) (int, error) {
	resp, err := b.rpc.PurgeDeadLetters(ctx, connect.NewRequest(&v1.PurgeDeadLettersRequest{Group: group}))
	if err != nil {
		return 0, apiconv.FromConnect(err)
	}
	return int(resp.Msg.GetPurged()), nil
}

// ListDeadLetters returns the number of dead letters of group and up to max
// of them (oldest first) where the hub's backend can read them without
// consuming them.
func (b *Broker) ListDeadLetters(ctx context.Context, group string, max int) (int64, []*message.Message, error) {
	resp, err := b.rpc.ListDeadLetters(ctx, connect.NewRequest(&v1.ListDeadLettersRequest{Group: group, Max: int32(max)}))
	if err != nil {
		return 0, nil, apiconv.FromConnect(err)
	}
	msgs := make([]*message.Message, len(resp.Msg.GetMessages()))
	for i, m := range resp.Msg.GetMessages() {
		msgs[i] = apiconv.MessageFromProto(m)
	}
	return resp.Msg.GetCount(), msgs, nil
}
