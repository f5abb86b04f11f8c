package model

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/edged/edged/quant"
)

// Arch describes what distinguishes one architecture in the llama family:
// its rotary layout and which optional tensors it carries. Adding an
// architecture is adding one file with one Arch value and listing it in
// archs.
type Arch struct {
	Name     string
	RopeNeoX bool // NeoX rotary layout (pairs i, i+d/2)
	QKVBias  bool // attention q/k/v projections carry biases
}

var archs = map[string]*Arch{
	archLlama.Name: &archLlama,
	archQwen2.Name: &archQwen2,
}

// Tensor is a weight of the model: a view into the file's memory map.
type Tensor struct {
	Name string
	Type quant.Type
	Rows int // ggml dims[1]: outputs of a projection
	Cols int // ggml dims[0]: the contiguous row length
	Data []byte
}

// Layer holds the weights of one transformer block.
type Layer struct {
	AttnNorm   *Tensor // [NEmbd]
	Wq, Wk, Wv *Tensor // [QDim|KVDim rows × NEmbd]
	Bq, Bk, Bv *Tensor // biases, nil unless Arch.QKVBias
	Wo         *Tensor // [NEmbd × QDim]
	FFNNorm    *Tensor // [NEmbd]
	Gate, Up   *Tensor // [NFF × NEmbd]
	Down       *Tensor // [NEmbd × NFF]
}

// Model is a loaded model: configuration and weights, all views into one
// GGUF file.
type Model struct {
	Config     Config
	File       *File
	TokenEmbd  *Tensor // [NVocab × NEmbd]
	OutputNorm *Tensor // [NEmbd]
	Output     *Tensor // [NVocab × NEmbd]; TokenEmbd when tied
	Tied       bool
	Layers     []Layer
}

// Load reads the configuration and binds the weights of f. A missing or
// misshapen tensor is an error that lists every such tensor at once.
func Load(f *File) (*Model, error) {
	name, err := f.String("general.architecture")
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	arch, ok := archs[name]
	if !ok {
		return nil, fmt.Errorf("load model: architecture %q is not supported (supported: %s)", name, strings.Join(SupportedArchs(), ", "))
	}
	cfg, err := readConfig(f, arch)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	b := binder{f: f}
	m := &Model{File: f}
	m.TokenEmbd = b.matrix("token_embd.weight", -1, cfg.NEmbd)
	if m.TokenEmbd != nil {
		cfg.NVocab = m.TokenEmbd.Rows
	}
	m.OutputNorm = b.vector("output_norm.weight", cfg.NEmbd)
	if _, ok := f.Tensor("output.weight"); ok {
		m.Output = b.matrix("output.weight", cfg.NVocab, cfg.NEmbd)
	} else {
		m.Output, m.Tied = m.TokenEmbd, true
	}
	if t, ok := f.Tensor("rope_freqs.weight"); ok {
		cfg.Rope.FreqFactors = b.floats(t, cfg.Rope.Dims/2)
	}
	m.Layers = make([]Layer, cfg.NLayer)
	for i := range m.Layers {
		l := &m.Layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		l.AttnNorm = b.vector(p+"attn_norm.weight", cfg.NEmbd)
		l.Wq = b.matrix(p+"attn_q.weight", cfg.QDim(), cfg.NEmbd)
		l.Wk = b.matrix(p+"attn_k.weight", cfg.KVDim(), cfg.NEmbd)
		l.Wv = b.matrix(p+"attn_v.weight", cfg.KVDim(), cfg.NEmbd)
		if arch.QKVBias {
			l.Bq = b.vector(p+"attn_q.bias", cfg.QDim())
			l.Bk = b.vector(p+"attn_k.bias", cfg.KVDim())
			l.Bv = b.vector(p+"attn_v.bias", cfg.KVDim())
		}
		l.Wo = b.matrix(p+"attn_output.weight", cfg.NEmbd, cfg.QDim())
		l.FFNNorm = b.vector(p+"ffn_norm.weight", cfg.NEmbd)
		l.Gate = b.matrix(p+"ffn_gate.weight", cfg.NFF, cfg.NEmbd)
		l.Up = b.matrix(p+"ffn_up.weight", cfg.NFF, cfg.NEmbd)
		l.Down = b.matrix(p+"ffn_down.weight", cfg.NEmbd, cfg.NFF)
	}
	if err := b.err(); err != nil {
		return nil, fmt.Errorf("load %s model: %w", name, err)
	}
	m.Config = cfg
	return m, nil
}

// SupportedArchs lists the architecture names Load accepts.
func SupportedArchs() []string {
	names := make([]string, 0, len(archs))
	for n := range archs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// binder looks tensors up and checks their shapes, collecting every problem
// so that one error names all missing or misshapen tensors.
type binder struct {
	f         *File
	missing   []string
	misshapen []error
}

// matrix binds a 2-D tensor of rows × cols; rows < 0 accepts any count.
func (b *binder) matrix(name string, rows, cols int) *Tensor {
	ti, ok := b.f.Tensor(name)
	if !ok {
		b.missing = append(b.missing, name)
		return nil
	}
	if len(ti.Dims) != 2 || int(ti.Dims[0]) != cols || (rows >= 0 && int(ti.Dims[1]) != rows) {
		want := fmt.Sprintf("[%d %d]", cols, rows)
		if rows < 0 {
			want = fmt.Sprintf("[%d *]", cols)
		}
		b.misshapen = append(b.misshapen, fmt.Errorf("%s: dims %v, want %s", name, ti.Dims, want))
		return nil
	}
	return &Tensor{Name: name, Type: ti.Type, Rows: int(ti.Dims[1]), Cols: cols, Data: b.f.TensorData(ti)}
}

// vector binds a 1-D tensor of n values.
func (b *binder) vector(name string, n int) *Tensor {
	ti, ok := b.f.Tensor(name)
	if !ok {
		b.missing = append(b.missing, name)
		return nil
	}
	if len(ti.Dims) != 1 || int(ti.Dims[0]) != n {
		b.misshapen = append(b.misshapen, fmt.Errorf("%s: dims %v, want [%d]", name, ti.Dims, n))
		return nil
	}
	return &Tensor{Name: name, Type: ti.Type, Rows: 1, Cols: n, Data: b.f.TensorData(ti)}
}

// floats dequantizes a small 1-D tensor of n values.
func (b *binder) floats(ti *TensorInfo, n int) []float32 {
	if len(ti.Dims) != 1 || int(ti.Dims[0]) != n {
		b.misshapen = append(b.misshapen, fmt.Errorf("%s: dims %v, want [%d]", ti.Name, ti.Dims, n))
		return nil
	}
	out := make([]float32, n)
	if err := quant.Dequantize(ti.Type, b.f.TensorData(ti), out); err != nil {
		b.misshapen = append(b.misshapen, fmt.Errorf("%s: %w", ti.Name, err))
		return nil
	}
	return out
}

func (b *binder) err() error {
	errs := b.misshapen
	if len(b.missing) > 0 {
		errs = append([]error{fmt.Errorf("missing tensors: %s", strings.Join(b.missing, ", "))}, errs...)
	}
	return errors.Join(errs...)
}
