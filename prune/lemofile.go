package prune

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// Predictor files are a small GGUF of our own layout, stored next to the
// model (M.lemo.gguf):
//
//	general.type  = "lemo-predictor"
//	lemo.score    = the informativeness it was trained on (uint32, scoreVersion)
//	lemo.block    = block size (uint32)
//	lemo.dim      = input width, the model's NEmbd (uint32)
//	lemo.hidden   = MLP width (uint32)
//	blk.N.lemo_w1 [dim, hidden], blk.N.lemo_b1 [hidden],
//	blk.N.lemo_w2 [hidden], blk.N.lemo_b2 [1] for each layer N; f32
const (
	keyGeneralType = "general.type"
	predictorType  = "lemo-predictor"
	keyLeMoScore   = "lemo.score"
	keyLeMoBlock   = "lemo.block"
	keyLeMoDim     = "lemo.dim"
	keyLeMoHidden  = "lemo.hidden"
	maxPredictor   = 1 << 16 // bound on block, dim and hidden read from a file

	// scoreVersion names the informativeness a predictor learns. Files
	// without lemo.score were trained on the paper's plain sum, version 1:
	// their MLP leaves out the count of seeing queries that scoreRows used
	// to add, and would rank blocks wrongly with today's scoreRows.
	scoreVersion = 2
)

var predictorTensor = regexp.MustCompile(`^blk\.(\d{1,4})\.lemo_(w1|b1|w2|b2)$`)

// SavePredictor writes p to path.
func SavePredictor(path string, p *Predictor) error {
	hidden := 0
	for l, m := range p.Layers {
		if hidden != 0 && m.Hidden != hidden {
			return fmt.Errorf("prune: save predictor: layer %d has %d hidden units, another %d", l, m.Hidden, hidden)
		}
		hidden = m.Hidden
	}
	if hidden == 0 {
		return fmt.Errorf("prune: save predictor: no layers")
	}
	w := model.NewWriter()
	for _, kv := range []struct {
		k string
		v any
	}{{keyGeneralType, predictorType}, {keyLeMoScore, uint32(scoreVersion)}, {keyLeMoBlock, uint32(p.Block)}, {keyLeMoDim, uint32(p.Dim)}, {keyLeMoHidden, uint32(hidden)}} {
		if err := w.Set(kv.k, kv.v); err != nil {
			return fmt.Errorf("prune: save predictor: %w", err)
		}
	}
	for _, l := range p.layers() {
		m := p.Layers[l]
		for _, t := range []struct {
			name string
			dims []int64
			v    []float32
		}{
			{"w1", []int64{int64(p.Dim), int64(m.Hidden)}, m.W1},
			{"b1", []int64{int64(m.Hidden)}, m.B1},
			{"w2", []int64{int64(m.Hidden)}, m.W2},
			{"b2", []int64{1}, []float32{m.B2}},
		} {
			if err := w.AddTensor(fmt.Sprintf("blk.%d.lemo_%s", l, t.name), quant.F32, t.dims, f32Bytes(t.v)); err != nil {
				return fmt.Errorf("prune: save predictor: %w", err)
			}
		}
	}
	if err := w.WriteFile(path); err != nil {
		return fmt.Errorf("prune: save predictor: %w", err)
	}
	return nil
}

// PredictorPath is where the predictor of the model at modelPath is
// stored: next to it, M.gguf's as M.lemo.gguf. edgectl lemo train writes
// it there by default, and edged looks for it there.
func PredictorPath(modelPath string) string {
	return strings.TrimSuffix(modelPath, ".gguf") + ".lemo.gguf"
}

// LoadPredictor reads a predictor file.
func LoadPredictor(path string) (*Predictor, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("prune: load predictor: %w", err)
	}
	p, err := ParsePredictor(data)
	if err != nil {
		return nil, fmt.Errorf("prune: load predictor %s: %w", path, err)
	}
	return p, nil
}

// ParsePredictor reads a predictor file held in memory. Every size is
// checked before use: a malformed file is an error wrapping
// ErrPredictorFile, never a panic.
func ParsePredictor(data []byte) (*Predictor, error) {
	f, err := model.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPredictorFile, err)
	}
	if t, _ := f.String(keyGeneralType); t != predictorType {
		return nil, fmt.Errorf("%w: general.type is %q, want %q", ErrPredictorFile, t, predictorType)
	}
	switch v, err := f.IntOr(keyLeMoScore, 1); {
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrPredictorFile, err)
	case v != scoreVersion:
		return nil, fmt.Errorf("%w: trained on LeMo scores of version %d, this build ranks by version %d: train it again (edgectl lemo train)", ErrPredictorFile, v, scoreVersion)
	}
	var dims [3]int
	for i, k := range []string{keyLeMoBlock, keyLeMoDim, keyLeMoHidden} {
		v, err := f.Int(k)
		if err != nil || v < 1 || v > maxPredictor {
			return nil, fmt.Errorf("%w: %s = %d (%v)", ErrPredictorFile, k, v, err)
		}
		dims[i] = int(v)
	}
	p := &Predictor{Block: dims[0], Dim: dims[1], Layers: map[int]*MLP{}}
	hidden := dims[2]
	for i := range f.Tensors {
		if err := p.readTensor(f, &f.Tensors[i], hidden); err != nil {
			return nil, err
		}
	}
	if len(p.Layers) == 0 {
		return nil, fmt.Errorf("%w: no layers", ErrPredictorFile)
	}
	for l, m := range p.Layers {
		if m.W1 == nil || m.B1 == nil || m.W2 == nil {
			return nil, fmt.Errorf("%w: layer %d lacks a tensor", ErrPredictorFile, l)
		}
	}
	return p, nil
}

// readTensor stores one blk.N.lemo_* tensor of f in p after checking its
// name, type and shape.
func (p *Predictor) readTensor(f *model.File, t *model.TensorInfo, hidden int) error {
	sm := predictorTensor.FindStringSubmatch(t.Name)
	if sm == nil {
		return fmt.Errorf("%w: tensor %q is not blk.N.lemo_w1/b1/w2/b2", ErrPredictorFile, t.Name)
	}
	l, _ := strconv.Atoi(sm[1])
	want := map[string]int64{"w1": int64(p.Dim) * int64(hidden), "b1": int64(hidden), "w2": int64(hidden), "b2": 1}[sm[2]]
	if t.Type != quant.F32 || t.Elements() != want || int64(len(f.TensorData(t))) != 4*want {
		return fmt.Errorf("%w: tensor %s: type %s, %d values, want f32 and %d", ErrPredictorFile, t.Name, t.Type, t.Elements(), want)
	}
	v := f32Values(f.TensorData(t))
	m := p.Layers[l]
	if m == nil {
		m = &MLP{Hidden: hidden}
		p.Layers[l] = m
	}
	switch sm[2] {
	case "w1":
		m.W1 = v
	case "b1":
		m.B1 = v
	case "w2":
		m.W2 = v
	case "b2":
		m.B2 = v[0]
	}
	return nil
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func f32Values(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}
