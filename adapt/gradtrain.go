package adapt

import (
	"errors"
	"fmt"
	"sync"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
)

// GradOptions configure a GradTrainer.
type GradOptions struct {
	Adam      AdamOptions
	BatchSize int    // examples per step (0 or more than the data: all)
	Seed      uint64 // orders the examples of every epoch
	// RehearsalWeight is the weight of a rehearsal row in the loss's mean,
	// against 1 for a target token; 0 means 1 (as MeZOOptions').
	RehearsalWeight float64
	// LossFloor, when positive, counts a target token's cross-entropy as
	// at least LossFloor in the loss that steps descend (and report): a
	// token learnt to that point stops pulling on the delta (as
	// MeZOOptions'). Loss and Losses are unaffected.
	LossFloor float64
	// Workers is the number of goroutines a step runs examples on; 0
	// means 4. The gradient's rounding depends on it (each worker sums
	// its examples' share, the workers' sums are added in order), nothing
	// else does: a run is bit-reproducible for a given Workers.
	Workers int
}

// DefaultGradOptions returns Adam at α 1e-3 over the whole data each step.
func DefaultGradOptions() GradOptions {
	return GradOptions{Adam: AdamOptions{LR: 1e-3}, Workers: 4}
}

// GradTrainer trains a LoRA on one layer's MLP down-projection (a full
// delta from NewFullDelta, or low-rank) with Adam on the exact gradient
// of the loss: each example runs once through the engine up to that
// layer (engine.StepTo), and then, every step, through a float32 copy of
// the layers above it, forward and backward (see tail). The loss is the
// Scorer's: the mean cross-entropy of completion tokens, with the rows of
// rehearsal examples (those with a Reference) scored by KL(reference ‖
// model) at weight RehearsalWeight. The trained LoRA serves through a Set
// and saves with SaveLoRA like any other.
//
// The trainer keeps, per example it has seen, the down-projection's
// inputs and the layer's output without the delta; with A frozen also
// scale·A·h, so A must not change while the trainer lives. A GradTrainer
// is not safe for concurrent use.
type GradTrainer struct {
	lo    *LoRA
	pr    *LoRAPair
	scale float32
	tl    *tail
	sc    *Scorer // the base model, for the residual stream entering the layer
	data  []Example
	opts  GradOptions
	adam  *adam
	order epochOrder

	anchors map[string]*anchor
	workers []*gradWorker
	grads   [][]float32 // per tensor of lo.Params(), nil when frozen
}

// anchor is what an example's rows hold whatever the delta.
type anchor struct {
	n    int       // rows: prompt and completion but the last token
	h    []float32 // [n × In] the down-projection's input
	base []float32 // [n × NEmbd] the layer's output without the delta
	z    []float32 // [n × Rank] scale·A·h, when A is frozen
}

// gradWorker is one goroutine's scratch and gradient sums.
type gradWorker struct {
	ps     *pass
	x1     []float32
	z, gz  []float32
	scored []int
	// grad holds the worker's gradient sums, per tensor of LoRA.Params:
	// A (nil when frozen), then B.
	grad [2][]float32
}

// NewGradTrainer prepares training of lo, a LoRA with a single pair on
// the down-projection of one layer of m, on train and rehearsal. e runs
// m (any engine: only its layers below the pair's run, for the base
// model); rehearsal examples without a Reference get the base model's
// distributions as theirs.
func NewGradTrainer(e *engine.Engine, m *model.Model, lo *LoRA, train, rehearsal []Example, opts GradOptions) (*GradTrainer, error) {
	if len(lo.Pairs) != 1 || lo.Pairs[0].Proj != engine.ProjDown {
		return nil, errors.New("adapt: gradient training: want a LoRA of one pair, on a down-projection")
	}
	pr := lo.Pairs[0]
	if w := baseWeight(m, pr.Layer, pr.Proj); w == nil || w.Rows != pr.Out || w.Cols != pr.In {
		return nil, fmt.Errorf("adapt: gradient training: %w: blk.%d.%s", ErrMismatch, pr.Layer, projName(pr.Proj))
	}
	if len(train)+len(rehearsal) == 0 {
		return nil, errors.New("adapt: gradient training: no examples")
	}
	if !(opts.RehearsalWeight >= 0) || !(opts.LossFloor >= 0) || opts.BatchSize < 0 || opts.Workers < 0 {
		return nil, fmt.Errorf("adapt: gradient training: rehearsal weight %g, loss floor %g, batch %d, workers %d: want ≥ 0",
			opts.RehearsalWeight, opts.LossFloor, opts.BatchSize, opts.Workers)
	}
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	data := append(append([]Example(nil), train...), rehearsal...)
	if opts.BatchSize == 0 || opts.BatchSize > len(data) {
		opts.BatchSize = len(data)
	}
	tl, err := newTail(m, pr.Layer)
	if err != nil {
		return nil, err
	}
	params := lo.Params()
	ad, err := newAdam(params, opts.Adam)
	if err != nil {
		return nil, err
	}
	g := &GradTrainer{lo: lo, pr: pr, scale: lo.Scale(pr), tl: tl, data: data, opts: opts, adam: ad,
		order: epochOrder{n: len(data), seed: opts.Seed, epoch: -1}, anchors: map[string]*anchor{}}
	g.sc = NewScorer(e, nil)
	g.sc.from = pr.Layer
	for range opts.Workers {
		g.workers = append(g.workers, &gradWorker{ps: newPass(tl)})
	}
	g.grads = make([][]float32, len(params))
	for i, p := range params {
		if !p.Frozen {
			g.grads[i] = make([]float32, len(p.Data))
		}
	}
	if err := g.references(e, data[len(train):]); err != nil {
		g.Close()
		return nil, err
	}
	if g.opts.RehearsalWeight == 0 {
		g.opts.RehearsalWeight = 1
	}
	return g, nil
}

// references gives the rehearsal examples without a Reference the base
// model's distributions.
func (g *GradTrainer) references(e *engine.Engine, rehearsal []Example) error {
	var idx []int
	var need []Example
	for i, ex := range rehearsal {
		if ex.Reference == nil {
			idx, need = append(idx, i), append(need, ex)
		}
	}
	if len(need) == 0 {
		return nil
	}
	base := NewScorer(e, nil)
	defer base.Close()
	refs, err := base.References(need)
	if err != nil {
		return fmt.Errorf("adapt: gradient training: rehearsal: %w", err)
	}
	for k, i := range idx {
		rehearsal[i].Reference = refs[k]
	}
	return nil
}

// Close frees the trainer's engine sequences.
func (g *GradTrainer) Close() { g.sc.Close() }

// SetPace sets a function run before every forward pass of the engine
// (see Scorer.SetPace); EditTrainer also runs it before every step.
func (g *GradTrainer) SetPace(fn func()) { g.sc.SetPace(fn) }

// Steps is the number of steps taken.
func (g *GradTrainer) Steps() int { return g.adam.st.Step }

// State returns a copy of the optimizer's state. With the LoRA's tensors
// (SaveLoRA at f32) it is all a run needs to continue exactly.
func (g *GradTrainer) State() AdamState { return g.adam.st.clone() }

// SetState continues from st, a State of a trainer of the same LoRA
// shape, options and data; the LoRA's tensors are the caller's to
// restore.
func (g *GradTrainer) SetState(st AdamState) error { return g.adam.setState(st) }

// Step takes one Adam step on the next batch and returns its loss before
// the step (with the loss floor).
func (g *GradTrainer) Step() (float64, error) {
	batch := g.order.batch(g.data, g.adam.st.Step, g.opts.BatchSize)
	sums, counts, err := g.run(batch, true)
	if err != nil {
		return 0, err
	}
	g.adam.update(g.grads)
	return g.mean(batch, sums, counts), nil
}

// Loss is the mean loss of the examples' scored rows (see Scorer.Loss,
// with the trainer's rehearsal weight).
func (g *GradTrainer) Loss(examples []Example) (float64, error) {
	sums, counts, err := g.run(examples, false)
	if err != nil {
		return 0, err
	}
	return g.mean(examples, sums, counts), nil
}

// Losses is each example's mean loss over its scored rows.
func (g *GradTrainer) Losses(examples []Example) ([]float64, error) {
	sums, counts, err := g.run(examples, false)
	if err != nil {
		return nil, err
	}
	for i := range sums {
		sums[i] /= float64(counts[i])
	}
	return sums, nil
}

// weight is the weight of each scored row of ex in a mean.
func (g *GradTrainer) weight(ex Example) float64 {
	if ex.Reference != nil {
		return g.opts.RehearsalWeight
	}
	return 1
}

func (g *GradTrainer) mean(examples []Example, sums []float64, counts []int) float64 {
	var sum, n float64
	for i, ex := range examples {
		sum += g.weight(ex) * sums[i]
		n += g.weight(ex) * float64(counts[i])
	}
	return sum / n
}

// run computes each example's summed loss and scored rows and, with
// grad, the gradient of the batch's mean loss into g.grads.
func (g *GradTrainer) run(examples []Example, grad bool) ([]float64, []int, error) {
	if err := g.check(examples); err != nil {
		return nil, nil, err
	}
	ans, err := g.anchorsOf(examples)
	if err != nil {
		return nil, nil, err
	}
	var total float64
	for _, ex := range examples {
		total += g.weight(ex) * float64(len(ex.Completion))
	}
	sums, counts := make([]float64, len(examples)), make([]int, len(examples))
	var wg sync.WaitGroup
	for k, w := range g.workers {
		if grad {
			for i, t := range g.grads {
				if t != nil {
					w.grad[i] = grow(w.grad[i], len(t))
					clear(w.grad[i])
				}
			}
		}
		wg.Go(func() {
			for i := k; i < len(examples); i += len(g.workers) {
				ex := examples[i]
				var coef float32
				if grad {
					coef = float32(g.weight(ex) / total)
				}
				sums[i], counts[i] = g.example(w, ex, ans[i], coef, grad)
			}
		})
	}
	wg.Wait()
	if grad {
		g.sumGrads()
	}
	return sums, counts, nil
}

// sumGrads adds the workers' gradient sums, in worker order, into
// g.grads.
func (g *GradTrainer) sumGrads() {
	for i, dst := range g.grads {
		if dst == nil {
			continue
		}
		clear(dst)
		for _, w := range g.workers {
			axpy(dst, 1, w.grad[i])
		}
	}
}

// example runs one example with the current delta and returns its summed
// loss and scored rows; with grad, it adds coef times the gradient of
// that sum to w's gradient sums.
func (g *GradTrainer) example(w *gradWorker, ex Example, an *anchor, coef float32, grad bool) (float64, int) {
	floor := 0.0
	if grad {
		floor = g.opts.LossFloor
	}
	c, pr := &g.tl.cfg, g.pr
	e, n, nv := c.NEmbd, an.n, c.NVocab
	g.input(w, an)
	w.scored = w.scored[:0]
	for r := len(ex.Prompt) - 1; r < n; r++ {
		w.scored = append(w.scored, r)
	}
	w.ps.forward(w.x1, n, w.scored)
	var sum float64
	ps := w.ps
	ps.exps = grow(ps.exps, nv)
	for k := range w.scored {
		row := rowOf(ps.logits, k, nv)
		lse := logSumExp(row, ps.exps)
		var ref *Reference
		if ex.Reference != nil {
			ref = &ex.Reference[k]
			sum += klDivergence(ref, row, lse)
		} else {
			ce := lse - float64(row[ex.Completion[k]])
			sum += max(ce, floor)
			if grad && ce < floor {
				clear(row) // a learnt token pulls no more
				continue
			}
		}
		if !grad {
			continue
		}
		// d/dlogits: softmax·mass − p for KL, softmax − onehot for CE;
		// the logits row becomes its gradient.
		copy(ps.exps, row)
		cpu.ExpSub(ps.exps, float32(lse))
		if ref != nil {
			m := float32(ref.mass)
			for v := range row {
				row[v] = coef * (m*ps.exps[v] - ref.p[v])
			}
		} else {
			for v := range row {
				row[v] = coef * ps.exps[v]
			}
			row[ex.Completion[k]] -= coef
		}
	}
	if !grad {
		return sum, len(w.scored)
	}
	dx1 := ps.backward(ps.logits, w.scored)
	// y = B·z: dB += dy·zᵀ; z = scale·A·h: dA += scale·(Bᵀdy)·hᵀ.
	w.gz = grow(w.gz, pr.Rank)
	for t := range n {
		dy, z := rowOf(dx1, t, e), rowOf(w.z, t, pr.Rank)
		for o, d := range dy {
			if d != 0 {
				axpy(rowOf(w.grad[1], o, pr.Rank), d, z)
			}
		}
		if g.lo.frozenA {
			continue
		}
		clear(w.gz)
		for o, d := range dy {
			axpy(w.gz, d, rowOf(pr.B, o, pr.Rank))
		}
		h := rowOf(an.h, t, pr.In)
		for k, d := range w.gz {
			if d != 0 {
				axpy(rowOf(w.grad[0], k, pr.In), g.scale*d, h)
			}
		}
	}
	return sum, len(w.scored)
}

// input sets w.x1, the residual stream leaving the layer with the delta,
// base + B·z with z = scale·A·h (w.z).
func (g *GradTrainer) input(w *gradWorker, an *anchor) {
	pr, e, n := g.pr, g.tl.cfg.NEmbd, an.n
	w.x1 = grow(w.x1, n*e)
	w.z = grow(w.z, n*pr.Rank)
	for t := range n {
		z := rowOf(w.z, t, pr.Rank)
		if an.z != nil {
			copy(z, rowOf(an.z, t, pr.Rank))
		} else {
			matVec(z, pr.A, rowOf(an.h, t, pr.In))
			for k := range z {
				z[k] *= g.scale
			}
		}
		x1 := rowOf(w.x1, t, e)
		matVec(x1, pr.B, z)
		axpy(x1, 1, rowOf(an.base, t, e))
	}
}

// check validates examples as the Scorer does.
func (g *GradTrainer) check(examples []Example) error {
	nv := g.tl.cfg.NVocab
	for i, ex := range examples {
		if len(ex.Prompt) == 0 || len(ex.Completion) == 0 {
			return fmt.Errorf("adapt: example %d: prompt and completion must not be empty", i)
		}
		for _, ids := range [][]int32{ex.Prompt, ex.Completion} {
			for _, id := range ids {
				if id < 0 || int(id) >= nv {
					return fmt.Errorf("adapt: example %d: token %d outside the vocabulary of %d", i, id, nv)
				}
			}
		}
		if ex.Reference == nil {
			continue
		}
		if len(ex.Reference) != len(ex.Completion) {
			return fmt.Errorf("adapt: example %d: %d reference rows for %d completion tokens", i, len(ex.Reference), len(ex.Completion))
		}
		for _, r := range ex.Reference {
			if len(r.p) != nv {
				return fmt.Errorf("adapt: example %d: a reference row of %d values, want %d", i, len(r.p), nv)
			}
		}
	}
	return nil
}

// anchorsOf returns the anchor of each example, computing those of the
// examples not seen before: the residual stream entering the layer from
// the engine (or the token embedding for layer 0), then the layer itself
// without the delta.
func (g *GradTrainer) anchorsOf(examples []Example) ([]*anchor, error) {
	out := make([]*anchor, len(examples))
	var missing []Example
	var keys []string
	seen := map[string]bool{}
	for i, ex := range examples {
		key := tokensKey(ex)
		if out[i] = g.anchors[key]; out[i] == nil && !seen[key] {
			missing, keys, seen[key] = append(missing, ex), append(keys, key), true
		}
	}
	if len(missing) > 0 {
		var rows [][]float32
		if g.pr.Layer > 0 {
			var err error
			if rows, err = g.sc.frozenRows(missing); err != nil {
				return nil, err
			}
			clear(g.sc.frozen) // the anchors keep what they need
		}
		c, pr := &g.tl.cfg, g.pr
		ps := g.workers[0].ps
		for k, ex := range missing {
			n := len(ex.Prompt) + len(ex.Completion) - 1
			var x0 []float32
			if rows != nil {
				x0 = rows[k]
			} else {
				x0 = make([]float32, n*c.NEmbd)
				ids := make([]int32, n)
				for j := range ids {
					ids[j] = tokenAt(ex, j)
				}
				if err := g.tl.embed(ids, x0); err != nil {
					return nil, err
				}
			}
			an := &anchor{n: n}
			an.h, an.base = ps.first(x0, n)
			if g.lo.frozenA {
				an.z = make([]float32, n*pr.Rank)
				for t := range n {
					z := rowOf(an.z, t, pr.Rank)
					matVec(z, pr.A, rowOf(an.h, t, pr.In))
					for j := range z {
						z[j] *= g.scale
					}
				}
			}
			g.anchors[keys[k]] = an
		}
		for i, ex := range examples {
			out[i] = g.anchors[tokensKey(ex)]
		}
	}
	return out, nil
}

// epochOrder is the breadth-first order of a run's examples: consecutive
// slices of a shuffle of all n of them, reshuffled every epoch from the
// seed (as MeZO orders its batches).
type epochOrder struct {
	n     int
	seed  uint64
	epoch int // which epoch perm belongs to; -1: none yet
	perm  []int
}

// batch returns the size examples of data that step takes.
func (o *epochOrder) batch(data []Example, step, size int) []Example {
	if size == len(data) {
		return data
	}
	out := make([]Example, size)
	for j := range out {
		at := step*size + j
		if epoch := at / o.n; epoch != o.epoch {
			o.shuffle(epoch)
		}
		out[j] = data[o.perm[at%o.n]]
	}
	return out
}

func (o *epochOrder) shuffle(epoch int) {
	if o.perm == nil {
		o.perm = make([]int, o.n)
	}
	for i := range o.perm {
		o.perm[i] = i
	}
	key := stream(o.seed^0x7f4a7c159e3779b9, epoch)
	for i := len(o.perm) - 1; i > 0; i-- {
		j := int(uniform(key, uint64(i)) * float64(i+1))
		o.perm[i], o.perm[j] = o.perm[j], o.perm[i]
	}
	o.epoch = epoch
}
