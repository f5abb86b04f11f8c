package adapt

import (
	"errors"
	"fmt"
	"math"

	"github.com/edged/edged/engine"
)

// Example is one training pair: the loss is the cross-entropy of the
// completion tokens given the prompt (prompt tokens are not scored).
type Example struct {
	Prompt     []int32
	Completion []int32
	// Reference, when not nil, holds a distribution to keep at each scored
	// row — one per completion token, as Scorer.References gives them for
	// the base model — and the example's loss is KL(reference ‖ model) per
	// row instead of the cross-entropy of its completion. Rehearsal on the
	// base model's own text uses it: the KL is zero, with zero slope,
	// where the model has not moved, while the cross-entropy of one
	// sampled token would pull the model towards that token.
	Reference []Reference
}

// Schedule is a learning-rate schedule.
type Schedule int

// Schedules: constant, or linear decay from LR at step 0 to 0 at
// MeZOOptions.Steps.
const (
	Constant Schedule = iota
	Linear
)

// MeZOOptions configure a MeZO run (Malladi et al. 2023).
type MeZOOptions struct {
	LR          float64  // learning rate η
	Eps         float64  // perturbation scale ε
	WeightDecay float64  // λ: θ -= η·λ·θ each step
	Schedule    Schedule // of the learning rate
	Steps       int      // the run's length, for the Linear schedule
	Samples     int      // n-SPSA: perturbations averaged per step
	BatchSize   int      // examples per step (0 or more than the data: all)
	// MaxGrad bounds |g|, the projected gradient of one perturbation; 0
	// means no bound. Larger values are clipped to ±MaxGrad, or the sample
	// is skipped when SkipLarge is set.
	MaxGrad   float64
	SkipLarge bool
	Seed      uint64 // with the step, determines every perturbation and batch
	// RehearsalWeight is the weight of a rehearsal row (of an example with
	// a Reference) in the loss's mean, against 1 for a target token; 0
	// means 1.
	RehearsalWeight float64
	// LossFloor, when positive, counts a target token's cross-entropy as
	// at least LossFloor in the loss that steps descend (and that
	// StepResult.Loss reports): a token learnt to that point stops pulling
	// on the adapter, and the steps go to the tokens that are not. MeZO's
	// Loss is unaffected.
	LossFloor float64
}

// DefaultMeZOOptions returns the paper's LoRA settings (ε 1e-2, η 1e-4,
// batch 16, one sample per step).
func DefaultMeZOOptions() MeZOOptions {
	return MeZOOptions{LR: 1e-4, Eps: 1e-2, Samples: 1, BatchSize: 16}
}

// MeZO trains an adapter's tensors with zeroth-order SGD: each step
// perturbs them by ±εz, measures the loss twice with forward passes only,
// and moves them along z by the finite-difference estimate. z is never
// stored: it is regenerated from (step seed, tensor, element).
type MeZO struct {
	params []Param
	data   []Example
	opts   MeZOOptions

	step    int // steps taken
	skipped int // samples dropped by the gradient guard or a non-finite loss

	sc    *Scorer
	perm  []int // the current epoch's order of data
	epoch int   // which epoch perm belongs to; -1: none yet
	grads []float64
}

// StepResult reports one step.
type StepResult struct {
	Step    int     // steps taken, this one included
	Loss    float64 // mean of the perturbed losses (ℓ₊ + ℓ₋)/2 over samples
	Grad    float64 // mean projected gradient g over the samples kept
	LR      float64
	Skipped int // samples skipped by the guard
}

// NewMeZO prepares training of a on data. To train a LoRA, the engine
// must have been made with an adapt.Set as its Hooks.Delta; the trainer
// attaches the adapter to its own sequences only.
func NewMeZO(e *engine.Engine, a Trainable, data []Example, opts MeZOOptions) (*MeZO, error) {
	if _, ok := a.(*LoRA); ok {
		if _, ok := e.Options().Hooks.Delta.(*Set); !ok {
			return nil, errors.New("adapt: MeZO: training a LoRA needs an engine with an adapt.Set as Hooks.Delta")
		}
	}
	if opts.Samples <= 0 {
		opts.Samples = 1
	}
	if !(opts.Eps > 0) || !(opts.LR >= 0) || opts.WeightDecay < 0 {
		return nil, fmt.Errorf("adapt: MeZO: want ε > 0, η ≥ 0, λ ≥ 0; have %g, %g, %g", opts.Eps, opts.LR, opts.WeightDecay)
	}
	if !(opts.RehearsalWeight >= 0) || !(opts.LossFloor >= 0) {
		return nil, fmt.Errorf("adapt: MeZO: rehearsal weight %g, loss floor %g: want ≥ 0", opts.RehearsalWeight, opts.LossFloor)
	}
	if opts.Schedule == Linear && opts.Steps <= 0 {
		return nil, errors.New("adapt: MeZO: the linear schedule needs Steps")
	}
	if len(data) == 0 {
		return nil, errors.New("adapt: MeZO: no training examples")
	}
	nv := e.Config().NVocab
	for i, ex := range data {
		if len(ex.Prompt) == 0 || len(ex.Completion) == 0 {
			return nil, fmt.Errorf("adapt: MeZO: example %d: prompt and completion must not be empty", i)
		}
		for _, id := range append(append([]int32(nil), ex.Prompt...), ex.Completion...) {
			if id < 0 || int(id) >= nv {
				return nil, fmt.Errorf("adapt: MeZO: example %d: token %d outside the vocabulary of %d", i, id, nv)
			}
		}
		if n := a.cacheRows() + len(ex.Prompt) + len(ex.Completion); n > e.Options().Context {
			return nil, fmt.Errorf("adapt: MeZO: example %d: %d tokens (adapter prefix included) exceed the context of %d", i, n, e.Options().Context)
		}
	}
	if opts.BatchSize <= 0 || opts.BatchSize > len(data) {
		opts.BatchSize = len(data)
	}
	sc := NewScorer(e, a)
	if opts.RehearsalWeight > 0 {
		sc.refWeight = opts.RehearsalWeight
	}
	return &MeZO{params: a.Params(), data: data, opts: opts, sc: sc, epoch: -1}, nil
}

// Steps is the number of steps taken.
func (m *MeZO) Steps() int { return m.step }

// Options returns the options in force.
func (m *MeZO) Options() MeZOOptions { return m.opts }

// SetPace makes the trainer call fn before every forward pass (see
// Scorer.SetPace). A step runs 2·Samples losses, each one or more forward
// passes, so fn lets other work in within a step; it must not change the
// adapter, and the step goes on when it returns.
func (m *MeZO) SetPace(fn func()) { m.sc.SetPace(fn) }

// Close frees the trainer's sequences.
func (m *MeZO) Close() { m.sc.Close() }

// LR is the learning rate of step (0-based).
func (m *MeZO) LR(step int) float64 {
	if m.opts.Schedule == Linear {
		return m.opts.LR * max(0, 1-float64(step)/float64(m.opts.Steps))
	}
	return m.opts.LR
}

// sampleSeed is the seed of perturbation k of step.
func (m *MeZO) sampleSeed(step, k int) uint64 {
	return mix(mix(m.opts.Seed) ^ (uint64(step)*uint64(m.opts.Samples) + uint64(k)))
}

// perturb adds scale·z(seed) to every trained parameter.
func (m *MeZO) perturb(seed uint64, scale float32) {
	for t, p := range m.params {
		if p.Frozen {
			continue
		}
		key := stream(seed, t)
		for i := range p.Data {
			p.Data[i] += scale * gaussian(key, i)
		}
	}
}

// Step runs one MeZO step.
func (m *MeZO) Step() (StepResult, error) {
	batch := m.batchOf(m.step)
	eps := float32(m.opts.Eps)
	n := m.opts.Samples
	m.grads = m.grads[:0]
	res := StepResult{Step: m.step + 1, LR: m.LR(m.step)}
	kept := 0
	for k := range n {
		seed := m.sampleSeed(m.step, k)
		m.perturb(seed, eps)
		lp, err := m.objective(batch)
		if err != nil {
			m.perturb(seed, -eps)
			return res, err
		}
		m.perturb(seed, -2*eps)
		lm, err := m.objective(batch)
		m.perturb(seed, eps)
		if err != nil {
			return res, err
		}
		res.Loss += (lp + lm) / 2 / float64(n)
		g := (lp - lm) / (2 * m.opts.Eps)
		skip := false
		switch {
		case math.IsNaN(g) || math.IsInf(g, 0):
			skip = true
		case m.opts.MaxGrad > 0 && math.Abs(g) > m.opts.MaxGrad:
			if m.opts.SkipLarge {
				skip = true
			} else {
				g = math.Copysign(m.opts.MaxGrad, g)
			}
		}
		if skip {
			g = 0
			res.Skipped++
		} else {
			kept++
			res.Grad += g
		}
		m.grads = append(m.grads, g)
	}
	if kept > 0 {
		res.Grad /= float64(kept)
	}
	m.update(res.LR)
	m.skipped += res.Skipped
	m.step++
	return res, nil
}

// update applies θ -= η(Σₖ gₖzₖ/n + λθ), regenerating each zₖ.
func (m *MeZO) update(lr float64) {
	n := float64(len(m.grads))
	decay := float32(1 - lr*m.opts.WeightDecay)
	for t, p := range m.params {
		if p.Frozen {
			continue
		}
		if decay != 1 {
			for i := range p.Data {
				p.Data[i] *= decay
			}
		}
		for k, g := range m.grads {
			if g == 0 {
				continue
			}
			c := float32(-lr * g / n)
			key := stream(m.sampleSeed(m.step, k), t)
			for i := range p.Data {
				p.Data[i] += c * gaussian(key, i)
			}
		}
	}
}

// batchOf returns the examples of step: consecutive slices of a shuffled
// order of the data, reshuffled every epoch.
func (m *MeZO) batchOf(step int) []Example {
	if m.opts.BatchSize == len(m.data) {
		return m.data
	}
	out := make([]Example, m.opts.BatchSize)
	for j := range out {
		at := step*m.opts.BatchSize + j
		epoch := at / len(m.data)
		if epoch != m.epoch {
			m.shuffle(epoch)
		}
		out[j] = m.data[m.perm[at%len(m.data)]]
	}
	return out
}

func (m *MeZO) shuffle(epoch int) {
	if m.perm == nil {
		m.perm = make([]int, len(m.data))
	}
	for i := range m.perm {
		m.perm[i] = i
	}
	key := stream(m.opts.Seed^0x7f4a7c159e3779b9, epoch)
	for i := len(m.perm) - 1; i > 0; i-- {
		j := int(uniform(key, uint64(i)) * float64(i+1))
		m.perm[i], m.perm[j] = m.perm[j], m.perm[i]
	}
	m.epoch = epoch
}

// Loss is the mean cross-entropy of the completion tokens of examples
// under the current parameters (see Scorer.Loss).
func (m *MeZO) Loss(examples []Example) (float64, error) { return m.loss(examples, 0) }

// objective is the loss that steps descend: Loss with the loss floor.
func (m *MeZO) objective(examples []Example) (float64, error) {
	return m.loss(examples, m.opts.LossFloor)
}

func (m *MeZO) loss(examples []Example, floor float64) (float64, error) {
	l, err := m.sc.loss(examples, floor)
	if err != nil {
		return 0, fmt.Errorf("adapt: MeZO: %w", err)
	}
	return l, nil
}
