package adapt

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
)

// The loss over more scored rows than one Step of a Scorer returns equals
// the loss computed from a single Step over the whole batch.
func TestScorerChunks(t *testing.T) {
	m := aidreams(t)
	var examples []Example
	for i := range 12 {
		examples = append(examples, Example{Prompt: []int32{1, int32(300 + i), 429}, Completion: []int32{270, 306, int32(400 + i), 441, 448, 429}})
	}
	e := newEngine(t, m, nil)
	sc := NewScorer(e, nil)
	defer sc.Close()
	got, err := sc.Loss(examples)
	require.NoError(t, err)
	per, err := sc.Losses(examples)
	require.NoError(t, err)

	var sum float64
	for i, ex := range examples {
		var exSum float64
		for _, ce := range tokenCrossEntropies(t, e, ex) {
			exSum += ce
		}
		sum += exSum
		assert.InDelta(t, exSum/float64(len(ex.Completion)), per[i], 1e-5, "example %d", i)
	}
	assert.InDelta(t, sum/float64(12*6), got, 1e-5)
}

// Greedy continuations are those of engine.Generate at temperature 0.
func TestScorerGreedy(t *testing.T) {
	path := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	m := loadModel(t, path)
	tok, err := model.NewTokenizer(m.File)
	require.NoError(t, err)
	e := newEngine(t, m, nil)
	prompts := [][]int32{{1, 319, 459}, {1, 446, 262, 421, 392}}
	sc := NewScorer(e, nil)
	defer sc.Close()
	got, err := sc.Greedy(prompts, 10)
	require.NoError(t, err)
	for i, p := range prompts {
		seq, err := e.NewSequence(nil)
		require.NoError(t, err)
		gen, err := e.Generate(context.Background(), seq, p, tok, engine.GenerateOptions{MaxTokens: 10}, nil)
		seq.Free()
		require.NoError(t, err)
		require.Len(t, gen.IDs, 10, "no end token in the first 10")
		assert.Equal(t, gen.IDs, got[i], "prompt %d", i)
	}
}

// A Scorer whose LoRA starts above layer 0 runs the layers below once per
// example and later losses from their cached output; the losses are
// those of the whole forward pass, bit for bit, as the adapter changes.
func TestScorerFrozenLayers(t *testing.T) {
	m := aidreams(t)
	set := NewSet()
	e := newEngine(t, m, set)
	lo, err := NewLoRA(m, LoRAOptions{Rank: 4, Projs: []engine.Proj{engine.ProjDown, engine.ProjV}, Layers: []int{2, 3}, Seed: 3})
	require.NoError(t, err)
	sc := NewScorer(e, lo)
	defer sc.Close()
	require.Equal(t, 2, sc.from)
	examples := append([]Example{{Prompt: []int32{1, 300}, Completion: []int32{429}}}, trainPairs...)
	for round := range 3 {
		randomize(lo, uint64(round), 0.05)
		got, err := sc.Losses(examples)
		require.NoError(t, err)
		sums, counts, err := sc.crossEntropies(examples, 0)
		require.NoError(t, err)
		for i := range sums {
			assert.Equal(t, sums[i]/float64(counts[i]), got[i], "round %d, example %d", round, i)
		}
		assert.Len(t, sc.frozen, len(examples), "each example's lower layers ran once")
	}
}

// Inputs returns the rows entering a projection at the scored rows, as the
// LoRA sees them: a one-row adapter with A = e₀ and B = 1 adds input[0].
func TestScorerInputs(t *testing.T) {
	m := aidreams(t)
	e := newEngine(t, m, NewSet())
	sc := NewScorer(e, nil)
	defer sc.Close()
	pairs := []*LoRAPair{{Layer: 3, Proj: engine.ProjDown, In: m.Config.NFF}, {Layer: 1, Proj: engine.ProjQ, In: m.Config.NEmbd}}
	both, err := sc.Inputs(trainPairs, pairs)
	require.NoError(t, err)
	require.Len(t, both, 2)
	down, err := sc.Inputs(trainPairs, pairs[:1])
	require.NoError(t, err)
	assert.Equal(t, down[0], both[0], "one pass records every pair as a pass of its own")
	rows := both[0]
	for _, r := range both[1] {
		require.Len(t, r, m.Config.NEmbd)
	}
	want := 0
	for _, ex := range trainPairs {
		want += len(ex.Completion)
	}
	require.Len(t, rows, want)
	for _, r := range rows {
		require.Len(t, r, m.Config.NFF)
	}
	assert.NotEqual(t, rows[0], rows[1])
	_, err = NewScorer(newEngine(t, m, nil), nil).Inputs(trainPairs, pairs)
	assert.Error(t, err, "no Set to record through")
}

// An example whose Reference is the model's own distribution scores zero;
// once the adapter moves the model it scores KL(reference ‖ model) > 0,
// and Reference rows of the wrong shape are refused.
func TestScorerReference(t *testing.T) {
	m := aidreams(t)
	set := NewSet()
	e := newEngine(t, m, set)
	lo, err := NewLoRA(m, LoRAOptions{Rank: 2, Layers: []int{1}, Seed: 5})
	require.NoError(t, err)
	sc := NewScorer(e, lo)
	defer sc.Close()
	refs, err := sc.References(trainPairs)
	require.NoError(t, err)
	kept := make([]Example, len(trainPairs))
	for i, ex := range trainPairs {
		require.Len(t, refs[i], len(ex.Completion))
		kept[i] = Example{Prompt: ex.Prompt, Completion: ex.Completion, Reference: refs[i]}
	}
	l, err := sc.Loss(kept)
	require.NoError(t, err)
	assert.InDelta(t, 0, l, 1e-6)
	randomize(lo, 1, 0.1)
	moved, err := sc.Losses(kept)
	require.NoError(t, err)
	for i := range moved {
		assert.Greater(t, moved[i], 1e-4, "example %d", i)
	}
	bad := kept[0]
	bad.Reference = bad.Reference[1:]
	_, err = sc.Loss([]Example{bad})
	assert.Error(t, err)
	bad.Reference = []Reference{{p: []float32{0}}, {p: []float32{0}}, {p: []float32{0}}, {p: []float32{0}}}
	_, err = sc.Loss([]Example{bad})
	assert.Error(t, err)
}

// tokenCrossEntropies is the cross-entropy of each completion token of ex
// under e's base model, from one Step over the whole sequence: the
// Scorer's per-token loss, computed apart from it.
func tokenCrossEntropies(t *testing.T, e *engine.Engine, ex Example) []float64 {
	logits := runSeq(t, e, nil, append(append([]int32{}, ex.Prompt...), ex.Completion...), 0)
	nv := e.Config().NVocab
	out := make([]float64, len(ex.Completion))
	for j, tgt := range ex.Completion {
		row := len(ex.Prompt) - 1 + j
		out[j] = crossEntropy64(logits[row*nv:(row+1)*nv], tgt)
	}
	return out
}

// crossEntropy64 is -log softmax(logits)[target] in float64 with
// math.Exp: the Scorer's loss, computed apart from it.
func crossEntropy64(logits []float32, target int32) float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = max(mx, float64(v))
	}
	var s float64
	for _, v := range logits {
		s += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(s) - float64(logits[target])
}

// withRehearsal returns an engine of aidreams260K, a rank-2 LoRA on its
// layer 1 (B zero: the base model), the LoRA's Scorer, and trainPairs[0]
// as a rehearsal example: its Reference is the base model's distribution.
func withRehearsal(t *testing.T) (*engine.Engine, *LoRA, *Scorer, Example) {
	m := aidreams(t)
	e := newEngine(t, m, NewSet())
	lo, err := NewLoRA(m, LoRAOptions{Rank: 2, Layers: []int{1}, Seed: 5})
	require.NoError(t, err)
	sc := NewScorer(e, lo)
	t.Cleanup(sc.Close)
	refs, err := sc.References(trainPairs[:1])
	require.NoError(t, err)
	ex := trainPairs[0]
	ex.Reference = refs[0]
	return e, lo, sc, ex
}

// MeZO's loss weights the rows of rehearsal examples by RehearsalWeight
// against 1 for a target token: a weighted mean of the Scorer's losses.
func TestRehearsalWeight(t *testing.T) {
	e, lo, sc, rehearsal := withRehearsal(t)
	randomize(lo, 1, 0.1)
	data := []Example{trainPairs[0], rehearsal}
	per, err := sc.Losses(data)
	require.NoError(t, err)
	n := float64(len(trainPairs[0].Completion)) // both examples score as many rows
	for _, w := range []float64{1, 0.25, 4} {
		mz, err := NewMeZO(e, lo, data, MeZOOptions{LR: 1e-3, Eps: 1e-2, RehearsalWeight: w})
		require.NoError(t, err)
		got, err := mz.Loss(data)
		mz.Close()
		require.NoError(t, err)
		assert.InDelta(t, (per[0]*n+w*per[1]*n)/(n+w*n), got, 1e-9, "weight %g", w)
	}
	_, err = NewMeZO(e, lo, data, MeZOOptions{LR: 1e-3, Eps: 1e-2, RehearsalWeight: -1})
	assert.Error(t, err)
}

// With a loss floor, the loss MeZO's steps descend counts each target
// token's cross-entropy as at least the floor, and a rehearsal row's KL as
// it is; MeZO's Loss stays the plain mean.
func TestLossFloor(t *testing.T) {
	e, lo, sc, rehearsal := withRehearsal(t)
	data := append(append([]Example(nil), trainPairs...), rehearsal)
	var ces []float64 // every target token's cross-entropy under the base model
	for _, ex := range trainPairs {
		ces = append(ces, tokenCrossEntropies(t, e, ex)...)
	}
	rows := float64(len(ces) + len(rehearsal.Completion)) // the rehearsal rows add KL 0
	plain, err := sc.Loss(data)
	require.NoError(t, err)
	for _, floor := range []float64{0, ces[0], ces[len(ces)/2], 100} {
		mz, err := NewMeZO(e, lo, data, MeZOOptions{LR: 1e-3, Eps: 1e-2, LossFloor: floor})
		require.NoError(t, err)
		got, err := mz.objective(data)
		require.NoError(t, err)
		var want float64
		for _, ce := range ces {
			want += max(ce, floor)
		}
		assert.InDelta(t, want/rows, got, 1e-5, "floor %g", floor)
		l, err := mz.Loss(data)
		require.NoError(t, err)
		assert.Equal(t, plain, l, "floor %g: Loss is the plain mean", floor)
		mz.Close()
	}
	_, err = NewMeZO(e, lo, data, MeZOOptions{LR: 1e-3, Eps: 1e-2, LossFloor: -1})
	assert.Error(t, err)
}
