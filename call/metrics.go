package call

import (
	"sort"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a prometheus.Collector of the interceptor's breakers,
// retries and hedges, to be registered on the caller's registry (the
// interceptor never touches the global one):
//
//	ci := call.NewClientInterceptor(nil)
//	reg.MustRegister(ci.Collector())
//
// Per target (label target, "host:port" as connect reports the peer):
//
//   - switchboard_call_client_breaker_state (gauge): 0 closed, 1 open,
//     2 half-open — the state BreakerState reports, so an open breaker
//     whose OpenFor has passed reads 2 (its next call is the probe);
//   - switchboard_call_client_breaker_transitions_total{from,to}: every
//     transition (the OnStateChange events), with from and to named as
//     BreakerState.String prints them;
//   - switchboard_call_client_breaker_rejected_total: calls failed fast
//     with ErrCircuitOpen;
//   - switchboard_call_client_attempts_total: attempts handed to the
//     transport (first attempts, retries and hedged attempts);
//   - switchboard_call_client_retries_total{code}: retries, by the connect
//     code of the attempt that failed (unavailable, resource_exhausted,
//     deadline_exceeded — the last only when the request was not sent);
//   - switchboard_call_client_retry_budget_exhausted_total: retries that
//     were allowed by the method and the error but refused by the budget;
//   - switchboard_call_client_hedges_total and
//     switchboard_call_client_hedge_wins_total: attempts sent by Hedge
//     after its delay, and those whose answer was returned.
//
// And switchboard_call_client_retry_budget_tokens (gauge, no labels): the
// retry tokens saved (at most 10).
//
// The values are the interceptor's own counters, read at scrape time:
// collecting costs nothing on the call path. To register several
// interceptors on one registry, tell them apart with a constant label:
// prometheus.WrapRegistererWith(prometheus.Labels{"client": "payments"}, reg).
func (ci *ClientInterceptor) Collector() prometheus.Collector {
	return &clientCollector{ci: ci, d: newClientDescs()}
}

type clientDescs struct {
	state, transitions, rejected, attempts, retries, exhausted, hedges, wins, tokens *prometheus.Desc
}

func newClientDescs() *clientDescs {
	const ns = "switchboard_call_client_"
	tl := []string{"target"}
	return &clientDescs{
		state: prometheus.NewDesc(ns+"breaker_state",
			"Circuit breaker state per target: 0 closed, 1 open, 2 half-open (the next call is a probe).", tl, nil),
		transitions: prometheus.NewDesc(ns+"breaker_transitions_total",
			"Circuit breaker transitions per target.", []string{"target", "from", "to"}, nil),
		rejected: prometheus.NewDesc(ns+"breaker_rejected_total",
			"Calls failed fast by an open or probing breaker (Unavailable wrapping ErrCircuitOpen).", tl, nil),
		attempts: prometheus.NewDesc(ns+"attempts_total",
			"Attempts handed to the transport: first attempts, retries and hedged attempts.", tl, nil),
		retries: prometheus.NewDesc(ns+"retries_total",
			"Retries, by the connect code of the failed attempt.", []string{"target", "code"}, nil),
		exhausted: prometheus.NewDesc(ns+"retry_budget_exhausted_total",
			"Retries the method and the error allowed but the retry budget refused.", tl, nil),
		hedges: prometheus.NewDesc(ns+"hedges_total",
			"Hedged attempts sent by call.Hedge after its delay.", tl, nil),
		wins: prometheus.NewDesc(ns+"hedge_wins_total",
			"Hedged attempts whose answer call.Hedge returned.", tl, nil),
		tokens: prometheus.NewDesc(ns+"retry_budget_tokens",
			"Retry tokens saved by the budget (each retry spends one; at most 10).", nil, nil),
	}
}

type clientCollector struct {
	ci *ClientInterceptor
	d  *clientDescs
}

// Describe implements prometheus.Collector.
func (c *clientCollector) Describe(ch chan<- *prometheus.Desc) {
	d := c.d
	for _, x := range []*prometheus.Desc{d.state, d.transitions, d.rejected, d.attempts, d.retries, d.exhausted, d.hedges, d.wins, d.tokens} {
		ch <- x
	}
}

// targetSnapshot is a copy of one target's counters.
type targetSnapshot struct {
	addr                                                   string
	state                                                  BreakerState
	transitions                                            [3][3]uint64
	rejected, attempts, budgetExhausted, hedges, hedgeWins uint64
	retries                                                map[connect.Code]uint64
}

// Collect implements prometheus.Collector.
func (c *clientCollector) Collect(ch chan<- prometheus.Metric) {
	ci, d := c.ci, c.d
	ci.mu.Lock()
	targets := make([]*target, 0, len(ci.targets))
	for _, t := range ci.targets {
		targets = append(targets, t)
	}
	tokens := ci.tokens
	ci.mu.Unlock()
	sort.Slice(targets, func(i, j int) bool { return targets[i].addr < targets[j].addr })

	ch <- prometheus.MustNewConstMetric(d.tokens, prometheus.GaugeValue, tokens)
	for _, t := range targets {
		t.mu.Lock()
		s := targetSnapshot{
			addr: t.addr, state: t.effectiveState(ci), transitions: t.transitions,
			rejected: t.rejected, attempts: t.attempts, budgetExhausted: t.budgetExhausted,
			hedges: t.hedges, hedgeWins: t.hedgeWins, retries: make(map[connect.Code]uint64, len(t.retries)),
		}
		for k, v := range t.retries {
			s.retries[k] = v
		}
		t.mu.Unlock()

		counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), append([]string{s.addr}, labels...)...)
		}
		ch <- prometheus.MustNewConstMetric(d.state, prometheus.GaugeValue, float64(s.state), s.addr)
		for from := BreakerClosed; from <= BreakerHalfOpen; from++ {
			for to := BreakerClosed; to <= BreakerHalfOpen; to++ {
				if from != to && possibleTransition(from, to) {
					counter(d.transitions, s.transitions[from][to], from.String(), to.String())
				}
			}
		}
		counter(d.rejected, s.rejected)
		counter(d.attempts, s.attempts)
		for _, code := range []connect.Code{connect.CodeUnavailable, connect.CodeResourceExhausted, connect.CodeDeadlineExceeded} {
			counter(d.retries, s.retries[code], code.String())
		}
		counter(d.exhausted, s.budgetExhausted)
		counter(d.hedges, s.hedges)
		counter(d.wins, s.hedgeWins)
	}
}

// possibleTransition lists the transitions a breaker makes: closed → open,
// open → half-open, half-open → open and half-open → closed.
func possibleTransition(from, to BreakerState) bool {
	switch from {
	case BreakerClosed:
		return to == BreakerOpen
	case BreakerOpen:
		return to == BreakerHalfOpen
	case BreakerHalfOpen:
		return to == BreakerOpen || to == BreakerClosed
	}
	return false
}
