package adapt

import (
	"fmt"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
)

// NewFullDelta returns a LoRA that holds a full update ΔW of projection p
// of layer: A is the identity (In × In, frozen) and B (Out × In, starting
// at zero) is ΔW itself, with a scale of 1. It is a LoRA of rank In, saved
// and loaded as one (llama.cpp's loader takes it too), and trainers move B
// only. Applying it costs In² more products a row than the projection's
// In × Out, which is affordable on a small model only.
func NewFullDelta(m *model.Model, layer int, p engine.Proj) (*LoRA, error) {
	w := baseWeight(m, layer, p)
	if w == nil {
		return nil, fmt.Errorf("adapt: %w: no projection %s in layer %d of %d", ErrMismatch, projName(p), layer, len(m.Layers))
	}
	lo, err := NewLoRA(m, LoRAOptions{Rank: w.Cols, Alpha: float32(w.Cols), Projs: []engine.Proj{p}, Layers: []int{layer}})
	if err != nil {
		return nil, err
	}
	pr := lo.Pairs[0]
	clear(pr.A)
	for i := range pr.In {
		pr.A[i*pr.In+i] = 1
	}
	lo.frozenA = true
	return lo, nil
}
