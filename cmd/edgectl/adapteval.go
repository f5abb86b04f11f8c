package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
)

// evalFlags are the flags of edgectl adapt eval beyond the engine's.
type evalFlags struct {
	data, adapter    string
	heldout, heldLen int
	seed             uint64
}

func (f *evalFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.data, "data", "", "training `file` the adapter learned (JSONL, as for adapt; required)")
	fs.StringVar(&f.adapter, "adapter", "", "LoRA or prefix adapter `file` to measure against the base model (none: the base model only)")
	fs.IntVar(&f.heldout, "heldout", 32, "held-out sequences: the base model's own samples from BOS (0: none)")
	fs.IntVar(&f.heldLen, "heldout-len", 48, "tokens per held-out sample")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the held-out samples")
}

// measures are what one model (base, or base with the adapter) does on
// the training pairs and the held-out samples.
type measures struct {
	Exact      int       `json:"exact"`            // training pairs whose greedy completion is exact
	ExactMatch float64   `json:"exact_match"`      // Exact / pairs
	Missed     []int     `json:"missed,omitempty"` // the other pairs, by line of the data file from 1
	TrainLoss  float64   `json:"train_loss"`       // mean cross-entropy of the completion tokens
	HeldoutNLL float64   `json:"heldout_nll,omitempty"`
	perSample  []float64 // mean NLL of each held-out sample
}

// evalReport is the output of edgectl adapt eval.
type evalReport struct {
	Pairs         int       `json:"pairs"`
	Heldout       int       `json:"heldout"`
	HeldoutTokens int       `json:"heldout_tokens"`
	Base          measures  `json:"base"`
	Adapted       *measures `json:"adapted,omitempty"`
	// LLChange is the relative change of the held-out mean log-likelihood
	// per token, (NLL_adapted - NLL_base) / NLL_base; LLAbsChange is the
	// mean over samples of |that change|, which a mean can hide.
	LLChange    *float64 `json:"heldout_ll_change,omitempty"`
	LLAbsChange *float64 `json:"heldout_ll_abs_change,omitempty"`
}

// runAdaptEval is edgectl adapt eval: how many training pairs the base
// model and the adapted one complete exactly (greedy), and how far the
// adapter moves the log-likelihood of text the base model writes itself.
func runAdaptEval(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("adapt eval", "--model M --data train.jsonl [--adapter A.gguf] [--heldout N]", stderr)
	var ef engineFlags
	ef.register(fs, "f32")
	var f evalFlags
	f.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if ef.model == "" || f.data == "" {
		return usageError(fs, "--model and --data are required")
	}
	if f.heldout < 0 || f.heldLen < 1 {
		return usageError(fs, "--heldout %d, --heldout-len %d: want ≥ 0 and ≥ 1", f.heldout, f.heldLen)
	}
	var hooks engine.Hooks
	if f.adapter != "" {
		hooks.Delta = adapt.NewSet() // in case it is a LoRA; base sequences get none
	}
	l, err := ef.open(hooks)
	if err != nil {
		return err
	}
	defer l.Close()
	rep, err := f.evaluate(l)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(rep)
}

func (f *evalFlags) evaluate(l *loaded) (*evalReport, error) {
	tok, _ := l.tokenizer() // nil: only id examples can be read
	train, err := readExamplesFile(f.data, tok)
	if err != nil {
		return nil, err
	}
	base := adapt.NewScorer(l.engine, nil)
	defer base.Close()
	heldout, err := base.SelfSamples(bosOf(tok), f.heldout, f.heldLen, f.seed)
	if err != nil {
		return nil, fmt.Errorf("--heldout: %w", err)
	}
	rep := &evalReport{Pairs: len(train), Heldout: len(heldout)}
	for _, ex := range heldout {
		rep.HeldoutTokens += len(ex.Completion)
	}
	if rep.Base, err = measure(base, train, heldout); err != nil {
		return nil, err
	}
	if f.adapter == "" {
		return rep, nil
	}
	a, err := adapt.Load(f.adapter, l.model)
	if err != nil {
		return nil, err
	}
	sc := adapt.NewScorer(l.engine, a)
	defer sc.Close()
	after, err := measure(sc, train, heldout)
	if err != nil {
		return nil, err
	}
	rep.Adapted = &after
	if len(heldout) > 0 {
		ch, abs := llChange(rep.Base, after)
		rep.LLChange, rep.LLAbsChange = &ch, &abs
	}
	return rep, nil
}

// bosOf is the tokenizer's BOS id, or -1 without a tokenizer.
func bosOf(tok *model.Tokenizer) int32 {
	if tok == nil {
		return -1
	}
	return tok.BOS()
}

// measure runs one model over the training pairs and the held-out set.
func measure(sc *adapt.Scorer, train, heldout []adapt.Example) (measures, error) {
	var m measures
	var err error
	if m.Missed, err = misses(sc, train); err != nil {
		return m, err
	}
	m.Exact = len(train) - len(m.Missed)
	m.ExactMatch = float64(m.Exact) / float64(len(train))
	if m.TrainLoss, err = sc.Loss(train); err != nil {
		return m, err
	}
	if len(heldout) == 0 {
		return m, nil
	}
	if m.perSample, err = sc.Losses(heldout); err != nil {
		return m, err
	}
	var sum float64
	var n int
	for i, ex := range heldout {
		sum += m.perSample[i] * float64(len(ex.Completion))
		n += len(ex.Completion)
	}
	m.HeldoutNLL = sum / float64(n)
	return m, nil
}

// misses lists the pairs, by line from 1, whose greedy continuation of the
// prompt is not the completion.
func misses(sc *adapt.Scorer, pairs []adapt.Example) ([]int, error) {
	prompts, n := make([][]int32, len(pairs)), 0
	for i, ex := range pairs {
		prompts[i], n = ex.Prompt, max(n, len(ex.Completion))
	}
	outs, err := sc.Greedy(prompts, n)
	if err != nil {
		return nil, err
	}
	var missed []int
	for i, ex := range pairs {
		if !slices.Equal(outs[i][:len(ex.Completion)], ex.Completion) {
			missed = append(missed, i+1)
		}
	}
	return missed, nil
}

// llChange is the relative change of the held-out NLL and the mean of its
// per-sample magnitude.
func llChange(before, after measures) (change, abs float64) {
	for i, b := range before.perSample {
		abs += math.Abs(after.perSample[i]-b) / b
	}
	return (after.HeldoutNLL - before.HeldoutNLL) / before.HeldoutNLL, abs / float64(len(before.perSample))
}
