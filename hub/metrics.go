package hub

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/embedded"
)

// metrics are the hub's Prometheus metrics, on a registry of its own (so
// several hubs in one process, as in tests, do not collide).
type metrics struct {
	reg           *prometheus.Registry
	requests      *prometheus.CounterVec   // procedure, code
	duration      *prometheus.HistogramVec // procedure
	published     prometheus.Counter
	delivered     prometheus.Counter
	settled       *prometheus.CounterVec // op
	rejected      *prometheus.CounterVec // reason
	subscriptions prometheus.Gauge
}

// EngineMetrics is implemented by backends that expose the embedded
// engine's counters (*embedded.Broker); the hub exports them.
type EngineMetrics interface {
	Metrics() *embedded.Metrics
}

func newMetrics(b broker.Broker, scrapeTimeout time.Duration) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_hub_requests_total",
			Help: "API requests handled, by procedure (e.g. /switchboard.v1.SwitchboardService/Publish, whatever the protocol; SSE for event streams) and result code (ok or the gRPC code name).",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchboard_hub_request_duration_seconds",
			Help:    "Time to handle an API request, by procedure (streams: their whole life).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"procedure"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_hub_published_messages_total",
			Help: "Messages accepted by Publish and PublishBatch (durable when counted; duplicates included).",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_hub_delivered_messages_total",
			Help: "Deliveries sent to subscribers (gRPC, Connect and SSE streams).",
		}),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_hub_settlements_total",
			Help: "Successful settlements through the hub, by operation (ack, nack, term, extend, reply).",
		}, []string{"op"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_hub_rejected_requests_total",
			Help: "Requests refused before reaching the API, by reason (unauthenticated, rate_limited).",
		}, []string{"reason"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_hub_subscriptions",
			Help: "Subscription streams attached now.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.published, m.delivered, m.settled, m.rejected, m.subscriptions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&backendCollector{b: b, timeout: scrapeTimeout})
	return m
}

// observe records one finished request.
func (m *metrics) observe(procedure string, err error, d time.Duration) {
	m.requests.WithLabelValues(procedure, codeName(err)).Inc()
	m.duration.WithLabelValues(procedure).Observe(d.Seconds())
}

func codeName(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

// backendCollector reads the backend at scrape time: group lag, in flight,
// consumers and dead letters (broker.GroupAdmin), and the embedded engine's
// counters, fsync count and time among them (EngineMetrics).
type backendCollector struct {
	b       broker.Broker
	timeout time.Duration
}

var (
	descLag         = prometheus.NewDesc("switchboard_group_lag", "Messages not yet settled by the group (published and not acked, in flight included).", []string{"group", "topic"}, nil)
	descInFlight    = prometheus.NewDesc("switchboard_group_in_flight", "Deliveries of the group handed out and not settled.", []string{"group", "topic"}, nil)
	descConsumers   = prometheus.NewDesc("switchboard_group_consumers", "Subscriptions attached to the group.", []string{"group", "topic"}, nil)
	descDeadLetters = prometheus.NewDesc("switchboard_group_dead_letters", "Messages in the group's dead-letter topic.", []string{"group", "topic"}, nil)
	descGroupsUp    = prometheus.NewDesc("switchboard_groups_scrape_ok", "1 if the group metrics could be read from the backend in this scrape, else 0.", nil, nil)
	descFsyncs      = prometheus.NewDesc("switchboard_embedded_fsyncs_total", "fdatasync calls of the embedded engine (one per group commit).", nil, nil)
	descFsyncSecs   = prometheus.NewDesc("switchboard_embedded_fsync_seconds_total", "Time spent in fdatasync; rate(this) / rate(switchboard_embedded_fsyncs_total) is the mean fsync latency.", nil, nil)
	descEngine      = prometheus.NewDesc("switchboard_embedded_events_total", "Counters of the embedded engine since it opened, by event.", []string{"event"}, nil)
)

func (c *backendCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLag, descInFlight, descConsumers, descDeadLetters, descGroupsUp, descFsyncs, descFsyncSecs, descEngine} {
		ch <- d
	}
}

func (c *backendCollector) Collect(ch chan<- prometheus.Metric) {
	if ga, ok := c.b.(broker.GroupAdmin); ok {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		groups, err := ga.ListGroups(ctx)
		cancel()
		up := 1.0
		if err != nil {
			up = 0
			if errors.Is(err, broker.ErrClosed) {
				groups = nil
			}
		}
		ch <- prometheus.MustNewConstMetric(descGroupsUp, prometheus.GaugeValue, up)
		for _, g := range groups {
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(g.Lag), g.Name, g.Topic)
			ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(g.InFlight), g.Name, g.Topic)
			ch <- prometheus.MustNewConstMetric(descConsumers, prometheus.GaugeValue, float64(g.Consumers), g.Name, g.Topic)
			ch <- prometheus.MustNewConstMetric(descDeadLetters, prometheus.GaugeValue, float64(g.DeadLetters), g.Name, g.Topic)
		}
	}
	if em, ok := c.b.(EngineMetrics); ok {
		m := em.Metrics()
		if m == nil {
			return
		}
		ch <- prometheus.MustNewConstMetric(descFsyncs, prometheus.CounterValue, float64(m.Syncs.Load()))
		ch <- prometheus.MustNewConstMetric(descFsyncSecs, prometheus.CounterValue, float64(m.SyncNanos.Load())/1e9)
		for _, e := range []struct {
			name string
			v    int64
		}{
			{"published", m.Published.Load()},
			{"duplicate", m.Duplicates.Load()},
			{"delivered", m.Delivered.Load()},
			{"redelivered", m.Redelivered.Load()},
			{"acked", m.Acked.Load()},
			{"nacked", m.Nacked.Load()},
			{"deadline_expired", m.DeadlineExpired.Load()},
			{"dead_lettered", m.DeadLettered.Load()},
			{"expired", m.Expired.Load()},
			{"ephemeral_dropped", m.EphemeralDropped.Load()},
		} {
			ch <- prometheus.MustNewConstMetric(descEngine, prometheus.CounterValue, float64(e.v), e.name)
		}
	}
}
