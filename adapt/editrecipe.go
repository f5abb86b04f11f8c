package adapt

import (
	"errors"
	"fmt"
	"slices"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// EditRecipe is a whole LocFT-BF edit-training run described by its
// settings: the localized adapter, the rehearsal samples trained beside
// the edits, the optimizer with its stop rule, and the measures.
// `edgectl edits train|locate` build one from their flags and the daemon's
// edit jobs from their configuration, so that both train the same adapter
// from the same edits, settings and seed.
type EditRecipe struct {
	// Adapter is the localized adapter: its Layer must be set (the last
	// layer is a fair first choice; `edgectl edits locate` measures each).
	Adapter EditLoRAOptions
	// Train configures the optimizer and the stop rule; Train.MeZO.Seed
	// seeds the whole run (batches, perturbations and the base model's
	// samples; Prepare copies it into Train.Grad.Seed).
	Train EditOptions
	// InitRef samples of the model's own text (InitRefLen tokens) that a
	// data-chosen A should leave alone (rank > 0 only).
	InitRef int
	// Replay rehearsal samples of the base model (ReplayLen tokens each,
	// then ReplayGreedy tokens of its greedy continuation) are trained
	// beside the edits, scored by KL(base ‖ adapted). The greedy tail
	// gives them the shape of the locality measure (a sample of the
	// model's text continued greedily).
	Replay, ReplayLen, ReplayGreedy int
	// LocalityLen is the number of tokens of the base model's greedy
	// continuation of each locality prompt that locality compares.
	LocalityLen int

	// Pace, when set, runs before every forward pass of the run, set-up
	// and measures included (see Scorer.SetPace).
	Pace func()
}

// DefaultEditRecipe returns the defaults of `edgectl edits train` and of
// the daemon's edit jobs on layer: a full delta of its down-projection
// trained with the exact gradient (DefaultEditOptions) beside 200
// rehearsal samples of 12 tokens continued greedily by 10, and locality
// measured on 10 tokens (BENCHMARKS.md, "The exact gradient against
// MeZO").
func DefaultEditRecipe(layer int) EditRecipe {
	return EditRecipe{
		Adapter: EditLoRAOptions{Layer: layer, Proj: engine.ProjDown, Rank: 0, Alpha: 32, Ridge: InitRidge},
		Train:   DefaultEditOptions(),
		InitRef: 64, Replay: 200, ReplayLen: 12, ReplayGreedy: 10, LocalityLen: 10,
	}
}

// Check reports the settings that cannot run, all at once.
func (r EditRecipe) Check(c model.Config) error {
	var errs []error
	if r.Adapter.Layer < 0 || r.Adapter.Layer >= c.NLayer {
		errs = append(errs, fmt.Errorf("layer %d: the model has layers 0 to %d", r.Adapter.Layer, c.NLayer-1))
	}
	if r.Adapter.Rank < 0 {
		errs = append(errs, fmt.Errorf("rank %d: want ≥ 0 (0: a full delta)", r.Adapter.Rank))
	}
	if r.Train.Steps <= 0 || r.Train.CheckEvery < 0 || !(r.Train.StopLoss > 0) {
		errs = append(errs, fmt.Errorf("steps %d, check every %d, stop loss %g: want > 0, ≥ 0 and > 0", r.Train.Steps, r.Train.CheckEvery, r.Train.StopLoss))
	}
	if r.LocalityLen < 1 || r.InitRef < 0 || r.Replay < 0 || r.Replay > 0 && (r.ReplayLen < 1 || r.ReplayGreedy < 0) {
		errs = append(errs, fmt.Errorf("locality len %d, init ref %d, replay %d of %d+%d tokens: want ≥ 1, ≥ 0 and ≥ 0 of ≥ 1+≥ 0", r.LocalityLen, r.InitRef, r.Replay, r.ReplayLen, r.ReplayGreedy))
	}
	if r.Train.Optimizer != OptimizerMeZO && r.Train.Optimizer != OptimizerGrad {
		errs = append(errs, fmt.Errorf("optimizer %q: want %s or %s", r.Train.Optimizer, OptimizerMeZO, OptimizerGrad))
	}
	return errors.Join(errs...)
}

// Footprint is the most a run of r on edits holds at once for a model of
// config c (as Recipe.Footprint): seqs sequences with a KV cache of ctx
// tokens each, and held bytes of other data. The measures score every
// edit's target, rephrases and locality continuations in one group.
func (r EditRecipe) Footprint(edits []Edit, c model.Config) (seqs, ctx int, held int64) {
	train := make([]Example, len(edits))
	eval := 0
	locality := map[string]bool{}
	for i, ed := range edits {
		train[i] = ed.Example()
		eval += 1 + len(ed.Rephrases)
		for _, p := range ed.Rephrases {
			ctx = max(ctx, len(p)+len(ed.Target))
		}
		for _, p := range ed.Locality {
			ctx = max(ctx, len(p)+r.LocalityLen)
			locality[tokensKey(Example{Prompt: p})] = true
		}
	}
	like := Recipe{Method: MethodLoRA, MeZO: r.Train.MeZO, Layers: []int{r.Adapter.Layer}, Replay: r.Replay, ReplayLen: r.ReplayLen + r.ReplayGreedy, Init: InitRandom}
	if r.Adapter.Rank > 0 {
		like.Init, like.InitRef = InitData, r.InitRef
	}
	s, x, h := like.Footprint(train, c)
	eval += len(locality)
	ctx = max(x, ctx)
	if r.Adapter.Layer > 0 {
		// The measures keep the rows entering the layer of what they score.
		h += int64(eval) * int64(ctx) * int64(c.NEmbd) * 4
	}
	if r.Train.Optimizer == OptimizerGrad {
		h += r.gradBytes(train, c)
	}
	return max(s, eval), ctx, h
}

// gradBytes is what the gradient holds besides the engine: a float32
// copy of the layers from the adapted one up and of the output, the
// matrices above it twice (transposed for the backward pass), and per
// training row the projection's input, the layer's output and the
// delta's inner rows.
func (r EditRecipe) gradBytes(train []Example, c model.Config) int64 {
	e, qd, kd, ff := int64(c.NEmbd), int64(c.QDim()), int64(c.KVDim()), int64(c.NFF)
	layer := 2*e*qd + 2*e*kd + 3*e*ff
	above := int64(c.NLayer - 1 - r.Adapter.Layer)
	rows := int64(r.Replay) * int64(r.ReplayLen+r.ReplayGreedy)
	for _, ex := range train {
		rows += int64(len(ex.Prompt) + len(ex.Completion))
	}
	rank := int64(r.Adapter.Rank)
	if rank == 0 {
		rank = ff // a full delta's A is the identity
	}
	return 4 * (layer*(1+2*above) + 2*int64(c.NVocab)*e + rows*(ff+e+rank))
}

// EditRun is a prepared edit-training run: the adapter, its trainer and
// the measures of the base model.
type EditRun struct {
	*EditTrainer
	Adapter *LoRA
	Edits   []Edit
	// Base are the edit metrics of the base model.
	Base EditMetrics

	e        *engine.Engine
	base     *Scorer
	ev       *EditEval
	examples int // trained: the edits and the rehearsal samples
}

// Prepare builds r's run on edits: e runs m with an adapt.Set as its
// Hooks.Delta, bos is the tokenizer's BOS id. It samples the base model's
// own text for the adapter's A and for rehearsal, chooses A, and measures
// the base model. The caller closes the run.
func (r EditRecipe) Prepare(e *engine.Engine, m *model.Model, bos int32, edits []Edit) (*EditRun, error) {
	if err := r.Check(m.Config); err != nil {
		return nil, fmt.Errorf("adapt: edit training: %w", err)
	}
	if len(edits) == 0 {
		return nil, errors.New("adapt: edit training: no edits")
	}
	run := &EditRun{Edits: edits, e: e, base: NewScorer(e, nil)}
	run.base.SetPace(r.Pace)
	if err := run.prepare(r, m, bos); err != nil {
		run.Close()
		return nil, err
	}
	return run, nil
}

func (run *EditRun) prepare(r EditRecipe, m *model.Model, bos int32) error {
	seed := r.Train.MeZO.Seed << 20
	var ref []Example
	if r.Adapter.Rank > 0 {
		var err error
		if ref, err = run.base.SelfSamples(bos, r.InitRef, InitRefLen, InitRefSeed+seed); err != nil {
			return fmt.Errorf("adapt: edit training: init ref: %w", err)
		}
	}
	rehearsal, err := run.rehearsal(bos, r, ReplaySeed+seed)
	if err != nil {
		return fmt.Errorf("adapt: edit training: replay: %w", err)
	}
	if run.ev, err = NewEditEval(run.base, run.Edits, r.LocalityLen); err != nil {
		return err
	}
	if run.Base, err = run.ev.Measure(run.base); err != nil {
		return err
	}
	if run.Adapter, err = NewEditLoRA(m, run.base, run.Edits, ref, r.Adapter); err != nil {
		return err
	}
	opts := r.Train
	opts.Grad.Seed = opts.MeZO.Seed
	run.examples = len(run.Edits) + len(rehearsal)
	if run.EditTrainer, err = NewEditTrainer(run.e, m, run.Adapter, run.Edits, rehearsal, opts); err != nil {
		return err
	}
	run.EditTrainer.SetPace(r.Pace)
	return nil
}

// rehearsal draws r's rehearsal samples with the base model's
// distributions at every token as their Reference.
func (run *EditRun) rehearsal(bos int32, r EditRecipe, seed uint64) ([]Example, error) {
	ex, err := run.base.SelfSamples(bos, r.Replay, r.ReplayLen, seed)
	if err != nil || len(ex) == 0 {
		return ex, err
	}
	if r.ReplayGreedy > 0 {
		prompts := make([][]int32, len(ex))
		for i, x := range ex {
			prompts[i] = append(slices.Clip(x.Prompt), x.Completion...)
		}
		conts, err := run.base.Greedy(prompts, r.ReplayGreedy)
		if err != nil {
			return nil, err
		}
		for i := range ex {
			ex[i].Completion = append(ex[i].Completion, conts[i]...)
		}
	}
	refs, err := run.base.References(ex)
	if err != nil {
		return nil, err
	}
	for i := range ex {
		ex[i].Reference = refs[i]
	}
	return ex, nil
}

// Examples is the number of examples trained: the edits and the
// rehearsal samples.
func (run *EditRun) Examples() int { return run.examples }

// Measure returns the edit metrics of the adapter as trained so far.
func (run *EditRun) Measure() (EditMetrics, error) {
	sc := NewScorer(run.e, run.Adapter)
	defer sc.Close()
	sc.SetPace(run.base.pace)
	return run.ev.Measure(sc)
}

// Save writes the adapter as a GGUF LoRA file of tensor type typ (f32 or
// f16), atomically.
func (run *EditRun) Save(path string, typ quant.Type) error { return SaveLoRA(path, run.Adapter, typ) }

// Close frees the run's trainer and sequences.
func (run *EditRun) Close() {
	if run.EditTrainer != nil {
		run.EditTrainer.Close()
	}
	run.base.Close()
}
