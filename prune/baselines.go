package prune

import (
	"math/rand/v2"

	"github.com/edged/edged/engine"
)

// Recent is the recency baseline: after each configured layer it keeps BOS,
// the rows that want logits and the most recent rows, up to the same
// count Zero-TPrune would keep.
type Recent struct {
	policy
}

// NewRecent returns a recency policy acting on no sequence yet.
func NewRecent(cfg Config) (*Recent, error) {
	p := &Recent{}
	if err := p.init(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Select implements engine.TokenSelector.
func (r *Recent) Select(layer int, rows []engine.Row) []int32 {
	return r.selectRows(layer, rows, func(_ int, _ *seqState, seg []engine.Row, scores []float32) bool {
		for i := range seg {
			scores[i] = float32(i)
		}
		return true
	})
}

// Random is the random baseline: after each configured layer it keeps BOS,
// the last Window rows, the rows that want logits and others drawn at
// random, up to the same count Zero-TPrune would keep. The draw depends
// only on the seed, the layer and the rows' positions, so it is
// reproducible.
type Random struct {
	policy
	seed uint64
}

// NewRandom returns a random-dropping policy acting on no sequence yet.
func NewRandom(cfg Config, seed uint64) (*Random, error) {
	p := &Random{seed: seed}
	if err := p.init(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Select implements engine.TokenSelector.
func (r *Random) Select(layer int, rows []engine.Row) []int32 {
	return r.selectRows(layer, rows, func(layer int, _ *seqState, seg []engine.Row, scores []float32) bool {
		for i, row := range seg {
			g := rand.New(rand.NewPCG(r.seed, uint64(layer)<<32|uint64(uint32(row.Pos))))
			scores[i] = g.Float32()
		}
		return true
	})
}
