package prune

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/edged/edged/engine"
)

// Recording is one prefill's blocks at one layer: each block's predictor
// input and its informativeness (LeMo's score, from q·k).
type Recording struct {
	Layer  int
	Inputs [][]float32 // [block][Dim], as blockInput makes them
	Scores []float32   // [block]
	Seen   []float32   // [block] how many query rows see a row of the block, mean (Overlap's position baseline)
}

// Recorder collects a Predictor's training data from dense prefills: at
// its layers, each block's input hidden state and informativeness. Install
// it as the engine's Observer (no Selector) and give each Step one
// sequence's rows; it is not safe for concurrent Steps.
type Recorder struct {
	block  int
	layers []int
	rows   map[int][]engine.Row // the rows of the Step at each layer
	feats  map[int][][]float32
	recs   []Recording
}

// NewRecorder returns a recorder for blocks of block rows at layers.
func NewRecorder(block int, layers []int) (*Recorder, error) {
	if block < 1 || len(layers) == 0 {
		return nil, fmt.Errorf("%w: recorder: block %d, layers %v", ErrConfig, block, layers)
	}
	return &Recorder{block: block, layers: slices.Clone(layers), rows: map[int][]engine.Row{}, feats: map[int][][]float32{}}, nil
}

func (r *Recorder) wants(layer int) bool { return slices.Contains(r.layers, layer) }

// Wants implements engine.AttentionObserver.
func (r *Recorder) Wants(layer int) bool { return r.wants(layer) }

// WantsScores implements engine.ScoreObserver.
func (r *Recorder) WantsScores(int) bool { return true }

// WantsHidden implements engine.HiddenObserver.
func (r *Recorder) WantsHidden(layer int) bool { return r.wants(layer) }

// ObserveHidden implements engine.HiddenObserver: it pools the rows
// entering layer by block.
func (r *Recorder) ObserveHidden(layer int, rows []engine.Row, x []float32) {
	if len(rows) == 0 || len(x)%len(rows) != 0 {
		return
	}
	dim := len(x) / len(rows)
	r.rows[layer] = slices.Clone(rows)
	var feats [][]float32
	forBlocks(rows, r.block, func(start, end int) {
		f := make([]float32, dim)
		blockInput(x[start*dim:end*dim], f)
		feats = append(feats, f)
	})
	r.feats[layer] = feats
}

// Observe implements engine.AttentionObserver: it scores the blocks whose
// inputs ObserveHidden pooled.
func (r *Recorder) Observe(layer int, _ *engine.Sequence, past, rows, heads int, scores []float32) {
	seg, feats := r.rows[layer], r.feats[layer]
	if len(seg) != rows || rows <= 1 || len(scores) < heads*rows*(past+rows) {
		return
	}
	info := make([]float32, rows)
	informativeness(attention{probs: scores, past: past, rows: rows}, heads, info)
	rec := Recording{Layer: layer, Inputs: feats}
	forBlocks(seg, r.block, func(start, end int) {
		var sum float64
		for _, v := range info[start:end] {
			sum += float64(v)
		}
		rec.Scores = append(rec.Scores, float32(sum/float64(end-start)))
		rec.Seen = append(rec.Seen, seenBy(start, end, rows))
	})
	r.recs = append(r.recs, rec)
	delete(r.rows, layer)
	delete(r.feats, layer)
}

// Take returns the recordings so far and forgets them.
func (r *Recorder) Take() []Recording {
	recs := r.recs
	r.recs = nil
	return recs
}

// TrainOptions configure TrainPredictor.
type TrainOptions struct {
	Hidden int     // MLP width
	Epochs int     // passes over the blocks
	LR     float64 // Adam's step size
	Seed   uint64  // initial weights and the order of the blocks
}

// DefaultTrainOptions returns the defaults: 32 hidden units, 200 epochs,
// step size 3e-3, seed 1.
func DefaultTrainOptions() TrainOptions {
	return TrainOptions{Hidden: 32, Epochs: 200, LR: 3e-3, Seed: 1}
}

// TrainPredictor fits one MLP per recorded layer by mean squared error
// with Adam, to the log of a block's informativeness. That is a maximum
// over the query rows that see the block, not a sum (see
// informativeness), so it holds no count of them, which the MLP, whose
// input carries no position (RoPE acts inside attention only), could not
// learn. Only the order of a prefill's blocks matters to LeMo, so the
// targets are centred per prefill (see targets).
func TrainPredictor(recs []Recording, block int, opt TrainOptions) (*Predictor, error) {
	if len(recs) == 0 || len(recs[0].Inputs) == 0 {
		return nil, fmt.Errorf("%w: no recorded blocks to train on", ErrConfig)
	}
	if opt.Hidden < 1 || opt.Epochs < 1 || !(opt.LR > 0) {
		return nil, fmt.Errorf("%w: train options %+v", ErrConfig, opt)
	}
	p := &Predictor{Block: block, Dim: len(recs[0].Inputs[0]), Layers: map[int]*MLP{}}
	byLayer := map[int][]sample{}
	for _, rec := range recs {
		if len(rec.Scores) != len(rec.Inputs) {
			return nil, fmt.Errorf("%w: recording of %d inputs, %d scores", ErrConfig, len(rec.Inputs), len(rec.Scores))
		}
		for i, t := range targets(rec.Scores) {
			if len(rec.Inputs[i]) != p.Dim {
				return nil, fmt.Errorf("%w: recorded inputs of widths %d and %d", ErrConfig, p.Dim, len(rec.Inputs[i]))
			}
			byLayer[rec.Layer] = append(byLayer[rec.Layer], sample{rec.Inputs[i], t})
		}
	}
	for l, samples := range byLayer {
		p.Layers[l] = fit(samples, p.Dim, opt, rand.New(rand.NewPCG(opt.Seed, uint64(l))))
	}
	return p, nil
}

// sample is one block: its input and its target.
type sample struct {
	in     []float32
	target float32
}

// targets are the logs of one prefill's block scores, less their mean.
func targets(scores []float32) []float32 {
	t := make([]float32, len(scores))
	var mean float64
	for i, s := range scores {
		v := math.Log(float64(s) + 1e-6)
		t[i] = float32(v)
		mean += v
	}
	mean /= float64(len(t))
	for i, v := range t {
		t[i] = float32(float64(v) - mean)
	}
	return t
}

// seenBy is the mean, over the rows start..end-1 of a segment of n rows,
// of the number of the segment's query rows that see the row.
func seenBy(start, end, n int) float32 {
	return float32(n) - float32(start+end-1)/2
}

// fit trains one MLP by Adam over mini-batches of 32 samples.
func fit(samples []sample, dim int, opt TrainOptions, rng *rand.Rand) *MLP {
	m := &MLP{Hidden: opt.Hidden, W1: make([]float32, opt.Hidden*dim), B1: make([]float32, opt.Hidden), W2: make([]float32, opt.Hidden)}
	// He initialisation for the ReLU layer.
	for i := range m.W1 {
		m.W1[i] = float32(rng.NormFloat64() * math.Sqrt(2/float64(dim)))
	}
	for i := range m.W2 {
		m.W2[i] = float32(rng.NormFloat64() / math.Sqrt(float64(opt.Hidden)))
	}
	ad := newAdam(m, opt.LR)
	g := newGrads(m)
	order := make([]int, len(samples))
	for i := range order {
		order[i] = i
	}
	const batch = 32
	hid := make([]float32, opt.Hidden)
	for range opt.Epochs {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for b := 0; b < len(order); b += batch {
			g.zero()
			idx := order[b:min(b+batch, len(order))]
			for _, i := range idx {
				g.add(m, samples[i], hid, 1/float32(len(idx)))
			}
			ad.step(m, g)
		}
	}
	return m
}

// grads are the gradients of the mean squared error for one mini-batch.
type grads struct {
	w1, b1, w2 []float32
	b2         float32
}

func newGrads(m *MLP) *grads {
	return &grads{w1: make([]float32, len(m.W1)), b1: make([]float32, len(m.B1)), w2: make([]float32, len(m.W2))}
}

func (g *grads) zero() {
	clear(g.w1)
	clear(g.b1)
	clear(g.w2)
	g.b2 = 0
}

// add accumulates scale × the gradient of ½(forward(s.in) − s.target)².
func (g *grads) add(m *MLP, s sample, hid []float32, scale float32) {
	dim := len(s.in)
	e := (m.forward(s.in, hid) - s.target) * scale
	g.b2 += e
	for h := range m.Hidden {
		g.w2[h] += e * hid[h]
		if hid[h] <= 0 {
			continue
		}
		d := e * m.W2[h]
		g.b1[h] += d
		for i, x := range s.in {
			g.w1[h*dim+i] += d * x
		}
	}
}

// adam is Adam (Kingma & Ba 2015) over the MLP's parameters, in the order
// W1, B1, W2, B2.
type adam struct {
	lr   float64
	t    int
	m, v []float64
}

func newAdam(m *MLP, lr float64) *adam {
	n := len(m.W1) + len(m.B1) + len(m.W2) + 1
	return &adam{lr: lr, m: make([]float64, n), v: make([]float64, n)}
}

func (a *adam) step(m *MLP, g *grads) {
	const b1, b2, eps = 0.9, 0.999, 1e-8
	a.t++
	c1, c2 := 1-math.Pow(b1, float64(a.t)), 1-math.Pow(b2, float64(a.t))
	i := 0
	update := func(p []float32, gr []float32) {
		for k := range p {
			gk := float64(gr[k])
			a.m[i] = b1*a.m[i] + (1-b1)*gk
			a.v[i] = b2*a.v[i] + (1-b2)*gk*gk
			p[k] -= float32(a.lr * (a.m[i] / c1) / (math.Sqrt(a.v[i]/c2) + eps))
			i++
		}
	}
	update(m.W1, g.w1)
	update(m.B1, g.b1)
	update(m.W2, g.w2)
	b2p := []float32{m.B2}
	update(b2p, []float32{g.b2})
	m.B2 = b2p[0]
}

// Overlap is how well a predictor picks the blocks LeMo keeps.
type Overlap struct {
	Predicted float64 // share of the truly kept blocks the predictor keeps too
	Position  float64 // the same for ranking by how many queries see a block (the start first)
	Chance    float64 // the same for a random choice: the kept share
}

// Overlap measures a predictor on recordings it was not trained on: for
// each recording of one of p's layers, the share of the ⌈keep·blocks⌉
// best blocks by informativeness that the predictor also ranks among its
// best as many, averaged over the recordings.
func (p *Predictor) Overlap(recs []Recording, keep float64) (Overlap, error) {
	var o Overlap
	n := 0
	for _, rec := range recs {
		mlp := p.Layers[rec.Layer]
		if mlp == nil || len(rec.Scores) == 0 || len(rec.Seen) != len(rec.Inputs) || len(rec.Scores) != len(rec.Inputs) {
			continue
		}
		pred, pos := make([]float32, len(rec.Inputs)), make([]float32, len(rec.Inputs))
		hid := make([]float32, mlp.Hidden)
		for i, in := range rec.Inputs {
			if len(in) != p.Dim {
				return Overlap{}, fmt.Errorf("%w: input width %d, the predictor's is %d", ErrConfig, len(in), p.Dim)
			}
			pos[i] = rec.Seen[i]
			pred[i] = mlp.forward(in, hid)
		}
		k := int(math.Ceil(keep*float64(len(pred)) - 1e-9))
		truth := top(rec.Scores, k)
		o.Predicted += agreement(truth, top(pred, k), k)
		o.Position += agreement(truth, top(pos, k), k)
		o.Chance += float64(k) / float64(len(pred))
		n++
	}
	if n == 0 {
		return Overlap{}, fmt.Errorf("%w: no recording of the predictor's layers %v", ErrConfig, p.layers())
	}
	o.Predicted, o.Position, o.Chance = o.Predicted/float64(n), o.Position/float64(n), o.Chance/float64(n)
	return o, nil
}

// agreement is the share of the k marked in truth also marked in guess.
func agreement(truth, guess []bool, k int) float64 {
	hit := 0
	for i := range truth {
		if truth[i] && guess[i] {
			hit++
		}
	}
	return float64(hit) / float64(max(k, 1))
}

// top marks the k highest of v.
func top(v []float32, k int) []bool {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(v[b], v[a]) })
	mark := make([]bool, len(v))
	for _, i := range idx[:min(k, len(v))] {
		mark[i] = true
	}
	return mark
}
