package hub

import (
	"context"
	"fmt"
	"math"

	"connectrpc.com/connect"

	v1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	"github.com/switchboard-dev/switchboard/api/switchboard/v1/switchboardv1connect"
	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/internal/apiconv"
	"github.com/switchboard-dev/switchboard/message"
)

// service implements the SwitchboardService RPCs on a broker. Publishing and
// administration are here; subscriptions and settlement in subscribe.go.
type service struct {
	s *Server
}

var _ switchboardv1connect.SwitchboardServiceHandler = (*service)(nil)

func invalid(format string, args ...any) error {
	return apiconv.NewError(connect.CodeInvalidArgument, apiconv.ReasonInvalid, fmt.Sprintf(format, args...))
}

// checkMessage applies the hub's limits before the backend sees the message.
func (sv *service) checkMessage(m *message.Message) error {
	return sv.s.cfg.Limits.Validate(m)
}

func (sv *service) publish(ctx context.Context, topic string, msgs []*v1.Message) ([]*v1.MessageResult, error) {
	if err := sv.s.authorize(ctx, PermPublish, topic); err != nil {
		return nil, err
	}
	if len(msgs) > sv.s.cfg.MaxBatch {
		return nil, invalid("batch of %d messages exceeds the hub's limit of %d; split it", len(msgs), sv.s.cfg.MaxBatch)
	}
	p := &broker.PublishParams{Topic: topic, Messages: make([]*message.Message, len(msgs))}
	for i, pm := range msgs {
		if pm == nil {
			return nil, invalid("message %d is missing", i)
		}
		m := apiconv.MessageFromProto(pm)
		m.Topic = ""
		if err := sv.checkMessage(m); err != nil {
			if len(msgs) > 1 {
				err = fmt.Errorf("message %d of batch: %w", i, err)
			}
			return nil, apiconv.ToConnect(err)
		}
		p.Messages[i] = m
	}
	res, err := sv.s.b.Publish(ctx, p)
	if err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("publish to %q: %w", topic, err))
	}
	sv.s.metrics.published.Add(float64(len(res.Results)))
	out := make([]*v1.MessageResult, len(res.Results))
	for i, r := range res.Results {
		out[i] = &v1.MessageResult{Id: r.ID, Seq: r.Seq, Duplicate: r.Duplicate}
	}
	return out, nil
}

func (sv *service) Publish(ctx context.Context, req *connect.Request[v1.PublishRequest]) (*connect.Response[v1.PublishResponse], error) {
	if req.Msg.GetMessage() == nil {
		return nil, invalid("message is required, e.g. {\"message\": {\"text\": \"hello\"}}")
	}
	res, err := sv.publish(ctx, req.Msg.GetTopic(), []*v1.Message{req.Msg.GetMessage()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&v1.PublishResponse{Result: res[0]}), nil
}

func (sv *service) PublishBatch(ctx context.Context, req *connect.Request[v1.PublishBatchRequest]) (*connect.Response[v1.PublishBatchResponse], error) {
	if len(req.Msg.GetMessages()) == 0 {
		return nil, invalid("messages is empty: a batch needs at least one message")
	}
	res, err := sv.publish(ctx, req.Msg.GetTopic(), req.Msg.GetMessages())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&v1.PublishBatchResponse{Results: res}), nil
}

func (sv *service) Request(ctx context.Context, req *connect.Request[v1.RequestRequest]) (*connect.Response[v1.RequestResponse], error) {
	if err := sv.s.authorize(ctx, PermPublish, req.Msg.GetTopic()); err != nil {
		return nil, err
	}
	r, ok := sv.s.b.(broker.Requester)
	if !ok {
		return nil, apiconv.ToConnect(broker.NotSupported(sv.s.b.Capabilities().Name, "request/reply", "publish and consume instead"))
	}
	timeout := apiconv.Dur(req.Msg.GetTimeout())
	if timeout <= 0 {
		return nil, invalid("timeout is required and must be positive (fail fast instead of waiting forever), e.g. \"timeout\": \"5s\"")
	}
	if timeout > sv.s.cfg.MaxRequestTimeout {
		return nil, invalid("timeout %s exceeds the hub's limit of %s", timeout, sv.s.cfg.MaxRequestTimeout)
	}
	m := apiconv.MessageFromProto(req.Msg.GetMessage())
	m.Topic = ""
	if err := sv.checkMessage(m); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	resp, err := r.Request(ctx, req.Msg.GetTopic(), m, timeout)
	if err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("request to %q: %w", req.Msg.GetTopic(), err))
	}
	return connect.NewResponse(&v1.RequestResponse{Message: apiconv.MessageToProto(resp, true)}), nil
}

func (sv *service) GetCapabilities(ctx context.Context, _ *connect.Request[v1.GetCapabilitiesRequest]) (*connect.Response[v1.GetCapabilitiesResponse], error) {
	resp := apiconv.CapsToProto(sv.s.b.Capabilities())
	if _, ok := sv.s.b.(broker.TopicAdmin); ok {
		resp.Admin = append(resp.Admin, "topics")
	}
	if _, ok := sv.s.b.(broker.GroupAdmin); ok {
		resp.Admin = append(resp.Admin, "groups")
	}
	if _, ok := sv.s.b.(broker.DeadLetterAdmin); ok {
		resp.Admin = append(resp.Admin, "dead-letters")
	}
	resp.HubVersion = sv.s.cfg.Version
	resp.MaxBatch = int32(min(sv.s.cfg.MaxBatch, math.MaxInt32))
	return connect.NewResponse(resp), nil
}

func (sv *service) topicAdmin() (broker.TopicAdmin, error) {
	a, ok := sv.s.b.(broker.TopicAdmin)
	if !ok {
		return nil, apiconv.ToConnect(broker.NotSupported(sv.s.b.Capabilities().Name, "topic administration", ""))
	}
	return a, nil
}

func (sv *service) groupAdmin() (broker.GroupAdmin, error) {
	a, ok := sv.s.b.(broker.GroupAdmin)
	if !ok {
		return nil, apiconv.ToConnect(broker.NotSupported(sv.s.b.Capabilities().Name, "group administration", ""))
	}
	return a, nil
}

func (sv *service) dlqAdmin() (broker.DeadLetterAdmin, error) {
	a, ok := sv.s.b.(broker.DeadLetterAdmin)
	if !ok {
		return nil, apiconv.ToConnect(broker.NotSupported(sv.s.b.Capabilities().Name, "dead-letter administration", ""))
	}
	return a, nil
}

func (sv *service) CreateTopic(ctx context.Context, req *connect.Request[v1.CreateTopicRequest]) (*connect.Response[v1.CreateTopicResponse], error) {
	a, err := sv.topicAdmin()
	if err != nil {
		return nil, err
	}
	if err := message.ValidateTopic(req.Msg.GetTopic()); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	if err := sv.s.authorize(ctx, PermAdmin, req.Msg.GetTopic()); err != nil {
		return nil, err
	}
	if req.Msg.GetPartitions() < 0 {
		return nil, invalid("partitions %d must not be negative", req.Msg.GetPartitions())
	}
	cfg := broker.TopicConfig{Name: req.Msg.GetTopic(), Retention: apiconv.RetentionFromProto(req.Msg.GetRetention()), Partitions: int(req.Msg.GetPartitions())}
	if err := a.CreateTopic(ctx, cfg); err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("create topic %q: %w", cfg.Name, err))
	}
	return connect.NewResponse(&v1.CreateTopicResponse{}), nil
}

func (sv *service) ListTopics(ctx context.Context, _ *connect.Request[v1.ListTopicsRequest]) (*connect.Response[v1.ListTopicsResponse], error) {
	a, err := sv.topicAdmin()
	if err != nil {
		return nil, err
	}
	infos, err := a.ListTopics(ctx)
	if err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("list topics: %w", err))
	}
	resp := &v1.ListTopicsResponse{Topics: make([]*v1.TopicInfo, 0, len(infos))}
	p := principalFrom(ctx)
	for _, ti := range infos {
		if sv.s.authOn && (p == nil || !p.mayAny(ti.Config.Name)) {
			continue // list only what the token may touch
		}
		resp.Topics = append(resp.Topics, apiconv.TopicToProto(ti))
	}
	return connect.NewResponse(resp), nil
}

func (sv *service) DescribeTopic(ctx context.Context, req *connect.Request[v1.DescribeTopicRequest]) (*connect.Response[v1.DescribeTopicResponse], error) {
	a, err := sv.topicAdmin()
	if err != nil {
		return nil, err
	}
	if err := sv.s.authorizeAny(ctx, req.Msg.GetTopic()); err != nil {
		return nil, err
	}
	ti, err := a.DescribeTopic(ctx, req.Msg.GetTopic())
	if err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("describe topic %q: %w", req.Msg.GetTopic(), err))
	}
	return connect.NewResponse(&v1.DescribeTopicResponse{Topic: apiconv.TopicToProto(ti)}), nil
}

func (sv *service) DeleteTopic(ctx context.Context, req *connect.Request[v1.DeleteTopicRequest]) (*connect.Response[v1.DeleteTopicResponse], error) {
	a, err := sv.topicAdmin()
	if err != nil {
		return nil, err
	}
	if err := sv.s.authorize(ctx, PermAdmin, req.Msg.GetTopic()); err != nil {
		return nil, err
	}
	if err := a.DeleteTopic(ctx, req.Msg.GetTopic()); err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("delete topic %q: %w", req.Msg.GetTopic(), err))
	}
	return connect.NewResponse(&v1.DeleteTopicResponse{}), nil
}

func (sv *service) CreateGroup(ctx context.Context, req *connect.Request[v1.CreateGroupRequest]) (*connect.Response[v1.CreateGroupResponse], error) {
	a, err := sv.groupAdmin()
	if err != nil {
		return nil, err
	}
	g, topic := req.Msg.GetGroup(), req.Msg.GetTopic()
	if err := message.ValidateGroup(g); err != nil {
		return nil, apiconv.ToConnect(err)
	}
	if topic == "" {
		return nil, invalid("topic is required: the topic or pattern the group follows")
	}
	if err := sv.s.authorize(ctx, PermConsume, topic); err != nil {
		return nil, err
	}
	if err := a.CreateGroup(ctx, topic, g, apiconv.StartFromProto(req.Msg.GetStart())); err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("create group %q on %q: %w", g, topic, err))
	}
	return connect.NewResponse(&v1.CreateGroupResponse{}), nil
}

func (sv *service) ListGroups(ctx context.Context, _ *connect.Request[v1.ListGroupsRequest]) (*connect.Response[v1.ListGroupsResponse], error) {
	a, err := sv.groupAdmin()
	if err != nil {
		return nil, err
	}
	infos, err := a.ListGroups(ctx)
	if err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("list groups: %w", err))
	}
	resp := &v1.ListGroupsResponse{Groups: make([]*v1.GroupInfo, 0, len(infos))}
	p := principalFrom(ctx)
	for _, gi := range infos {
		if sv.s.authOn && (p == nil || !p.may(PermConsume, gi.Topic)) {
			continue // list only the groups the token may consume
		}
		resp.Groups = append(resp.Groups, apiconv.GroupToProto(gi))
	}
	return connect.NewResponse(resp), nil
}

func (sv *service) DescribeGroup(ctx context.Context, req *connect.Request[v1.DescribeGroupRequest]) (*connect.Response[v1.DescribeGroupResponse], error) {
	a, err := sv.groupAdmin()
	if err != nil {
		return nil, err
	}
	if err := sv.s.authorizeGroup(ctx, PermConsume, req.Msg.GetGroup()); err != nil {
		return nil, err
	}
	gi, err := a.DescribeGroup(ctx, req.Msg.GetGroup())
	if err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("describe group %q: %w", req.Msg.GetGroup(), err))
	}
	return connect.NewResponse(&v1.DescribeGroupResponse{Group: apiconv.GroupToProto(gi)}), nil
}

func (sv *service) DeleteGroup(ctx context.Context, req *connect.Request[v1.DeleteGroupRequest]) (*connect.Response[v1.DeleteGroupResponse], error) {
	a, err := sv.groupAdmin()
	if err != nil {
		return nil, err
	}
	if err := sv.s.authorizeGroup(ctx, PermAdmin, req.Msg.GetGroup()); err != nil {
		return nil, err
	}
	if err := a.DeleteGroup(ctx, req.Msg.GetGroup()); err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("delete group %q: %w", req.Msg.GetGroup(), err))
	}
	return connect.NewResponse(&v1.DeleteGroupResponse{}), nil
}

func (sv *service) ResetGroup(ctx context.Context, req *connect.Request[v1.ResetGroupRequest]) (*connect.Response[v1.ResetGroupResponse], error) {
	a, err := sv.groupAdmin()
	if err != nil {
		return nil, err
	}
	if err := sv.s.authorizeGroup(ctx, PermAdmin, req.Msg.GetGroup()); err != nil {
		return nil, err
	}
	if err := a.ResetGroup(ctx, req.Msg.GetGroup(), apiconv.StartFromProto(req.Msg.GetStart())); err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("reset group %q: %w", req.Msg.GetGroup(), err))
	}
	return connect.NewResponse(&v1.ResetGroupResponse{}), nil
}

// DeadLetterLister is an optional interface a backend may implement to let
// the hub list dead letters without consuming them. It is a candidate for
// broker.DeadLetterAdmin; until then the hub finds it by type assertion.
type DeadLetterLister interface {
	ListDeadLetters(ctx context.Context, group string, max int) ([]*message.Message, error)
}

func (sv *service) ListDeadLetters(ctx context.Context, req *connect.Request[v1.ListDeadLettersRequest]) (*connect.Response[v1.ListDeadLettersResponse], error) {
	ga, err := sv.groupAdmin()
	if err != nil {
		return nil, err
	}
	g := req.Msg.GetGroup()
	if err := sv.s.authorizeGroup(ctx, PermConsume, g); err != nil {
		return nil, err
	}
	gi, err := ga.DescribeGroup(ctx, g)
	if err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("list dead letters of group %q: %w", g, err))
	}
	resp := &v1.ListDeadLettersResponse{Count: gi.DeadLetters}
	if l, ok := sv.s.b.(DeadLetterLister); ok {
		max := int(req.Msg.GetMax())
		if max <= 0 {
			max = 100
		}
		msgs, err := l.ListDeadLetters(ctx, g, max)
		if err != nil {
			return nil, apiconv.ToConnect(fmt.Errorf("list dead letters of group %q: %w", g, err))
		}
		for _, m := range msgs {
			resp.Messages = append(resp.Messages, apiconv.MessageToProto(m, true))
		}
	}
	return connect.NewResponse(resp), nil
}

func (sv *service) ReplayDeadLetters(ctx context.Context, req *connect.Request[v1.ReplayDeadLettersRequest]) (*connect.Response[v1.ReplayDeadLettersResponse], error) {
	a, err := sv.dlqAdmin()
	if err != nil {
		return nil, err
	}
	if req.Msg.GetMax() < 0 {
		return nil, invalid("max %d must not be negative (0 replays all)", req.Msg.GetMax())
	}
	if err := sv.s.authorizeGroup(ctx, PermAdmin, req.Msg.GetGroup()); err != nil {
		return nil, err
	}
	n, err := a.ReplayDeadLetters(ctx, req.Msg.GetGroup(), int(req.Msg.GetMax()))
	if err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("replay dead letters of group %q: %w", req.Msg.GetGroup(), err))
	}
	return connect.NewResponse(&v1.ReplayDeadLettersResponse{Replayed: int32(n)}), nil
}

func (sv *service) PurgeDeadLetters(ctx context.Context, req *connect.Request[v1.PurgeDeadLettersRequest]) (*connect.Response[v1.PurgeDeadLettersResponse], error) {
	a, err := sv.dlqAdmin()
	if err != nil {
		return nil, err
	}
	if err := sv.s.authorizeGroup(ctx, PermAdmin, req.Msg.GetGroup()); err != nil {
		return nil, err
	}
	n, err := a.PurgeDeadLetters(ctx, req.Msg.GetGroup())
	if err != nil {
		return nil, apiconv.ToConnect(fmt.Errorf("purge dead letters of group %q: %w", req.Msg.GetGroup(), err))
	}
	return connect.NewResponse(&v1.PurgeDeadLettersResponse{Purged: int32(n)}), nil
}
