package main

import (
	"context"
	"fmt"
	"io"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/prune"
)

const lemoUsage = "usage: edgectl lemo train --model M [--layers 1 --block 16] [--self-sample N --len L] [--out M.lemo.gguf]"

// runLeMo dispatches LeMo's subcommands; train is the only one.
func runLeMo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "train" {
		fmt.Fprintln(stderr, lemoUsage)
		return errUsage
	}
	return runLeMoTrain(ctx, args[1:], stdout, stderr)
}

// runLeMoTrain trains LeMo's pattern predictor offline on sequences the
// model itself produces (seeded), as the paper trains it on the model's
// own activations: each sequence is prefilled densely while a
// prune.Recorder keeps every block's input hidden state and q·k
// informativeness at the pruning layers; the last --holdout sequences are
// kept out of training and measure the predictor.
func runLeMoTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("lemo train", "--model M [--layers 1 --block 16] [--self-sample N --len L] [--out M.lemo.gguf]", stderr)
	var ef engineFlags
	ef.register(fs, "f32")
	layers := fs.String("layers", "1", "comma-separated pruning `layers` to train a predictor for")
	block := fs.Int("block", prune.DefaultBlock, "block size")
	samples := fs.Int("self-sample", 64, "sequences sampled from the model itself, held-out ones included")
	holdout := fs.Int("holdout", 8, "sequences kept out of training to measure the predictor")
	length := fs.Int("len", 400, "tokens per sequence (BOS included)")
	seed := fs.Uint64("seed", 1000, "seed of the self-sampling (eval-sparsity's default sequences start at 1) and of training")
	temp := fs.Float64("temp", 1, "temperature of the self-sampling")
	opt := prune.DefaultTrainOptions()
	fs.IntVar(&opt.Hidden, "hidden", opt.Hidden, "MLP width")
	fs.IntVar(&opt.Epochs, "epochs", opt.Epochs, "training epochs")
	fs.Float64Var(&opt.LR, "lr", opt.LR, "Adam step size")
	keep := fs.Float64("keep", 0.7, "keep ratio at which the held-out overlap is measured")
	out := fs.String("out", "", "predictor `file` (default: the model's path with .lemo.gguf)")
	if err := parse(fs, args); err != nil {
		return err
	}
	ls, err := parseLayers(*layers)
	switch {
	case ef.model == "":
		return usageError(fs, "--model is required")
	case err != nil:
		return usageError(fs, "%v", err)
	case *holdout < 1 || *samples <= *holdout || *length < 2 || *block < 1:
		return usageError(fs, "want --self-sample > --holdout ≥ 1, --len ≥ 2, --block ≥ 1")
	}
	if *out == "" {
		*out = prune.PredictorPath(ef.model)
	}
	opt.Seed = *seed
	rec, err := prune.NewRecorder(*block, ls)
	if err != nil {
		return usageError(fs, "%v", err)
	}
	hook := &gatedRecorder{Recorder: rec}
	l, err := ef.open(engine.Hooks{Observer: hook})
	if err != nil {
		return err
	}
	defer l.Close()
	if *length > l.engine.Options().Context {
		return usageError(fs, "--len %d exceeds the context of %d", *length, l.engine.Options().Context)
	}
	train, held, err := recordLeMo(ctx, l, hook, *samples, *holdout, *length, *seed, float32(*temp))
	if err != nil {
		return err
	}
	pred, err := prune.TrainPredictor(train, *block, opt)
	if err != nil {
		return err
	}
	return reportPredictor(stdout, pred, train, held, *keep, *out)
}

// recordLeMo samples n sequences and prefills each with the recorder on;
// it returns the recordings of the first n−holdout and of the rest.
func recordLeMo(ctx context.Context, l *loaded, hook *gatedRecorder, n, holdout, length int, seed uint64, temp float32) (train, held []prune.Recording, err error) {
	ev := &sparsityEval{ctx: ctx, e: l.engine, hook: &switchHook{}, prefix: length, cont: 1, bos: 1}
	if tok, err := l.tokenizer(); err == nil && tok.BOS() >= 0 {
		ev.bos = tok.BOS()
	}
	ids, err := ev.sample(n, seed, temp)
	if err != nil {
		return nil, nil, err
	}
	hook.on = true
	defer func() { hook.on = false }()
	logits := make([]float32, l.engine.Config().NVocab)
	for s, seqIDs := range ids {
		seq, err := l.engine.NewSequence(nil)
		if err != nil {
			return nil, nil, err
		}
		batch := make([]engine.Entry, length)
		for i := range batch {
			batch[i] = engine.Entry{Seq: seq, Token: seqIDs[i], Pos: int32(i), Logits: i == length-1}
		}
		err = l.engine.Step(batch, logits)
		seq.Free()
		if err != nil {
			return nil, nil, err
		}
		if s < n-holdout {
			train = append(train, hook.Take()...)
		} else {
			held = append(held, hook.Take()...)
		}
	}
	return train, held, nil
}

// reportPredictor prints the predictor's overlap with the true kept blocks
// on the training and held-out sequences, and saves it.
func reportPredictor(w io.Writer, pred *prune.Predictor, train, held []prune.Recording, keep float64, out string) error {
	tr, err := pred.Overlap(train, keep)
	if err != nil {
		return err
	}
	ho, err := pred.Overlap(held, keep)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "kept-block overlap with q·k's choice at keep %g: held-out %.3f (training %.3f); position alone %.3f, random choice %.3f\n",
		keep, ho.Predicted, tr.Predicted, ho.Position, ho.Chance)
	if err := prune.SavePredictor(out, pred); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s\n", out)
	return nil
}

// gatedRecorder passes the engine's attention and hidden states to a
// prune.Recorder only while on, so that self-sampling records nothing.
type gatedRecorder struct {
	*prune.Recorder
	on bool
}

func (g *gatedRecorder) Wants(layer int) bool       { return g.on && g.Recorder.Wants(layer) }
func (g *gatedRecorder) WantsHidden(layer int) bool { return g.on && g.Recorder.WantsHidden(layer) }
