package adapt

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// Prefix adapter files are our own layout (llama.cpp has none):
//
//	general.type          = "adapter"
//	general.architecture  = the base model's
//	adapter.type          = "prefix"
//	adapter.prefix.length = P (uint32)
//	blk.N.prefix_k, blk.N.prefix_v for every layer N: ggml dims
//	    [KVDim, P], f32 or f16; keys rotated for positions -P..-1
//	    (the sequence's own tokens start at position 0)
const keyPrefixLen = "adapter.prefix.length"

// SavePrefix writes p as a prefix adapter file with tensors of type typ
// (F32 or F16).
func SavePrefix(path string, p *Prefix, typ quant.Type) error {
	if typ != quant.F32 && typ != quant.F16 {
		return fmt.Errorf("adapt: save prefix as %s: want f32 or f16", typ)
	}
	w := model.NewWriter()
	for _, kv := range []struct {
		k string
		v any
	}{{keyArch, p.Arch}, {keyType, "adapter"}, {keyAdapter, "prefix"}, {keyPrefixLen, uint32(p.Len)}} {
		if err := w.Set(kv.k, kv.v); err != nil {
			return fmt.Errorf("adapt: save prefix: %w", err)
		}
	}
	for _, pr := range p.Params() {
		if err := w.AddTensor(pr.Name, typ, []int64{int64(p.KVDim), int64(p.Len)}, encode(typ, pr.Data)); err != nil {
			return fmt.Errorf("adapt: save prefix: %w", err)
		}
	}
	if err := w.WriteFile(path); err != nil {
		return fmt.Errorf("adapt: save prefix: %w", err)
	}
	return nil
}

var prefixName = regexp.MustCompile(`^blk\.(\d+)\.prefix_([kv])$`)

// LoadPrefix reads a prefix adapter file and checks it against the base
// model m (architecture, layer count, K/V width).
func LoadPrefix(path string, m *model.Model) (*Prefix, error) {
	f, err := model.Open(path)
	if err != nil {
		return nil, fmt.Errorf("adapt: load prefix: %w", err)
	}
	defer f.Close()
	p, err := readPrefix(f, m)
	if err != nil {
		return nil, fmt.Errorf("adapt: load prefix %s: %w", path, err)
	}
	return p, nil
}

func readPrefix(f *model.File, m *model.Model) (*Prefix, error) {
	if t, _ := f.String(keyType); t != "adapter" {
		return nil, fmt.Errorf("%w: general.type is %q, want \"adapter\"", ErrNotAdapter, t)
	}
	if t, _ := f.String(keyAdapter); t != "prefix" {
		return nil, fmt.Errorf("%w: adapter.type is %q, want \"prefix\"", ErrNotAdapter, t)
	}
	arch, _ := f.String(keyArch)
	baseArch, err := m.File.String(keyArch)
	if err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	if arch != baseArch {
		return nil, fmt.Errorf("%w: adapter is for %q, base model is %q", ErrMismatch, arch, baseArch)
	}
	n, err := f.Int(keyPrefixLen)
	if err != nil || n <= 0 || n > 1<<20 {
		return nil, fmt.Errorf("%w: %s = %d (%v)", ErrNotAdapter, keyPrefixLen, n, err)
	}
	c := m.Config
	p := &Prefix{Arch: arch, Len: int(n), KVDim: c.KVDim(), K: make([][]float32, c.NLayer), V: make([][]float32, c.NLayer)}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		sm := prefixName.FindStringSubmatch(t.Name)
		if sm == nil {
			return nil, fmt.Errorf("%w: tensor %s is not blk.N.prefix_k/v", ErrMismatch, t.Name)
		}
		l, _ := strconv.Atoi(sm[1])
		if l >= c.NLayer {
			return nil, fmt.Errorf("%w: tensor %s: the base model has %d layers", ErrMismatch, t.Name, c.NLayer)
		}
		if len(t.Dims) != 2 || int(t.Dims[0]) != p.KVDim || int(t.Dims[1]) != p.Len {
			return nil, fmt.Errorf("%w: tensor %s dims %v, want [%d, %d] (K/V width of the base, prefix length)", ErrMismatch, t.Name, t.Dims, p.KVDim, p.Len)
		}
		v := make([]float32, p.Len*p.KVDim)
		if err := quant.Dequantize(t.Type, f.TensorData(t), v); err != nil {
			return nil, fmt.Errorf("%s: %w", t.Name, err)
		}
		if sm[2] == "k" {
			p.K[l] = v
		} else {
			p.V[l] = v
		}
	}
	for l := range p.K {
		if p.K[l] == nil || p.V[l] == nil {
			return nil, fmt.Errorf("%w: layer %d has no prefix_k or prefix_v", ErrMismatch, l)
		}
	}
	return p, nil
}
