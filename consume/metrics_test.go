package consume_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/broker/brokertest"
	"github.com/switchboard-dev/switchboard/consume"
	"github.com/switchboard-dev/switchboard/message"
)

// gather returns the registry's metrics by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// metricValue finds the sample of family name whose labels include want.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, bool) {
	t.Helper()
	mf := fams[name]
	if mf == nil {
		return nil, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

func TestMetrics(t *testing.T) {
	b := openEmbedded(t)
	rt, _ := newRuntime(t, b)
	reg := prometheus.NewRegistry()
	reg.MustRegister(rt.Collector())
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	inbox := boltStore(t)
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error {
		switch o.ID {
		case "flaky":
			if consume.DeliveryFrom(ctx).Info.Attempt == 1 {
				return errors.New("try again")
			}
		case "bad":
			return consume.Permanent(errors.New("no such order"))
		}
		time.Sleep(2 * time.Millisecond)
		return nil
	}), consume.Name("orders"), consume.Idempotent(inbox, time.Hour), consume.Retry(consume.Constant(time.Millisecond), 3))

	// Before Run: the counters are there (zero), the group not yet.
	fams := gather(t, reg)
	if m, ok := metricValue(t, fams, "switchboard_consume_received_total", map[string]string{"topic": topic, "group": group, "handler": "orders"}); !ok || m.GetCounter().GetValue() != 0 {
		t.Fatalf("received before Run: %v %v", m, ok)
	}

	// (The embedded engine drops expired messages itself, so expiry and
	// inbox duplicates are not exercised here; their counters are the ones
	// Stats reads, tested elsewhere.)
	publish(t, b, topic, jsonMsg(t, order{ID: "ok"}), jsonMsg(t, order{ID: "flaky"}), jsonMsg(t, order{ID: "bad"}),
		&message.Message{Payload: []byte("{not json"), ContentType: "application/json"})
	stop := start(t, rt)
	eventually(t, "the four messages to settle", func() bool { s := stats(t, rt); return s.Acked == 2 && s.DeadLettered == 2 })

	fams = gather(t, reg)
	labels := map[string]string{"topic": topic, "group": group, "handler": "orders"}
	check := func(name string, want float64) {
		t.Helper()
		m, found := metricValue(t, fams, name, labels)
		if !found {
			t.Errorf("%s missing", name)
			return
		}
		if got := m.GetCounter().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	s := stats(t, rt)
	check("switchboard_consume_received_total", float64(s.Received))
	check("switchboard_consume_received_total", 5)
	check("switchboard_consume_acked_total", 2)
	check("switchboard_consume_retried_total", 1)
	check("switchboard_consume_expired_total", 0)
	check("switchboard_consume_duplicates_total", 0)
	check("switchboard_consume_inbox_errors_total", 0)
	check("switchboard_consume_stale_total", 0)
	check("switchboard_consume_abandoned_total", 0)
	for reason, want := range map[string]float64{"expired": 0, "decode": 1, "permanent": 1, "max-attempts": 0} {
		m, found := metricValue(t, fams, "switchboard_consume_dead_lettered_total", map[string]string{"group": group, "handler": "orders", "reason": reason})
		if !found || m.GetCounter().GetValue() != want {
			t.Errorf("dead_lettered_total{reason=%q} = %v (found %v), want %v", reason, m.GetCounter().GetValue(), found, want)
		}
	}
	h, found := metricValue(t, fams, "switchboard_consume_handler_duration_seconds", labels)
	if !found {
		t.Fatal("handler latency histogram missing")
	}
	hist := h.GetHistogram()
	// Handler calls: ok, flaky twice, bad, bad JSON (decoding is part of the
	// handler call).
	if hist.GetSampleCount() != 5 || hist.GetSampleSum() < 0.004 {
		t.Errorf("latency histogram: count %d, sum %v; want 5 calls, >= 4ms", hist.GetSampleCount(), hist.GetSampleSum())
	}
	var le1ms, inf uint64
	for _, bk := range hist.GetBucket() {
		if bk.GetUpperBound() == 0.001 {
			le1ms = bk.GetCumulativeCount()
		}
		inf = max(inf, bk.GetCumulativeCount())
	}
	if inf != 5 || le1ms > 3 {
		t.Errorf("buckets: <=1ms %d, total %d; the two 2ms calls must be above 1ms", le1ms, inf)
	}
	if m, found := metricValue(t, fams, "switchboard_consume_group_lag", map[string]string{"group": group}); !found || m.GetGauge().GetValue() != 0 {
		t.Errorf("group lag %v (found %v), want 0", m.GetGauge().GetValue(), found)
	}
	if m, found := metricValue(t, fams, "switchboard_consume_group_dead_letters", map[string]string{"group": group}); !found || m.GetGauge().GetValue() != 2 {
		t.Errorf("group dead letters %v (found %v), want 2", m.GetGauge().GetValue(), found)
	}

	// Lag follows the backlog: stop, publish two, scrape.
	stop()
	publish(t, b, topic, jsonMsg(t, order{ID: "x"}), jsonMsg(t, order{ID: "y"}))
	fams = gather(t, reg)
	if m, found := metricValue(t, fams, "switchboard_consume_group_lag", map[string]string{"group": group}); !found || m.GetGauge().GetValue() != 2 {
		t.Errorf("group lag after publishing 2 while stopped: %v (found %v), want 2", m.GetGauge().GetValue(), found)
	}
}

// The inbox errors counter counts an inbox that is down; a backend without
// GroupAdmin has no lag gauges but the rest works.
func TestMetricsInboxDownNoGroupAdmin(t *testing.T) {
	b := openEmbedded(t)
	nb := noAdmin{b}
	rt, _ := newRuntime(t, nb)
	reg := prometheus.NewRegistry()
	reg.MustRegister(rt.Collector())
	topic, group := brokertest.Topic(t), brokertest.Group(t)
	handle(t, rt, topic, group, consume.Func(func(ctx context.Context, o *order) error { return nil }),
		consume.Idempotent(downInbox{}, time.Hour), consume.Retry(consume.Constant(10*time.Millisecond), 3))
	start(t, rt)
	publish(t, b, topic, jsonMsg(t, order{ID: "a"}))
	eventually(t, "inbox errors", func() bool { return stats(t, rt).InboxErrors >= 2 })
	fams := gather(t, reg)
	m, found := metricValue(t, fams, "switchboard_consume_inbox_errors_total", map[string]string{"group": group})
	if !found || m.GetCounter().GetValue() < 2 {
		t.Errorf("inbox errors %v (found %v)", m.GetCounter().GetValue(), found)
	}
	if m, found := metricValue(t, fams, "switchboard_consume_acked_total", map[string]string{"group": group}); !found || m.GetCounter().GetValue() != 0 {
		t.Errorf("acked with the inbox down: %v", m.GetCounter().GetValue())
	}
	if _, found := fams["switchboard_consume_group_lag"]; found {
		t.Error("lag exported for a backend without GroupAdmin")
	}
}

// noAdmin hides the embedded engine's admin interfaces.
type noAdmin struct{ broker.Broker }

type downInbox struct{}

var errDown = errors.New("inbox store down")

func (downInbox) Claim(context.Context, string, string, time.Duration) (consume.ClaimState, error) {
	return 0, errDown
}
func (downInbox) Mark(context.Context, string, string, time.Duration) error { return errDown }
func (downInbox) Release(context.Context, string, string) error             { return errDown }
