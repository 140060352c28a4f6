package outbox

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics is the relay's Prometheus collector. The backlog gauges are read
// from the table at scrape time (Relay.Lag), so they are right even while the
// relay stands by or is stopped.
type metrics struct {
	r                                  *Relay
	pending, oldest, failed            *prometheus.Desc
	leader                             prometheus.Gauge
	relayed, duplicates, publishErrors prometheus.Counter
	refused                            prometheus.Counter
}

func newMetrics(r *Relay) *metrics {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, nil)
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return &metrics{
		r:       r,
		pending: desc("switchboard_outbox_pending_rows", "Outbox rows waiting to be relayed (read from the table at scrape)."),
		oldest:  desc("switchboard_outbox_oldest_age_seconds", "Age of the oldest outbox row waiting to be relayed, from its insert time (0 when none)."),
		failed:  desc("switchboard_outbox_failed_rows", "Outbox rows the backend refused for good (marked failed, not retried)."),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_outbox_leader",
			Help: "1 while this relay is the active one of its table, else 0."}),
		relayed:       counter("switchboard_outbox_relayed_total", "Messages acknowledged by the backend and removed from the outbox."),
		duplicates:    counter("switchboard_outbox_duplicates_total", "Relayed messages the backend reported as duplicates (already published with the same ID)."),
		publishErrors: counter("switchboard_outbox_publish_errors_total", "Failed publish attempts to the backend (the rows are kept and retried)."),
		refused:       counter("switchboard_outbox_refused_total", "Messages the backend refused for good (rows marked failed)."),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.pending
	ch <- m.oldest
	ch <- m.failed
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := m.r.Lag(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(m.pending, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, float64(l.Pending))
	ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, l.Age().Seconds())
	ch <- prometheus.MustNewConstMetric(m.failed, prometheus.GaugeValue, float64(l.Failed))
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.leader, m.relayed, m.duplicates, m.publishErrors, m.refused}
}
