package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/edged/edged/engine"
)

// sparsityEval runs the dense and sparse passes of eval-sparsity.
type sparsityEval struct {
	ctx          context.Context
	e            *engine.Engine
	hook         *switchHook
	prefix, cont int
	bos          int32
}

// sparsityReport is eval-sparsity's result: the chosen method's figures at
// the top level, the other methods' under baselines.
type sparsityReport struct {
	Model          string  `json:"model"`
	Keep           float64 `json:"keep"`
	Layers         []int   `json:"layers"`
	Window         int     `json:"window"`
	Iterations     int     `json:"iterations"`
	Similarity     float64 `json:"similarity"`          // Zero-TPrune's similarity share
	Block          int     `json:"block"`               // LeMo's
	Predictor      string  `json:"predictor,omitempty"` // LeMo's predictor file
	Threads        int     `json:"threads"`
	Sequences      int     `json:"sequences"`
	Data           string  `json:"data,omitempty"` // the --data file; absent: self-sampled with seed
	PrefixLen      int     `json:"prefix_len"`
	ContLen        int     `json:"continuation_len"`
	Seed           uint64  `json:"seed"`             // of the self-sampling and the random baseline
	DenseNLL       float64 `json:"dense_nll"`        // mean per continuation token
	DensePrefillMS float64 `json:"dense_prefill_ms"` // summed over the sequences
	DenseKVRows    int     `json:"dense_kv_rows"`    // cache rows over all layers after a prefill, mean
	methodFigures
	Baselines map[string]methodFigures `json:"baselines,omitempty"`
}

// methodFigures compare one method's runs with the dense ones.
type methodFigures struct {
	Method         string  `json:"method"`
	NLL            float64 `json:"nll"`
	NLLIncreasePct float64 `json:"nll_increase_pct"`
	Top1Agreement  float64 `json:"top1_agreement"`
	KL             float64 `json:"kl"` // KL(dense ‖ sparse), mean per token, nats
	PrefillMS      float64 `json:"prefill_ms"`
	PrefillSpeedup float64 `json:"prefill_speedup"`
	KVRows         float64 `json:"kv_rows"` // cache rows over all layers after a prefill, mean
	KVBytesRatio   float64 `json:"kv_bytes_ratio"`
	// Attention FLOPs of the prefills, summed over the sequences (see
	// prefillWork); the dense figure is repeated in each method's so
	// that every entry, baselines included, reads on its own.
	AttnFLOPs      int64   `json:"attn_flops"`
	DenseAttnFLOPs int64   `json:"dense_attn_flops"`
	AttnFLOPsRatio float64 `json:"attn_flops_ratio"`

	// sums while measuring
	nll, kl float64
	agree   int
	prefill time.Duration
	kvRows  int
}

// passResult is one run over a sequence: the next-token log-probabilities
// at each continuation position, the prefill time, the cache rows and the
// prefill's attention FLOPs.
type passResult struct {
	logp      [][]float64 // [cont][vocab]
	prefill   time.Duration
	kvRows    int
	attnFLOPs int64
}

// run measures every method on seqs (each prefix+cont tokens long) against
// the dense runs.
func (ev *sparsityEval) run(methods []*sparsityMethod, seqs [][]int32) (*sparsityReport, error) {
	samples := len(seqs)
	r := &sparsityReport{Sequences: samples, PrefixLen: ev.prefix, ContLen: ev.cont}
	dense, err := ev.pass(seqs, nil)
	if err != nil {
		return nil, err
	}
	var denseNLL float64
	var densePrefill time.Duration
	denseKV := 0
	var denseAttn int64
	for s, ids := range seqs {
		denseNLL += nll(dense[s].logp, ids[ev.prefix:])
		densePrefill += dense[s].prefill
		denseKV += dense[s].kvRows
		denseAttn += dense[s].attnFLOPs
	}
	figs := make([]methodFigures, len(methods))
	for i, m := range methods {
		sparse, err := ev.pass(seqs, m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.name, err)
		}
		f := &figs[i]
		for s, ids := range seqs {
			f.nll += nll(sparse[s].logp, ids[ev.prefix:])
			f.prefill += sparse[s].prefill
			f.kvRows += sparse[s].kvRows
			f.AttnFLOPs += sparse[s].attnFLOPs
			for k := range sparse[s].logp {
				f.kl += kl(dense[s].logp[k], sparse[s].logp[k])
				if argmax64(dense[s].logp[k]) == argmax64(sparse[s].logp[k]) {
					f.agree++
				}
			}
		}
	}
	tokens := float64(samples * ev.cont)
	r.DenseNLL = denseNLL / tokens
	r.DensePrefillMS = ms(densePrefill)
	r.DenseKVRows = denseKV / samples
	for i, m := range methods {
		f := &figs[i]
		f.Method = m.name
		f.NLL = f.nll / tokens
		f.NLLIncreasePct = 100 * (f.nll - denseNLL) / denseNLL
		f.Top1Agreement = float64(f.agree) / tokens
		f.KL = f.kl / tokens
		f.PrefillMS = ms(f.prefill)
		f.PrefillSpeedup = float64(densePrefill) / float64(f.prefill)
		f.KVRows = float64(f.kvRows) / float64(samples)
		f.KVBytesRatio = float64(f.kvRows) / float64(denseKV)
		f.DenseAttnFLOPs = denseAttn
		f.AttnFLOPsRatio = float64(f.AttnFLOPs) / float64(denseAttn)
	}
	r.methodFigures = figs[0]
	if len(figs) > 1 {
		r.Baselines = make(map[string]methodFigures)
		for _, f := range figs[1:] {
			r.Baselines[f.Method] = f
		}
	}
	return r, nil
}

// newSequences allocates n sequences and a function that frees them.
func (ev *sparsityEval) newSequences(n int) ([]*engine.Sequence, func(), error) {
	seqs := make([]*engine.Sequence, 0, n)
	free := func() {
		for _, s := range seqs {
			s.Free()
		}
	}
	for range n {
		s, err := ev.e.NewSequence(nil)
		if err != nil {
			free()
			return nil, nil, err
		}
		seqs = append(seqs, s)
	}
	return seqs, free, nil
}

// sample draws n sequences of prefix+cont tokens from the model, each
// starting with BOS and with a sampler of its own (seed, seed+1, …), all
// decoded in one batch.
func (ev *sparsityEval) sample(n int, seed uint64, temp float32) ([][]int32, error) {
	ev.hook.m = nil
	seqs, free, err := ev.newSequences(n)
	if err != nil {
		return nil, err
	}
	defer free()
	nv := ev.e.Config().NVocab
	samplers := make([]*engine.Sampler, n)
	ids := make([][]int32, n)
	for s := range n {
		if samplers[s], err = engine.NewSampler(engine.SamplerConfig{Temperature: temp, Seed: seed + uint64(s)}); err != nil {
			return nil, err
		}
		ids[s] = []int32{ev.bos}
	}
	logits := make([]float32, n*nv)
	batch := make([]engine.Entry, n)
	for i := 0; i < ev.prefix+ev.cont-1; i++ {
		if err := ev.ctx.Err(); err != nil {
			return nil, err
		}
		for s := range n {
			batch[s] = engine.Entry{Seq: seqs[s], Token: ids[s][i], Pos: int32(i), Logits: true}
		}
		if err := ev.e.Step(batch, logits); err != nil {
			return nil, err
		}
		for s := range n {
			ids[s] = append(ids[s], samplers[s].Sample(logits[s*nv:(s+1)*nv]))
		}
	}
	return ids, nil
}

// pass prefills each sequence's first prefix tokens in a Step of its own
// (with m's policy when m is not nil, timed), then feeds the continuations
// one token per sequence per Step, all sequences together, and returns the
// log-probabilities of each ids[prefix:], teacher-forced.
func (ev *sparsityEval) pass(ids [][]int32, m *sparsityMethod) ([]passResult, error) {
	ev.hook.m = m
	defer func() { ev.hook.m = nil }()
	seqs, free, err := ev.newSequences(len(ids))
	if err != nil {
		return nil, err
	}
	defer free()
	if m != nil {
		for _, s := range seqs {
			m.policy.Enable(s)
			defer m.policy.Disable(s)
		}
	}
	nv := ev.e.Config().NVocab
	res := make([]passResult, len(ids))
	logits := make([]float32, len(ids)*nv)
	batch := make([]engine.Entry, ev.prefix)
	for s, seq := range seqs {
		for i := range batch {
			batch[i] = engine.Entry{Seq: seq, Token: ids[s][i], Pos: int32(i), Logits: i == ev.prefix-1}
		}
		start := time.Now()
		if err := ev.e.Step(batch, logits[:nv]); err != nil {
			return nil, err
		}
		res[s].prefill = time.Since(start)
		res[s].kvRows, res[s].attnFLOPs = ev.prefillWork(seq)
		res[s].logp = append(res[s].logp, logSoftmax(logits[:nv]))
	}
	batch = batch[:len(seqs)]
	for i := ev.prefix; i < ev.prefix+ev.cont-1; i++ {
		if err := ev.ctx.Err(); err != nil {
			return nil, err
		}
		for s, seq := range seqs {
			batch[s] = engine.Entry{Seq: seq, Token: ids[s][i], Pos: int32(i), Logits: true}
		}
		if err := ev.e.Step(batch, logits); err != nil {
			return nil, err
		}
		for s := range seqs {
			res[s].logp = append(res[s].logp, logSoftmax(logits[s*nv:(s+1)*nv]))
		}
	}
	return res, nil
}

// prefillWork returns the cache rows a prefill left over all layers and
// the floating-point operations its attention took (two per multiply-add), both from what the engine cached
// (seq.CacheLen), so they count what ran, whatever the policy chose.
//
// The attention count covers the attention kernels only (q·k scores and
// the probability-weighted sum of values), not the q/k/v/o projections or
// the feed-forward, which scale linearly with the rows and whose saving
// the prefill time shows. In a causal prefill into an empty cache, layer l
// computes attention for the n_l rows that entered it, row i over itself
// and the i earlier rows kept there, so n_l(n_l+1)/2 query-key pairs, each
// costing headDim multiply-adds for q·k and headDim for p·v in every query
// head, 4·headDim FLOPs. n_l is CacheLen(l): a layer stores KV for exactly the rows it
// computed. A pruning layer therefore still counts densely, as it runs:
// rows are dropped only after it, for the layers that follow.
func (ev *sparsityEval) prefillWork(seq *engine.Sequence) (kvRows int, attnFLOPs int64) {
	cfg := ev.e.Config()
	perPair := int64(4 * cfg.NHead * cfg.HeadDim)
	for l := range cfg.NLayer {
		n := int64(seq.CacheLen(l))
		kvRows += int(n)
		attnFLOPs += perPair * n * (n + 1) / 2
	}
	return kvRows, attnFLOPs
}

func logSoftmax(logits []float32) []float64 {
	maxL := math.Inf(-1)
	for _, l := range logits {
		maxL = math.Max(maxL, float64(l))
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l) - maxL)
	}
	lse := maxL + math.Log(sum)
	out := make([]float64, len(logits))
	for i, l := range logits {
		out[i] = float64(l) - lse
	}
	return out
}

// nll sums -log p(target[k]) over the positions.
func nll(logp [][]float64, target []int32) float64 {
	var s float64
	for k, lp := range logp {
		s -= lp[target[k]]
	}
	return s
}

// kl is KL(p ‖ q) from log-probabilities.
func kl(lp, lq []float64) float64 {
	var s float64
	for i := range lp {
		if p := math.Exp(lp[i]); p > 0 {
			s += p * (lp[i] - lq[i])
		}
	}
	return s
}

func argmax64(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *sparsityReport) print(w io.Writer) {
	source := fmt.Sprintf("self-sampled (seed %d)", r.Seed)
	if r.Data != "" {
		source = "from " + r.Data
	}
	fmt.Fprintf(w, "%s: %d sequences %s, prefix %d, continuation %d, keep %g after layers %v, window %d, %d threads\n",
		r.Model, r.Sequences, source, r.PrefixLen, r.ContLen, r.Keep, r.Layers, r.Window, r.Threads)
	fmt.Fprintf(w, "dense: NLL %.4f/token, prefill %.1f ms, %d KV rows, %d attention FLOPs\n\n",
		r.DenseNLL, r.DensePrefillMS, r.DenseKVRows, r.DenseAttnFLOPs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\tNLL\tNLL +%\ttop-1\tKL\tprefill ms\tspeedup\tKV rows\tKV ratio\tattn FLOPs\tattn ratio\t")
	line := func(f methodFigures) {
		fmt.Fprintf(tw, "%s\t%.4f\t%.2f\t%.3f\t%.4f\t%.1f\t%.2f\t%.0f\t%.3f\t%d\t%.3f\t\n", f.Method, f.NLL, f.NLLIncreasePct,
			f.Top1Agreement, f.KL, f.PrefillMS, f.PrefillSpeedup, f.KVRows, f.KVBytesRatio, f.AttnFLOPs, f.AttnFLOPsRatio)
	}
	line(r.methodFigures)
	for _, m := range sparsityMethods {
		if f, ok := r.Baselines[m]; ok {
			line(f)
		}
	}
	tw.Flush()
}
