package adapt

import (
	"fmt"
	"math"
	"slices"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// LoRA is a low-rank adapter (Hu et al. 2021): for each adapted projection
// W (Out × In) of the frozen base, y = W·x + (Alpha/rank)·B·(A·x), with A
// rank × In and B Out × rank, both float32.
type LoRA struct {
	// Arch is the base model's general.architecture.
	Arch string
	// Alpha scales the update by Alpha/rank; 0 means a scale of 1 (as
	// llama.cpp reads a file without adapter.lora.alpha).
	Alpha float32
	// Pairs are the adapted projections, ordered by layer, then projection.
	Pairs []*LoRAPair
	index map[target]*LoRAPair
	// frozenA: training moves B only (InitFromInputs chose A).
	frozenA bool
}

// LoRAPair is the adapter of one projection.
type LoRAPair struct {
	Layer int
	Proj  engine.Proj
	Rank  int
	In    int       // columns of the base weight (length of x rows)
	Out   int       // rows of the base weight (length of y rows)
	A     []float32 // Rank × In, row-major (ggml dims [In, Rank])
	B     []float32 // Out × Rank, row-major (ggml dims [Rank, Out])
}

type target struct {
	layer int
	proj  engine.Proj
}

// LoRAOptions choose the shape of a new LoRA. The zero value gives the
// defaults of DefaultLoRAOptions.
type LoRAOptions struct {
	Rank  int
	Alpha float32
	// Projs are the adapted projections; nil means q and v.
	Projs []engine.Proj
	// Layers are the adapted layers; nil means all.
	Layers []int
	// Seed determines the random initial A (B starts at zero, so a new
	// LoRA leaves the model unchanged).
	Seed uint64
}

// DefaultLoRAOptions returns MeZO's LoRA defaults: rank 8, alpha 16, on
// the q and v projections of every layer.
func DefaultLoRAOptions() LoRAOptions {
	return LoRAOptions{Rank: 8, Alpha: 16, Projs: []engine.Proj{engine.ProjQ, engine.ProjV}}
}

// NewLoRA makes a LoRA for m: A drawn from N(0, 1/In) and B zero.
func NewLoRA(m *model.Model, opts LoRAOptions) (*LoRA, error) {
	def := DefaultLoRAOptions()
	if opts.Rank == 0 {
		opts.Rank = def.Rank
	}
	if opts.Alpha == 0 {
		opts.Alpha = def.Alpha
	}
	if opts.Projs == nil {
		opts.Projs = def.Projs
	}
	if opts.Rank < 0 {
		return nil, fmt.Errorf("adapt: LoRA rank %d", opts.Rank)
	}
	layers := opts.Layers
	if layers == nil {
		for l := range m.Layers {
			layers = append(layers, l)
		}
	}
	arch, err := m.File.String("general.architecture")
	if err != nil {
		return nil, fmt.Errorf("adapt: base model: %w", err)
	}
	lo := &LoRA{Arch: arch, Alpha: opts.Alpha}
	for _, l := range layers {
		for _, p := range opts.Projs {
			w := baseWeight(m, l, p)
			if w == nil {
				return nil, fmt.Errorf("adapt: %w: no projection %s in layer %d of %d", ErrMismatch, projName(p), l, len(m.Layers))
			}
			pr := &LoRAPair{Layer: l, Proj: p, Rank: opts.Rank, In: w.Cols, Out: w.Rows,
				A: make([]float32, opts.Rank*w.Cols), B: make([]float32, w.Rows*opts.Rank)}
			key := stream(opts.Seed, len(lo.Pairs))
			std := float32(1 / math.Sqrt(float64(w.Cols)))
			for i := range pr.A {
				pr.A[i] = std * gaussian(key, i)
			}
			lo.Pairs = append(lo.Pairs, pr)
		}
	}
	if err := lo.build(); err != nil {
		return nil, err
	}
	return lo, nil
}

// build sorts the pairs and indexes them, rejecting duplicates.
func (lo *LoRA) build() error {
	slices.SortFunc(lo.Pairs, func(a, b *LoRAPair) int {
		if a.Layer != b.Layer {
			return a.Layer - b.Layer
		}
		return int(a.Proj) - int(b.Proj)
	})
	lo.index = make(map[target]*LoRAPair, len(lo.Pairs))
	for _, p := range lo.Pairs {
		t := target{p.Layer, p.Proj}
		if lo.index[t] != nil {
			return fmt.Errorf("adapt: LoRA has two adapters for blk.%d.%s", p.Layer, projName(p.Proj))
		}
		lo.index[t] = p
	}
	return nil
}

// Pair returns the adapter of projection p of layer, or nil.
func (lo *LoRA) Pair(layer int, p engine.Proj) *LoRAPair {
	return lo.index[target{layer, p}]
}

// Scale is the factor applied to B·A of pair: Alpha/Rank, or 1 when Alpha
// is 0 (llama.cpp's rule).
func (lo *LoRA) Scale(pair *LoRAPair) float32 {
	if lo.Alpha == 0 {
		return 1
	}
	return lo.Alpha / float32(pair.Rank)
}

// Params lists the trainable tensors, A then B of each pair in order.
func (lo *LoRA) Params() []Param {
	ps := make([]Param, 0, 2*len(lo.Pairs))
	for _, p := range lo.Pairs {
		name := fmt.Sprintf("blk.%d.%s.weight", p.Layer, projName(p.Proj))
		ps = append(ps, Param{Name: name + ".lora_a", Data: p.A, Frozen: lo.frozenA}, Param{Name: name + ".lora_b", Data: p.B})
	}
	return ps
}

// Apply adds the adapter's correction to every row: it makes a LoRA an
// engine.DeltaProvider for an engine that serves this adapter only. Use a
// Set to choose per sequence.
func (lo *LoRA) Apply(b accel.Backend, layer int, p engine.Proj, x, y accel.Buffer, rows []engine.Row) error {
	pr := lo.Pair(layer, p)
	if pr == nil {
		return nil
	}
	var s scratch
	return s.apply(b, pr, lo.Scale(pr), x, y, 0, len(rows))
}

// scratch holds the host copies of rows an Apply works on.
type scratch struct {
	x, y, h []float32
}

// apply adds scale·B·(A·x[r]) to y[r] for rows [from, to) of the batch.
// A nil pair does nothing.
func (s *scratch) apply(b accel.Backend, pr *LoRAPair, scale float32, x, y accel.Buffer, from, to int) error {
	if pr == nil || to <= from {
		return nil
	}
	n := to - from
	if x.Len() < to*pr.In || y.Len() < to*pr.Out {
		return fmt.Errorf("adapt: LoRA blk.%d.%s: buffers of %d/%d values for %d rows of %d→%d",
			pr.Layer, projName(pr.Proj), x.Len(), y.Len(), to, pr.In, pr.Out)
	}
	s.x = grow(s.x, n*pr.In)
	s.y = grow(s.y, n*pr.Out)
	s.h = grow(s.h, pr.Rank)
	b.Read(s.x, x, from*pr.In)
	b.Read(s.y, y, from*pr.Out)
	for r := range n {
		xr, yr := s.x[r*pr.In:(r+1)*pr.In], s.y[r*pr.Out:(r+1)*pr.Out]
		for k := range pr.Rank {
			s.h[k] = scale * quant.DotF32(pr.A[k*pr.In:(k+1)*pr.In], xr)
		}
		for o := range yr {
			yr[o] += quant.DotF32(pr.B[o*pr.Rank:(o+1)*pr.Rank], s.h)
		}
	}
	b.Write(y, from*pr.Out, s.y)
	return nil
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}
