package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/prune"
)

// sparsityMethods are the policies eval-sparsity knows; the baselines are
// measured beside the chosen method on the same sequences.
var sparsityMethods = []string{prune.MethodZeroTPrune, prune.MethodLeMo, "recent", "random"}

// runEvalSparsity measures what token sparsity costs in quality and saves
// in prefill time, attention work and KV cache. For each sequence (drawn
// from the model itself, seeded, or read from a --data file) it prefills
// the first --len tokens densely and with the policy, then feeds the next
// --cont tokens one decode step at a time (teacher forcing) and compares
// the next-token distributions of the two runs: negative log-likelihood of
// the sequence's actual tokens, top-1 agreement and KL(dense ‖ sparse).
func runEvalSparsity(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval-sparsity", "--model M --method zerotprune|lemo|recent|random --keep R [--predictor P] [--data FILE | --self-sample N] [--len L --cont C] [--json]", stderr)
	var ef engineFlags
	ef.register(fs, "f32")
	method := fs.String("method", "zerotprune", "sparsity `policy`: "+strings.Join(sparsityMethods, ", "))
	keep := fs.Float64("keep", prune.DefaultKeep, "share of the prefix rows kept after the last pruning layer, in (0, 1]")
	layers := fs.String("layers", "1", "comma-separated `layers` after which rows are dropped")
	window := fs.Int("window", prune.DefaultWindow, "last prefix rows always kept")
	iters := fs.Int("iterations", prune.DefaultIterations, "weighted PageRank iterations (zerotprune)")
	similarity := fs.Float64("similarity", prune.DefaultSimilarity, "share of the dropped rows Zero-TPrune's similarity stage picks, in [0, 1] (0: no similarity stage)")
	block := fs.Int("block", 0, "LeMo's block size (default: the predictor's, else 64)")
	predictor := fs.String("predictor", "", "LeMo pattern predictor `file` (edgectl lemo train); without it LeMo ranks by q·k")
	samples := fs.Int("self-sample", 8, "evaluation sequences sampled from the model itself")
	data := fs.String("data", "", `JSONL `+"`file`"+` of evaluation sequences instead of self-sampling, one {"text": "..."} or {"ids": [...]} a line, each at least --len + --cont tokens`)
	length := fs.Int("len", 400, "prefix tokens (BOS included) prefilled with sparsity")
	cont := fs.Int("cont", 100, "continuation tokens scored after the prefix")
	seed := fs.Uint64("seed", 1, "seed of the self-sampling and of the random baseline")
	temp := fs.Float64("temp", 1, "temperature of the self-sampling")
	baselines := fs.Bool("baselines", true, "also measure the other methods on the same sequences")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parse(fs, args); err != nil {
		return err
	}
	ls, err := parseLayers(*layers)
	switch {
	case ef.model == "":
		return usageError(fs, "--model is required")
	case !slices.Contains(sparsityMethods, *method):
		return usageError(fs, "--method %q: want one of %s", *method, strings.Join(sparsityMethods, ", "))
	case err != nil:
		return usageError(fs, "%v", err)
	case *data != "" && isSet(fs, "self-sample"):
		return usageError(fs, "give --data or --self-sample, not both")
	case *samples < 1 || *length < 2 || *cont < 1:
		return usageError(fs, "--self-sample and --cont must be at least 1, --len at least 2")
	}
	// The flags give one set of settings; each method takes those that
	// apply to it, with prune.Spec's defaults and checks, as a request's
	// do in the daemon.
	settings := prune.Spec{Keep: *keep, Layers: ls, Window: *window, Similarity: similarity, Block: *block}
	var pred *prune.Predictor
	if *predictor != "" {
		if pred, err = prune.LoadPredictor(*predictor); err != nil {
			return err
		}
		if settings.Block == 0 {
			settings.Block = pred.Block
		}
	}
	names := []string{*method}
	if *baselines {
		for _, m := range sparsityMethods {
			if m != *method {
				names = append(names, m)
			}
		}
	}
	methods := make([]*sparsityMethod, len(names))
	for i, n := range names {
		spec := settings.For(n)
		if err := spec.Validate(0); err != nil {
			return usageError(fs, "%v", err)
		}
		cfg := spec.Config()
		cfg.Iterations = *iters
		if methods[i], err = newSparsityMethod(n, cfg, pred, *seed); err != nil {
			return usageError(fs, "%v", err)
		}
	}

	hook := &switchHook{}
	l, err := ef.open(engine.Hooks{Observer: hook, Selector: hook})
	if err != nil {
		return err
	}
	defer l.Close()
	if pred != nil && pred.Dim != l.engine.Config().NEmbd {
		return fmt.Errorf("%s: the predictor takes hidden states of %d, the model's are %d", *predictor, pred.Dim, l.engine.Config().NEmbd)
	}
	if n := *length + *cont; n > l.engine.Options().Context {
		return usageError(fs, "--len + --cont = %d exceeds the context of %d", n, l.engine.Options().Context)
	}
	ev := &sparsityEval{ctx: ctx, e: l.engine, hook: hook, prefix: *length, cont: *cont, bos: 1}
	// A model without a tokenizer can still be evaluated on self-samples
	// (BOS 1, llama2.c's) or on "ids" lines.
	tok, _ := l.tokenizer()
	if tok != nil && tok.BOS() >= 0 {
		ev.bos = tok.BOS()
	}
	var seqs [][]int32
	if *data != "" {
		seqs, err = readSparsityDataFile(*data, tok, l.engine.Config().NVocab, *length+*cont)
	} else {
		seqs, err = ev.sample(*samples, *seed, float32(*temp))
	}
	if err != nil {
		return err
	}
	report, err := ev.run(methods, seqs)
	if err != nil {
		return err
	}
	// The seed is reported either way: it also seeds the random baseline.
	report.Data, report.Seed = *data, *seed
	report.Model, report.Keep, report.Layers, report.Window, report.Iterations = l.path, *keep, ls, *window, *iters
	report.Block, report.Predictor, report.Similarity = settings.For(prune.MethodLeMo).Config().Block, *predictor, *similarity
	report.Threads = threadsOf(l.engine.Backend())
	if *asJSON {
		return json.NewEncoder(stdout).Encode(report)
	}
	report.print(stdout)
	return nil
}

func parseLayers(s string) ([]int, error) {
	var ls []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--layers: %q is not a layer", f)
		}
		ls = append(ls, v)
	}
	return ls, nil
}

// sparsityPolicy is what every prune policy offers.
type sparsityPolicy interface {
	engine.TokenSelector
	Enable(*engine.Sequence)
	Disable(*engine.Sequence)
}

// sparsityMethod is one policy under evaluation.
type sparsityMethod struct {
	name   string
	policy sparsityPolicy
	obs    engine.AttentionObserver // nil for the baselines
}

func newSparsityMethod(name string, cfg prune.Config, pred *prune.Predictor, seed uint64) (*sparsityMethod, error) {
	m := &sparsityMethod{name: name}
	switch name {
	case prune.MethodZeroTPrune:
		z, err := prune.NewZeroTPrune(cfg)
		if err != nil {
			return nil, err
		}
		m.policy, m.obs = z, z
	case prune.MethodLeMo:
		lm, err := prune.NewLeMo(cfg, pred)
		if err != nil {
			return nil, err
		}
		m.policy, m.obs = lm, lm
	case "recent":
		r, err := prune.NewRecent(cfg)
		if err != nil {
			return nil, err
		}
		m.policy = r
	case "random":
		r, err := prune.NewRandom(cfg, seed)
		if err != nil {
			return nil, err
		}
		m.policy = r
	default:
		return nil, fmt.Errorf("unknown method %q", name)
	}
	return m, nil
}

// switchHook forwards the engine's hooks to the method being measured, or
// to nothing for the dense runs, so that one engine serves every method.
type switchHook struct{ m *sparsityMethod }

func (h *switchHook) Wants(layer int) bool {
	return h.m != nil && h.m.obs != nil && h.m.obs.Wants(layer)
}

func (h *switchHook) Observe(layer int, seq *engine.Sequence, past, rows, heads int, probs []float32) {
	h.m.obs.Observe(layer, seq, past, rows, heads, probs)
}

// WantsKeys forwards engine.KeyObserver.
func (h *switchHook) WantsKeys(layer int) bool {
	if h.m == nil {
		return false
	}
	ko, ok := h.m.obs.(engine.KeyObserver)
	return ok && ko.WantsKeys(layer)
}

func (h *switchHook) ObserveKeys(layer int, rows []engine.Row, k []float32) {
	h.m.obs.(engine.KeyObserver).ObserveKeys(layer, rows, k)
}

// WantsScores forwards engine.ScoreObserver.
func (h *switchHook) WantsScores(layer int) bool {
	if h.m == nil {
		return false
	}
	so, ok := h.m.obs.(engine.ScoreObserver)
	return ok && so.WantsScores(layer)
}

// WantsHidden forwards engine.HiddenObserver.
func (h *switchHook) WantsHidden(layer int) bool {
	if h.m == nil {
		return false
	}
	ho, ok := h.m.obs.(engine.HiddenObserver)
	return ok && ho.WantsHidden(layer)
}

func (h *switchHook) ObserveHidden(layer int, rows []engine.Row, x []float32) {
	h.m.obs.(engine.HiddenObserver).ObserveHidden(layer, rows, x)
}

func (h *switchHook) Select(layer int, rows []engine.Row) []int32 {
	if h.m == nil {
		return nil
	}
	return h.m.policy.Select(layer, rows)
}
