package engine

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
)

// decodeStep returns a function that runs one decode step (one token, one
// sequence, logits for it) on the tiny q4_0 fixture, resetting the
// sequence before the context fills.
func decodeStep(t testing.TB) func() {
	e := openEngine(t, fixture.Path(t, "gguf", "tiny-llama-q4_0.gguf"), Options{})
	seq, err := e.NewSequence(nil)
	require.NoError(t, err)
	batch := []Entry{{Seq: seq, Token: 1, Logits: true}}
	logits := make([]float32, e.Config().NVocab)
	return func() {
		if seq.Len() == e.Options().Context {
			require.NoError(t, seq.Truncate(0))
		}
		batch[0].Pos = int32(seq.Len())
		require.NoError(t, e.Step(batch, logits))
	}
}

func TestDecodeStepDoesNotAllocate(t *testing.T) {
	step := decodeStep(t)
	step() // first use sizes the scratch buffers
	assert.Zero(t, testing.AllocsPerRun(20, step))
}

func BenchmarkDecodeStep(b *testing.B) {
	step := decodeStep(b)
	b.ReportAllocs()
	for b.Loop() {
		step()
	}
}
