package adapt

import (
	"errors"
	"fmt"
	"slices"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// Adapter methods and LoRA initialisations of a Recipe.
const (
	MethodLoRA   = "lora"
	MethodPrefix = "prefix"

	InitRandom = "random" // A random, both A and B trained
	InitData   = "data"   // A chosen from the data and frozen, B trained (LoRA.InitFromInputs)
)

// Recipe is a whole MeZO adaptation run described by its settings: the
// adapter and how it starts, the rehearsal samples added to the data and
// the optimizer. `edgectl adapt` builds one from its flags and the
// daemon's adapt jobs from their request, so that the two train the same
// adapter from the same settings and seed.
type Recipe struct {
	Method string // MethodLoRA or MethodPrefix
	// MeZO are the optimizer's settings; LR and Eps 0 take the method's
	// defaults (WithDefaults). MeZO.Seed seeds the whole run: the
	// perturbations and batches, a LoRA's random A, and the base model's
	// samples for replay and InitData.
	MeZO MeZOOptions

	// LoRA shape (zero values take NewLoRA's defaults) and start.
	Rank    int
	Alpha   float32
	Projs   []engine.Proj
	Layers  []int
	Init    string // InitRandom or InitData
	InitRef int    // InitData: samples of the model's own text that A should leave alone

	PrefixLen int // prefix rows, initialised from the K/V of the training prompts' tokens

	// Replay adds this many of the base model's own samples (from BOS,
	// ReplayLen tokens each) to the data, scored by KL(base ‖ adapted):
	// rehearsal, so that training keeps what the model did.
	Replay, ReplayLen int

	// Pace, when set, runs before every forward pass of the run, set-up
	// included (see Scorer.SetPace).
	Pace func()
}

// DefaultRecipe returns the defaults of `edgectl adapt`: a rank-8 LoRA on
// q and v of every layer from a random A, batches of 16, one perturbation
// a step, seed 1, 100 steps.
func DefaultRecipe() Recipe {
	return Recipe{
		Method: MethodLoRA,
		MeZO:   MeZOOptions{Steps: 100, Samples: 1, BatchSize: 16, Seed: 1, RehearsalWeight: 1},
		Rank:   8, Alpha: 16, Projs: []engine.Proj{engine.ProjQ, engine.ProjV},
		Init: InitRandom, InitRef: 64, PrefixLen: 5, ReplayLen: 24,
	}
}

// WithDefaults fills the learning rate and ε the method decides when they
// are 0: MeZO's LoRA settings (1e-4, 1e-2) or its prefix settings (1e-2,
// 1e-1).
func (r Recipe) WithDefaults() Recipe {
	if r.MeZO.LR == 0 {
		r.MeZO.LR = map[string]float64{MethodLoRA: 1e-4, MethodPrefix: 1e-2}[r.Method]
	}
	if r.MeZO.Eps == 0 {
		r.MeZO.Eps = map[string]float64{MethodLoRA: 1e-2, MethodPrefix: 1e-1}[r.Method]
	}
	return r
}

// Check reports the settings that cannot run, all at once.
func (r Recipe) Check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch r.Method {
	case MethodLoRA:
		if r.Init != InitRandom && r.Init != InitData {
			bad("init %q: want %s or %s", r.Init, InitRandom, InitData)
		}
		if r.Init == InitData && r.InitRef < 1 {
			bad("init %s needs at least 1 reference sample, have %d", InitData, r.InitRef)
		}
	case MethodPrefix:
		if r.PrefixLen < 1 {
			bad("a prefix needs at least 1 row, have %d", r.PrefixLen)
		}
	default:
		bad("method %q: want %s or %s", r.Method, MethodLoRA, MethodPrefix)
	}
	if r.MeZO.Steps < 1 {
		bad("steps %d: want at least 1", r.MeZO.Steps)
	}
	if r.Replay < 0 || r.Replay > 0 && r.ReplayLen < 1 {
		bad("replay %d of %d tokens: want none, or samples of at least 1 token", r.Replay, r.ReplayLen)
	}
	return errors.Join(errs...)
}

// InitRefLen is the length of InitData's reference samples.
const InitRefLen = 48

// InitRefSeed offsets the sampler seeds of InitData's reference text
// from those of replay and of adapt eval's held-out samples.
const InitRefSeed = 1 << 41

// InitRidge is InitData's whitening ridge, relative to the mean
// eigenvalue of the reference inputs' second moment.
const InitRidge = 1e-2

// ReplaySeed offsets the sampler seeds of replay samples from the small
// seeds (the run's seed + i) of held-out samples (`edgectl adapt eval`),
// so that the model is never measured on what it rehearsed.
const ReplaySeed = 1 << 40

// Run is a prepared adaptation: the adapter and its trainer.
type Run struct {
	*MeZO
	Adapter Trainable
}

// Prepare builds r's run on the training pairs train: the adapter (its A
// chosen from the data for InitData), the replay samples with the base
// model's distributions as their reference, and the trainer over train
// and those samples. e runs m, with an adapt.Set as Hooks.Delta for a
// LoRA; bos is the tokenizer's BOS id, or -1 without a tokenizer (replay
// and InitData sample from BOS and need it). The caller closes the run.
func (r Recipe) Prepare(e *engine.Engine, m *model.Model, bos int32, train []Example) (*Run, error) {
	r = r.WithDefaults()
	if err := r.Check(); err != nil {
		return nil, fmt.Errorf("adapt: %w", err)
	}
	if len(train) == 0 {
		return nil, errors.New("adapt: no training examples")
	}
	a, err := r.newAdapter(e, m, bos, train)
	if err != nil {
		return nil, err
	}
	replay, err := r.replaySamples(e, bos)
	if err != nil {
		return nil, err
	}
	mz, err := NewMeZO(e, a, append(append([]Example(nil), train...), replay...), r.MeZO)
	if err != nil {
		return nil, err
	}
	mz.SetPace(r.Pace)
	return &Run{MeZO: mz, Adapter: a}, nil
}

// Save writes the adapter as a GGUF adapter file of tensor type typ (f32
// or f16), atomically.
func (run *Run) Save(path string, typ quant.Type) error {
	switch a := run.Adapter.(type) {
	case *LoRA:
		return SaveLoRA(path, a, typ)
	case *Prefix:
		return SavePrefix(path, a, typ)
	}
	return fmt.Errorf("adapt: save: unknown adapter %T", run.Adapter)
}

// newAdapter makes the adapter to train.
func (r Recipe) newAdapter(e *engine.Engine, m *model.Model, bos int32, train []Example) (Trainable, error) {
	if r.Method == MethodPrefix {
		var tokens []int32
		for i := 0; len(tokens) < r.PrefixLen; i++ {
			tokens = append(tokens, train[i%len(train)].Prompt...)
		}
		return NewPrefix(m, e.Backend(), tokens[:r.PrefixLen])
	}
	lo, err := NewLoRA(m, LoRAOptions{Rank: r.Rank, Alpha: r.Alpha, Projs: r.Projs, Layers: r.Layers, Seed: r.MeZO.Seed})
	if err != nil {
		return nil, err
	}
	if r.Init == InitData {
		if err := r.initFromData(e, bos, lo, train); err != nil {
			return nil, err
		}
	}
	return lo, nil
}

// initFromData sets every pair's A from the inputs of its projection: the
// training examples' scored rows against InitRef samples of the base
// model's own text (see LoRA.InitFromData).
func (r Recipe) initFromData(e *engine.Engine, bos int32, lo *LoRA, train []Example) error {
	base := r.baseScorer(e)
	defer base.Close()
	ref, err := base.SelfSamples(bos, r.InitRef, InitRefLen, InitRefSeed+r.MeZO.Seed<<20)
	if err != nil {
		return fmt.Errorf("adapt: init from data: %w", err)
	}
	if err := lo.InitFromData(base, train, ref, InitRidge); err != nil {
		return fmt.Errorf("adapt: init from data: %w", err)
	}
	return nil
}

// replaySamples draws Replay sequences from the base model, before any
// adapter is attached, with the base model's distributions at every token
// as their reference: training then pays KL(base ‖ adapted) on them.
func (r Recipe) replaySamples(e *engine.Engine, bos int32) ([]Example, error) {
	base := r.baseScorer(e)
	defer base.Close()
	ex, err := base.Rehearsal(bos, r.Replay, r.ReplayLen, ReplaySeed+r.MeZO.Seed<<20)
	if err != nil {
		return nil, fmt.Errorf("adapt: replay: %w", err)
	}
	return ex, nil
}

func (r Recipe) baseScorer(e *engine.Engine) *Scorer {
	s := NewScorer(e, nil)
	s.SetPace(r.Pace)
	return s
}

// Footprint is the most a run of r on train holds at once for a model of
// config c: seqs sequences, each with a KV cache of ctx tokens (the
// engine's context must hold ctx), and held bytes of other data: the
// replay samples' reference distributions, and for a LoRA above layer 0
// the residual rows entering its first layer, kept per example. Scorers
// keep their sequences between calls, so seqs is the largest group any
// stage runs together: a step's batch, all replay samples (References),
// and for InitData all training pairs and all reference samples
// (Inputs).
func (r Recipe) Footprint(train []Example, c model.Config) (seqs, ctx int, held int64) {
	rows := 0
	if r.Method == MethodPrefix {
		rows = r.PrefixLen
	}
	tokens := 0
	for _, ex := range train {
		n := len(ex.Prompt) + len(ex.Completion)
		ctx, tokens = max(ctx, rows+n), tokens+n
	}
	data := len(train) + r.Replay
	seqs = r.MeZO.BatchSize
	if seqs <= 0 || seqs > data {
		seqs = data
	}
	if r.Replay > 0 {
		ctx = max(ctx, rows+1+r.ReplayLen)
		seqs = max(seqs, r.Replay)
		tokens += r.Replay * (1 + r.ReplayLen)
		held = int64(r.Replay) * int64(r.ReplayLen) * int64(c.NVocab) * 4
	}
	if r.Method == MethodLoRA {
		if r.Init == InitData {
			ctx = max(ctx, 1+InitRefLen)
			seqs = max(seqs, len(train), r.InitRef)
		}
		if len(r.Layers) > 0 && slices.Min(r.Layers) > 0 {
			held += int64(tokens) * int64(c.NEmbd) * 4
		}
	}
	return seqs, ctx, held
}
