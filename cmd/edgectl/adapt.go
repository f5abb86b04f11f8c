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

// runFlags are the settings of an adaptation run: the flags edgectl
// adapt and edgectl jobs submit share.
type runFlags struct {
	method, data, outType, projs, layers, init, schedule               string
	steps, batch, samples, rank, prefixLen, replay, replayLen, initRef int
	lr, eps, decay, alpha, maxGrad, replayWeight, lossFloor            float64
	seed                                                               uint64
}

func (a *runFlags) register(fs *flag.FlagSet) {
	def := adapt.DefaultRecipe()
	fs.StringVar(&a.method, "method", def.Method, "adapter to train: lora or prefix")
	fs.StringVar(&a.data, "data", "", "training `file`: JSONL of {\"prompt\", \"completion\"} or {\"prompt_ids\", \"completion_ids\"} (required)")
	fs.StringVar(&a.outType, "type", "f32", "tensor type of the adapter file: f32 or f16")
	fs.IntVar(&a.steps, "steps", def.MeZO.Steps, "MeZO steps")
	fs.Float64Var(&a.lr, "lr", 0, "learning rate (0: 1e-4 for lora, 1e-2 for prefix)")
	fs.Float64Var(&a.eps, "eps", 0, "perturbation scale ε (0: 1e-2 for lora, 1e-1 for prefix)")
	fs.Float64Var(&a.decay, "weight-decay", 0, "weight decay λ")
	fs.StringVar(&a.schedule, "schedule", "constant", "learning-rate schedule: constant or linear")
	fs.IntVar(&a.batch, "batch", def.MeZO.BatchSize, "examples per step")
	fs.IntVar(&a.samples, "samples", def.MeZO.Samples, "perturbations per step (n-SPSA)")
	fs.Float64Var(&a.maxGrad, "max-grad", 0, "clip the projected gradient to ±`bound` (0: no bound)")
	fs.Uint64Var(&a.seed, "seed", def.MeZO.Seed, "seed of the perturbations, batches and initial adapter")
	fs.IntVar(&a.rank, "rank", def.Rank, "LoRA rank")
	fs.Float64Var(&a.alpha, "alpha", float64(def.Alpha), "LoRA alpha (scale alpha/rank)")
	fs.StringVar(&a.projs, "projs", "q,v", "LoRA projections: comma-separated of q, k, v, o, gate, up, down")
	fs.StringVar(&a.layers, "layers", "", "LoRA `layers`: comma-separated (empty: all)")
	fs.StringVar(&a.init, "init", def.Init, "LoRA initialisation: random (A random, both trained) or data (A from the training inputs against the model's own text, frozen; only B trained)")
	fs.IntVar(&a.initRef, "init-ref", def.InitRef, "with --init data: samples of the model's own text (48 tokens each) that A should leave alone")
	fs.IntVar(&a.prefixLen, "prefix-len", def.PrefixLen, "prefix rows, initialised from the K/V of the training prompts' tokens")
	fs.IntVar(&a.replay, "replay", 0, "add this many of the base model's own samples (from BOS) to the training data, scored by KL(base ‖ adapted) at every token, so that training keeps what the model did (rehearsal)")
	fs.IntVar(&a.replayLen, "replay-len", def.ReplayLen, "tokens per replay sample")
	fs.Float64Var(&a.replayWeight, "replay-weight", def.MeZO.RehearsalWeight, "weight of a replay token in the loss's mean, against 1 for a training target: more replay samples at a lower weight cover more of the model's text without drowning the pairs")
	fs.Float64Var(&a.lossFloor, "loss-floor", 0, "count a training token's cross-entropy as at least this (nats) in the loss MeZO descends, so tokens already learnt stop pulling on the adapter (0: none)")
}

// adaptFlags are the flags of edgectl adapt beyond the engine's.
type adaptFlags struct {
	runFlags
	eval, out, log, ckpt, resume string
	ckptEvery                    int
}

func (a *adaptFlags) register(fs *flag.FlagSet) {
	a.runFlags.register(fs)
	fs.StringVar(&a.eval, "eval", "", "evaluation `file` (same format): its loss is reported before and after")
	fs.StringVar(&a.out, "out", "", "adapter `file` to write (GGUF; required)")
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
	outType, err := quant.ParseType(af.outType)
	if err != nil || (outType != quant.F32 && outType != quant.F16) {
		return usageError(fs, "--type %q: want f32 or f16", af.outType)
	}
	recipe, err := af.recipe()
	if err != nil {
		return usageError(fs, "%v", err)
	}
	l, err := ef.open(engine.Hooks{Delta: adapt.NewSet()})
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
	run, err := recipe.Prepare(l.engine, l.model, bosOf(tok), train)
	if err != nil {
		return err
	}
	defer run.Close()
	if af.resume != "" {
		if err := run.Restore(af.resume); err != nil {
			return err
		}
	}
	return af.train(ctx, run.MeZO, train, eval, func() error { return run.Save(af.out, outType) }, stdout, stderr)
}

// recipe is the run the flags describe.
func (a *runFlags) recipe() (adapt.Recipe, error) {
	r := adapt.Recipe{
		Method: a.method,
		MeZO: adapt.MeZOOptions{LR: a.lr, Eps: a.eps, WeightDecay: a.decay, Steps: a.steps, Samples: a.samples,
			BatchSize: a.batch, MaxGrad: a.maxGrad, Seed: a.seed, RehearsalWeight: a.replayWeight, LossFloor: a.lossFloor},
		Rank: a.rank, Alpha: float32(a.alpha), Init: a.init, InitRef: a.initRef, PrefixLen: a.prefixLen,
		Replay: a.replay, ReplayLen: a.replayLen,
	}
	var err error
	if r.MeZO.Schedule, err = parseSchedule(a.schedule); err != nil {
		return r, err
	}
	for _, s := range strings.Split(a.projs, ",") {
		p, err := adapt.ParseProj(strings.TrimSpace(s))
		if err != nil {
			return r, err
		}
		r.Projs = append(r.Projs, p)
	}
	if a.layers != "" {
		var err error
		if r.Layers, err = parseLayers(a.layers); err != nil {
			return r, err
		}
	}
	return r, r.Check()
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
