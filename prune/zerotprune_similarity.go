package prune

import (
	"cmp"
	"math"
	"slices"

	"github.com/edged/edged/engine"
)

// WantsKeys implements engine.KeyObserver: the pruning layers, when the
// similarity stage is on.
func (z *ZeroTPrune) WantsKeys(layer int) bool {
	return z.cfg.Similarity > 0 && z.cfg.stage(layer) >= 0
}

// ObserveKeys implements engine.KeyObserver: it keeps the key rows of each
// enabled sequence for the similarity stage.
func (z *ZeroTPrune) ObserveKeys(_ int, rows []engine.Row, k []float32) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(rows) == 0 || len(k)%len(rows) != 0 {
		return
	}
	dim := len(k) / len(rows)
	forSegments(rows, func(seg []engine.Row, start int) {
		if st := z.seqs[seg[0].Seq]; st != nil {
			st.keys = append(st.keys[:0], k[start*dim:(start+len(seg))*dim]...)
		}
	})
}

// dropSimilar is Zero-TPrune's similarity stage (Wang, Dedhia, Jha, CVPR
// 2024, §3.2): the rows that may be dropped are split by importance into
// a more and a less important half; each row of the less important half
// is matched with the most similar key (cosine) among the more important
// half and the protected rows, and the Similarity share of the drop rows
// with the best match go first, as they repeat what a kept row already
// says. It marks them by giving them the lowest score; the importance
// order then picks the rest.
func (z *ZeroTPrune) dropSimilar(keys []float32, dim int, mandatory []bool, drop int, scores []float32) {
	n := int(math.Round(z.cfg.Similarity * float64(drop)))
	var cand []int
	for i, m := range mandatory {
		if !m {
			cand = append(cand, i)
		}
	}
	slices.SortStableFunc(cand, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	less := cand[len(cand)/2:]
	if n <= 0 || len(less) == 0 {
		return
	}
	ref := slices.Clone(cand[:len(cand)/2])
	for i, m := range mandatory {
		if m {
			ref = append(ref, i)
		}
	}
	norm := func(i int) []float32 { return unit(keys[i*dim : (i+1)*dim]) }
	refs := make([][]float32, len(ref))
	for r, i := range ref {
		refs[r] = norm(i)
	}
	sim := make(map[int]float32, len(less))
	for _, i := range less {
		ki, best := norm(i), float32(-1)
		for _, kr := range refs {
			best = max(best, dot(ki, kr))
		}
		sim[i] = best
	}
	slices.SortStableFunc(less, func(a, b int) int { return cmp.Compare(sim[b], sim[a]) })
	for _, i := range less[:min(n, len(less))] {
		scores[i] = float32(math.Inf(-1))
	}
}

// unit returns v scaled to unit length (v itself when it is zero).
func unit(v []float32) []float32 {
	l := math.Sqrt(float64(dot(v, v)))
	if l == 0 {
		return v
	}
	u := make([]float32, len(v))
	for i, x := range v {
		u[i] = float32(float64(x) / l)
	}
	return u
}

func dot(a, b []float32) float32 {
	var s float32
	for i, x := range a {
		s += x * b[i]
	}
	return s
}
