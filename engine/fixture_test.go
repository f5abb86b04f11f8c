package engine

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
)

type golden struct {
	Model        string  `json:"model"`
	NVocab       int     `json:"n_vocab"`
	PromptIDs    []int32 `json:"prompt_ids"`
	LlamacppNext []int32 `json:"llamacpp_greedy_next_ids"`
	LlamacppFile string  `json:"llamacpp_logits"`
	F64RefLogits string  `json:"f64ref_logits"`
}

func openEngine(t testing.TB, path string, opts Options) *Engine {
	t.Helper()
	f, err := model.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	m, err := model.Load(f)
	require.NoError(t, err)
	e, err := New(m, cpu.New(0), opts)
	require.NoError(t, err)
	return e
}

// promptLogits runs ids through a fresh sequence in one Step and returns
// every row's logits.
func promptLogits(t testing.TB, e *Engine, ids []int32) []float32 {
	t.Helper()
	seq, err := e.NewSequence(nil)
	require.NoError(t, err)
	defer seq.Free()
	logits := make([]float32, len(ids)*e.Config().NVocab)
	require.NoError(t, e.Step(promptBatch(seq, ids), logits))
	return logits
}

// promptBatch is ids as the rows of seq from position 0, every row's
// logits asked for.
func promptBatch(seq *Sequence, ids []int32) []Entry {
	batch := make([]Entry, len(ids))
	for i, id := range ids {
		batch[i] = Entry{Seq: seq, Token: id, Pos: int32(i), Logits: true}
	}
	return batch
}

// fixtureGoldens lists the golden files of the fixture models; -short
// (used with -race, which makes the numeric loops slow) keeps one model per
// architecture.
func fixtureGoldens(t *testing.T) (dir string, paths []string) {
	dir = fixture.Dir(t, "gguf")
	pattern := "*.golden.json"
	if testing.Short() {
		pattern = "*-q4_k_m.golden.json"
	}
	paths, err := filepath.Glob(filepath.Join(dir, pattern))
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	return dir, paths
}

// Every fixture model's logits match both references within the
// tolerances of the fixture README.
func TestFixtureLogits(t *testing.T) {
	dir, goldens := fixtureGoldens(t)
	for _, path := range goldens {
		var g golden
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &g))
		t.Run(g.Model, func(t *testing.T) {
			e := openEngine(t, filepath.Join(dir, g.Model), Options{Cache: CacheF32})
			got := promptLogits(t, e, g.PromptIDs)
			maxL2 := 3e-2
			if strings.Contains(g.Model, "-f16") || strings.Contains(g.Model, "-f32") {
				maxL2 = 2e-3
			}
			for _, ref := range []string{g.F64RefLogits, g.LlamacppFile} {
				want := fixture.ReadF32(t, filepath.Join(dir, ref))
				require.Len(t, got, len(want))
				l2, agree := fixture.RelL2(got, want), fixture.Top1(got, want, g.NVocab)
				t.Logf("%s: rel L2 %.2e, top-1 %.3f", ref, l2, agree)
				assert.LessOrEqual(t, l2, maxL2, ref)
				assert.GreaterOrEqual(t, agree, 0.9, ref)
			}
		})
	}
}

// Greedy continuation agrees with llama.cpp's 16 greedy ids. Random
// weights make near-ties common, and llama.cpp quantizes activations to 8
// bits in quantized matrix products, so a quantized model may legitimately
// part ways after a near-tie; the unquantized ones must agree exactly.
func TestFixtureGreedy(t *testing.T) {
	dir, goldens := fixtureGoldens(t)
	for _, path := range goldens {
		var g golden
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &g))
		t.Run(g.Model, func(t *testing.T) {
			e := openEngine(t, filepath.Join(dir, g.Model), Options{})
			got := greedy(t, e, g.PromptIDs, len(g.LlamacppNext))
			same := 0
			for same < len(got) && got[same] == g.LlamacppNext[same] {
				same++
			}
			t.Logf("first %d of %d greedy ids agree", same, len(got))
			if strings.Contains(g.Model, "-f16") || strings.Contains(g.Model, "-f32") {
				assert.Equal(t, g.LlamacppNext, got)
			}
		})
	}
}

func greedy(t testing.TB, e *Engine, prompt []int32, n int) []int32 {
	seq, err := e.NewSequence(nil)
	require.NoError(t, err)
	defer seq.Free()
	logits := make([]float32, e.Config().NVocab)
	var batch []Entry
	for i, id := range prompt {
		batch = append(batch, Entry{Seq: seq, Token: id, Pos: int32(i), Logits: i == len(prompt)-1})
	}
	var out []int32
	for len(out) < n {
		require.NoError(t, e.Step(batch, logits))
		id := Argmax(logits)
		out = append(out, id)
		batch = []Entry{{Seq: seq, Token: id, Pos: int32(seq.Len()), Logits: true}}
	}
	return out
}
