package adapt

import (
	"errors"
	"fmt"
	"slices"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
)

// EditOptions configure LocFT-BF training ("Fine-tuning Done Right in
// Model Editing", 2025): edits are ordinary examples (loss on the target
// tokens only), trained breadth-first — a step's batch is the next slice
// of a shuffle of all the training examples, reshuffled every epoch — on a
// localized adapter, until every edit is learnt.
type EditOptions struct {
	// Optimizer is OptimizerMeZO (MeZO, configured by MeZO) or
	// OptimizerGrad (Adam on the exact gradient, configured by Grad; the
	// adapter must be one pair on a down-projection).
	Optimizer string
	MeZO      MeZOOptions
	Grad      GradOptions
	// Steps bounds the run (for MeZO also the length of a linear
	// schedule); it must be positive.
	Steps int
	// StopLoss: training stops once every edit's loss (the mean
	// cross-entropy of its target tokens) is below it.
	StopLoss float64
	// CheckEvery is the number of steps between measures of the edits'
	// losses for the stop rule; 0 means 100.
	CheckEvery int
}

// Optimizers of EditOptions.
const (
	OptimizerMeZO = "mezo" // MeZO: forward passes only
	OptimizerGrad = "grad" // Adam on the exact gradient of the adapted matrix
)

// DefaultEditOptions train with Adam on the exact gradient at 3e-3 over
// all the data each step, rehearsal rows at weight 1 and a loss floor of
// 0.5, for at most 3000 steps, stopping once every edit's loss is below
// 0.3 (BENCHMARKS.md, "The exact gradient against MeZO"). MeZO's are its
// best on 100 edits (BENCHMARKS.md, "Knowledge edits (issue 9)"): issue
// 8's best for 20 pairs (batches of 36, a linearly decaying rate of 5e-3,
// ε 1e-2, a loss floor of 0.6 nats) with four perturbations a step and
// rehearsal rows at weight 1.5, which wants about 9000 steps.
func DefaultEditOptions() EditOptions {
	return EditOptions{
		Optimizer: OptimizerGrad,
		MeZO: MeZOOptions{LR: 5e-3, Eps: 1e-2, Schedule: Linear, Samples: 4, BatchSize: 36,
			RehearsalWeight: 1.5, LossFloor: 0.6},
		Grad:       GradOptions{Adam: AdamOptions{LR: 3e-3}, RehearsalWeight: 1, LossFloor: 0.5},
		Steps:      3000,
		StopLoss:   0.3,
		CheckEvery: 100,
	}
}

// editOptimizer is what EditTrainer drives: MeZO or a GradTrainer.
type editOptimizer interface {
	Step() (StepResult, error)
	Steps() int
	// Losses are the examples' losses under the adapter being trained.
	Losses(examples []Example) ([]float64, error)
	SaveCheckpoint(path string) error
	Restore(path string) error
	SetPace(fn func())
	Close()
}

// EditTrainer trains edits with LocFT-BF: a thin layer over the optimizer
// that adds the stop rule. Its state is the optimizer's, so the
// optimizer's checkpoints save and resume it exactly.
type EditTrainer struct {
	opt   editOptimizer
	edits []Example
	opts  EditOptions
	done  bool // the stop rule held at the last check
}

// EditStep reports one call of EditTrainer.Step.
type EditStep struct {
	// StepResult is the step taken; its Step is 0 when none was.
	StepResult
	// Losses, when the call measured them for the stop rule, are each
	// edit's loss before the step.
	Losses []float64
	// Done: training is over (every edit's loss is below StopLoss, or
	// Steps steps were taken); no step was taken.
	Done bool
}

// NewEditTrainer prepares LocFT-BF training of a (an adapter of m) on
// edits, with rehearsal examples (Scorer.Rehearsal; none is allowed)
// trained beside them. As for NewMeZO, a LoRA needs an engine with an
// adapt.Set as its Hooks.Delta.
func NewEditTrainer(e *engine.Engine, m *model.Model, a Trainable, edits []Edit, rehearsal []Example, opts EditOptions) (*EditTrainer, error) {
	if len(edits) == 0 {
		return nil, errors.New("adapt: edit training: no edits")
	}
	if opts.Steps <= 0 {
		return nil, fmt.Errorf("adapt: edit training: steps %d: want a positive bound", opts.Steps)
	}
	if !(opts.StopLoss > 0) || opts.CheckEvery < 0 {
		return nil, fmt.Errorf("adapt: edit training: stop loss %g, check every %d: want > 0 and ≥ 0", opts.StopLoss, opts.CheckEvery)
	}
	if opts.CheckEvery == 0 {
		opts.CheckEvery = 100
	}
	t := &EditTrainer{opts: opts}
	for _, ed := range edits {
		t.edits = append(t.edits, ed.Example())
	}
	data := append(slices.Clip(t.edits), rehearsal...)
	var err error
	switch opts.Optimizer {
	case OptimizerMeZO:
		mo := opts.MeZO
		mo.Steps = opts.Steps
		var mz *MeZO
		if mz, err = NewMeZO(e, a, data, mo); err == nil {
			t.opt = mezoEdits{mz}
		}
	case OptimizerGrad:
		lo, ok := a.(*LoRA)
		if !ok {
			return nil, fmt.Errorf("adapt: edit training: the gradient trains a LoRA, not a %T", a)
		}
		var g *GradTrainer
		if g, err = NewGradTrainer(e, m, lo, t.edits, rehearsal, opts.Grad); err == nil {
			t.opt = &gradEdits{g}
		}
	default:
		err = fmt.Errorf("optimizer %q: want %s or %s", opts.Optimizer, OptimizerMeZO, OptimizerGrad)
	}
	if err != nil {
		return nil, fmt.Errorf("adapt: edit training: %w", err)
	}
	return t, nil
}

// Step takes one optimizer step. Every CheckEvery steps (step 0
// included) it first measures each edit's loss and, when all are below
// StopLoss, ends the training instead. The check depends only on the step
// and the adapter, so a run resumed from a checkpoint stops where the
// uninterrupted run does.
func (t *EditTrainer) Step() (EditStep, error) {
	var r EditStep
	if t.done || t.opt.Steps() >= t.opts.Steps {
		r.Done = true
		return r, nil
	}
	if t.opt.Steps()%t.opts.CheckEvery == 0 {
		losses, err := t.Losses()
		if err != nil {
			return r, err
		}
		r.Losses = losses
		if slices.Max(losses) < t.opts.StopLoss {
			t.done, r.Done = true, true
			return r, nil
		}
	}
	var err error
	if r.StepResult, err = t.opt.Step(); err != nil {
		return r, fmt.Errorf("adapt: edit training: %w", err)
	}
	return r, nil
}

// Losses returns each edit's loss: the mean cross-entropy of its target
// tokens under the current adapter.
func (t *EditTrainer) Losses() ([]float64, error) {
	l, err := t.opt.Losses(t.edits)
	if err != nil {
		return nil, fmt.Errorf("adapt: edit training: %w", err)
	}
	return l, nil
}

// Learnt reports whether training ended by the stop rule: at the last
// check, every edit's loss was below StopLoss.
func (t *EditTrainer) Learnt() bool { return t.done }

// Steps is the number of optimizer steps taken.
func (t *EditTrainer) Steps() int { return t.opt.Steps() }

// Options returns the options in force (MeZO's from a restored
// checkpoint).
func (t *EditTrainer) Options() EditOptions {
	o := t.opts
	if mz, ok := t.opt.(mezoEdits); ok {
		o.MeZO = mz.Options()
	}
	return o
}

// SaveCheckpoint writes the run's state (the optimizer's checkpoint) to
// path atomically.
func (t *EditTrainer) SaveCheckpoint(path string) error { return t.opt.SaveCheckpoint(path) }

// Restore continues the run saved in path (see MeZO.Restore; the stop
// rule's options stay the trainer's own).
func (t *EditTrainer) Restore(path string) error {
	if err := t.opt.Restore(path); err != nil {
		return err
	}
	t.done = false
	return nil
}

// SetPace sets a function run before every forward pass (see
// Scorer.SetPace), and for the gradient before every step.
func (t *EditTrainer) SetPace(fn func()) { t.opt.SetPace(fn) }

// Close frees the trainer's sequences.
func (t *EditTrainer) Close() { t.opt.Close() }

// mezoEdits is MeZO as an editOptimizer.
type mezoEdits struct{ *MeZO }

func (m mezoEdits) Losses(examples []Example) ([]float64, error) { return m.sc.Losses(examples) }

// gradEdits is a GradTrainer as an editOptimizer. Its checkpoint holds
// the adapter's trained tensors and Adam's moments.
type gradEdits struct {
	*GradTrainer
}

func (g *gradEdits) Step() (StepResult, error) {
	g.sc.paced()
	loss, err := g.GradTrainer.Step()
	return StepResult{Step: g.Steps(), Loss: loss, LR: g.opts.Adam.LR}, err
}

// checkpointTensors are the trained tensors, then each one's first and
// second moments, sharing the trainer's memory.
func (g *gradEdits) checkpointTensors() []Param {
	var ts []Param
	st := &g.adam.st
	for i, p := range g.adam.params {
		if !p.Frozen {
			ts = append(ts, p, Param{Name: p.Name + ".adam_m", Data: st.M[i]}, Param{Name: p.Name + ".adam_v", Data: st.V[i]})
		}
	}
	return ts
}

func (g *gradEdits) SaveCheckpoint(path string) error {
	return saveCheckpoint(path, checkpointHeader{Step: g.Steps()}, g.checkpointTensors())
}

func (g *gradEdits) Restore(path string) error {
	hdr, err := loadCheckpoint(path, g.checkpointTensors())
	if err != nil {
		return err
	}
	g.adam.st.Step = hdr.Step
	return nil
}

// EditLoRAOptions choose LocFT-BF's localized parameters: one projection
// (by default the MLP down-projection) of one layer.
type EditLoRAOptions struct {
	Layer int
	Proj  engine.Proj // LocFT-BF's is engine.ProjDown
	// Rank and Alpha of the LoRA, whose A is chosen from the edits and
	// frozen (LoRA.InitFromData). Rank 0 asks for a full delta of the
	// projection instead (NewFullDelta).
	Rank  int
	Alpha float32
	// Ridge is InitFromData's whitening ridge.
	Ridge float64
}

// NewEditLoRA returns the localized adapter of opts for edits: base is a
// Scorer of the base model (on an engine with an adapt.Set), ref the
// model's own text (Scorer.SelfSamples) that a data-chosen A should leave
// alone.
func NewEditLoRA(m *model.Model, base *Scorer, edits []Edit, ref []Example, opts EditLoRAOptions) (*LoRA, error) {
	if opts.Rank == 0 {
		return NewFullDelta(m, opts.Layer, opts.Proj)
	}
	lo, err := NewLoRA(m, LoRAOptions{Rank: opts.Rank, Alpha: opts.Alpha, Projs: []engine.Proj{opts.Proj}, Layers: []int{opts.Layer}})
	if err != nil {
		return nil, err
	}
	train := make([]Example, len(edits))
	for i, ed := range edits {
		train[i] = ed.Example()
	}
	if err := lo.InitFromData(base, train, ref, opts.Ridge); err != nil {
		return nil, err
	}
	return lo, nil
}
