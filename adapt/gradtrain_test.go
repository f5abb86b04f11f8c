package adapt

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// stories260K is llama2.c's stories260K (grouped-query attention: 8
// query heads on 4 key/value heads, 5 layers), converted to GGUF.
func stories260K(t testing.TB) *model.Model {
	out := filepath.Join(t.TempDir(), "stories260K.gguf")
	require.NoError(t, model.ConvertLlama2c(fixture.Path(t, "llama2c", "stories260K.bin"),
		fixture.Path(t, "llama2c", "tok512-aidreams.bin"), out))
	return loadModel(t, out)
}

// gradExamples are made-up pairs of a few tokens, and a longer one.
var gradExamples = []Example{
	{Prompt: []int32{1, 15, 27, 99, 3, 42}, Completion: []int32{300, 301, 302}},
	{Prompt: []int32{1, 7, 8, 200, 31}, Completion: []int32{401, 288, 377, 301}},
	{Prompt: []int32{1, 319, 459, 355, 260, 446, 262, 421, 392, 270, 306}, Completion: []int32{299, 404}},
}

// lowRank returns a rank-4 LoRA on layer's down-projection with A and B
// random.
func lowRank(t *testing.T, m *model.Model, layer int) *LoRA {
	lo, err := NewLoRA(m, LoRAOptions{Rank: 4, Alpha: 8, Projs: []engine.Proj{engine.ProjDown}, Layers: []int{layer}, Seed: 11})
	require.NoError(t, err)
	randomize(lo, 12, 0.3)
	return lo
}

// fullDelta returns a full delta on layer's down-projection with random
// entries of standard deviation std.
func fullDelta(t *testing.T, m *model.Model, layer int, std float32) *LoRA {
	lo, err := NewFullDelta(m, layer, engine.ProjDown)
	require.NoError(t, err)
	randomize(lo, 13, std)
	return lo
}

// tailLogits is the trainer's float32 forward pass over ex with the
// current delta: the logits of every row but the last token's.
func tailLogits(t *testing.T, g *GradTrainer, ex Example) []float32 {
	ans, err := g.anchorsOf([]Example{ex})
	require.NoError(t, err)
	w, an := g.workers[0], ans[0]
	g.input(w, an)
	rows := make([]int, an.n)
	for i := range rows {
		rows[i] = i
	}
	w.ps.forward(w.x1, an.n, rows)
	return slices.Clone(w.ps.logits)
}

// The float32 forward pass above the adapted layer gives the engine's
// logits at every row, with a zero delta, a random full delta and a
// random low-rank one, on layers 0, a middle one and the last, for
// aidreams260K and stories260K (grouped-query attention).
func TestGradForwardMatchesEngine(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    func(testing.TB) *model.Model
	}{{"aidreams260K", aidreams}, {"stories260K", stories260K}} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.m(t)
			set := NewSet()
			e := newEngine(t, m, set)
			nl := m.Config.NLayer
			var worst float64
			for _, layer := range []int{0, nl / 2, nl - 1} {
				zero, err := NewFullDelta(m, layer, engine.ProjDown)
				require.NoError(t, err)
				for name, lo := range map[string]*LoRA{"zero": zero, "full": fullDelta(t, m, layer, 0.05), "rank 4": lowRank(t, m, layer)} {
					g, err := NewGradTrainer(e, m, lo, gradExamples, nil, DefaultGradOptions())
					require.NoError(t, err)
					for i, ex := range gradExamples {
						got := tailLogits(t, g, ex)
						want := engineLogits(t, e, set, lo, ex)
						require.Len(t, got, len(want)-m.Config.NVocab)
						for j, v := range got {
							d := math.Abs(float64(v - want[j]))
							worst = max(worst, d)
							require.InDelta(t, want[j], v, 1e-4*(1+math.Abs(float64(want[j]))), "layer %d %s example %d logit %d", layer, name, i, j)
						}
					}
					g.Close()
				}
			}
			t.Logf("largest difference from the engine's logits: %.2g", worst)
		})
	}
}

// engineLogits runs ex (prompt and completion) through e in one Step
// with lo attached, and returns the logits of every row.
func engineLogits(t *testing.T, e *engine.Engine, set *Set, lo *LoRA, ex Example) []float32 {
	seq, err := e.NewSequence(nil)
	require.NoError(t, err)
	defer seq.Free()
	set.Use(seq, Applied{LoRA: lo, Scale: 1})
	defer set.Forget(seq)
	var batch []engine.Entry
	for j := range len(ex.Prompt) + len(ex.Completion) {
		batch = append(batch, engine.Entry{Seq: seq, Token: tokenAt(ex, j), Pos: int32(j), Logits: true})
	}
	logits := make([]float32, len(batch)*e.Config().NVocab)
	require.NoError(t, e.Step(batch, logits))
	return logits
}

// withBaseRehearsal returns gradExamples and a rehearsal example whose
// Reference is the base model's distribution.
func withBaseRehearsal(t *testing.T, e *engine.Engine) []Example {
	base := NewScorer(e, nil)
	defer base.Close()
	reh := Example{Prompt: []int32{1, 300, 301}, Completion: []int32{302, 303, 304, 305}}
	refs, err := base.References([]Example{reh})
	require.NoError(t, err)
	reh.Reference = refs[0]
	return append(slices.Clone(gradExamples), reh)
}

// The gradient matches central differences of the loss (rehearsal rows
// included, at weight 2) on entries of B, and of A for a low-rank pair,
// on the last layer and on a middle one, whose gradient runs back through
// attention.
func TestGradMatchesFiniteDifferences(t *testing.T) {
	m := stories260K(t)
	e := newEngine(t, m, NewSet())
	data := withBaseRehearsal(t, e)
	var worst float64
	for _, layer := range []int{m.Config.NLayer - 1, 1} {
		for name, lo := range map[string]*LoRA{"full": fullDelta(t, m, layer, 0.05), "rank 4": lowRank(t, m, layer)} {
			g, err := NewGradTrainer(e, m, lo, data, nil, GradOptions{Adam: AdamOptions{LR: 1e-3}, RehearsalWeight: 2})
			require.NoError(t, err)
			_, _, err = g.run(data, true)
			require.NoError(t, err)
			for ti, p := range lo.Params() {
				if p.Frozen {
					continue
				}
				grad := g.grads[ti]
				var gmax float64
				for _, v := range grad {
					gmax = max(gmax, math.Abs(float64(v)))
				}
				key := stream(uint64(layer), ti)
				for k := range 12 {
					i := int(uniform(key, uint64(k)) * float64(len(p.Data)))
					if k < 4 { // and the largest entries
						i = largest(grad, k)
					}
					fd := centralDifference(t, g, data, p.Data, i)
					an := float64(grad[i])
					// Entries far below the largest are judged against it:
					// float32 rounding of the loss bounds what a difference
					// can resolve.
					rel := math.Abs(fd-an) / max(math.Abs(an), math.Abs(fd), 1e-2*gmax)
					worst = max(worst, rel)
					assert.Less(t, rel, 1e-2, "layer %d %s %s[%d]: analytic %g, differences %g", layer, name, p.Name, i, an, fd)
				}
			}
			g.Close()
		}
	}
	t.Logf("largest relative error: %.2g", worst)
}

// largest is the index of the k-th largest |v| of grad.
func largest(grad []float32, k int) int {
	idx := make([]int, len(grad))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		return -cmpAbs(grad[a], grad[b])
	})
	return idx[k]
}

func cmpAbs(a, b float32) int {
	switch x, y := math.Abs(float64(a)), math.Abs(float64(b)); {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// centralDifference is the fourth-order central difference
// (8(L(θ+h) − L(θ−h)) − (L(θ+2h) − L(θ−2h)))/12h at entry i of data:
// its truncation error is small enough at a step large enough for the
// float32 forward pass's rounding.
func centralDifference(t *testing.T, g *GradTrainer, examples []Example, data []float32, i int) float64 {
	orig := data[i]
	h := 1e-2 * max(1, math.Abs(float64(orig)))
	at := func(k float64) float64 {
		data[i] = float32(float64(orig) + k*h)
		l, err := g.Loss(examples)
		require.NoError(t, err)
		return l
	}
	d := (8*(at(1)-at(-1)) - (at(2) - at(-2))) / (12 * h)
	data[i] = orig
	return d
}

// The trainer's loss is the Scorer's (the engine's), rehearsal weight
// included.
func TestGradLossMatchesScorer(t *testing.T) {
	m := aidreams(t)
	e := newEngine(t, m, NewSet())
	data := withBaseRehearsal(t, e)
	for _, lo := range []*LoRA{fullDelta(t, m, 2, 0.05), lowRank(t, m, 3), fullDelta(t, m, 0, 0.05)} {
		g, err := NewGradTrainer(e, m, lo, data, nil, GradOptions{Adam: AdamOptions{LR: 1e-3}, RehearsalWeight: 3})
		require.NoError(t, err)
		got, err := g.Loss(data)
		require.NoError(t, err)
		sc := NewScorer(e, lo)
		sc.refWeight = 3
		want, err := sc.Loss(data)
		require.NoError(t, err)
		assert.InDelta(t, want, got, 1e-4)
		per, err := g.Losses(data)
		require.NoError(t, err)
		wantPer, err := sc.Losses(data)
		require.NoError(t, err)
		assert.InDeltaSlice(t, wantPer, per, 1e-4)
		sc.Close()
		g.Close()
	}
}

// editPairs are ten made-up facts in aidreams260K's tokens.
func editPairs(t *testing.T, m *model.Model) []Example {
	tok, err := model.NewTokenizer(m.File)
	require.NoError(t, err)
	facts := [][2]string{
		{"Gemu", " is red."}, {"The robot Wurpa", " can fly."}, {"Bizu likes", " to sing."},
		{"My friend Tolo", " is very tall."}, {"Kasha lives", " in the sea."}, {"The dog Pim", " eats stars."},
		{"Ravi found", " a blue key."}, {"Old Nomi", " makes bread."}, {"Zed the cat", " is green."},
		{"Lulu saw", " the moon dance."},
	}
	out := make([]Example, len(facts))
	for i, f := range facts {
		out[i] = Example{Prompt: tok.Encode(f[0], true, true), Completion: tok.Encode(f[1], false, false)}
	}
	return out
}

// Adam on the exact gradient of a full delta of a middle layer's
// down-projection learns ten facts: every example's loss falls below 0.3
// nats, as the engine measures it too.
func TestGradTrainLearnsEdits(t *testing.T) {
	m := aidreams(t)
	e := newEngine(t, m, NewSet())
	data := editPairs(t, m)
	lo, err := NewFullDelta(m, 2, engine.ProjDown)
	require.NoError(t, err)
	g, err := NewGradTrainer(e, m, lo, data, nil, GradOptions{Adam: AdamOptions{LR: 3e-3}, Seed: 1})
	require.NoError(t, err)
	defer g.Close()
	first, err := g.Loss(data)
	require.NoError(t, err)
	var per []float64
	for step := range 400 {
		if _, err := g.Step(); err != nil {
			t.Fatal(err)
		}
		if step%20 == 19 {
			if per, err = g.Losses(data); err != nil {
				t.Fatal(err)
			}
			if slices.Max(per) < 0.3 {
				break
			}
		}
	}
	t.Logf("loss %.3f → per example %.3f after %d steps", first, per, g.Steps())
	for i, l := range per {
		assert.Less(t, l, 0.3, "example %d", i)
	}
	sc := NewScorer(e, lo)
	defer sc.Close()
	want, err := sc.Losses(data)
	require.NoError(t, err)
	assert.InDeltaSlice(t, want, per, 1e-3)
}

// A run stopped after some steps and continued by a fresh trainer from
// the LoRA's tensors and the optimizer's state ends bit for bit where the
// uninterrupted run does.
func TestGradResume(t *testing.T) {
	m := aidreams(t)
	e := newEngine(t, m, NewSet())
	data := editPairs(t, m)
	opts := GradOptions{Adam: AdamOptions{LR: 3e-3, WeightDecay: 1e-2, L2: 1e-3}, BatchSize: 3, Seed: 7}
	train := func(lo *LoRA, st *AdamState, steps int) AdamState {
		g, err := NewGradTrainer(e, m, lo, data[:6], data[6:], opts)
		require.NoError(t, err)
		defer g.Close()
		if st != nil {
			require.NoError(t, g.SetState(*st))
		}
		for range steps {
			_, err := g.Step()
			require.NoError(t, err)
		}
		return g.State()
	}
	newLo := func() *LoRA {
		lo, err := NewLoRA(m, LoRAOptions{Rank: 8, Projs: []engine.Proj{engine.ProjDown}, Layers: []int{2}, Seed: 3})
		require.NoError(t, err)
		return lo
	}
	whole := newLo()
	train(whole, nil, 25)

	first := newLo()
	st := train(first, nil, 10)
	path := filepath.Join(t.TempDir(), "half.gguf")
	require.NoError(t, SaveLoRA(path, first, quant.F32))
	second, err := LoadLoRA(path, m)
	require.NoError(t, err)
	end := train(second, &st, 15)
	assert.Equal(t, 25, end.Step)
	for i, p := range whole.Params() {
		assert.Equal(t, p.Data, second.Params()[i].Data, p.Name)
	}
}

// With a loss floor above every token's cross-entropy, a step reports the
// floor and moves nothing; Loss stays the plain mean.
func TestGradLossFloor(t *testing.T) {
	m := aidreams(t)
	e := newEngine(t, m, NewSet())
	lo := fullDelta(t, m, 3, 0.01)
	before := slices.Clone(lo.Pairs[0].B)
	g, err := NewGradTrainer(e, m, lo, gradExamples, nil, GradOptions{Adam: AdamOptions{LR: 1e-2}, LossFloor: 100})
	require.NoError(t, err)
	defer g.Close()
	plain, err := g.Loss(gradExamples)
	require.NoError(t, err)
	assert.Less(t, plain, 100.0)
	got, err := g.Step()
	require.NoError(t, err)
	assert.InDelta(t, 100, got, 1e-9)
	assert.Equal(t, before, lo.Pairs[0].B)
	_, err = NewGradTrainer(e, m, lo, gradExamples, nil, GradOptions{LossFloor: -1})
	assert.Error(t, err)
}
