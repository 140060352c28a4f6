package consume

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-dev/switchboard/broker"
)

// Collector returns a prometheus.Collector of the runtime's metrics, to be
// registered on the caller's registry (the runtime never touches the
// global one):
//
//	reg.MustRegister(rt.Collector())
//
// Per registration (labels topic, group, handler — the handler's Name):
// switchboard_consume_{received,acked,retried,duplicates,busy,stale,
// overtaken,expired,panics,abandoned,inbox_errors,version_errors,
// ack_errors}_total,
// switchboard_consume_dead_lettered_total (and a reason label: expired,
// decode, permanent, max-attempts), the handler latency histogram
// switchboard_consume_handler_duration_seconds and the gauge
// switchboard_consume_waiting_retry (messages held for an emulated delayed
// retry). Per consumer group, where the backend implements
// broker.GroupAdmin: switchboard_consume_group_lag (messages published and
// not yet settled by the group), switchboard_consume_group_in_flight and
// switchboard_consume_group_dead_letters, read from the backend at scrape
// time.
//
// The counters are the ones Stats reads; collecting costs nothing on the
// message path.
func (r *Runtime) Collector() prometheus.Collector { return &collector{r: r, d: metricDescs()} }

type descs struct {
	counters             []counterDesc
	deadLettered         *prometheus.Desc
	latency              *prometheus.Desc
	waiting              *prometheus.Desc
	lag, inFlight, dlqLn *prometheus.Desc
}

type counterDesc struct {
	desc *prometheus.Desc
	get  func(*counters, *hotTotals) int64
}

var regLabels = []string{"topic", "group", "handler"}

func metricDescs() *descs {
	c := func(name, help string, get func(*counters, *hotTotals) int64) counterDesc {
		return counterDesc{prometheus.NewDesc("switchboard_consume_"+name+"_total", help, regLabels, nil), get}
	}
	return &descs{
		counters: []counterDesc{
			c("received", "Deliveries taken by a worker.", func(_ *counters, h *hotTotals) int64 { return h.received }),
			c("acked", "Messages settled as done: handled, duplicate or stale.", func(_ *counters, h *hotTotals) int64 { return h.acked }),
			c("retried", "Failed attempts handed back for another attempt.", func(c *counters, _ *hotTotals) int64 { return c.retried.Load() }),
			c("duplicates", "Messages skipped because the idempotency inbox had their ID.", func(c *counters, _ *hotTotals) int64 { return c.duplicates.Load() }),
			c("busy", "Deliveries put back because a concurrent delivery of the same ID held the inbox claim.", func(c *counters, _ *hotTotals) int64 { return c.busy.Load() }),
			c("stale", "Messages dropped by DropStale (version not above the last applied for the key).", func(c *counters, _ *hotTotals) int64 { return c.stale.Load() }),
			c("overtaken", "DropStale messages handled while a version of their key at or above theirs was recorded (two versions in handlers at once).", func(c *counters, _ *hotTotals) int64 { return c.overtaken.Load() }),
			c("expired", "Messages past their expiry, dead-lettered without reaching the handler.", func(c *counters, _ *hotTotals) int64 { return c.expired.Load() }),
			c("panics", "Handler panics (retried like errors).", func(c *counters, _ *hotTotals) int64 { return c.panics.Load() }),
			c("abandoned", "Handlers that ignored their timeout and were abandoned (their worker replaced).", func(c *counters, _ *hotTotals) int64 { return c.abandoned.Load() }),
			c("inbox_errors", "Idempotency inbox failures (message left for retry, or mark lost after success).", func(c *counters, _ *hotTotals) int64 { return c.inboxErrors.Load() }),
			c("version_errors", "DropStale version store failures (message left for retry, or version not recorded after success).", func(c *counters, _ *hotTotals) int64 { return c.versionErrors.Load() }),
			c("ack_errors", "Failed acks (the message may be delivered again).", func(c *counters, _ *hotTotals) int64 { return c.ackErrors.Load() }),
		},
		deadLettered: prometheus.NewDesc("switchboard_consume_dead_lettered_total",
			"Messages sent to the group's dead-letter topic, by reason.", append(append([]string(nil), regLabels...), "reason"), nil),
		latency: prometheus.NewDesc("switchboard_consume_handler_duration_seconds",
			"Time from taking a delivery to the handler's result (inbox claim and handler call).", regLabels, nil),
		waiting: prometheus.NewDesc("switchboard_consume_waiting_retry",
			"Messages held by the runtime for an emulated delayed retry.", regLabels, nil),
		lag: prometheus.NewDesc("switchboard_consume_group_lag",
			"Messages published to the group's topics and not yet settled by the group (in flight included).", []string{"group"}, nil),
		inFlight: prometheus.NewDesc("switchboard_consume_group_in_flight",
			"Deliveries handed out to the group and not settled.", []string{"group"}, nil),
		dlqLn: prometheus.NewDesc("switchboard_consume_group_dead_letters",
			"Messages in the group's dead-letter topic.", []string{"group"}, nil),
	}
}

type collector struct {
	r *Runtime
	d *descs
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c.d.counters {
		ch <- x.desc
	}
	ch <- c.d.deadLettered
	ch <- c.d.latency
	ch <- c.d.waiting
	ch <- c.d.lag
	ch <- c.d.inFlight
	ch <- c.d.dlqLn
}

// regKey is a registration's label values. Registrations with the same
// values are summed.
type regKey struct{ topic, group, name string }

type regSum struct {
	counters []int64
	dl       [numReasons]int64
	buckets  [len(latencyBucketsArr) + 1]int64
	sumNanos int64
	waiting  int
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	r.mu.Lock()
	regs := append([]*registration(nil), r.regs...)
	r.mu.Unlock()

	var order []regKey
	sums := map[regKey]*regSum{}
	var groups []string
	seenGroup := map[string]bool{}
	for _, g := range regs {
		k := regKey{g.cfg.sub.Topic, g.cfg.sub.Group, g.cfg.name}
		s := sums[k]
		if s == nil {
			s = &regSum{counters: make([]int64, len(c.d.counters))}
			sums[k] = s
			order = append(order, k)
		}
		h := g.stats.hotTotals()
		for i, x := range c.d.counters {
			s.counters[i] += x.get(&g.stats, &h)
		}
		for i := range s.dl {
			s.dl[i] += g.stats.deadLetteredBy[i].Load()
		}
		for i := range s.buckets {
			s.buckets[i] += h.buckets[i]
		}
		s.sumNanos += h.handleNanos
		if g.holds != nil {
			s.waiting += g.holds.len()
		}
		if !seenGroup[g.cfg.sub.Group] {
			seenGroup[g.cfg.sub.Group] = true
			groups = append(groups, g.cfg.sub.Group)
		}
	}
	for _, k := range order {
		s := sums[k]
		lv := []string{k.topic, k.group, k.name}
		for i, x := range c.d.counters {
			ch <- prometheus.MustNewConstMetric(x.desc, prometheus.CounterValue, float64(s.counters[i]), lv...)
		}
		for i, n := range s.dl {
			ch <- prometheus.MustNewConstMetric(c.d.deadLettered, prometheus.CounterValue, float64(n), k.topic, k.group, k.name, dlReason(i).String())
		}
		cum := make(map[float64]uint64, len(latencyBucketsArr))
		var count uint64
		for i, n := range s.buckets {
			count += uint64(n)
			if i < len(latencyBucketsArr) {
				cum[latencyBucketsArr[i]] = count
			}
		}
		ch <- prometheus.MustNewConstHistogram(c.d.latency, count, float64(s.sumNanos)/1e9, cum, lv...)
		ch <- prometheus.MustNewConstMetric(c.d.waiting, prometheus.GaugeValue, float64(s.waiting), lv...)
	}

	ga, ok := r.b.(broker.GroupAdmin)
	if !ok {
		return
	}
	for _, group := range groups {
		ctx, cancel := context.WithTimeout(context.Background(), min(r.cfg.SettleTimeout, 5*time.Second))
		gi, err := ga.DescribeGroup(ctx, group)
		cancel()
		if err != nil {
			// A group the backend does not know yet (Run not started) or
			// an unreachable backend: leave its gauges out of this scrape.
			r.log.Debug("metrics: describe group failed", "group", group, "err", err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.d.lag, prometheus.GaugeValue, float64(gi.Lag), group)
		ch <- prometheus.MustNewConstMetric(c.d.inFlight, prometheus.GaugeValue, float64(gi.InFlight), group)
		ch <- prometheus.MustNewConstMetric(c.d.dlqLn, prometheus.GaugeValue, float64(gi.DeadLetters), group)
	}
}
