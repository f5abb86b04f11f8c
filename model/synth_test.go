package model

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/quant"
)

func synthShape(t testing.TB, name string) Shape {
	t.Helper()
	s, err := ShapeByName(name)
	require.NoError(t, err)
	return s
}

func synthFile(t testing.TB, s Shape, ft FType, seed uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s-%d.gguf", s.Name, ft, seed))
	require.NoError(t, Synthesize(s, ft, seed, path))
	return path
}

// newSynthTokenizer loads the tokenizer, accepting that a family may not be
// implemented yet.
func newSynthTokenizer(t testing.TB, f *File) *Tokenizer {
	t.Helper()
	tok, err := NewTokenizer(f)
	if errors.Is(err, ErrUnsupportedTokenizer) {
		t.Logf("tokenizer not checked: %v", err)
		return nil
	}
	require.NoError(t, err)
	return tok
}

// The tiny shapes in several file types: the file loads as a model whose
// configuration and tensors are the plan's, and its tokenizer round-trips.
func TestSynthesizeLoads(t *testing.T) {
	for _, name := range []string{"test-llama-tiny", "test-qwen2-tiny"} {
		for _, ft := range []FType{FTypeF32, FTypeF16, FTypeQ4_0, FTypeQ8_0, FTypeQ4_KM, FTypeQ6_K} {
			t.Run(name+"/"+ft.String(), func(t *testing.T) {
				s := synthShape(t, name)
				plan, err := PlanSynth(s, ft)
				require.NoError(t, err)
				f, err := Open(synthFile(t, s, ft, 1))
				require.NoError(t, err)
				defer f.Close()

				m, err := Load(f)
				require.NoError(t, err)
				c := m.Config
				assert.Equal(t, []int{s.Embd, s.Layers, s.Heads, s.KVHeads, s.FF, s.Vocab, s.Context},
					[]int{c.NEmbd, c.NLayer, c.NHead, c.NHeadKV, c.NFF, c.NVocab, c.NCtxTrain})
				assert.Equal(t, s.Tied, m.Tied)
				assert.Equal(t, s.Arch == "qwen2", m.Layers[0].Bq != nil)
				fileType, err := f.Int("general.file_type")
				require.NoError(t, err)
				assert.Equal(t, int64(ft), fileType)

				require.Len(t, f.Tensors, len(plan.Tensors))
				for i, ti := range f.Tensors {
					want := plan.Tensors[i]
					assert.Equal(t, []any{want.Name, want.Type, want.Dims}, []any{ti.Name, ti.Type, ti.Dims})
				}

				if tok := newSynthTokenizer(t, f); tok != nil {
					assert.Equal(t, s.Vocab, tok.NVocab())
					ids := tok.Encode("hello world", false, false)
					assert.Less(t, len(ids), len("hello world"), "pieces longer than a byte merge: %v", ids)
					assert.Equal(t, "hello world", tok.Decode(ids))
				}
			})
		}
	}
}

// The same seed gives the same bytes, whatever the number of workers; another
// seed gives other bytes.
func TestSynthesizeDeterministic(t *testing.T) {
	s := synthShape(t, "test-qwen2-tiny")
	a, err := os.ReadFile(synthFile(t, s, FTypeQ4_KM, 7))
	require.NoError(t, err)
	procs := runtime.GOMAXPROCS(1)
	b, err := os.ReadFile(synthFile(t, s, FTypeQ4_KM, 7))
	runtime.GOMAXPROCS(procs)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(a, b), "two files from seed 7 differ")
	c, err := os.ReadFile(synthFile(t, s, FTypeQ4_KM, 8))
	require.NoError(t, err)
	assert.Equal(t, len(a), len(c))
	assert.False(t, bytes.Equal(a, c), "seeds 7 and 8 give the same file")
}

// The weights follow the recipe: norms one, weights normal with standard
// deviation 1/sqrt(row length) and F16-exact, rope_freqs from llama 3's
// formula.
func TestSynthesizeValues(t *testing.T) {
	s := synthShape(t, "test-qwen2-tiny")
	s.HeadDim = 64
	s.Llama3 = &RopeLlama3{Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OrigContext: 8192}
	f, err := Open(synthFile(t, s, FTypeF32, 3))
	require.NoError(t, err)
	defer f.Close()
	floats := func(name string) []float32 {
		ti, ok := f.Tensor(name)
		require.True(t, ok, name)
		out := make([]float32, ti.Elements())
		require.NoError(t, quant.Dequantize(ti.Type, f.TensorData(ti), out))
		return out
	}
	for _, name := range []string{"output_norm.weight", "blk.1.attn_norm.weight", "blk.0.ffn_norm.weight"} {
		for _, v := range floats(name) {
			require.Equal(t, float32(1), v, name)
		}
	}
	for _, c := range []struct {
		name string
		std  float64
	}{
		{"token_embd.weight", 1 / math.Sqrt(256)},
		{"blk.0.ffn_down.weight", 1 / math.Sqrt(512)},
		{"blk.1.attn_q.weight", 1 / math.Sqrt(256)},
		{"blk.1.attn_k.bias", 0.02},
	} {
		x := floats(c.name)
		var sum, sq float64
		for _, v := range x {
			require.Equal(t, v, quant.F16ToF32(quant.F32ToF16(v)), "%s holds a value F16 cannot", c.name)
			sum += float64(v)
			sq += float64(v) * float64(v)
		}
		mean := sum / float64(len(x))
		std := math.Sqrt(sq/float64(len(x)) - mean*mean)
		assert.InDelta(t, 0, mean, 5*c.std/math.Sqrt(float64(len(x))), c.name)
		assert.InEpsilon(t, c.std, std, 0.15, c.name)
	}
	freqs := floats("rope_freqs.weight")
	require.Len(t, freqs, 32)
	assert.Equal(t, float32(1), freqs[0])
	assert.Equal(t, float32(32), freqs[31])
	assert.True(t, slices.IsSorted(freqs), "frequency factors %v", freqs)
}

// The real shapes, planned without writing their weights: types, sizes
// against BASELINES.md, metadata, and a header that loads (configuration
// and tokenizer at the full vocabulary size).
func TestPlanRealShapes(t *testing.T) {
	const MiB = 1 << 20
	sizes := []struct {
		shape string
		ft    FType
		size  float64 // BASELINES.md, MiB
	}{
		{"smollm2-135m", FTypeQ8_0, 136},
		{"smollm2-135m", FTypeQ4_0, 86},
		{"tinyllama-1.1b", FTypeQ8_0, 1.09 * 1024},
		{"tinyllama-1.1b", FTypeQ4_0, 607},
	}
	for _, c := range sizes {
		p, err := PlanSynth(synthShape(t, c.shape), c.ft)
		require.NoError(t, err)
		assert.InEpsilon(t, c.size, float64(p.Size())/MiB, 0.005, "%s %s", c.shape, c.ft)
	}

	types := []struct {
		shape string
		ft    FType
		want  map[string]quant.Type // tensor -> type; quant.Type(255): absent
	}{
		{"smollm2-135m", FTypeQ4_0, map[string]quant.Type{"token_embd.weight": quant.Q8_0, "output.weight": 255,
			"blk.0.attn_q.weight": quant.Q4_0, "blk.29.ffn_down.weight": quant.Q4_0, "blk.3.attn_norm.weight": quant.F32}},
		{"smollm2-135m", FTypeQ4_KM, map[string]quant.Type{"token_embd.weight": quant.Q8_0,
			"blk.0.attn_q.weight": quant.Q5_0, "blk.0.attn_v.weight": quant.Q8_0, "blk.4.attn_v.weight": quant.Q5_0,
			"blk.0.ffn_down.weight": quant.Q6_K, "blk.4.ffn_down.weight": quant.Q4_K}},
		{"qwen2.5-0.5b", FTypeQ4_0, map[string]quant.Type{"token_embd.weight": quant.Q8_0, "output.weight": 255,
			"blk.0.attn_q.bias": quant.F32, "blk.0.attn_v.weight": quant.Q4_0}},
		{"llama3.2-1b", FTypeQ4_0, map[string]quant.Type{"token_embd.weight": quant.Q6_K, "output.weight": 255,
			"rope_freqs.weight": quant.F32, "blk.15.ffn_up.weight": quant.Q4_0}},
		{"llama3.2-1b", FTypeQ8_0, map[string]quant.Type{"token_embd.weight": quant.Q8_0}},
		{"tinyllama-1.1b", FTypeQ4_0, map[string]quant.Type{"token_embd.weight": quant.Q4_0, "output.weight": quant.Q6_K}},
		{"tinyllama-1.1b", FTypeF16, map[string]quant.Type{"token_embd.weight": quant.F16, "output.weight": quant.F16,
			"output_norm.weight": quant.F32}},
		{"tinyllama-1.1b", FTypeQ3_KM, map[string]quant.Type{"blk.0.attn_v.weight": quant.Q5_K, "blk.2.attn_v.weight": quant.Q4_K,
			"blk.0.ffn_down.weight": quant.Q5_K, "blk.2.ffn_down.weight": quant.Q4_K, "blk.2.attn_output.weight": quant.Q4_K,
			"blk.2.ffn_up.weight": quant.Q3_K}},
	}
	for _, c := range types {
		p, err := PlanSynth(synthShape(t, c.shape), c.ft)
		require.NoError(t, err)
		got := map[string]quant.Type{}
		for _, ti := range p.Tensors {
			got[ti.Name] = ti.Type
		}
		for name, want := range c.want {
			typ, ok := got[name]
			if want == 255 {
				assert.False(t, ok, "%s %s has %s", c.shape, c.ft, name)
				continue
			}
			assert.True(t, ok, "%s %s lacks %s", c.shape, c.ft, name)
			assert.Equal(t, want, typ, "%s %s %s", c.shape, c.ft, name)
		}
	}

	// Q4_K_M raises attn_v and ffn_down to Q6_K in the first and last
	// eighth of the layers and every third layer between.
	p, err := PlanSynth(synthShape(t, "tinyllama-1.1b"), FTypeQ4_KM)
	require.NoError(t, err)
	var raised []int
	for l := range 22 {
		for _, ti := range p.Tensors {
			if ti.Name == fmt.Sprintf("blk.%d.attn_v.weight", l) && ti.Type == quant.Q6_K {
				raised = append(raised, l)
			}
		}
	}
	assert.Equal(t, []int{0, 1, 4, 7, 10, 13, 16, 19, 20, 21}, raised)

	for _, s := range Shapes() {
		t.Run(s.Name, func(t *testing.T) { checkSynthHeader(t, s) })
	}
}

// checkSynthHeader loads the metadata of s as a file without tensors.
func checkSynthHeader(t *testing.T, s Shape) {
	p, err := PlanSynth(s, FTypeQ4_0)
	require.NoError(t, err)
	// llama-quantize's order: outside the blocks by name, then by block.
	prevLayer, prevName := -1, ""
	for _, ti := range p.Tensors {
		layer := -1
		fmt.Sscanf(ti.Name, "blk.%d.", &layer)
		require.True(t, layer > prevLayer || layer == prevLayer && ti.Name > prevName, "%s after %s", ti.Name, prevName)
		prevLayer, prevName = layer, ti.Name
	}
	w, err := p.writer()
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = w.WriteTo(&buf)
	require.NoError(t, err)
	f, err := Parse(buf.Bytes())
	require.NoError(t, err)
	c, err := readConfig(f, archs[s.Arch])
	require.NoError(t, err)
	assert.Equal(t, []int{s.Embd, s.Layers, s.Heads, s.KVHeads, s.FF, s.headDim()}, []int{c.NEmbd, c.NLayer, c.NHead, c.NHeadKV, c.NFF, c.HeadDim})
	assert.InDelta(t, float64(s.RopeTheta), c.Rope.Theta, 1e-3)
	tokens, err := Array[string](f, keyTokTokens)
	require.NoError(t, err)
	assert.Len(t, tokens, s.Vocab)
	if tok := newSynthTokenizer(t, f); tok != nil {
		assert.Equal(t, s.Vocab, tok.NVocab())
		assert.Equal(t, s.Tokenizer.BOS, tok.BOS())
		assert.Equal(t, s.Tokenizer.EOS, tok.EOS())
		ids := tok.Encode("the quick brown fox\n", false, false)
		assert.Equal(t, "the quick brown fox\n", tok.Decode(ids))
	}
}

func TestPlanErrors(t *testing.T) {
	bad := synthShape(t, "test-llama-tiny")
	bad.KVHeads = 3
	_, err := PlanSynth(bad, FTypeQ4_0)
	assert.ErrorIs(t, err, ErrSynth)

	small := synthShape(t, "test-llama-tiny")
	small.Vocab = 200
	_, err = PlanSynth(small, FTypeQ4_0)
	assert.ErrorIs(t, err, ErrSynth)

	// llama.cpp would store smollm2's 576-wide rows as IQ4_NL in Q2_K.
	_, err = PlanSynth(synthShape(t, "smollm2-135m"), FTypeQ2_K)
	assert.ErrorIs(t, err, ErrSynth)

	_, err = ShapeByName("gpt-5")
	assert.ErrorIs(t, err, ErrSynth)
}

func TestParseFType(t *testing.T) {
	for name, want := range map[string]FType{"q4_0": FTypeQ4_0, "Q8_0": FTypeQ8_0, "q4_k_m": FTypeQ4_KM, "q4_k": FTypeQ4_KM,
		"f16": FTypeF16, "bf16": FTypeBF16, "Q6_K": FTypeQ6_K} {
		got, err := ParseFType(name)
		require.NoError(t, err, name)
		assert.Equal(t, want, got, name)
	}
	for _, name := range FTypeNames() {
		_, err := ParseFType(name)
		assert.NoError(t, err, name)
	}
	_, err := ParseFType("q4_2")
	assert.ErrorIs(t, err, ErrSynth)
}

// BenchmarkSynthesize times writing smollm2-135m in Q4_0.
func BenchmarkSynthesize(b *testing.B) {
	s := synthShape(b, "smollm2-135m")
	p, err := PlanSynth(s, FTypeQ4_0)
	require.NoError(b, err)
	path := filepath.Join(b.TempDir(), "m.gguf")
	b.SetBytes(p.Size())
	for b.Loop() {
		require.NoError(b, Synthesize(s, FTypeQ4_0, 1, path))
	}
}

// synthRoundF16 agrees with the quant package's conversion both ways.
func TestSynthRoundF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	values := []float32{0, 1, -1, 65504, 65519, 65520, 1e-8, 6.1e-5, 6.103515625e-05, 1.0009765625, 1.00048828125, 1.00146484375}
	for range 200000 {
		values = append(values, math.Float32frombits(rng.Uint32()), float32(rng.NormFloat64()*0.05))
	}
	for _, v := range values {
		want := quant.F16ToF32(quant.F32ToF16(v))
		got := synthRoundF16(v)
		if math.IsNaN(float64(want)) {
			require.True(t, math.IsNaN(float64(got)), "%g", v)
			continue
		}
		require.Equal(t, math.Float32bits(want), math.Float32bits(got), "%g (%#x)", v, math.Float32bits(v))
	}
}

// synthNormal draws from the standard normal distribution.
func TestSynthNormal(t *testing.T) {
	table := synthNormalTable()
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 1 << 20
	var sum, sq float64
	var within1, beyond3 int
	for range n {
		x := float64(synthNormal(table, rng.Uint32()))
		sum += x
		sq += x * x
		if math.Abs(x) < 1 {
			within1++
		}
		if math.Abs(x) > 3 {
			beyond3++
		}
	}
	assert.InDelta(t, 0, sum/n, 0.005)
	assert.InDelta(t, 1, sq/n, 0.005)
	assert.InDelta(t, 0.6827, float64(within1)/n, 0.002)
	assert.InDelta(t, 0.0027, float64(beyond3)/n, 0.0003)
	assert.Equal(t, float32(0), synthNormal(table, 1<<31), "the median")
	assert.Less(t, synthNormal(table, 0), float32(-6))
	assert.Greater(t, synthNormal(table, math.MaxUint32), float32(6))
}

// A cancelled context stops the writing and leaves no file.
func TestSynthesizeCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	path := filepath.Join(t.TempDir(), "m.gguf")
	err := SynthesizeContext(ctx, synthShape(t, "test-llama-tiny"), FTypeQ4_0, 1, path)
	assert.ErrorIs(t, err, context.Canceled)
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	assert.Empty(t, entries)
}
