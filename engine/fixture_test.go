package engine

import (
	"encoding/binary"
	"encoding/json"
	"math"
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

func readF32(t testing.TB, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// relL2 is ‖got − want‖ / ‖want‖ over the whole matrix.
func relL2(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

// top1 is the share of rows whose argmax agrees.
func top1(got, want []float32, nVocab int) float64 {
	agree, rows := 0, len(want)/nVocab
	for r := 0; r < rows; r++ {
		if argmax(got[r*nVocab:(r+1)*nVocab]) == argmax(want[r*nVocab:(r+1)*nVocab]) {
			agree++
		}
	}
	return float64(agree) / float64(rows)
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
	batch := make([]Entry, len(ids))
	for i, id := range ids {
		batch[i] = Entry{Seq: seq, Token: id, Pos: int32(i), Logits: true}
	}
	logits := make([]float32, len(ids)*e.Config().NVocab)
	require.NoError(t, e.Step(batch, logits))
	return logits
}

// Every fixture model's logits match both references within the
// tolerances of the fixture README.
func TestFixtureLogits(t *testing.T) {
	dir := fixture.Dir(t, "gguf")
	goldens, err := filepath.Glob(filepath.Join(dir, "*.golden.json"))
	require.NoError(t, err)
	require.NotEmpty(t, goldens)
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
				want := readF32(t, filepath.Join(dir, ref))
				require.Len(t, got, len(want))
				l2, agree := relL2(got, want), top1(got, want, g.NVocab)
				t.Logf("%s: rel L2 %.2e, top-1 %.3f", ref, l2, agree)
				assert.LessOrEqual(t, l2, maxL2, ref)
				assert.GreaterOrEqual(t, agree, 0.9, ref)
			}
		})
	}
}
