package adapt

import (
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

func tinyLlama(t testing.TB) string {
	return fixture.Path(t, "gguf", "tiny-llama-q8_0.gguf")
}

func loadModel(t testing.TB, path string) *model.Model {
	t.Helper()
	f, err := model.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	m, err := model.Load(f)
	require.NoError(t, err)
	return m
}

func newEngine(t testing.TB, m *model.Model, delta engine.DeltaProvider) *engine.Engine {
	t.Helper()
	e, err := engine.New(m, testBackend(t), engine.Options{Context: 64, Cache: engine.CacheF32, Hooks: engine.Hooks{Delta: delta}})
	require.NoError(t, err)
	return e
}

// testBackend is a CPU backend with few threads, closed after the test:
// the fixture models are tiny, and idle workers of forgotten backends
// would poll for work while other tests run.
func testBackend(t testing.TB) *cpu.Backend {
	be := cpu.New(2)
	t.Cleanup(func() { be.Close() })
	return be
}

// randomize fills every B of lo (A is random already) so the adapter
// changes the model.
func randomize(lo *LoRA, seed uint64, std float32) {
	for i, p := range lo.Pairs {
		key := stream(seed, i)
		for j := range p.B {
			p.B[j] = std * gaussian(key, j)
		}
	}
}

var testPrompts = [][]int32{{1, 15, 27, 99, 3, 42}, {1, 7, 8, 200, 31}}

// runPrompts feeds each prompt to its own sequence, all in one Step, and
// returns the logits of every row; setup attaches adapters per sequence.
func runPrompts(t testing.TB, e *engine.Engine, setup func(i int, s *engine.Sequence)) [][]float32 {
	t.Helper()
	var batch []engine.Entry
	for i, p := range testPrompts {
		seq, err := e.NewSequence(nil)
		require.NoError(t, err)
		t.Cleanup(seq.Free)
		if setup != nil {
			setup(i, seq)
		}
		for j, id := range p {
			batch = append(batch, engine.Entry{Seq: seq, Token: id, Pos: int32(j), Logits: true})
		}
	}
	nv := e.Config().NVocab
	logits := make([]float32, len(batch)*nv)
	require.NoError(t, e.Step(batch, logits))
	out := make([][]float32, len(testPrompts))
	off := 0
	for i, p := range testPrompts {
		out[i] = logits[off*nv : (off+len(p))*nv]
		off += len(p)
	}
	return out
}

func TestLoRARoundTrip(t *testing.T) {
	m := loadModel(t, tinyLlama(t))
	lo, err := NewLoRA(m, LoRAOptions{Rank: 4, Alpha: 8, Seed: 1})
	require.NoError(t, err)
	randomize(lo, 2, 0.1)
	require.Len(t, lo.Pairs, 2*len(m.Layers))

	dir := t.TempDir()
	path := filepath.Join(dir, "lora.gguf")
	require.NoError(t, SaveLoRA(path, lo, quant.F32))

	// The file has llama.cpp's metadata keys, names, dims and types.
	f, err := model.Open(path)
	require.NoError(t, err)
	defer f.Close()
	for k, want := range map[string]string{"general.type": "adapter", "adapter.type": "lora", "general.architecture": "llama"} {
		got, err := f.String(k)
		require.NoError(t, err)
		assert.Equal(t, want, got, k)
	}
	alpha, err := f.Float("adapter.lora.alpha")
	require.NoError(t, err)
	assert.Equal(t, 8.0, alpha)
	ta, ok := f.Tensor("blk.0.attn_q.weight.lora_a")
	require.True(t, ok)
	assert.Equal(t, []int64{int64(m.Layers[0].Wq.Cols), 4}, ta.Dims)
	assert.Equal(t, quant.F32, ta.Type)
	tb, ok := f.Tensor("blk.1.attn_v.weight.lora_b")
	require.True(t, ok)
	assert.Equal(t, []int64{4, int64(m.Layers[1].Wv.Rows)}, tb.Dims)

	got, err := LoadLoRA(path, m)
	require.NoError(t, err)
	assert.Equal(t, lo.Alpha, got.Alpha)
	assert.Equal(t, lo.Arch, got.Arch)
	require.Len(t, got.Pairs, len(lo.Pairs))
	for i, p := range lo.Pairs {
		g := got.Pairs[i]
		assert.Equal(t, [5]int{p.Layer, int(p.Proj), p.Rank, p.In, p.Out}, [5]int{g.Layer, int(g.Proj), g.Rank, g.In, g.Out})
		assert.Equal(t, p.A, g.A)
		assert.Equal(t, p.B, g.B)
	}

	// f16 keeps values to f16 precision.
	path16 := filepath.Join(dir, "lora16.gguf")
	require.NoError(t, SaveLoRA(path16, lo, quant.F16))
	got16, err := LoadLoRA(path16, m)
	require.NoError(t, err)
	for i, p := range lo.Pairs {
		for j, v := range p.A {
			assert.InDelta(t, v, got16.Pairs[i].A[j], 1e-3*math.Abs(float64(v))+1e-6)
		}
	}
}

// An all-zero LoRA (B = 0) leaves the logits bit-identical, and sequences
// with and without it share one batch.
func TestZeroLoRAIdentical(t *testing.T) {
	m := loadModel(t, tinyLlama(t))
	want := runPrompts(t, newEngine(t, m, nil), nil)

	lo, err := NewLoRA(m, LoRAOptions{Seed: 3})
	require.NoError(t, err)
	set := NewSet()
	e := newEngine(t, m, set)
	got := runPrompts(t, e, func(i int, s *engine.Sequence) {
		if i == 0 {
			set.Use(s, Applied{LoRA: lo, Scale: 1})
		}
	})
	for i := range want {
		require.Equal(t, want[i], got[i], "prompt %d", i)
	}
}

// mergedModel writes a copy of the model at path in which projection p of
// layer is replaced by its float32 dequantization plus scale·B·A (pair nil:
// no delta), and loads it.
func mergedModel(t *testing.T, path string, layer int, p engine.Proj, pr *LoRAPair, scale float32) *model.Model {
	t.Helper()
	base := loadModel(t, path)
	w := baseWeight(base, layer, p)
	merged := make([]float32, w.Rows*w.Cols)
	require.NoError(t, quant.Dequantize(w.Type, w.Data, merged))
	if pr != nil {
		for o := range w.Rows {
			for i := range w.Cols {
				var d float64
				for k := range pr.Rank {
					d += float64(pr.B[o*pr.Rank+k]) * float64(pr.A[k*pr.In+i])
				}
				merged[o*w.Cols+i] += scale * float32(d)
			}
		}
	}
	out := model.NewWriter()
	for _, k := range base.File.Keys() {
		v, _ := base.File.Meta(k)
		require.NoError(t, out.Set(k, v))
	}
	for i := range base.File.Tensors {
		ti := &base.File.Tensors[i]
		if ti.Name == w.Name {
			require.NoError(t, out.AddTensor(ti.Name, quant.F32, ti.Dims, encode(quant.F32, merged)))
			continue
		}
		require.NoError(t, out.AddTensor(ti.Name, ti.Type, ti.Dims, base.File.TensorData(ti)))
	}
	dst := filepath.Join(t.TempDir(), "merged.gguf")
	require.NoError(t, out.WriteFile(dst))
	return loadModel(t, dst)
}

// A non-zero LoRA on one projection equals the model whose weight has the
// delta merged in, in a batch that also holds a sequence without it.
func TestLoRAMatchesMerged(t *testing.T) {
	path := tinyLlama(t)
	for _, p := range []engine.Proj{engine.ProjQ, engine.ProjV, engine.ProjDown} {
		t.Run(projName(p), func(t *testing.T) {
			plain := mergedModel(t, path, 1, p, nil, 0)
			lo, err := NewLoRA(plain, LoRAOptions{Rank: 4, Alpha: 8, Projs: []engine.Proj{p}, Layers: []int{1}, Seed: 5})
			require.NoError(t, err)
			randomize(lo, 6, 0.1)
			pr := lo.Pair(1, p)
			merged := mergedModel(t, path, 1, p, pr, lo.Scale(pr))

			want := runPrompts(t, newEngine(t, merged, nil), nil)
			base := runPrompts(t, newEngine(t, plain, nil), nil)
			set := NewSet()
			got := runPrompts(t, newEngine(t, plain, set), func(i int, s *engine.Sequence) {
				if i == 0 {
					set.Use(s, Applied{LoRA: lo, Scale: 1})
				}
			})
			assert.Equal(t, base[1], got[1], "the sequence without the adapter is unchanged")
			var maxDiff, maxMoved float64
			for j := range want[0] {
				maxDiff = max(maxDiff, math.Abs(float64(want[0][j]-got[0][j])))
				maxMoved = max(maxMoved, math.Abs(float64(base[0][j]-got[0][j])))
			}
			t.Logf("max |lora - merged| = %g, max |lora - base| = %g", maxDiff, maxMoved)
			assert.Greater(t, maxMoved, 1e-2, "the adapter changes the logits")
			assert.Less(t, maxDiff, 1e-3*max(1, maxMoved))
		})
	}
}

func TestLoadLoRAMismatch(t *testing.T) {
	m := loadModel(t, tinyLlama(t))
	dir := t.TempDir()
	save := func(name string, lo *LoRA) string {
		p := filepath.Join(dir, name)
		require.NoError(t, SaveLoRA(p, lo, quant.F32))
		return p
	}
	lo, err := NewLoRA(m, LoRAOptions{Rank: 2, Layers: []int{0}, Seed: 1})
	require.NoError(t, err)

	wrongIn := *lo.Pairs[0]
	wrongIn.In++
	wrongIn.A = make([]float32, wrongIn.Rank*wrongIn.In)
	_, err = LoadLoRA(save("in.gguf", &LoRA{Arch: lo.Arch, Alpha: 1, Pairs: []*LoRAPair{&wrongIn}}), m)
	assert.True(t, errors.Is(err, ErrMismatch), "%v", err)
	assert.ErrorContains(t, err, "blk.0.attn_q.weight")

	wrongLayer := *lo.Pairs[0]
	wrongLayer.Layer = len(m.Layers)
	_, err = LoadLoRA(save("layer.gguf", &LoRA{Arch: lo.Arch, Pairs: []*LoRAPair{&wrongLayer}}), m)
	assert.True(t, errors.Is(err, ErrMismatch), "%v", err)

	_, err = LoadLoRA(save("arch.gguf", &LoRA{Arch: "qwen2", Pairs: lo.Pairs}), m)
	assert.True(t, errors.Is(err, ErrMismatch), "%v", err)
	assert.ErrorContains(t, err, "qwen2")

	_, err = LoadLoRA(tinyLlama(t), m)
	assert.True(t, errors.Is(err, ErrNotAdapter), "%v", err)
}

// A merged model gives the logits of the base with the LoRA applied.
func TestMergeLoRA(t *testing.T) {
	path := tinyLlama(t)
	plain := mergedModel(t, path, 0, engine.ProjV, nil, 0) // layer 0 v in f32
	lo, err := NewLoRA(plain, LoRAOptions{Rank: 4, Alpha: 8, Projs: []engine.Proj{engine.ProjV}, Layers: []int{0}, Seed: 9})
	require.NoError(t, err)
	randomize(lo, 10, 0.05) // larger deltas amplify rounding differences past the tolerance
	w, err := MergeLoRA(plain, []Applied{{LoRA: lo, Scale: 0.5}}, nil)
	require.NoError(t, err)
	dst := filepath.Join(t.TempDir(), "merged.gguf")
	require.NoError(t, w.WriteFile(dst))
	merged := loadModel(t, dst)
	assert.Equal(t, quant.F32, merged.Layers[0].Wv.Type)
	assert.Equal(t, plain.Layers[0].Wq.Type, merged.Layers[0].Wq.Type)

	want := runPrompts(t, newEngine(t, merged, nil), nil)
	set := NewSet()
	got := runPrompts(t, newEngine(t, plain, set), func(i int, s *engine.Sequence) { set.Use(s, Applied{LoRA: lo, Scale: 0.5}) })
	base := runPrompts(t, newEngine(t, plain, nil), nil)
	// Merging and applying differ by float32 rounding in layer 0's values,
	// but the layers after it quantize their activations to 8 bits, and a
	// rounding difference that lands on a rounding boundary moves an
	// activation by a whole step: so compare the logits as a whole (a wrong
	// merge, such as a missing scale, moves them by a share of ~0.5).
	var diff, moved float64
	for i := range want {
		for j := range want[i] {
			d, m := float64(want[i][j]-got[i][j]), float64(base[i][j]-got[i][j])
			diff, moved = diff+d*d, moved+m*m
		}
	}
	rel := math.Sqrt(diff / moved)
	t.Logf("|merged - lora| / |lora - base| = %g", rel)
	assert.Greater(t, math.Sqrt(moved), 0.1)
	assert.Less(t, rel, 0.05)
}
