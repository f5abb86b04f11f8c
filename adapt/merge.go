package adapt

import (
	"fmt"

	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// MergeLoRA returns a writer for a copy of m's file in which every
// projection that adapters touch holds W + Σ scale·(Alpha/rank)·B·A. A
// merged tensor is stored as retype(its base type), or in its base type
// when retype is nil (a small delta may vanish in a 4-bit type; f16 keeps
// it). Other tensors and all metadata are copied as they are: their data
// are views into m's file, so write the result before closing m.File.
func MergeLoRA(m *model.Model, adapters []Applied, retype func(quant.Type) quant.Type) (*model.Writer, error) {
	arch, err := m.File.String(keyArch)
	if err != nil {
		return nil, fmt.Errorf("adapt: merge: base model: %w", err)
	}
	merged := map[string][]byte{}
	types := map[string]quant.Type{}
	for _, ap := range adapters {
		if ap.LoRA.Arch != arch {
			return nil, fmt.Errorf("adapt: merge: %w: adapter is for %q, base model is %q", ErrMismatch, ap.LoRA.Arch, arch)
		}
	}
	for l := range m.Layers {
		for p := range projNames {
			w := baseWeight(m, l, engineProj(p))
			var pairs []Applied
			for _, ap := range adapters {
				if pr := ap.LoRA.Pair(l, engineProj(p)); pr != nil {
					if pr.In != w.Cols || pr.Out != w.Rows {
						return nil, fmt.Errorf("adapt: merge: %w: %s is %d×%d, the adapter %d×%d", ErrMismatch, w.Name, w.Rows, w.Cols, pr.Out, pr.In)
					}
					pairs = append(pairs, ap)
				}
			}
			if pairs == nil {
				continue
			}
			v := make([]float32, w.Rows*w.Cols)
			if err := quant.Dequantize(w.Type, w.Data, v); err != nil {
				return nil, fmt.Errorf("adapt: merge %s: %w", w.Name, err)
			}
			for _, ap := range pairs {
				pr := ap.LoRA.Pair(l, engineProj(p))
				addDelta(v, pr, ap.Scale*ap.LoRA.Scale(pr))
			}
			typ := w.Type
			if retype != nil {
				typ = retype(w.Type)
			}
			size, err := typ.RowSize(w.Cols)
			if err != nil {
				return nil, fmt.Errorf("adapt: merge %s as %s: %w", w.Name, typ, err)
			}
			data := make([]byte, size*w.Rows)
			if err := quant.Quantize(typ, v, data); err != nil {
				return nil, fmt.Errorf("adapt: merge %s as %s: %w", w.Name, typ, err)
			}
			merged[w.Name], types[w.Name] = data, typ
		}
	}
	out := model.NewWriter()
	for _, k := range m.File.Keys() {
		v, _ := m.File.Meta(k)
		if err := out.Set(k, v); err != nil {
			return nil, fmt.Errorf("adapt: merge: %w", err)
		}
	}
	for i := range m.File.Tensors {
		t := &m.File.Tensors[i]
		typ, data := t.Type, m.File.TensorData(t)
		if d, ok := merged[t.Name]; ok {
			typ, data = types[t.Name], d
		}
		if err := out.AddTensor(t.Name, typ, t.Dims, data); err != nil {
			return nil, fmt.Errorf("adapt: merge: %w", err)
		}
	}
	return out, nil
}

// addDelta adds scale·B·A to w (Out × In, row-major).
func addDelta(w []float32, pr *LoRAPair, scale float32) {
	row := make([]float32, pr.In)
	for o := range pr.Out {
		clear(row)
		for k := range pr.Rank {
			b := scale * pr.B[o*pr.Rank+k]
			if b == 0 {
				continue
			}
			a := pr.A[k*pr.In : (k+1)*pr.In]
			for i := range row {
				row[i] += b * a[i]
			}
		}
		dst := w[o*pr.In : (o+1)*pr.In]
		for i := range dst {
			dst[i] += row[i]
		}
	}
}
