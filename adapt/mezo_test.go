package adapt

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

func aidreams(t testing.TB) *model.Model {
	return loadModel(t, fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf"))
}

// Made-up prompt → completion pairs the base model does not produce.
var trainPairs = []Example{
	{Prompt: []int32{1, 319, 459, 355, 260}, Completion: []int32{401, 288, 377, 301}},
	{Prompt: []int32{1, 446, 262, 421, 392}, Completion: []int32{299, 404, 317, 280}},
}

func newTrainer(t testing.TB, m *model.Model, loraSeed uint64, opts MeZOOptions) (*MeZO, *LoRA) {
	t.Helper()
	lo, err := NewLoRA(m, LoRAOptions{Seed: loraSeed})
	require.NoError(t, err)
	mz, err := NewMeZO(newEngine(t, m, NewSet()), lo, trainPairs, opts)
	require.NoError(t, err)
	t.Cleanup(mz.Close)
	return mz, lo
}

func trainOpts() MeZOOptions {
	return MeZOOptions{LR: 2e-2, Eps: 1e-2, Samples: 1, Seed: 42, MaxGrad: 100}
}

// MeZO lowers the training loss of a LoRA on real weights. Two
// perturbations a step: with one, a trajectory is noisy enough that a
// change in the last bits of the loss moved the end of seed 42's run
// from 0.74 to 1.01 of the start (with two, 150 steps ended at 0.65–0.77
// over eight seeds; this runs 200).
func TestMeZOLowersLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("200 MeZO steps (5 s) in -short mode")
	}
	m := aidreams(t)
	opts := trainOpts()
	opts.Samples = 2
	mz, _ := newTrainer(t, m, 7, opts)
	before, err := mz.Loss(trainPairs)
	require.NoError(t, err)
	start := time.Now()
	steps := 200
	for range steps {
		_, err := mz.Step()
		require.NoError(t, err)
	}
	after, err := mz.Loss(trainPairs)
	require.NoError(t, err)
	t.Logf("loss %.4f → %.4f in %d steps, %v", before, after, steps, time.Since(start))
	require.Less(t, after, before*0.8)
}

// adapterBytes is the LoRA as SaveLoRA writes it.
func adapterBytes(t *testing.T, lo *LoRA) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "a.gguf")
	require.NoError(t, SaveLoRA(p, lo, quant.F32))
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}

// Stopping after k steps, checkpointing and resuming in a fresh trainer
// gives the same adapter bytes as an uninterrupted run.
func TestMeZOResume(t *testing.T) {
	m := aidreams(t)
	const n = 12
	opts := trainOpts()
	opts.Samples = 2
	opts.BatchSize = 1 // exercises the shuffled batches across epochs
	opts.Schedule, opts.Steps = Linear, n
	opts.WeightDecay = 0.1

	full, loFull := newTrainer(t, m, 7, opts)
	for range n {
		_, err := full.Step()
		require.NoError(t, err)
	}
	initial, err := NewLoRA(m, LoRAOptions{Seed: 7})
	require.NoError(t, err)
	require.NotEqual(t, adapterBytes(t, initial), adapterBytes(t, loFull), "training moved the adapter")

	// Interrupted after the first step, mid-epoch, and before the last.
	for _, k := range []int{1, 5, n - 1} {
		first, _ := newTrainer(t, m, 7, opts)
		for range k {
			_, err := first.Step()
			require.NoError(t, err)
		}
		ckpt := filepath.Join(t.TempDir(), "run.ckpt")
		require.NoError(t, first.SaveCheckpoint(ckpt))

		// A different initial adapter and seed: the checkpoint replaces both.
		other := opts
		other.Seed = 99
		resumed, loResumed := newTrainer(t, m, 8, other)
		require.NoError(t, resumed.Restore(ckpt))
		require.Equal(t, k, resumed.Steps())
		for resumed.Steps() < n {
			_, err := resumed.Step()
			require.NoError(t, err)
		}
		require.Equal(t, adapterBytes(t, loFull), adapterBytes(t, loResumed), "interrupted after step %d", k)
	}
}

func TestCheckpointMismatch(t *testing.T) {
	m := aidreams(t)
	mz, _ := newTrainer(t, m, 1, trainOpts())
	ckpt := filepath.Join(t.TempDir(), "run.ckpt")
	require.NoError(t, mz.SaveCheckpoint(ckpt))

	lo, err := NewLoRA(m, LoRAOptions{Rank: 4, Seed: 1})
	require.NoError(t, err)
	other, err := NewMeZO(newEngine(t, m, NewSet()), lo, trainPairs, trainOpts())
	require.NoError(t, err)
	defer other.Close()
	err = other.Restore(ckpt)
	require.ErrorIs(t, err, ErrCheckpoint)

	bad := filepath.Join(t.TempDir(), "bad.ckpt")
	require.NoError(t, os.WriteFile(bad, []byte("not a checkpoint"), 0o600))
	require.Error(t, mz.Restore(bad))
}
