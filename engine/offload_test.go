package engine

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
)

// A model split between two backends computes what it does on one, bit
// for bit: the residual stream crosses between them unchanged, whichever
// layer the split falls after (none: every layer offloaded, the embedding
// alone on the first backend), with a separate or a tied output, in
// prefill, decode and a StepTo/StepFrom pair on either side of the split.
func TestOffload(t *testing.T) {
	for _, name := range []string{"tiny-llama-q4_k_m.gguf", "tiny-llama-tied-q4_0.gguf"} {
		path := fixture.Path(t, "gguf", name)
		whole := openEngine(t, path, Options{Cache: CacheF32, BatchSize: 5})
		want := promptLogits(t, whole, testIDs)
		wantGreedy := greedy(t, whole, testIDs[:3], 6)
		nl := whole.Config().NLayer
		for _, n := range []int{1, nl - 1, nl} {
			// The last n layers and the output on a second CPU backend,
			// as they would be on a GPU.
			e := openEngine(t, path, Options{Cache: CacheF32, BatchSize: 5, Offload: cpu.New(1), OffloadLayers: n})
			t.Cleanup(func() { e.Close() })
			require.Len(t, e.Backends(), 2)
			assert.Equal(t, want, promptLogits(t, e, testIDs), "%s, %d layers offloaded", name, n)
			assert.Equal(t, wantGreedy, greedy(t, e, testIDs[:3], 6), "%s, %d layers offloaded", name, n)

			c := e.Config()
			for layer := max(nl-n-1, 1); layer <= min(nl-n+1, nl-1); layer++ {
				seq, err := e.NewSequence(nil)
				require.NoError(t, err)
				batch := promptBatch(seq, testIDs)
				x := make([]float32, len(batch)*c.NEmbd)
				require.NoError(t, e.StepTo(batch, layer, x))
				got := make([]float32, len(testIDs)*c.NVocab)
				require.NoError(t, e.StepFrom(batch, layer, x, got))
				assert.Equal(t, want, got, "%s split at layer %d, %d offloaded", name, layer, n)
				seq.Free()
			}
		}
	}
}

func TestOffloadLayersChecked(t *testing.T) {
	f, err := model.Open(fixture.Path(t, "gguf", "tiny-llama-q4_0.gguf"))
	require.NoError(t, err)
	defer f.Close()
	m, err := model.Load(f)
	require.NoError(t, err)
	for _, n := range []int{0, -1, m.Config.NLayer + 1} {
		_, err := New(m, cpu.New(1), Options{Offload: cpu.New(1), OffloadLayers: n})
		assert.ErrorContains(t, err, "offloaded layers", "%d", n)
	}
}
