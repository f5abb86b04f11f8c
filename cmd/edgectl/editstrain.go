package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/quant"
)

// editFlags are the flags that edits locate and edits train share beyond
// the engine's: the edits, the localized adapter, the optimizer,
// rehearsal, the stop rule and the measures. The optimizer's settings
// left out take its defaults (adapt.DefaultEditOptions).
type editFlags struct {
	fs                                                                                             *flag.FlagSet
	data, schedule, optimizer                                                                      string
	rank, steps, batch, samples, replay, replayLen, replayGreedy, initRef, localityLen, checkEvery int
	alpha, lr, eps, replayWeight, lossFloor, stopLoss                                              float64
	seed                                                                                           uint64
	asJSON                                                                                         bool
}

func (f *editFlags) register(fs *flag.FlagSet, steps int) {
	f.fs = fs
	def, rec := adapt.DefaultEditOptions(), adapt.DefaultEditRecipe(0)
	fs.StringVar(&f.data, "data", "", "edits `file`: JSONL of {\"prompt\", \"target\", \"rephrases\": [...], \"locality_prompts\": [...]} (required)")
	fs.StringVar(&f.optimizer, "optimizer", def.Optimizer, "grad: Adam on the exact gradient of the matrix; mezo: MeZO, forward passes only")
	fs.IntVar(&f.rank, "rank", rec.Adapter.Rank, "rank of the LoRA on the layer's MLP down-projection, its A chosen from the edits and frozen (0: a full delta of the projection)")
	fs.Float64Var(&f.alpha, "alpha", float64(rec.Adapter.Alpha), "LoRA alpha (scale alpha/rank)")
	fs.IntVar(&f.initRef, "init-ref", rec.InitRef, "samples of the model's own text (48 tokens each) that the LoRA's A should leave alone")
	fs.IntVar(&f.steps, "steps", steps, "most optimizer steps (for MeZO also the length of the linear schedule)")
	fs.Float64Var(&f.lr, "lr", 0, fmt.Sprintf("learning rate (default: %g for grad, %g for mezo)", def.Grad.Adam.LR, def.MeZO.LR))
	fs.Float64Var(&f.eps, "eps", def.MeZO.Eps, "MeZO's perturbation scale ε")
	fs.StringVar(&f.schedule, "schedule", "linear", "MeZO's learning-rate schedule: constant or linear")
	fs.IntVar(&f.batch, "batch", 0, fmt.Sprintf("examples per step, edits and rehearsal samples drawn from one shuffle per epoch (default: all for grad, %d for mezo)", def.MeZO.BatchSize))
	fs.IntVar(&f.samples, "samples", def.MeZO.Samples, "MeZO's perturbations per step (n-SPSA)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the batches, perturbations and samples of the model's text")
	fs.IntVar(&f.replay, "replay", rec.Replay, "rehearsal: this many of the base model's own samples, scored by KL(base ‖ adapted) at every token, so that training keeps what the model did (0: none)")
	fs.IntVar(&f.replayLen, "replay-len", rec.ReplayLen, "tokens per rehearsal sample")
	fs.IntVar(&f.replayGreedy, "replay-greedy", rec.ReplayGreedy, "tokens of the base model's greedy continuation after each rehearsal sample (the shape of the locality measure)")
	fs.Float64Var(&f.replayWeight, "replay-weight", 0, fmt.Sprintf("weight of a rehearsal token in the loss, against 1 for an edit's target token (default: %g for grad, %g for mezo)", def.Grad.RehearsalWeight, def.MeZO.RehearsalWeight))
	fs.Float64Var(&f.lossFloor, "loss-floor", 0, fmt.Sprintf("count a target token's cross-entropy as at least this (nats) in the loss descended, so learnt tokens stop pulling (default: %g for grad, %g for mezo)", def.Grad.LossFloor, def.MeZO.LossFloor))
	fs.Float64Var(&f.stopLoss, "stop-loss", def.StopLoss, "stop once every edit's loss (the mean cross-entropy of its target tokens) is below this")
	fs.IntVar(&f.checkEvery, "check-every", def.CheckEvery, "steps between checks of the stop rule")
	fs.IntVar(&f.localityLen, "locality-len", rec.LocalityLen, "tokens of the base model's greedy continuation of each locality prompt on which locality is measured")
	fs.BoolVar(&f.asJSON, "json", false, "print the results as JSON (with every edit's metrics)")
}

// recipe is the run the flags describe on layer.
func (f *editFlags) recipe(layer int) (adapt.EditRecipe, error) {
	r := adapt.DefaultEditRecipe(layer)
	r.Adapter.Rank, r.Adapter.Alpha = f.rank, float32(f.alpha)
	r.InitRef, r.Replay, r.ReplayLen, r.ReplayGreedy, r.LocalityLen = f.initRef, f.replay, f.replayLen, f.replayGreedy, f.localityLen
	o := &r.Train
	o.Optimizer, o.Steps, o.StopLoss, o.CheckEvery = f.optimizer, f.steps, f.stopLoss, f.checkEvery
	o.MeZO.Eps, o.MeZO.Samples, o.MeZO.Seed = f.eps, f.samples, f.seed // Prepare gives Grad the same seed
	var err error
	if o.MeZO.Schedule, err = parseSchedule(f.schedule); err != nil {
		return r, err
	}
	// The settings both optimizers have, where given.
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "lr":
			o.MeZO.LR, o.Grad.Adam.LR = f.lr, f.lr
		case "batch":
			o.MeZO.BatchSize, o.Grad.BatchSize = f.batch, f.batch
		case "replay-weight":
			o.MeZO.RehearsalWeight, o.Grad.RehearsalWeight = f.replayWeight, f.replayWeight
		case "loss-floor":
			o.MeZO.LossFloor, o.Grad.LossFloor = f.lossFloor, f.lossFloor
		}
	})
	if f.optimizer != adapt.OptimizerGrad && f.optimizer != adapt.OptimizerMeZO {
		return r, fmt.Errorf("--optimizer %q: want grad or mezo", f.optimizer)
	}
	if f.steps <= 0 || f.checkEvery <= 0 || f.localityLen <= 0 {
		return r, fmt.Errorf("--steps %d, --check-every %d, --locality-len %d: want at least 1", f.steps, f.checkEvery, f.localityLen)
	}
	if f.rank < 0 {
		return r, fmt.Errorf("--rank %d: want ≥ 0", f.rank)
	}
	return r, nil
}

// editSession is what both commands open once: the model and the edits.
type editSession struct {
	l     *loaded
	f     *editFlags
	bos   int32
	edits []adapt.Edit
}

func openEdits(ef *engineFlags, f *editFlags) (*editSession, error) {
	l, err := ef.open(engine.Hooks{Delta: adapt.NewSet()})
	if err != nil {
		return nil, err
	}
	s := &editSession{l: l, f: f}
	if err := s.read(); err != nil {
		l.Close()
		return nil, err
	}
	return s, nil
}

func (s *editSession) read() error {
	tok, err := s.l.tokenizer()
	if err != nil {
		return err
	}
	r, err := os.Open(s.f.data)
	if err != nil {
		return err
	}
	defer r.Close()
	s.bos = tok.BOS()
	s.edits, err = adapt.ReadEdits(r, s.f.data, tok)
	return err
}

func (s *editSession) Close() { s.l.Close() }

// prepare prepares the flags' run on layer (-1: the last).
func (s *editSession) prepare(layer int) (*adapt.EditRun, error) {
	if layer == -1 {
		layer = s.l.model.Config.NLayer - 1
	}
	r, err := s.f.recipe(layer)
	if err != nil {
		return nil, err
	}
	return r.Prepare(s.l.engine, s.l.model, s.bos, s.edits)
}

// editRun is one training run and its measures.
type editRun struct {
	Layer int `json:"layer"`
	Steps int `json:"steps"`
	// Learnt: the run stopped because every edit's loss fell below
	// --stop-loss, not at --steps.
	Learnt  bool              `json:"learnt"`
	WallS   float64           `json:"wall_s"`
	Metrics adapt.EditMetrics `json:"metrics"`
}

// loopOptions are what edits train adds to a run: a step log and
// checkpoints.
type loopOptions struct {
	log       *json.Encoder
	ckpt      string
	ckptEvery int
}

// train runs tr to its end, showing progress on stderr, and measures the
// adapter it trained.
func train(ctx context.Context, tr *adapt.EditRun, loop loopOptions, stderr io.Writer) (editRun, error) {
	layer := tr.Adapter.Pairs[0].Layer
	run := editRun{Layer: layer}
	start, first := time.Now(), tr.Steps()
	o := tr.Options()
	total, perStep := o.Steps, float64(min(o.Grad.BatchSize, tr.Examples()))
	switch {
	case o.Optimizer == adapt.OptimizerMeZO:
		perStep = float64(min(o.MeZO.BatchSize, tr.Examples()) * 2 * o.MeZO.Samples)
	case o.Grad.BatchSize == 0:
		perStep = float64(tr.Examples())
	}
	worst := "-"
	for {
		if err := ctx.Err(); err != nil {
			return run, err
		}
		r, err := tr.Step()
		if err != nil {
			return run, err
		}
		if r.Losses != nil {
			worst = fmt.Sprintf("%.3f", slices.Max(r.Losses))
		}
		if r.Done {
			break
		}
		el := time.Since(start).Seconds()
		done := float64(r.Step - first)
		eta := time.Duration(float64(total-r.Step) * el / done * float64(time.Second)).Round(time.Second)
		fmt.Fprintf(stderr, "\rlayer %d  step %d/%d  loss %.4f  worst edit %s  %.1f steps/s  ETA %v   ", layer, r.Step, total, r.Loss, worst, done/el, eta)
		if loop.log != nil {
			if err := loop.log.Encode(stepLog{r.Step, r.Loss, r.Grad, r.LR, r.Skipped, done * perStep / el, el}); err != nil {
				return run, err
			}
		}
		if loop.ckpt != "" && r.Step%loop.ckptEvery == 0 {
			if err := tr.SaveCheckpoint(loop.ckpt); err != nil {
				return run, err
			}
		}
	}
	fmt.Fprintln(stderr)
	if loop.ckpt != "" {
		if err := tr.SaveCheckpoint(loop.ckpt); err != nil {
			return run, err
		}
	}
	run.Steps, run.Learnt, run.WallS = tr.Steps(), tr.Learnt(), time.Since(start).Seconds()
	var err error
	run.Metrics, err = tr.Measure()
	return run, err
}

// runEditsTrain is edgectl edits train: LocFT-BF on one layer's
// down-projection until every edit is learnt, then the edit metrics of
// the base model and the edited one.
func runEditsTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("edits train", "--model M --data edits.jsonl --out adapter.gguf [--layer L]", stderr)
	var ef engineFlags
	ef.register(fs, "f32")
	var f editFlags
	f.register(fs, adapt.DefaultEditOptions().Steps)
	out := fs.String("out", "", "adapter `file` to write (GGUF LoRA; required)")
	outType := fs.String("type", "f32", "tensor type of the adapter file: f32 or f16")
	layer := fs.Int("layer", -1, "layer whose down-projection is adapted (-1: the last; edits locate chooses)")
	logPath := fs.String("log", "", "JSON-lines log `file` of every step")
	ckpt := fs.String("checkpoint", "", "checkpoint `file` written every --checkpoint-every steps and at the end")
	ckptEvery := fs.Int("checkpoint-every", 1000, "steps between checkpoints")
	resume := fs.String("resume", "", "continue the run saved in this checkpoint `file` (give the same --data and --seed; its MeZO options and step win)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if ef.model == "" || f.data == "" || *out == "" {
		return usageError(fs, "--model, --data and --out are required")
	}
	typ, err := quant.ParseType(*outType)
	if err != nil || (typ != quant.F32 && typ != quant.F16) {
		return usageError(fs, "--type %q: want f32 or f16", *outType)
	}
	if *ckptEvery <= 0 {
		return usageError(fs, "--checkpoint-every %d: want at least 1", *ckptEvery)
	}
	if _, err := f.recipe(0); err != nil {
		return usageError(fs, "%v", err)
	}
	s, err := openEdits(&ef, &f)
	if err != nil {
		return err
	}
	defer s.Close()
	tr, err := s.prepare(*layer)
	if err != nil {
		return err
	}
	defer tr.Close()
	if *resume != "" {
		if err := tr.Restore(*resume); err != nil {
			return err
		}
	}
	lopts := loopOptions{ckpt: *ckpt, ckptEvery: *ckptEvery}
	if *logPath != "" {
		lf, err := os.Create(*logPath)
		if err != nil {
			return err
		}
		defer lf.Close()
		lopts.log = json.NewEncoder(lf)
	}
	run, err := train(ctx, tr, lopts, stderr)
	if err != nil {
		return err
	}
	if err := tr.Save(*out, typ); err != nil {
		return err
	}
	rep := editsTrainReport{Edits: len(s.edits), Out: *out, Base: tr.Base, Edited: run}
	if f.asJSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	return rep.print(stdout, f.stopLoss)
}

// editsTrainReport is the output of edits train.
type editsTrainReport struct {
	Edits  int               `json:"edits"`
	Out    string            `json:"out"`
	Base   adapt.EditMetrics `json:"base"`
	Edited editRun           `json:"edited"`
}

func (r editsTrainReport) print(w io.Writer, stopLoss float64) error {
	fmt.Fprintf(w, "%d edits\n", r.Edits)
	tw := metricsTable(w)
	metricsRow(tw, "base", r.Base)
	metricsRow(tw, fmt.Sprintf("layer %d", r.Edited.Layer), r.Edited.Metrics)
	if err := tw.Flush(); err != nil {
		return err
	}
	why := "--steps reached"
	if r.Edited.Learnt {
		why = fmt.Sprintf("every edit's loss below %g", stopLoss)
	}
	var missed []string
	for i, e := range r.Edited.Metrics.Edits {
		if e.Reliability < 1 {
			missed = append(missed, fmt.Sprint(i+1))
		}
	}
	fmt.Fprintf(w, "%d steps (%s) in %.0f s; wrote %s\n", r.Edited.Steps, why, r.Edited.WallS, r.Out)
	if len(missed) > 0 {
		fmt.Fprintf(w, "edits with reliability below 1, by line: %s\n", strings.Join(missed, " "))
	}
	return nil
}

func metricsTable(w io.Writer) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tloss\treliability\tgeneralization\tlocality\t")
	return tw
}

func metricsRow(w io.Writer, name string, m adapt.EditMetrics) {
	opt := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f", *v)
	}
	fmt.Fprintf(w, "%s\t%.3f\t%.3f\t%s\t%s\t\n", name, m.Loss, m.Reliability, opt(m.Generalization), opt(m.Locality))
}

// locateReport is the output of edits locate.
type locateReport struct {
	Edits  int               `json:"edits"`
	Base   adapt.EditMetrics `json:"base"`
	Layers []editRun         `json:"layers"`
	Chosen int               `json:"chosen"`
}

// runEditsLocate is edgectl edits locate: a short LocFT-BF run on each
// candidate layer's down-projection, the metrics of each, and the layer
// chosen.
func runEditsLocate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("edits locate", "--model M --data edits.jsonl [--layers 0,1,2] [--steps N]", stderr)
	var ef engineFlags
	ef.register(fs, "f32")
	var f editFlags
	f.register(fs, 1000)
	layersFlag := fs.String("layers", "", "candidate `layers`, comma-separated (empty: all)")
	minLocality := fs.Float64("min-locality", 0.9, "choose among the layers whose locality is at least this")
	if err := parse(fs, args); err != nil {
		return err
	}
	if ef.model == "" || f.data == "" {
		return usageError(fs, "--model and --data are required")
	}
	if _, err := f.recipe(0); err != nil {
		return usageError(fs, "%v", err)
	}
	var layers []int
	var err error
	if *layersFlag != "" {
		if layers, err = parseLayers(*layersFlag); err != nil {
			return usageError(fs, "%v", err)
		}
	}
	s, err := openEdits(&ef, &f)
	if err != nil {
		return err
	}
	defer s.Close()
	if layers == nil {
		for l := range s.l.model.Config.NLayer {
			layers = append(layers, l)
		}
	}
	rep := locateReport{Edits: len(s.edits)}
	for _, layer := range layers {
		run, base, err := s.locate(ctx, layer, stderr)
		if err != nil {
			return fmt.Errorf("layer %d: %w", layer, err)
		}
		// The means are what locating compares.
		run.Metrics.Edits, base.Edits, rep.Base = nil, nil, base
		rep.Layers = append(rep.Layers, run)
	}
	rep.Chosen = chooseLayer(rep.Layers, *minLocality)
	if f.asJSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	tw := metricsTable(stdout)
	metricsRow(tw, "base", rep.Base)
	for _, r := range rep.Layers {
		metricsRow(tw, fmt.Sprintf("layer %d (%d steps, %.0f s)", r.Layer, r.Steps, r.WallS), r.Metrics)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "chosen layer: %d\n", rep.Chosen)
	return err
}

// locate trains a fresh adapter on layer for --steps at most.
func (s *editSession) locate(ctx context.Context, layer int, stderr io.Writer) (editRun, adapt.EditMetrics, error) {
	tr, err := s.prepare(layer)
	if err != nil {
		return editRun{}, adapt.EditMetrics{}, err
	}
	defer tr.Close()
	run, err := train(ctx, tr, loopOptions{}, stderr)
	return run, tr.Base, err
}

// chooseLayer picks, among the runs whose locality is at least
// minLocality, the one with the highest reliability (the lowest loss among
// equals); when none keeps locality that high, the one that keeps it
// best.
func chooseLayer(runs []editRun, minLocality float64) int {
	locality := func(r editRun) float64 {
		if r.Metrics.Locality == nil {
			return 1 // no locality prompts: nothing to keep
		}
		return *r.Metrics.Locality
	}
	best := -1
	for i, r := range runs {
		if locality(r) < minLocality {
			continue
		}
		if best < 0 || r.Metrics.Reliability > runs[best].Metrics.Reliability ||
			r.Metrics.Reliability == runs[best].Metrics.Reliability && r.Metrics.Loss < runs[best].Metrics.Loss {
			best = i
		}
	}
	if best < 0 {
		best = 0
		for i, r := range runs {
			if locality(r) > locality(runs[best]) {
				best = i
			}
		}
	}
	return runs[best].Layer
}

// parseSchedule maps --schedule to a learning-rate schedule.
func parseSchedule(s string) (adapt.Schedule, error) {
	switch s {
	case "constant":
		return adapt.Constant, nil
	case "linear":
		return adapt.Linear, nil
	}
	return 0, fmt.Errorf("--schedule %q: want constant or linear", s)
}
