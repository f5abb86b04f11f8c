package adapt

import (
	"fmt"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
)

// Prefix is a prefix-tuning adapter (Li & Liang 2021): per layer, Len rows
// of keys and values placed in a sequence's cache before its first token.
// It is an engine.PrefixProvider. The keys are rotated for positions -Len
// to -1, so that the sequence's own tokens take positions from 0, as every
// caller of the engine numbers them (engine.Generate, the daemon), and
// still see the prefix at the relative distances of real preceding tokens
// (rotary attention depends on differences of positions only).
type Prefix struct {
	Arch  string
	Len   int
	KVDim int
	// K and V hold per layer Len × KVDim values; keys are already rotated
	// for positions -Len..-1.
	K, V [][]float32
}

// PrefixLen implements engine.PrefixProvider.
func (p *Prefix) PrefixLen() int { return p.Len }

// Prefix implements engine.PrefixProvider.
func (p *Prefix) Prefix(layer int) (k, v []float32) { return p.K[layer], p.V[layer] }

// Params lists the trainable tensors: blk.N.prefix_k and blk.N.prefix_v of
// each layer.
func (p *Prefix) Params() []Param {
	ps := make([]Param, 0, 2*len(p.K))
	for l := range p.K {
		ps = append(ps, Param{Name: fmt.Sprintf("blk.%d.prefix_k", l), Data: p.K[l]},
			Param{Name: fmt.Sprintf("blk.%d.prefix_v", l), Data: p.V[l]})
	}
	return ps
}

// NewPrefix initialises a prefix from the keys and values that the base
// model computes for tokens (MeZO's recommended start: real tokens' K/V).
// It runs the tokens once through a temporary engine on be.
func NewPrefix(m *model.Model, be accel.Backend, tokens []int32) (*Prefix, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("adapt: prefix: no tokens to initialise from")
	}
	arch, err := m.File.String(keyArch)
	if err != nil {
		return nil, fmt.Errorf("adapt: prefix: base model: %w", err)
	}
	c := m.Config
	capt := &kvCapture{p: &Prefix{Arch: arch, Len: len(tokens), KVDim: c.KVDim(),
		K: make([][]float32, c.NLayer), V: make([][]float32, c.NLayer)},
		rope: accel.NewRoPE(c.HeadDim, c.Rope.Dims, c.Rope.Theta, c.Rope.NeoX, c.Rope.FreqFactors)}
	e, err := engine.New(m, be, engine.Options{Context: len(tokens) + 1, BatchSize: len(tokens), Cache: engine.CacheF32,
		Hooks: engine.Hooks{Delta: capt}})
	if err != nil {
		return nil, fmt.Errorf("adapt: prefix: %w", err)
	}
	seq, err := e.NewSequence(nil)
	if err != nil {
		return nil, fmt.Errorf("adapt: prefix: %w", err)
	}
	defer seq.Free()
	batch := make([]engine.Entry, len(tokens))
	for i, id := range tokens {
		batch[i] = engine.Entry{Seq: seq, Token: id, Pos: int32(i)}
	}
	if err := e.Step(batch, nil); err != nil {
		return nil, fmt.Errorf("adapt: prefix: %w", err)
	}
	return capt.p, nil
}

// kvCapture is a DeltaProvider that changes nothing and copies the key
// and value projections of every layer, keys rotated for their positions
// less the prefix length (the engine rejects negative positions, so the
// tokens run from 0 and the shift is applied here).
type kvCapture struct {
	p    *Prefix
	rope accel.RoPE
}

func (c *kvCapture) Apply(b accel.Backend, layer int, proj engine.Proj, x, y accel.Buffer, rows []engine.Row) error {
	if proj != engine.ProjK && proj != engine.ProjV {
		return nil
	}
	vals := make([]float32, len(rows)*c.p.KVDim)
	b.Read(vals, y, 0)
	if proj == engine.ProjV {
		c.p.V[layer] = vals
		return nil
	}
	tmp, err := b.Alloc(len(vals))
	if err != nil {
		return err
	}
	defer b.Free(tmp)
	b.Write(tmp, 0, vals)
	pos := make([]int32, len(rows))
	for i, r := range rows {
		pos[i] = r.Pos - int32(c.p.Len)
	}
	b.RoPE(tmp, c.p.KVDim, pos, c.rope)
	b.Read(vals, tmp, 0)
	c.p.K[layer] = vals
	return nil
}
