package daemon

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// metrics are the daemon's counters and histograms, written in the
// Prometheus text format (version 0.0.4) by GET /metrics. Gauges (queue
// depth, KV cache, model state) are read from the registry at scrape time.
type metrics struct {
	requests     *counterVec // labels: endpoint, model, code
	tokensIn     *counterVec // model
	tokensOut    *counterVec // model
	ttft         *histVec    // model
	tokenLatency *histVec    // model
	queueWait    *histVec    // model
	loadSeconds  *histVec    // model

	// Token sparsity (sparsity.go).
	sparseRequests     *counterVec // model, method
	sparsePromptTokens *counterVec // model
	sparseKeptTokens   *counterVec // model, layer
	sparseSecondsSaved *counterVec // model
	sparseKVBytesSaved *counterVec // model
}

func newMetrics() *metrics {
	lat := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	return &metrics{
		requests:     newCounterVec("edged_requests_total", "Requests answered, by endpoint, model and result code (ok or an error code).", "endpoint", "model", "code"),
		tokensIn:     newCounterVec("edged_prompt_tokens_total", "Prompt tokens read.", "model"),
		tokensOut:    newCounterVec("edged_completion_tokens_total", "Tokens generated.", "model"),
		ttft:         newHistVec("edged_time_to_first_token_seconds", "Time from queueing a request to its first token.", lat, "model"),
		tokenLatency: newHistVec("edged_token_latency_seconds", "Time between consecutive generated tokens of one sequence.", []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}, "model"),
		queueWait:    newHistVec("edged_queue_wait_seconds", "Time a request waited in its model's queue.", lat, "model"),
		loadSeconds:  newHistVec("edged_model_load_seconds", "Time to load a model.", []float64{.01, .1, .5, 1, 5, 10, 30, 60}, "model"),

		sparseRequests:     newCounterVec("edged_sparsity_requests_total", "Requests whose prompt was read with token sparsity, by model and method.", "model", "method"),
		sparsePromptTokens: newCounterVec("edged_sparsity_prompt_tokens_total", "Prompt tokens read with token sparsity: what each layer would have computed without it.", "model"),
		sparseKeptTokens:   newCounterVec("edged_sparsity_kept_tokens_total", "Of the prompt tokens read with token sparsity, those each layer computed and cached (the others were dropped after an earlier layer), by model and layer.", "model", "layer"),
		sparseSecondsSaved: newCounterVec("edged_sparsity_prefill_seconds_saved_total", "Estimated prefill time saved by token sparsity: in each engine step, the time per (token, layer) computed times the (token, layer) pairs dropped tokens did not compute. A linear estimate: it undercounts attention's quadratic share, and the step time it divides already includes ranking the tokens.", "model"),
		sparseKVBytesSaved: newCounterVec("edged_sparsity_kv_bytes_saved_total", "KV cache bytes not written because of token sparsity: (token, layer) pairs dropped times one token's keys and values at one layer.", "model"),
	}
}

// write renders every metric.
func (m *metrics) write(w io.Writer) {
	m.requests.write(w)
	m.tokensIn.write(w)
	m.tokensOut.write(w)
	m.ttft.write(w)
	m.tokenLatency.write(w)
	m.queueWait.write(w)
	m.loadSeconds.write(w)
	m.sparseRequests.write(w)
	m.sparsePromptTokens.write(w)
	m.sparseKeptTokens.write(w)
	m.sparseSecondsSaved.write(w)
	m.sparseKVBytesSaved.write(w)
}

// counterVec is a counter with labels.
type counterVec struct {
	name, help string
	labels     []string
	mu         sync.Mutex
	values     map[string]float64 // key: rendered label set
}

func newCounterVec(name, help string, labels ...string) *counterVec {
	return &counterVec{name: name, help: help, labels: labels, values: map[string]float64{}}
}

func (c *counterVec) add(v float64, labelValues ...string) {
	key := labelSet(c.labels, labelValues)
	c.mu.Lock()
	c.values[key] += v
	c.mu.Unlock()
}

func (c *counterVec) write(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", c.name, c.help, c.name)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range sortedKeys(c.values) {
		fmt.Fprintf(w, "%s%s %s\n", c.name, k, num(c.values[k]))
	}
}

// histVec is a histogram with labels.
type histVec struct {
	name, help string
	labels     []string
	buckets    []float64
	mu         sync.Mutex
	values     map[string]*hist
}

type hist struct {
	counts []uint64 // per bucket, not cumulative
	sum    float64
	n      uint64
}

func newHistVec(name, help string, buckets []float64, labels ...string) *histVec {
	return &histVec{name: name, help: help, labels: labels, buckets: buckets, values: map[string]*hist{}}
}

func (h *histVec) observe(label string, v float64) {
	key := labelSet(h.labels, []string{label})
	h.mu.Lock()
	defer h.mu.Unlock()
	x := h.values[key]
	if x == nil {
		x = &hist{counts: make([]uint64, len(h.buckets))}
		h.values[key] = x
	}
	if i, _ := slices.BinarySearch(h.buckets, v); i < len(h.buckets) {
		x.counts[i]++
	}
	x.sum += v
	x.n++
}

func (h *histVec) write(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", h.name, h.help, h.name)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range sortedKeys(h.values) {
		x := h.values[k]
		inner := strings.TrimSuffix(strings.TrimPrefix(k, "{"), "}")
		var cum uint64
		for i, b := range h.buckets {
			cum += x.counts[i]
			fmt.Fprintf(w, "%s_bucket{%s,le=\"%s\"} %d\n", h.name, inner, num(b), cum)
		}
		fmt.Fprintf(w, "%s_bucket{%s,le=\"+Inf\"} %d\n", h.name, inner, x.n)
		fmt.Fprintf(w, "%s_sum%s %s\n%s_count%s %d\n", h.name, k, num(x.sum), h.name, k, x.n)
	}
}

// gauge writes one gauge family: values by label set.
func gauge(w io.Writer, name, help string, labels []string, rows [][]string, values []float64) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
	for i, r := range rows {
		fmt.Fprintf(w, "%s%s %s\n", name, labelSet(labels, r), num(values[i]))
	}
}

// labelSet renders {a="x",b="y"} with the values escaped.
func labelSet(names, values []string) string {
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		v := ""
		if i < len(values) {
			v = values[i]
		}
		b.WriteString(n)
		b.WriteString(`="`)
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
