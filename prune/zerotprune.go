package prune

import (
	"math"
	"slices"

	"github.com/edged/edged/engine"
)

// ZeroTPrune is Zero-TPrune (Wang, Dedhia, Jha, CVPR 2024) adapted to
// causal prefill. After each configured layer it ranks a sequence's rows
// by a weighted PageRank over that layer's attention graph, per head
// s ← Aᵀs seeded uniformly on the last Window rows (the rows the next
// tokens will be predicted from), normalised after each iteration; it
// combines the heads by root-mean-square after leaving out heads whose
// score variance is extreme (see Config.HeadVarRatio), and keeps the
// best-ranked rows. BOS, the last Window rows and rows that want logits
// are always kept.
//
// Cost: the ranking reads the probabilities the attention kernel already
// wrote (no second attention pass), Iterations·heads·n²/2 multiply-adds
// for n rows, plus the kernel's writing of heads·n² probabilities at the
// configured layers (for every sequence of the batch: Wants cannot tell
// sequences apart).
//
// With Config.Similarity > 0 the paper's similarity stage picks that
// share of the dropped rows first (see dropSimilar); it reads the layer's
// key rows back from the engine (n·KVDim values) and costs n²/4·KVDim
// multiply-adds at most.
type ZeroTPrune struct {
	policy
}

// NewZeroTPrune returns a Zero-TPrune policy acting on no sequence yet.
func NewZeroTPrune(cfg Config) (*ZeroTPrune, error) {
	p := &ZeroTPrune{}
	if err := p.init(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Wants implements engine.AttentionObserver: the pruning layers.
func (z *ZeroTPrune) Wants(layer int) bool { return z.cfg.stage(layer) >= 0 }

// Observe implements engine.AttentionObserver: it ranks the rows of an
// enabled sequence from layer's attention probabilities, laid out
// [head][row][past+rows].
func (z *ZeroTPrune) Observe(layer int, seq *engine.Sequence, past, rows, heads int, probs []float32) {
	z.mu.Lock()
	defer z.mu.Unlock()
	st := z.scoresFor(seq, past, rows, heads, probs)
	if st == nil {
		return
	}
	st.work = slices.Grow(st.work[:0], heads*rows)[:heads*rows]
	z.rank(attention{probs: probs, past: past, rows: rows}, heads, st.work, st.scores)
	st.scored = true
}

// Select implements engine.TokenSelector.
func (z *ZeroTPrune) Select(layer int, rows []engine.Row) []int32 {
	return z.selectRows(layer, rows, func(layer int, st *seqState, seg []engine.Row, scores []float32) bool {
		ok := st.scored && len(st.scores) == len(seg)
		st.scored = false
		if !ok {
			return false
		}
		copy(scores, st.scores)
		if dim := len(st.keys) / len(seg); z.cfg.Similarity > 0 && dim > 0 && len(st.keys) == dim*len(seg) {
			mandatory, want := z.plan(z.cfg.stage(layer), st, seg)
			z.dropSimilar(st.keys, dim, mandatory, len(seg)-want, scores)
		}
		st.keys = st.keys[:0]
		return true
	})
}

// attention is one sequence's attention probabilities at one layer.
type attention struct {
	probs      []float32 // [head][row][past+rows]
	past, rows int
}

// row returns the probabilities query row i of head h gives to the batch's
// rows 0..i (the cached rows before the batch left out).
func (a attention) row(h, i int) []float32 {
	stride := a.past + a.rows
	off := (h*a.rows+i)*stride + a.past
	return a.probs[off : off+i+1]
}

// rank writes the importance of each of a's rows into scores, using work
// (heads × rows) for the per-head PageRank scores.
func (z *ZeroTPrune) rank(a attention, heads int, work, scores []float32) {
	n := a.rows
	seed := min(z.cfg.Window, n)
	next := make([]float64, n)
	variances := make([]float64, heads)
	for h := range heads {
		s := work[h*n : (h+1)*n]
		for j := range s {
			s[j] = 0
		}
		for j := n - seed; j < n; j++ {
			s[j] = 1 / float32(seed)
		}
		for range z.cfg.Iterations {
			clear(next)
			// s ← Aᵀs: row j gains what every later row i gives it,
			// weighted by i's own importance.
			for i := range n {
				si := float64(s[i])
				if si == 0 {
					continue
				}
				for j, p := range a.row(h, i) {
					next[j] += si * float64(p)
				}
			}
			normalise(next, s)
		}
		variances[h] = variance(s)
	}
	use := z.informativeHeads(variances)
	for j := range scores {
		var sum float64
		for h, ok := range use {
			if ok {
				v := float64(work[h*n+j])
				sum += v * v
			}
		}
		scores[j] = float32(math.Sqrt(sum))
	}
}

// informativeHeads marks the heads whose score variance is within a factor
// HeadVarRatio of the median head's (a head that attends to one token
// only, or uniformly, says little about importance). The median head is
// always kept.
func (z *ZeroTPrune) informativeHeads(variances []float64) []bool {
	sorted := slices.Clone(variances)
	slices.Sort(sorted)
	med := sorted[len(sorted)/2]
	r := z.cfg.HeadVarRatio
	use := make([]bool, len(variances))
	for h, v := range variances {
		use[h] = v == med || (v <= med*r && v*r >= med)
	}
	return use
}

// normalise writes v scaled to sum 1 into s (zeros if v sums to zero).
func normalise(v []float64, s []float32) {
	var sum float64
	for _, x := range v {
		sum += x
	}
	for j, x := range v {
		if sum > 0 {
			s[j] = float32(x / sum)
		} else {
			s[j] = 0
		}
	}
}

func variance(s []float32) float64 {
	var mean float64
	for _, x := range s {
		mean += float64(x)
	}
	mean /= float64(len(s))
	var v float64
	for _, x := range s {
		d := float64(x) - mean
		v += d * d
	}
	return v / float64(len(s))
}
