package adapt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/engine"
)

// maxScoredRows bounds the rows of logits one engine Step of a Scorer
// returns. The logits of every completion token of a batch at once would
// outgrow the model and its caches (1024 rows of a 49152-token vocabulary
// are 200 MB), and MeZO is meant to fit in the memory of inference.
const maxScoredRows = 64

// Scorer runs examples through an engine with an adapter attached to its
// sequences (or none: the base model), reusing its sequences and buffers
// from call to call. Token positions start at 0 whatever the adapter, as
// in engine.Generate. A Scorer is not safe for concurrent use.
type Scorer struct {
	e       *engine.Engine
	a       Trainable
	seqs    []*engine.Sequence
	batch   []engine.Entry
	targets []int32
	owner   []int        // the example of each target
	refs    []*Reference // the reference distribution of each target, or nil
	logits  []float32
	exps    []float32 // logSumExp's scratch
	// refWeight is the weight of a row scored against a Reference in
	// Loss's mean, against 1 for a target token.
	refWeight float64
	// floor, during a call of loss, is the least a target token's
	// cross-entropy counts for (MeZOOptions.LossFloor).
	floor float64
	// visit, when not nil, sees the logits of every scored row, in
	// order, with their log-sum-exp (References, Predict).
	visit func(logits []float32, lse float64)
	// pace, when set, runs before every engine call (SetPace).
	pace func()

	// from is the adapter's lowest layer. The layers below it compute the
	// same for an example whatever the adapter's values, so Loss runs
	// them once per example (engine.StepTo) and keeps the residual stream
	// entering from, keyed by the example's tokens; later calls start
	// there (engine.StepFrom).
	from   int
	frozen map[string][]float32
	x      []float32 // the pending entries' residual rows, when from > 0
}

// NewScorer returns a Scorer of e with adapter a; nil runs the base model.
// A LoRA needs an engine made with an adapt.Set as its Hooks.Delta.
func NewScorer(e *engine.Engine, a Trainable) *Scorer {
	if a == nil {
		a = base{}
	}
	return &Scorer{e: e, a: a, from: a.firstLayer(), frozen: map[string][]float32{}, refWeight: 1}
}

// SetPace makes the Scorer call fn before every forward pass it runs. fn
// may block, to let other work on the machine go first (the daemon's
// background jobs yield to serving this way); it must not touch the
// Scorer, its engine or the adapter.
func (s *Scorer) SetPace(fn func()) { s.pace = fn }

// paced runs the pace function, if any, before a forward pass.
func (s *Scorer) paced() {
	if s.pace != nil {
		s.pace()
	}
}

// Close frees the Scorer's sequences.
func (s *Scorer) Close() {
	for _, q := range s.seqs {
		s.a.detach(s.e, q)
	}
	s.seqs = s.seqs[:0]
}

// sequences returns n empty sequences with the adapter attached.
func (s *Scorer) sequences(n int) ([]*engine.Sequence, error) {
	if !s.a.live() && len(s.seqs) > 0 {
		s.Close() // the sequences hold copies of the old tensors
		// Their caches are the largest allocation of a run: collect them
		// before allocating the replacements, or the heap holds both sets
		// until the next collection (a prefix MeZO run peaked at 1.38×
		// the memory of inference).
		runtime.GC()
	}
	for len(s.seqs) < n {
		q, err := s.a.attach(s.e)
		if err != nil {
			return nil, fmt.Errorf("adapt: %w", err)
		}
		s.seqs = append(s.seqs, q)
	}
	for _, q := range s.seqs[:n] {
		if err := q.Truncate(0); err != nil {
			return nil, fmt.Errorf("adapt: %w", err)
		}
	}
	return s.seqs[:n], nil
}

// Loss is the mean cross-entropy of the completion tokens of examples
// (the KL at the rows of examples with a Reference, weighted by the
// Scorer's rehearsal weight).
func (s *Scorer) Loss(examples []Example) (float64, error) { return s.loss(examples, 0) }

// loss is Loss with each target token's cross-entropy counted as at least
// floor.
func (s *Scorer) loss(examples []Example, floor float64) (float64, error) {
	s.floor = floor
	sums, counts, err := s.crossEntropies(examples, s.from)
	s.floor = 0
	if err != nil {
		return 0, err
	}
	var sum, n float64
	for i := range sums {
		w := 1.0
		if examples[i].Reference != nil {
			w = s.refWeight
		}
		sum += w * sums[i]
		n += w * float64(counts[i])
	}
	return sum / n, nil
}

// Losses is the mean cross-entropy of each example's completion tokens.
func (s *Scorer) Losses(examples []Example) ([]float64, error) {
	sums, counts, err := s.crossEntropies(examples, s.from)
	if err != nil {
		return nil, err
	}
	for i := range sums {
		sums[i] /= float64(counts[i])
	}
	return sums, nil
}

// crossEntropies returns per example the summed cross-entropy of its
// completion tokens and their count. The examples run as one batch, cut
// into engine Steps of at most maxScoredRows scored rows, from layer from
// (0, or s.from with the residual streams of frozenRows).
func (s *Scorer) crossEntropies(examples []Example, from int) ([]float64, []int, error) {
	nv := s.e.Config().NVocab
	for i, ex := range examples {
		if len(ex.Prompt) == 0 || len(ex.Completion) == 0 {
			return nil, nil, fmt.Errorf("adapt: example %d: prompt and completion must not be empty", i)
		}
		if ex.Reference == nil {
			continue
		}
		if len(ex.Reference) != len(ex.Completion) {
			return nil, nil, fmt.Errorf("adapt: example %d: %d reference rows for %d completion tokens", i, len(ex.Reference), len(ex.Completion))
		}
		for _, r := range ex.Reference {
			if len(r.p) != nv {
				return nil, nil, fmt.Errorf("adapt: example %d: a reference row of %d values, want %d", i, len(r.p), nv)
			}
		}
	}
	var frozen [][]float32
	if from > 0 {
		var err error
		if frozen, err = s.frozenRows(examples); err != nil {
			return nil, nil, err
		}
	}
	seqs, err := s.sequences(len(examples))
	if err != nil {
		return nil, nil, err
	}
	sums, counts := make([]float64, len(examples)), make([]int, len(examples))
	s.batch, s.targets, s.owner, s.refs, s.x = s.batch[:0], s.targets[:0], s.owner[:0], s.refs[:0], s.x[:0]
	width := s.e.Config().NEmbd
	for i, ex := range examples {
		for j := range len(ex.Prompt) + len(ex.Completion) - 1 {
			scored := j >= len(ex.Prompt)-1
			s.batch = append(s.batch, engine.Entry{Seq: seqs[i], Token: tokenAt(ex, j), Pos: int32(j), Logits: scored})
			if frozen != nil {
				s.x = append(s.x, frozen[i][j*width:(j+1)*width]...)
			}
			if !scored {
				continue
			}
			s.targets, s.owner = append(s.targets, tokenAt(ex, j+1)), append(s.owner, i)
			var ref *Reference
			if ex.Reference != nil {
				ref = &ex.Reference[j-len(ex.Prompt)+1]
			}
			s.refs = append(s.refs, ref)
			counts[i]++
			if len(s.targets) == maxScoredRows {
				if err := s.flush(sums, from); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	if err := s.flush(sums, from); err != nil {
		return nil, nil, err
	}
	return sums, counts, nil
}

// flush runs the pending entries, from layer from, and adds the
// cross-entropy of each scored row to its example's sum.
func (s *Scorer) flush(sums []float64, from int) error {
	if len(s.batch) == 0 {
		return nil
	}
	nv := s.e.Config().NVocab
	s.logits = grow(s.logits, len(s.targets)*nv)
	s.paced()
	var err error
	if from > 0 {
		err = s.e.StepFrom(s.batch, from, s.x, s.logits)
	} else {
		err = s.e.Step(s.batch, s.logits)
	}
	if err != nil {
		return fmt.Errorf("adapt: %w", err)
	}
	s.exps = grow(s.exps, nv)
	for r, tgt := range s.targets {
		row := s.logits[r*nv : (r+1)*nv]
		lse := logSumExp(row, s.exps)
		if s.refs[r] != nil {
			sums[s.owner[r]] += klDivergence(s.refs[r], row, lse)
		} else {
			sums[s.owner[r]] += max(lse-float64(row[tgt]), s.floor)
		}
		if s.visit != nil {
			s.visit(row, lse)
		}
	}
	s.batch, s.targets, s.owner, s.refs, s.x = s.batch[:0], s.targets[:0], s.owner[:0], s.refs[:0], s.x[:0]
	return nil
}

// frozenRows returns for each example the residual stream entering layer
// s.from at each of its rows but the last, running the layers below for
// the examples not seen before.
func (s *Scorer) frozenRows(examples []Example) ([][]float32, error) {
	width := s.e.Config().NEmbd
	out := make([][]float32, len(examples))
	var missing []int
	for i, ex := range examples {
		if out[i] = s.frozen[tokensKey(ex)]; out[i] == nil {
			missing = append(missing, i)
		}
	}
	for len(missing) > 0 {
		group := missing[:min(len(missing), maxScoredRows)]
		missing = missing[len(group):]
		seqs, err := s.sequences(len(group))
		if err != nil {
			return nil, err
		}
		s.batch = s.batch[:0]
		for k, i := range group {
			for j := range len(examples[i].Prompt) + len(examples[i].Completion) - 1 {
				s.batch = append(s.batch, engine.Entry{Seq: seqs[k], Token: tokenAt(examples[i], j), Pos: int32(j)})
			}
		}
		x := make([]float32, len(s.batch)*width)
		s.paced()
		if err := s.e.StepTo(s.batch, s.from, x); err != nil {
			return nil, fmt.Errorf("adapt: %w", err)
		}
		for _, i := range group {
			n := (len(examples[i].Prompt) + len(examples[i].Completion) - 1) * width
			out[i], x = x[:n:n], x[n:]
			s.frozen[tokensKey(examples[i])] = out[i]
		}
	}
	return out, nil
}

// tokensKey identifies an example by its tokens.
func tokensKey(ex Example) string {
	b := make([]byte, 0, 4*(len(ex.Prompt)+len(ex.Completion))+4)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ex.Prompt)))
	for _, t := range ex.Prompt {
		b = binary.LittleEndian.AppendUint32(b, uint32(t))
	}
	for _, t := range ex.Completion {
		b = binary.LittleEndian.AppendUint32(b, uint32(t))
	}
	return string(b)
}

// Greedy continues each prompt by n tokens, each the most likely one.
func (s *Scorer) Greedy(prompts [][]int32, n int) ([][]int32, error) {
	return s.continueAll(prompts, n, func(_ int, logits []float32) int32 { return engine.Argmax(logits) })
}

// Sample continues each prompt by n tokens drawn by a sampler of cfg; the
// sampler of prompt i is seeded with cfg.Seed+i.
func (s *Scorer) Sample(prompts [][]int32, n int, cfg engine.SamplerConfig) ([][]int32, error) {
	samplers := make([]*engine.Sampler, len(prompts))
	for i, p := range prompts {
		c := cfg
		c.Seed += uint64(i)
		sm, err := engine.NewSampler(c)
		if err != nil {
			return nil, fmt.Errorf("adapt: %w", err)
		}
		for _, id := range p {
			sm.Accept(id)
		}
		samplers[i] = sm
	}
	return s.continueAll(prompts, n, func(i int, logits []float32) int32 { return samplers[i].Sample(logits) })
}

// continueAll feeds prompts to sequences of their own, in groups of at most
// maxScoredRows run as one batch, and extends each by n tokens that pick
// chooses from the logits of its last one.
func (s *Scorer) continueAll(prompts [][]int32, n int, pick func(i int, logits []float32) int32) ([][]int32, error) {
	out := make([][]int32, len(prompts))
	for from := 0; from < len(prompts); from += maxScoredRows {
		to := min(from+maxScoredRows, len(prompts))
		if err := s.continueGroup(prompts[from:to], out[from:to], n, func(i int, l []float32) int32 { return pick(from+i, l) }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Scorer) continueGroup(prompts, out [][]int32, n int, pick func(i int, logits []float32) int32) error {
	seqs, err := s.sequences(len(prompts))
	if err != nil {
		return err
	}
	nv := s.e.Config().NVocab
	s.logits = grow(s.logits, len(prompts)*nv)
	s.batch = s.batch[:0]
	for i, p := range prompts {
		if len(p) == 0 {
			return fmt.Errorf("adapt: prompt %d is empty", i)
		}
		for j, id := range p {
			s.batch = append(s.batch, engine.Entry{Seq: seqs[i], Token: id, Pos: int32(j), Logits: j == len(p)-1})
		}
	}
	for range n {
		s.paced()
		if err := s.e.Step(s.batch, s.logits); err != nil {
			return fmt.Errorf("adapt: %w", err)
		}
		s.batch = s.batch[:0]
		for i := range prompts {
			id := pick(i, s.logits[i*nv:(i+1)*nv])
			if id < 0 {
				return fmt.Errorf("adapt: prompt %d: nothing to pick: every logit is NaN or -Inf", i)
			}
			out[i] = append(out[i], id)
			s.batch = append(s.batch, engine.Entry{Seq: seqs[i], Token: id, Pos: int32(len(prompts[i]) + len(out[i]) - 1), Logits: true})
		}
	}
	return nil
}

func tokenAt(ex Example, j int) int32 {
	if j < len(ex.Prompt) {
		return ex.Prompt[j]
	}
	return ex.Completion[j-len(ex.Prompt)]
}

// Reference is a distribution to keep at one scored row: its
// probabilities over the vocabulary, with Σ p·log p and Σ p, so that
// KL(p ‖ softmax(logits)) = Σ p·log p − Σ p·logits + Σ p·lse(logits)
// costs one pass over the logits and no exponential per value (taking
// the exponentials of stored log-probabilities was a third of a
// rehearsal step). Scorer.References makes them.
type Reference struct {
	p                []float32 // probabilities, NVocab values
	negEntropy, mass float64
}

// referenceOf is softmax(logits) as a Reference, computed in float64;
// lse is logSumExp(logits).
func referenceOf(logits []float32, lse float64) Reference {
	r := Reference{p: make([]float32, len(logits))}
	for v, x := range logits {
		lp := float64(x) - lse
		p := float32(math.Exp(lp))
		r.p[v] = p
		r.negEntropy += float64(p) * lp
		r.mass += float64(p)
	}
	return r
}

// klDivergence is KL(ref ‖ softmax(logits)), computed in float64; lse is
// logSumExp(logits).
func klDivergence(ref *Reference, logits []float32, lse float64) float64 {
	var pl float64
	for v, p := range ref.p {
		pl += float64(p) * float64(logits[v])
	}
	return ref.negEntropy - pl + ref.mass*lse
}

// logSumExp is log Σ exp(logits): the exponentials by the CPU backend's
// vector math (a loss takes one per logit, and math.Exp made them a third
// of a rehearsal step) into scratch, len(logits) values, summed in
// float64.
func logSumExp(logits, scratch []float32) float64 {
	mx := float32(math.Inf(-1))
	for _, v := range logits {
		mx = max(mx, v)
	}
	scratch = scratch[:len(logits)]
	copy(scratch, logits)
	cpu.ExpSub(scratch, mx)
	var sum float64
	for _, e := range scratch {
		sum += float64(e)
	}
	return float64(mx) + math.Log(sum)
}

// References returns, for each example in order, the distributions the
// model gives at its scored rows (len(Completion) rows): the Reference of
// a rehearsal example. They take 4·NVocab bytes a row.
func (s *Scorer) References(examples []Example) ([][]Reference, error) {
	var rows []Reference
	s.visit = func(logits []float32, lse float64) { rows = append(rows, referenceOf(logits, lse)) }
	_, _, err := s.crossEntropies(examples, s.from)
	s.visit = nil
	if err != nil {
		return nil, err
	}
	return perExample(rows, examples), nil
}

// Predict returns, for each example in order, the most likely token at
// each of its scored rows (teacher-forced: the row that predicts
// completion token j sees the prompt and the completion's first j
// tokens), and the mean cross-entropy of its completion tokens, from one
// pass.
func (s *Scorer) Predict(examples []Example) ([][]int32, []float64, error) {
	var rows []int32
	s.visit = func(logits []float32, _ float64) { rows = append(rows, engine.Argmax(logits)) }
	sums, counts, err := s.crossEntropies(examples, s.from)
	s.visit = nil
	if err != nil {
		return nil, nil, err
	}
	for i := range sums {
		sums[i] /= float64(counts[i])
	}
	return perExample(rows, examples), sums, nil
}

// perExample cuts rows, one per scored row of examples in order, into
// each example's len(Completion) rows.
func perExample[T any](rows []T, examples []Example) [][]T {
	out := make([][]T, len(examples))
	for i, ex := range examples {
		out[i], rows = rows[:len(ex.Completion):len(ex.Completion)], rows[len(ex.Completion):]
	}
	return out
}

// Inputs runs examples once, as Loss does, and returns for each pair the
// rows that enter its projection (pair.In values each) at every scored row
// of every example in order: the row of the last prompt token and of each
// completion token but the last. The engine must have an adapt.Set as its
// Hooks.Delta.
func (s *Scorer) Inputs(examples []Example, pairs []*LoRAPair) ([][][]float32, error) {
	set, ok := s.e.Options().Hooks.Delta.(*Set)
	if !ok {
		return nil, errors.New("adapt: recording inputs needs an engine with an adapt.Set as Hooks.Delta")
	}
	rec := make(map[target]*recording, len(pairs))
	for _, pr := range pairs {
		rec[target{pr.Layer, pr.Proj}] = &recording{width: pr.In}
	}
	set.record(rec)
	_, _, err := s.crossEntropies(examples, 0)
	set.record(nil)
	if err != nil {
		return nil, err
	}
	out := make([][][]float32, len(pairs))
	for i, pr := range pairs {
		r, at := rec[target{pr.Layer, pr.Proj}], 0
		for _, ex := range examples {
			n := len(ex.Prompt) + len(ex.Completion) - 1
			for j := len(ex.Prompt) - 1; j < n; j++ {
				out[i] = append(out[i], r.rows[(at+j)*r.width:(at+j+1)*r.width])
			}
			at += n
		}
		if at*r.width != len(r.rows) {
			return nil, fmt.Errorf("adapt: recorded %d rows of blk.%d.%s, want %d", len(r.rows)/r.width, pr.Layer, projName(pr.Proj), at)
		}
	}
	return out, nil
}
