package adapt

import (
	"encoding/binary"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// GGUF keys of adapter files (llama.cpp's names).
const (
	keyArch      = "general.architecture"
	keyType      = "general.type"
	keyAdapter   = "adapter.type"
	keyLoRAAlpha = "adapter.lora.alpha"
)

// SaveLoRA writes lo as a llama.cpp LoRA adapter: general.type=adapter,
// adapter.type=lora, adapter.lora.alpha, and per pair the tensors
// blk.N.<proj>.weight.lora_a (ggml dims [In, Rank]) and .lora_b (dims
// [Rank, Out]) stored as typ, F32 or F16.
func SaveLoRA(path string, lo *LoRA, typ quant.Type) error {
	if typ != quant.F32 && typ != quant.F16 {
		return fmt.Errorf("adapt: save LoRA as %s: want f32 or f16", typ)
	}
	w := model.NewWriter()
	for _, kv := range []struct {
		k string
		v any
	}{{keyArch, lo.Arch}, {keyType, "adapter"}, {keyAdapter, "lora"}, {keyLoRAAlpha, lo.Alpha}} {
		if err := w.Set(kv.k, kv.v); err != nil {
			return fmt.Errorf("adapt: save LoRA: %w", err)
		}
	}
	for _, p := range lo.Pairs {
		name := fmt.Sprintf("blk.%d.%s.weight", p.Layer, projName(p.Proj))
		if err := w.AddTensor(name+".lora_a", typ, []int64{int64(p.In), int64(p.Rank)}, encode(typ, p.A)); err != nil {
			return fmt.Errorf("adapt: save LoRA: %w", err)
		}
		if err := w.AddTensor(name+".lora_b", typ, []int64{int64(p.Rank), int64(p.Out)}, encode(typ, p.B)); err != nil {
			return fmt.Errorf("adapt: save LoRA: %w", err)
		}
	}
	if err := w.WriteFile(path); err != nil {
		return fmt.Errorf("adapt: save LoRA: %w", err)
	}
	return nil
}

func encode(typ quant.Type, v []float32) []byte {
	if typ == quant.F16 {
		b := make([]byte, 2*len(v))
		for i, f := range v {
			binary.LittleEndian.PutUint16(b[2*i:], quant.F32ToF16(f))
		}
		return b
	}
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

var loraName = regexp.MustCompile(`^blk\.(\d+)\.([a-z_]+)\.weight\.lora_([ab])$`)

// LoadLoRA reads a llama.cpp LoRA adapter file and checks it against the
// base model m: same architecture, every tensor naming a projection of m
// with matching shapes. Tensors may be stored in any type quant can
// dequantize (llama.cpp's converter writes f32, f16, bf16 or q8_0); they are
// held as float32. Norm tensors, which llama.cpp also ignores, are skipped.
func LoadLoRA(path string, m *model.Model) (*LoRA, error) {
	f, err := model.Open(path)
	if err != nil {
		return nil, fmt.Errorf("adapt: load LoRA: %w", err)
	}
	defer f.Close()
	lo, err := readLoRA(f, m)
	if err != nil {
		return nil, fmt.Errorf("adapt: load LoRA %s: %w", path, err)
	}
	return lo, nil
}

func readLoRA(f *model.File, m *model.Model) (*LoRA, error) {
	if t, _ := f.String(keyType); t != "adapter" {
		return nil, fmt.Errorf("%w: general.type is %q, want \"adapter\"", ErrNotAdapter, t)
	}
	if t, _ := f.String(keyAdapter); t != "lora" {
		return nil, fmt.Errorf("%w: adapter.type is %q, want \"lora\"", ErrNotAdapter, t)
	}
	arch, err := f.String(keyArch)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotAdapter, err)
	}
	baseArch, err := m.File.String(keyArch)
	if err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	if arch != baseArch {
		return nil, fmt.Errorf("%w: adapter is for %q, base model is %q", ErrMismatch, arch, baseArch)
	}
	alpha, err := f.FloatOr(keyLoRAAlpha, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotAdapter, err)
	}
	lo := &LoRA{Arch: arch, Alpha: float32(alpha)}
	halves := map[target][2]*model.TensorInfo{}
	var errs []string
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if strings.HasSuffix(t.Name, "_norm.weight") {
			continue
		}
		sm := loraName.FindStringSubmatch(t.Name)
		if sm == nil {
			errs = append(errs, fmt.Sprintf("tensor %s: not a blk.N.<projection>.weight.lora_a/b tensor", t.Name))
			continue
		}
		layer, _ := strconv.Atoi(sm[1])
		p, err := ParseProj(sm[2])
		if err != nil {
			errs = append(errs, fmt.Sprintf("tensor %s: %v", t.Name, err))
			continue
		}
		k := target{layer, p}
		h := halves[k]
		h[sm[3][0]-'a'] = t
		halves[k] = h
	}
	for k, h := range halves {
		name := fmt.Sprintf("blk.%d.%s.weight", k.layer, projName(k.proj))
		pr, err := loraPair(f, m, k, h, name)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		lo.Pairs = append(lo.Pairs, pr)
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		return nil, fmt.Errorf("%w: %s", ErrMismatch, strings.Join(errs, "; "))
	}
	if err := lo.build(); err != nil {
		return nil, err
	}
	return lo, nil
}

func loraPair(f *model.File, m *model.Model, k target, h [2]*model.TensorInfo, name string) (*LoRAPair, error) {
	a, b := h[0], h[1]
	if a == nil || b == nil {
		return nil, fmt.Errorf("%s: lora_a or lora_b is missing", name)
	}
	w := baseWeight(m, k.layer, k.proj)
	if w == nil {
		return nil, fmt.Errorf("%s: not a tensor of the base model (%d layers)", name, len(m.Layers))
	}
	if len(a.Dims) != 2 || len(b.Dims) != 2 {
		return nil, fmt.Errorf("%s: lora_a dims %v, lora_b dims %v: want 2 each", name, a.Dims, b.Dims)
	}
	rank := int(a.Dims[1])
	if int(a.Dims[0]) != w.Cols || int(b.Dims[1]) != w.Rows {
		return nil, fmt.Errorf("%s: lora_a dims %v and lora_b dims %v do not fit the base weight of %d×%d (want [%d, r] and [r, %d])",
			name, a.Dims, b.Dims, w.Rows, w.Cols, w.Cols, w.Rows)
	}
	if int(b.Dims[0]) != rank {
		return nil, fmt.Errorf("%s: lora_a rank %d, lora_b rank %d (lora_a must be transposed: dims [%d, r])", name, rank, b.Dims[0], w.Cols)
	}
	pr := &LoRAPair{Layer: k.layer, Proj: k.proj, Rank: rank, In: w.Cols, Out: w.Rows,
		A: make([]float32, rank*w.Cols), B: make([]float32, w.Rows*rank)}
	if err := quant.Dequantize(a.Type, f.TensorData(a), pr.A); err != nil {
		return nil, fmt.Errorf("%s.lora_a: %w", name, err)
	}
	if err := quant.Dequantize(b.Type, f.TensorData(b), pr.B); err != nil {
		return nil, fmt.Errorf("%s.lora_b: %w", name, err)
	}
	return pr, nil
}
