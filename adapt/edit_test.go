package adapt

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
)

func TestReadEdits(t *testing.T) {
	m := aidreams(t)
	tok, err := model.NewTokenizer(m.File)
	require.NoError(t, err)
	enc := func(s string) []int32 { return tok.Encode(s, true, true) }

	edits, err := ReadEdits(strings.NewReader(`{"id": "e1", "model": "aidreams", "version": 1, "created_by": "ops", "prompt": "Zorb", "target": "is red.", "rephrases": ["The Zorb"], "locality_prompts": ["The robot", "Dreams"]}

{"prompt": "Kivo", "target": "can fly."}
`), "edits.jsonl", tok)
	require.NoError(t, err)
	assert.Equal(t, []Edit{
		{ID: "e1", Prompt: enc("Zorb"), Target: tok.Encode("is red.", false, false),
			Rephrases: [][]int32{enc("The Zorb")}, Locality: [][]int32{enc("The robot"), enc("Dreams")}},
		{Prompt: enc("Kivo"), Target: tok.Encode("can fly.", false, false)},
	}, edits)

	for _, tc := range []struct {
		name, line, want string
	}{
		{"no target", `{"prompt": "Zorb"}`, "empty target"},
		{"no prompt", `{"target": "glows."}`, "empty prompt"},
		{"empty rephrase", `{"prompt": "Zorb", "target": "glows.", "rephrases": ["A Zorb", ""]}`, "empty rephrase 2"},
		{"empty locality prompt", `{"prompt": "Zorb", "target": "glows.", "locality_prompts": [""]}`, "empty locality prompt 1"},
		{"unknown field", `{"prompt": "Zorb", "target": "glows.", "subject": "x"}`, "unknown field"},
		{"not an object", `["Zorb", "glows."]`, "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadEdits(strings.NewReader("{\"prompt\": \"a\", \"target\": \"b\"}\n"+tc.line+"\n"), "bad.jsonl", tok)
			require.Error(t, err)
			assert.ErrorContains(t, err, "bad.jsonl:2: ")
			assert.ErrorContains(t, err, tc.want)
		})
	}
	_, err = ReadEdits(strings.NewReader(`{"prompt": "a", "target": "b"}`), "x.jsonl", nil)
	assert.Error(t, err, "edits need a tokenizer")
}

// teacherForced is the most likely token at each row of seq that predicts
// its tokens from position from on, by one engine Step over seq with lo
// attached (nil: the base model): the metrics' predictions, computed apart
// from the Scorer.
func teacherForced(t *testing.T, e *engine.Engine, lo *LoRA, seq []int32, from int) []int32 {
	t.Helper()
	s, err := e.NewSequence(nil)
	require.NoError(t, err)
	defer s.Free()
	if set, ok := e.Options().Hooks.Delta.(*Set); ok && lo != nil {
		set.Use(s, Applied{LoRA: lo, Scale: 1})
		defer set.Forget(s)
	}
	batch := make([]engine.Entry, len(seq)-1)
	for j := range batch {
		batch[j] = engine.Entry{Seq: s, Token: seq[j], Pos: int32(j), Logits: true}
	}
	nv := e.Config().NVocab
	logits := make([]float32, len(batch)*nv)
	require.NoError(t, e.Step(batch, logits))
	var out []int32
	for j := from - 1; j < len(batch); j++ {
		out = append(out, engine.Argmax(logits[j*nv:(j+1)*nv]))
	}
	return out
}

// share is the share of positions where a and b agree.
func share(a, b []int32) float64 {
	n := 0
	for i := range a {
		if a[i] == b[i] {
			n++
		}
	}
	return float64(n) / float64(len(a))
}

func cat(a, b []int32) []int32 { return append(append([]int32(nil), a...), b...) }

// The edit metrics, with EasyEdit's definitions, for adapters that leave
// the model alone and that move it: a zero adapter gives locality 1 and
// the base model's reliability and generalization; a hand-made edit whose
// target is the base model's greedy continuation with its third token
// replaced scores 2/3 on the base model; a random adapter's metrics are
// those computed apart from the Scorer, a forward pass per sequence.
func TestEditMetrics(t *testing.T) {
	m := aidreams(t)
	e := newEngine(t, m, NewSet())
	base := NewScorer(e, nil)
	defer base.Close()

	prompts := [][]int32{{1, 319, 459, 355, 260}, {1, 446, 262, 421, 392}, {1, 300, 429}}
	greedy, err := base.Greedy(prompts, 4)
	require.NoError(t, err)
	g := greedy[0]
	wrong := (g[2] + 1) % int32(m.Config.NVocab)
	const k = 6
	edits := []Edit{
		// Target g0 g1 w: the first two tokens are the base model's
		// choices, the third is not (what follows w is unknown, so the
		// target stops there). The rephrase is the prompt itself.
		{Prompt: prompts[0], Target: []int32{g[0], g[1], wrong}, Rephrases: [][]int32{prompts[0]}, Locality: [][]int32{prompts[2]}},
		// The base model's own continuation: reliability 1.
		{Prompt: prompts[1], Target: greedy[1], Locality: [][]int32{prompts[2], prompts[0]}},
		// New pairs, no rephrases, one shared locality prompt.
		{Prompt: trainPairs[0].Prompt, Target: trainPairs[0].Completion, Rephrases: [][]int32{prompts[1], prompts[2]}, Locality: [][]int32{prompts[2]}},
		{Prompt: trainPairs[1].Prompt, Target: trainPairs[1].Completion},
	}
	ev, err := NewEditEval(base, edits, k)
	require.NoError(t, err)
	assert.Len(t, ev.examples, 4+3+2, "targets, rephrases and two distinct locality prompts")
	baseM, err := ev.Measure(base)
	require.NoError(t, err)
	assert.InDelta(t, 2.0/3, baseM.Edits[0].Reliability, 1e-12)
	assert.InDelta(t, 2.0/3, *baseM.Edits[0].Generalization, 1e-12)
	assert.Equal(t, 1.0, baseM.Edits[1].Reliability)
	assert.Nil(t, baseM.Edits[1].Generalization)
	assert.Nil(t, baseM.Edits[3].Locality)
	assert.Equal(t, 1.0, *baseM.Locality)

	zero, err := NewLoRA(m, LoRAOptions{Rank: 4, Alpha: 4, Projs: []engine.Proj{engine.ProjDown}, Layers: []int{3}, Seed: 2})
	require.NoError(t, err)
	moved, err := NewLoRA(m, LoRAOptions{Rank: 4, Alpha: 4, Projs: []engine.Proj{engine.ProjDown, engine.ProjQ}, Layers: []int{1, 2}, Seed: 3})
	require.NoError(t, err)
	randomize(moved, 4, 0.5)

	for _, tc := range []struct {
		name string
		lo   *LoRA
	}{
		{"zero adapter", zero},
		{"random adapter", moved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := NewScorer(e, tc.lo)
			defer sc.Close()
			got, err := ev.Measure(sc)
			require.NoError(t, err)
			// The same measures, a forward pass per sequence.
			conts, err := base.Greedy([][]int32{prompts[2], prompts[0]}, k)
			require.NoError(t, err)
			loc := func(p, cont []int32) float64 {
				return share(teacherForced(t, e, tc.lo, cat(p, cont), len(p)), teacherForced(t, e, nil, cat(p, cont), len(p)))
			}
			accuracy := func(p, target []int32) float64 {
				return share(teacherForced(t, e, tc.lo, cat(p, target), len(p)), target)
			}
			lc, l0 := loc(prompts[2], conts[0]), loc(prompts[0], conts[1])
			want := []struct {
				rel       float64
				gen, loca *float64
			}{
				{accuracy(prompts[0], edits[0].Target), ptr(accuracy(prompts[0], edits[0].Target)), &lc},
				{accuracy(prompts[1], edits[1].Target), nil, ptr((lc + l0) / 2)},
				{accuracy(edits[2].Prompt, edits[2].Target), ptr((accuracy(prompts[1], edits[2].Target) + accuracy(prompts[2], edits[2].Target)) / 2), &lc},
				{accuracy(edits[3].Prompt, edits[3].Target), nil, nil},
			}
			var rel float64
			for i, w := range want {
				s := got.Edits[i]
				assert.InDelta(t, w.rel, s.Reliability, 1e-12, "edit %d reliability", i)
				assertOptional(t, w.gen, s.Generalization, "edit %d generalization", i)
				assertOptional(t, w.loca, s.Locality, "edit %d locality", i)
				rel += w.rel / 4
			}
			assert.InDelta(t, rel, got.Reliability, 1e-12)
			assertOptional(t, ptr((*want[0].gen+*want[2].gen)/2), got.Generalization, "mean generalization")
			assertOptional(t, ptr((*want[0].loca+*want[1].loca+*want[2].loca)/3), got.Locality, "mean locality")

			if tc.lo == zero {
				assert.Equal(t, 1.0, *got.Locality)
				assert.Equal(t, baseM.Reliability, got.Reliability)
				assert.Equal(t, baseM.Generalization, got.Generalization)
				assert.Equal(t, baseM.Edits, got.Edits)
			} else {
				assert.Less(t, *got.Locality, 1.0, "the adapter moved the model")
			}
		})
	}
}

func ptr(v float64) *float64 { return &v }

func assertOptional(t *testing.T, want, got *float64, msg string, args ...any) {
	t.Helper()
	if want == nil || got == nil {
		assert.Equal(t, want, got, append([]any{msg}, args...)...)
		return
	}
	assert.InDelta(t, *want, *got, 1e-12, append([]any{msg}, args...)...)
}

func TestEditEvalRefuses(t *testing.T) {
	m := aidreams(t)
	base := NewScorer(newEngine(t, m, nil), nil)
	defer base.Close()
	long := make([]int32, 60)
	for i := range long {
		long[i] = int32(300 + i)
	}
	for _, tc := range []struct {
		name  string
		edits []Edit
		k     int
	}{
		{"no edits", nil, 4},
		{"no locality tokens", []Edit{{Prompt: []int32{1}, Target: []int32{300}}}, 0},
		{"target beyond the context", []Edit{{Prompt: []int32{1}, Target: long, Rephrases: [][]int32{long}}}, 4},
		{"locality beyond the context", []Edit{{Prompt: []int32{1}, Target: []int32{300}, Locality: [][]int32{long}}}, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewEditEval(base, tc.edits, tc.k)
			assert.Error(t, err)
		})
	}
}

// editTrainer trains a rank-4 data-initialised LoRA on layer 3's
// down-projection with the edits of trainPairs and two rehearsal samples.
func editTrainer(t *testing.T, m *model.Model, opts EditOptions) (*EditTrainer, *LoRA) {
	t.Helper()
	e := newEngine(t, m, NewSet())
	base := NewScorer(e, nil)
	defer base.Close()
	edits := []Edit{{Prompt: trainPairs[0].Prompt, Target: trainPairs[0].Completion}, {Prompt: trainPairs[1].Prompt, Target: trainPairs[1].Completion}}
	ref, err := base.SelfSamples(1, 8, 12, 5)
	require.NoError(t, err)
	lo, err := NewEditLoRA(m, base, edits, ref, EditLoRAOptions{Layer: 3, Proj: engine.ProjDown, Rank: 4, Alpha: 4, Ridge: 1e-2})
	require.NoError(t, err)
	rehearsal, err := base.Rehearsal(1, 2, 8, 9)
	require.NoError(t, err)
	tr, err := NewEditTrainer(e, m, lo, edits, rehearsal, opts)
	require.NoError(t, err)
	t.Cleanup(tr.Close)
	return tr, lo
}

func editOpts(optimizer string) EditOptions {
	return EditOptions{
		Optimizer: optimizer,
		MeZO:      MeZOOptions{LR: 5e-2, Eps: 1e-2, Schedule: Linear, Samples: 2, BatchSize: 3, Seed: 7, RehearsalWeight: 0.5, LossFloor: 0.2},
		Grad:      GradOptions{Adam: AdamOptions{LR: 1e-2}, BatchSize: 3, Seed: 7, RehearsalWeight: 0.5, LossFloor: 0.2, Workers: 2},
		Steps:     12, StopLoss: 1e-3, CheckEvery: 4,
	}
}

var editOptimizers = []string{OptimizerMeZO, OptimizerGrad}

// The stop rule: measured every CheckEvery steps from step 0, and a run
// ends when every edit's loss is below StopLoss or after MeZO.Steps.
func TestEditTrainerStops(t *testing.T) {
	for _, optimizer := range editOptimizers {
		t.Run(optimizer, func(t *testing.T) { testEditTrainerStops(t, optimizer) })
	}
}

func testEditTrainerStops(t *testing.T, optimizer string) {
	m := aidreams(t)
	opts := editOpts(optimizer)
	tr, lo := editTrainer(t, m, opts)
	initial := adapterBytes(t, lo)
	var checked []int
	for {
		at := tr.Steps()
		r, err := tr.Step()
		require.NoError(t, err)
		if r.Losses != nil {
			require.Len(t, r.Losses, 2)
			checked = append(checked, at)
		}
		if r.Done {
			assert.Zero(t, r.Step, "no step when done")
			break
		}
		assert.Equal(t, tr.Steps(), r.Step)
	}
	assert.Equal(t, []int{0, 4, 8}, checked)
	assert.Equal(t, opts.Steps, tr.Steps(), "StopLoss is out of reach: the run ends at Steps")
	assert.NotEqual(t, initial, adapterBytes(t, lo), "training moved the adapter")
	r, err := tr.Step()
	require.NoError(t, err)
	assert.True(t, r.Done)

	opts.StopLoss = math.Inf(1)
	tr, lo = editTrainer(t, m, opts)
	r, err = tr.Step()
	require.NoError(t, err)
	assert.True(t, r.Done, "every loss is below +Inf at step 0")
	assert.Len(t, r.Losses, 2)
	assert.Zero(t, tr.Steps())
	assert.Equal(t, initial, adapterBytes(t, lo))

	for _, bad := range []EditOptions{
		{Optimizer: optimizer, MeZO: opts.MeZO, Grad: opts.Grad, Steps: 12, StopLoss: 0},
		{Optimizer: optimizer, MeZO: opts.MeZO, Grad: opts.Grad, Steps: 12, StopLoss: 1, CheckEvery: -1},
		{Optimizer: optimizer, MeZO: opts.MeZO, Grad: opts.Grad, Steps: 0, StopLoss: 1},
		{Optimizer: "sgd", MeZO: opts.MeZO, Grad: opts.Grad, Steps: 12, StopLoss: 1},
	} {
		_, err := NewEditTrainer(newEngine(t, m, NewSet()), m, lo, []Edit{{Prompt: []int32{1}, Target: []int32{300}}}, nil, bad)
		assert.Error(t, err, "%+v", bad)
	}
	_, err = NewEditTrainer(newEngine(t, m, NewSet()), m, lo, nil, nil, opts)
	assert.Error(t, err, "no edits")
}

// A run checkpointed at any step and resumed in a fresh trainer ends with
// the same adapter bytes, and stops where the uninterrupted run does: the
// stop rule measured after a restore is the one the run measured there.
func TestEditTrainerResume(t *testing.T) {
	for _, optimizer := range editOptimizers {
		t.Run(optimizer, func(t *testing.T) { testEditTrainerResume(t, optimizer) })
	}
}

func testEditTrainerResume(t *testing.T, optimizer string) {
	m := aidreams(t)
	opts := editOpts(optimizer)
	full, loFull := editTrainer(t, m, opts)
	losses := map[int][]float64{}
	for {
		at := full.Steps()
		r, err := full.Step()
		require.NoError(t, err)
		if r.Losses != nil {
			losses[at] = r.Losses
		}
		if r.Done {
			break
		}
	}
	dir := t.TempDir()
	for _, k := range []int{5, 8} {
		first, _ := editTrainer(t, m, opts)
		for range k {
			_, err := first.Step()
			require.NoError(t, err)
		}
		ckpt := filepath.Join(dir, "edits.ckpt")
		require.NoError(t, first.SaveCheckpoint(ckpt))

		other := opts
		if optimizer == OptimizerMeZO {
			other.MeZO.Seed = 99
		}
		resumed, loResumed := editTrainer(t, m, other)
		require.NoError(t, resumed.Restore(ckpt))
		require.Equal(t, k, resumed.Steps())
		if optimizer == OptimizerMeZO {
			want := opts.MeZO
			want.Steps = opts.Steps
			assert.Equal(t, want, resumed.Options().MeZO, "the checkpoint's options win")
		}
		for {
			at := resumed.Steps()
			r, err := resumed.Step()
			require.NoError(t, err)
			if r.Losses != nil {
				assert.Equal(t, losses[at], r.Losses, "resumed at %d: the check at step %d", k, at)
			}
			if r.Done {
				break
			}
		}
		assert.Equal(t, adapterBytes(t, loFull), adapterBytes(t, loResumed), "resumed at %d", k)

		// A trainer whose StopLoss the run met at step 8 stops there
		// right after a restore at 8.
		if k == 8 {
			stop := opts
			stop.StopLoss = math.Nextafter(max(losses[8][0], losses[8][1]), math.Inf(1))
			early, _ := editTrainer(t, m, stop)
			require.NoError(t, early.Restore(ckpt))
			r, err := early.Step()
			require.NoError(t, err)
			assert.True(t, r.Done)
			assert.Equal(t, 8, early.Steps())
		}
	}
}

// A full delta is a LoRA of rank In with A the identity: it equals the
// model with B added to the projection's weight, and trains B only.
func TestFullDeltaMatchesMerged(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-q8_0.gguf")
	plain := mergedModel(t, path, 2, engine.ProjDown, nil, 0)
	lo, err := NewFullDelta(plain, 2, engine.ProjDown)
	require.NoError(t, err)
	require.Len(t, lo.Pairs, 1)
	pr := lo.Pairs[0]
	assert.Equal(t, pr.In, pr.Rank)
	assert.Equal(t, float32(1), lo.Scale(pr))
	ps := lo.Params()
	assert.True(t, ps[0].Frozen)
	assert.False(t, ps[1].Frozen)
	randomize(lo, 6, 0.05)
	merged := mergedModel(t, path, 2, engine.ProjDown, pr, 1)

	want := runPrompts(t, newEngine(t, merged, nil), nil)
	set := NewSet()
	got := runPrompts(t, newEngine(t, plain, set), func(_ int, s *engine.Sequence) { set.Use(s, Applied{LoRA: lo, Scale: 1}) })
	base := runPrompts(t, newEngine(t, plain, nil), nil)
	var maxDiff, maxMoved float64
	for i := range want {
		for j := range want[i] {
			maxDiff = max(maxDiff, math.Abs(float64(want[i][j]-got[i][j])))
			maxMoved = max(maxMoved, math.Abs(float64(base[i][j]-got[i][j])))
		}
	}
	t.Logf("max |delta - merged| = %g, max |delta - base| = %g", maxDiff, maxMoved)
	assert.Greater(t, maxMoved, 1e-2)
	assert.Less(t, maxDiff, 1e-3*max(1, maxMoved))

	_, err = NewFullDelta(plain, len(plain.Layers), engine.ProjDown)
	assert.ErrorIs(t, err, ErrMismatch)
}

// Rehearsal samples shaped like the locality measure: a sample of the
// model's text, then its greedy continuation, with the base model's
// distributions at every token.
func TestEditRehearsalShape(t *testing.T) {
	m := aidreams(t)
	e := newEngine(t, m, NewSet())
	r := DefaultEditRecipe(3)
	r.Replay, r.ReplayLen, r.ReplayGreedy = 3, 4, 2
	run := &EditRun{e: e, base: NewScorer(e, nil)}
	defer run.base.Close()
	got, err := run.rehearsal(1, r, 11)
	require.NoError(t, err)
	samples, err := run.base.SelfSamples(1, 3, 4, 11)
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i, ex := range got {
		require.Len(t, ex.Completion, 6)
		assert.Equal(t, samples[i].Completion, ex.Completion[:4], "the sample first")
		cont, err := run.base.Greedy([][]int32{append([]int32{1}, ex.Completion[:4]...)}, 2)
		require.NoError(t, err)
		assert.Equal(t, cont[0], ex.Completion[4:], "then the greedy continuation")
		assert.Len(t, ex.Reference, 6)
	}
}
