package prune

import (
	"fmt"
	"math"
	"slices"

	"github.com/edged/edged/engine"
)

// Predictor is LeMo's pattern predictor: for each pruning layer a small
// MLP that estimates a block's informativeness from the hidden states
// entering the layer, so that attention need not hand its q·k scores out
// (LeMo, ATC 2025: a per-layer predictor on hidden states replaces the
// full QKᵀ). Train one with TrainPredictor; store it with SavePredictor.
type Predictor struct {
	Block  int          // the block size it was trained for
	Dim    int          // width of its input: the model's NEmbd
	Layers map[int]*MLP // by layer
}

// MLP is one layer's predictor: score = w2·relu(W1·x̂ + b1) + b2, where x̂
// is the mean hidden state of a block's rows scaled to unit RMS, as the
// layer's own RMSNorm would (its scale varies from block to block and
// says nothing about what attention will pick).
type MLP struct {
	Hidden int
	W1     []float32 // [Hidden][Dim]
	B1     []float32 // [Hidden]
	W2     []float32 // [Hidden]
	B2     float32
}

// Covers reports whether p was trained for cfg's block size and layers.
func (p *Predictor) Covers(cfg Config) error {
	if p.Block != cfg.Block {
		return fmt.Errorf("%w: the predictor was trained for blocks of %d, not %d", ErrConfig, p.Block, cfg.Block)
	}
	for _, l := range cfg.Layers {
		if p.Layers[l] == nil {
			return fmt.Errorf("%w: the predictor has no MLP for layer %d", ErrConfig, l)
		}
	}
	return nil
}

// scoreRows writes to out, for each row of seg, the predicted log score of
// its block (positions pos/block alike; see TrainPredictor). x holds seg's
// hidden states.
func (p *Predictor) scoreRows(layer int, seg []engine.Row, x []float32, block int, out []float32) error {
	mlp := p.Layers[layer]
	switch {
	case mlp == nil:
		return fmt.Errorf("%w: no MLP for layer %d", ErrConfig, layer)
	case len(x) != len(seg)*p.Dim:
		return fmt.Errorf("%w: hidden width %d, the predictor's is %d", ErrConfig, len(x)/max(len(seg), 1), p.Dim)
	}
	feat := make([]float32, p.Dim)
	hid := make([]float32, mlp.Hidden)
	forBlocks(seg, block, func(start, end int) {
		blockInput(x[start*p.Dim:end*p.Dim], feat)
		s := mlp.forward(feat, hid)
		for i := start; i < end; i++ {
			out[i] = s
		}
	})
	return nil
}

// forBlocks calls f with the bounds of each run of seg's rows in one block.
// seg's positions increase, so a block's rows are consecutive.
func forBlocks(seg []engine.Row, block int, f func(start, end int)) {
	for start := 0; start < len(seg); {
		b := seg[start].Pos / int32(block)
		end := start + 1
		for end < len(seg) && seg[end].Pos/int32(block) == b {
			end++
		}
		f(start, end)
		start = end
	}
}

// blockInput writes the mean of the rows of x (each len(feat) wide),
// scaled to unit RMS, into feat.
func blockInput(x []float32, feat []float32) {
	dim := len(feat)
	rows := len(x) / dim
	clear(feat)
	for r := range rows {
		for d, v := range x[r*dim : (r+1)*dim] {
			feat[d] += v
		}
	}
	var ss float64
	for _, v := range feat {
		ss += float64(v) * float64(v)
	}
	rms := math.Sqrt(ss/float64(dim)) + 1e-6
	for d := range feat {
		feat[d] = float32(float64(feat[d]) / rms)
	}
}

// forward returns the MLP's score of x, using hid (Hidden values) for the
// hidden layer's activations.
func (m *MLP) forward(x, hid []float32) float32 {
	dim := len(x)
	out := m.B2
	for h := range m.Hidden {
		a := m.B1[h]
		for d, w := range m.W1[h*dim : (h+1)*dim] {
			a += w * x[d]
		}
		hid[h] = max(a, 0)
		out += m.W2[h] * hid[h]
	}
	return out
}

// layers returns p's layers, increasing.
func (p *Predictor) layers() []int {
	ls := make([]int, 0, len(p.Layers))
	for l := range p.Layers {
		ls = append(ls, l)
	}
	slices.Sort(ls)
	return ls
}
