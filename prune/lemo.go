package prune

import (
	"slices"

	"github.com/edged/edged/engine"
)

// LeMo is LeMo's contextual token elimination (ATC 2025) for causal
// prefill. After each configured layer it scores a sequence's rows by
// block informativeness and drops the least informative blocks of Block
// consecutive positions; later layers compute on, and cache, the kept
// rows only, and a dropped row is simply not computed further, which is
// the paper's "eliminated tokens carry only the residual". The layers
// before the first configured one stay dense and the kept share shrinks
// geometrically over the configured ones (Config.Keep), the paper's
// per-layer ratios with dense early layers. BOS, the last Window rows and
// rows that want logits are always kept; the lowest-scored kept block may
// be cut to hit the target count exactly.
//
// Informativeness of a key row j comes, as in the paper, from ReLU(q·k),
// the pre-softmax scores, summed over heads; but where the paper sums over
// the query rows that see j, we divide each query's ReLU scores by their
// mean over the rows it sees and take the largest over the queries (see
// informativeness). Under a causal mask an early row is seen by more
// queries, so the plain sum ranks by position: on stories260K that count
// chose 98.4% of the blocks kept, and LeMo did no better than random
// dropping at keep 0.5 (37.2% NLL increase against 37.1%). Normalised and
// maximised, it beats random dropping at keep 0.9, 0.7 and 0.5, and the
// plain sum at each (BENCHMARKS.md, issue 7). A block's score is the mean
// over its rows.
//
// With a Predictor the scores come from the predictor (an MLP on the
// layer's input hidden states) instead, and the attention kernel writes
// no scores.
//
// Cost: without a predictor, the kernel copies heads·n² scores at the
// configured layers (for every sequence of the batch) and the ranking
// reads them twice; with one, the engine reads back n·NEmbd values and
// the MLP costs (NEmbd+1)·Hidden multiply-adds per block.
type LeMo struct {
	policy
	pred *Predictor
}

// NewLeMo returns a LeMo policy acting on no sequence yet; pred, when not
// nil, must have been trained for cfg's layers and block size.
func NewLeMo(cfg Config, pred *Predictor) (*LeMo, error) {
	p := &LeMo{pred: pred}
	if err := p.init(cfg); err != nil {
		return nil, err
	}
	if pred != nil {
		if err := pred.Covers(p.cfg); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Wants implements engine.AttentionObserver: the pruning layers, unless a
// predictor scores them.
func (m *LeMo) Wants(layer int) bool { return m.pred == nil && m.cfg.stage(layer) >= 0 }

// WantsScores implements engine.ScoreObserver: LeMo ranks by q·k.
func (m *LeMo) WantsScores(int) bool { return true }

// WantsHidden implements engine.HiddenObserver: the pruning layers, when a
// predictor scores them.
func (m *LeMo) WantsHidden(layer int) bool { return m.pred != nil && m.cfg.stage(layer) >= 0 }

// Observe implements engine.AttentionObserver: it gets the pre-softmax
// scores laid out [head][row][past+rows] and stores each row's
// informativeness.
func (m *LeMo) Observe(layer int, seq *engine.Sequence, past, rows, heads int, scores []float32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.scoresFor(seq, past, rows, heads, scores)
	if st == nil {
		return
	}
	informativeness(attention{probs: scores, past: past, rows: rows}, heads, st.scores)
	st.scored = true
}

// ObserveHidden implements engine.HiddenObserver: the predictor scores the
// blocks of each enabled sequence from the hidden states entering layer.
func (m *LeMo) ObserveHidden(layer int, rows []engine.Row, x []float32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(rows) == 0 || len(x)%len(rows) != 0 {
		return
	}
	dim := len(x) / len(rows)
	forSegments(rows, func(seg []engine.Row, start int) {
		st := m.seqs[seg[0].Seq]
		if st == nil {
			return
		}
		st.scores = slices.Grow(st.scores[:0], len(seg))[:len(seg)]
		st.scored = m.pred.scoreRows(layer, seg, x[start*dim:(start+len(seg))*dim], m.cfg.Block, st.scores) == nil
	})
}

// Select implements engine.TokenSelector.
func (m *LeMo) Select(layer int, rows []engine.Row) []int32 {
	return m.selectRows(layer, rows, func(_ int, st *seqState, seg []engine.Row, scores []float32) bool {
		ok := st.scored && len(st.scores) == len(seg)
		st.scored = false
		if ok {
			poolBlocks(seg, st.scores, m.cfg.Block, scores)
		}
		return ok
	})
}

// informativeness writes, for each of a's rows j, Σ_h max_{i≥j}
// ReLU(s_hij)/m_hi over the batch's query rows i, where m_hi is the mean of
// ReLU(s_hi·) over the rows query i sees. a holds scores, not
// probabilities.
//
// Dividing by m_hi makes every query spend the same mass whatever the
// scale of its scores or the number of rows it sees, and the maximum
// (rather than the paper's sum over queries) makes a row as informative as
// the strongest attention any query singles it out with. In the plain sum
// a row counts once per query that sees it under the causal mask, so early
// rows score higher whatever they hold: on stories260K that count chose
// 98.4% of the kept blocks and ranked no better than random dropping at
// keep 0.5 (BENCHMARKS.md, issue 7).
func informativeness(a attention, heads int, info []float32) {
	sum := make([]float64, a.rows)
	peak := make([]float64, a.rows)
	for h := range heads {
		clear(peak)
		for i := range a.rows {
			row := a.row(h, i)
			var total float64
			for _, s := range row {
				total += float64(max(s, 0))
			}
			if total == 0 {
				continue // the query attends to nothing
			}
			scale := float64(len(row)) / total // 1/m_hi
			for j, s := range row {
				peak[j] = max(peak[j], float64(s)*scale) // peak starts at 0: the ReLU
			}
		}
		for j, v := range peak {
			sum[j] += v
		}
	}
	for j := range info {
		info[j] = float32(sum[j])
	}
}

// poolBlocks writes to out, for each row of seg, the mean of in over the
// rows of its block.
func poolBlocks(seg []engine.Row, in []float32, block int, out []float32) {
	forBlocks(seg, block, func(start, end int) {
		var sum float64
		for _, v := range in[start:end] {
			sum += float64(v)
		}
		mean := float32(sum / float64(end-start))
		for i := start; i < end; i++ {
			out[i] = mean
		}
	})
}
