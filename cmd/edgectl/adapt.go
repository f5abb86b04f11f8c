package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// adaptFlags are the flags of edgectl adapt beyond the engine's.
type adaptFlags struct {
	method, data, eval, out, outType, projs, layers, init, log, ckpt, resume, schedule string
	steps, batch, samples, rank, prefixLen, ckptEvery, replay, replayLen, initRef      int
	lr, eps, decay, alpha, maxGrad, replayWeight, lossFloor                            float64
	seed                                                                               uint64
}

func (a *adaptFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.method, "method", "lora", "adapter to train: lora or prefix")
	fs.StringVar(&a.data, "data", "", "training `file`: JSONL of {\"prompt\", \"completion\"} or {\"prompt_ids\", \"completion_ids\"} (required)")
	fs.StringVar(&a.eval, "eval", "", "evaluation `file` (same format): its loss is reported before and after")
	fs.StringVar(&a.out, "out", "", "adapter `file` to write (GGUF; required)")
	fs.StringVar(&a.outType, "type", "f32", "tensor type of the adapter file: f32 or f16")
	fs.IntVar(&a.steps, "steps", 100, "MeZO steps")
	fs.Float64Var(&a.lr, "lr", 0, "learning rate (0: 1e-4 for lora, 1e-2 for prefix)")
	fs.Float64Var(&a.eps, "eps", 0, "perturbation scale ε (0: 1e-2 for lora, 1e-1 for prefix)")
	fs.Float64Var(&a.decay, "weight-decay", 0, "weight decay λ")
	fs.StringVar(&a.schedule, "schedule", "constant", "learning-rate schedule: constant or linear")
	fs.IntVar(&a.batch, "batch", 16, "examples per step")
	fs.IntVar(&a.samples, "samples", 1, "perturbations per step (n-SPSA)")
	fs.Float64Var(&a.maxGrad, "max-grad", 0, "clip the projected gradient to ±`bound` (0: no bound)")
	fs.Uint64Var(&a.seed, "seed", 1, "seed of the perturbations, batches and initial adapter")
	fs.IntVar(&a.rank, "rank", 8, "LoRA rank")
	fs.Float64Var(&a.alpha, "alpha", 16, "LoRA alpha (scale alpha/rank)")
	fs.StringVar(&a.projs, "projs", "q,v", "LoRA projections: comma-separated of q, k, v, o, gate, up, down")
	fs.StringVar(&a.layers, "layers", "", "LoRA `layers`: comma-separated (empty: all)")
	fs.StringVar(&a.init, "init", "random", "LoRA initialisation: random (A random, both trained) or data (A from the training inputs against the model's own text, frozen; only B trained)")
	fs.IntVar(&a.initRef, "init-ref", 64, "with --init data: samples of the model's own text (48 tokens each) that A should leave alone")
	fs.IntVar(&a.prefixLen, "prefix-len", 5, "prefix rows, initialised from the K/V of the training prompts' tokens")
	fs.IntVar(&a.replay, "replay", 0, "add this many of the base model's own samples (from BOS) to the training data, scored by KL(base ‖ adapted) at every token, so that training keeps what the model did (rehearsal)")
	fs.IntVar(&a.replayLen, "replay-len", 24, "tokens per replay sample")
	fs.Float64Var(&a.replayWeight, "replay-weight", 1, "weight of a replay token in the loss's mean, against 1 for a training target: more replay samples at a lower weight cover more of the model's text without drowning the pairs")
	fs.Float64Var(&a.lossFloor, "loss-floor", 0, "count a training token's cross-entropy as at least this (nats) in the loss MeZO descends, so tokens already learnt stop pulling on the adapter (0: none)")
	fs.StringVar(&a.log, "log", "", "JSON-lines log `file` of every step")
	fs.StringVar(&a.ckpt, "checkpoint", "", "checkpoint `file` written every --checkpoint-every steps and at the end")
	fs.IntVar(&a.ckptEvery, "checkpoint-every", 100, "steps between checkpoints")
	fs.StringVar(&a.resume, "resume", "", "continue the run saved in this checkpoint `file` (its options and step win)")
}

func runAdapt(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "eval" {
		return runAdaptEval(ctx, args[1:], stdout, stderr)
	}
	fs := newFlags("adapt", "--model M --method lora|prefix --data train.jsonl --steps N --out adapter.gguf", stderr)
	var ef engineFlags
	ef.register(fs, "f32")
	var af adaptFlags
	af.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if ef.model == "" || af.data == "" || af.out == "" {
		return usageError(fs, "--model, --data and --out are required")
	}
	if af.method != "lora" && af.method != "prefix" {
		return usageError(fs, "--method %q: want lora or prefix", af.method)
	}
	outType, err := quant.ParseType(af.outType)
	if err != nil || (outType != quant.F32 && outType != quant.F16) {
		return usageError(fs, "--type %q: want f32 or f16", af.outType)
	}
	opts, err := af.mezoOptions()
	if err != nil {
		return usageError(fs, "%v", err)
	}
	set := adapt.NewSet()
	l, err := ef.open(engine.Hooks{Delta: set})
	if err != nil {
		return err
	}
	defer l.Close()
	tok, _ := l.tokenizer() // nil: only id examples can be read
	train, err := readExamplesFile(af.data, tok)
	if err != nil {
		return err
	}
	var eval []adapt.Example
	if af.eval != "" {
		if eval, err = readExamplesFile(af.eval, tok); err != nil {
			return err
		}
	}
	trainee, save, err := af.newAdapter(l, tok, train)
	if err != nil {
		return err
	}
	replay, err := af.replaySamples(l, tok)
	if err != nil {
		return err
	}
	mz, err := adapt.NewMeZO(l.engine, trainee, append(append([]adapt.Example(nil), train...), replay...), opts)
	if err != nil {
		return err
	}
	defer mz.Close()
	if af.resume != "" {
		if err := mz.Restore(af.resume); err != nil {
			return err
		}
	}
	return af.train(ctx, mz, train, eval, func() error { return save(af.out, outType) }, stdout, stderr)
}

func (a *adaptFlags) mezoOptions() (adapt.MeZOOptions, error) {
	o := adapt.MeZOOptions{LR: a.lr, Eps: a.eps, WeightDecay: a.decay, Steps: a.steps, Samples: a.samples,
		BatchSize: a.batch, MaxGrad: a.maxGrad, Seed: a.seed, RehearsalWeight: a.replayWeight, LossFloor: a.lossFloor}
	if o.LR == 0 {
		o.LR = map[string]float64{"lora": 1e-4, "prefix": 1e-2}[a.method]
	}
	if o.Eps == 0 {
		o.Eps = map[string]float64{"lora": 1e-2, "prefix": 1e-1}[a.method]
	}
	var err error
	if o.Schedule, err = parseSchedule(a.schedule); err != nil {
		return o, err
	}
	if a.steps <= 0 {
		return o, fmt.Errorf("--steps %d: want at least 1", a.steps)
	}
	return o, nil
}

// newAdapter makes the adapter to train and the function that saves it.
func (a *adaptFlags) newAdapter(l *loaded, tok *model.Tokenizer, train []adapt.Example) (adapt.Trainable, func(string, quant.Type) error, error) {
	if a.method == "prefix" {
		var tokens []int32
		for i := 0; len(tokens) < a.prefixLen; i++ {
			tokens = append(tokens, train[i%len(train)].Prompt...)
		}
		p, err := adapt.NewPrefix(l.model, l.engine.Backend(), tokens[:a.prefixLen])
		if err != nil {
			return nil, nil, err
		}
		return p, func(path string, t quant.Type) error { return adapt.SavePrefix(path, p, t) }, nil
	}
	var projs []engine.Proj
	for _, s := range strings.Split(a.projs, ",") {
		p, err := adapt.ParseProj(strings.TrimSpace(s))
		if err != nil {
			return nil, nil, err
		}
		projs = append(projs, p)
	}
	var layers []int
	if a.layers != "" {
		var err error
		if layers, err = parseLayers(a.layers); err != nil {
			return nil, nil, err
		}
	}
	lo, err := adapt.NewLoRA(l.model, adapt.LoRAOptions{Rank: a.rank, Alpha: float32(a.alpha), Projs: projs, Layers: layers, Seed: a.seed})
	if err != nil {
		return nil, nil, err
	}
	switch a.init {
	case "random":
	case "data":
		if err := a.initFromData(l, tok, lo, train); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("--init %q: want random or data", a.init)
	}
	return lo, func(path string, t quant.Type) error { return adapt.SaveLoRA(path, lo, t) }, nil
}

// initRefSeed offsets the sampler seeds of --init data's reference text
// from those of replay and of adapt eval's held-out samples.
const initRefSeed = 1 << 41

// initRidge is the whitening ridge of --init data, relative to the mean
// eigenvalue of the reference inputs' second moment.
const initRidge = 1e-2

// initFromData sets every pair's A from the inputs of its projection: the
// training examples' scored rows against --init-ref samples of the base
// model's own text (see adapt.LoRA.InitFromData).
func (a *adaptFlags) initFromData(l *loaded, tok *model.Tokenizer, lo *adapt.LoRA, train []adapt.Example) error {
	base := adapt.NewScorer(l.engine, nil)
	defer base.Close()
	ref, err := base.SelfSamples(bosOf(tok), a.initRef, 48, initRefSeed+a.seed<<20)
	if err != nil {
		return fmt.Errorf("--init data: %w", err)
	}
	if err := lo.InitFromData(base, train, ref, initRidge); err != nil {
		return fmt.Errorf("--init data: %w", err)
	}
	return nil
}

// replaySeed offsets the sampler seeds of replay samples from the small
// seeds (--seed + i) of adapt eval's held-out samples, so that the model
// is never measured on what it rehearsed.
const replaySeed = 1 << 40

// replaySamples draws --replay sequences from the base model, before any
// adapter is attached, with the base model's distributions at every token
// as their reference: training then pays KL(base ‖ adapted) on them.
func (a *adaptFlags) replaySamples(l *loaded, tok *model.Tokenizer) ([]adapt.Example, error) {
	base := adapt.NewScorer(l.engine, nil)
	defer base.Close()
	ex, err := base.Rehearsal(bosOf(tok), a.replay, a.replayLen, replaySeed+a.seed<<20)
	if err != nil {
		return nil, fmt.Errorf("--replay: %w", err)
	}
	return ex, nil
}

// stepLog is one line of the JSON log.
type stepLog struct {
	Step     int     `json:"step"`
	Loss     float64 `json:"loss"`
	Grad     float64 `json:"grad"`
	LR       float64 `json:"lr"`
	Skipped  int     `json:"skipped,omitempty"`
	Examples float64 `json:"examples_per_s"`
	Elapsed  float64 `json:"elapsed_s"`
}

func (a *adaptFlags) train(ctx context.Context, mz *adapt.MeZO, train, eval []adapt.Example, save func() error, stdout, stderr io.Writer) error {
	var log *json.Encoder
	if a.log != "" {
		f, err := os.Create(a.log)
		if err != nil {
			return err
		}
		defer f.Close()
		log = json.NewEncoder(f)
	}
	report := func() (float64, float64, error) {
		tl, err := mz.Loss(train)
		if err != nil {
			return 0, 0, err
		}
		el := 0.0
		if eval != nil {
			if el, err = mz.Loss(eval); err != nil {
				return 0, 0, err
			}
		}
		return tl, el, nil
	}
	tl0, el0, err := report()
	if err != nil {
		return err
	}
	total := mz.Options().Steps
	perStep := float64(mz.Options().BatchSize * 2 * max(1, mz.Options().Samples))
	start, first := time.Now(), mz.Steps()
	for mz.Steps() < total {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := mz.Step()
		if err != nil {
			return err
		}
		el := time.Since(start).Seconds()
		done := r.Step - first
		rate := float64(done) * perStep / el
		eta := time.Duration(float64(total-r.Step) * el / float64(done) * float64(time.Second)).Round(time.Second)
		fmt.Fprintf(stderr, "\rstep %d/%d  loss %.4f  %.1f examples/s  ETA %v   ", r.Step, total, r.Loss, rate, eta)
		if log != nil {
			if err := log.Encode(stepLog{r.Step, r.Loss, r.Grad, r.LR, r.Skipped, rate, el}); err != nil {
				return err
			}
		}
		if a.ckpt != "" && (r.Step%max(1, a.ckptEvery) == 0 || r.Step == total) {
			if err := mz.SaveCheckpoint(a.ckpt); err != nil {
				return err
			}
		}
	}
	fmt.Fprintln(stderr)
	tl1, el1, err := report()
	if err != nil {
		return err
	}
	if err := save(); err != nil {
		return err
	}
	res := map[string]any{"out": a.out, "method": a.method, "steps": mz.Steps(),
		"train_loss_before": tl0, "train_loss_after": tl1, "wall_s": time.Since(start).Seconds()}
	if eval != nil {
		res["eval_loss_before"], res["eval_loss_after"] = el0, el1
	}
	return json.NewEncoder(stdout).Encode(res)
}

func readExamplesFile(path string, tok *model.Tokenizer) ([]adapt.Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return adapt.ReadExamples(f, path, tok)
}
