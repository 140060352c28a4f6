package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"
)

// Result is one reported figure: the median of Runs measurements of one
// metric, with the spread. Every suite reports through it, so the table and
// the JSON lines look the same for all of them.
type Result struct {
	System     string  `json:"system"`
	Case       string  `json:"case"`
	MsgSize    int     `json:"msg_size"`
	Producers  int     `json:"producers"`
	Durability string  `json:"durability"`
	Metric     string  `json:"metric"`
	Value      float64 `json:"value"` // median across runs
	Min        float64 `json:"min"`
	Max        float64 `json:"max"`
	Runs       int     `json:"runs"`
}

// Metric names. Throughputs are messages per second; latencies microseconds.
const (
	MetricPublishRate = "publish_msgs_per_s"
	MetricE2ERate     = "e2e_msgs_per_s"
	MetricAckP50      = "publish_ack_p50_us"
	MetricAckP99      = "publish_ack_p99_us"
)

// resultKey identifies one row; samples with the same key are runs of it.
type resultKey struct {
	System, Case string
	MsgSize      int
	Producers    int
	Durability   string
	Metric       string
}

// Collector gathers per-run samples and turns them into Results (median,
// min, max), keeping rows in the order they were first seen.
type Collector struct {
	order   []resultKey
	samples map[resultKey][]float64
}

func NewCollector() *Collector { return &Collector{samples: map[resultKey][]float64{}} }

// Add records one run's value of a metric.
func (c *Collector) Add(system, cas string, msgSize, producers int, durability, metric string, v float64) {
	k := resultKey{system, cas, msgSize, producers, durability, metric}
	if _, ok := c.samples[k]; !ok {
		c.order = append(c.order, k)
	}
	c.samples[k] = append(c.samples[k], v)
}

// Results returns one Result per key, in first-seen order.
func (c *Collector) Results() []Result {
	out := make([]Result, 0, len(c.order))
	for _, k := range c.order {
		s := c.samples[k]
		out = append(out, Result{
			System: k.System, Case: k.Case, MsgSize: k.MsgSize, Producers: k.Producers,
			Durability: k.Durability, Metric: k.Metric,
			Value: median(s), Min: slices.Min(s), Max: slices.Max(s), Runs: len(s),
		})
	}
	return out
}

// Find returns the result for a key, if any.
func Find(rs []Result, system, cas string, msgSize int, metric string) (Result, bool) {
	for _, r := range rs {
		if r.System == system && r.Case == cas && r.MsgSize == msgSize && r.Metric == metric {
			return r, true
		}
	}
	return Result{}, false
}

// Ratio is one goal check printed after the results.
type Ratio struct {
	Name  string  // what is compared
	Value float64 // measured ratio
	Goal  string  // e.g. ">= 2.0"
	Pass  bool
	Note  string // the two operands, for the reader
	Unit  string // printed after Value; "" means "x" (a ratio)
}

// PrintTable writes results as an aligned table.
func PrintTable(w io.Writer, rs []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tcase\tmsg_size\tproducers\tdurability\tmetric\tvalue\tmin\tmax\truns\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t\n",
			r.System, r.Case, r.MsgSize, r.Producers, r.Durability, r.Metric,
			formatValue(r.Metric, r.Value), formatValue(r.Metric, r.Min), formatValue(r.Metric, r.Max), r.Runs)
	}
	_ = tw.Flush()
}

// PrintJSON writes one JSON object per result line.
func PrintJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		r.Value, r.Min, r.Max = round1(r.Value), round1(r.Min), round1(r.Max)
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// PrintRatios writes the goal checks, one line each.
func PrintRatios(w io.Writer, rs []Ratio) {
	for _, r := range rs {
		verdict := "FAIL"
		if r.Pass {
			verdict = "ok"
		}
		unit := r.Unit
		if unit == "" {
			unit = "x"
		}
		fmt.Fprintf(w, "ratio  %-58s %6.2f%-2s goal %-7s %-4s  (%s)\n", r.Name, r.Value, unit, r.Goal, verdict, r.Note)
	}
}

func formatValue(metric string, v float64) string {
	switch metric {
	case MetricAckP50, MetricAckP99:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func median(s []float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := slices.Clone(s)
	sort.Float64s(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// percentile returns the p-th percentile (0..100) of sorted durations, in
// microseconds (nearest rank).
func percentileUS(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Microsecond)
}
