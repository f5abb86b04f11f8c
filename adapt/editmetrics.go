package adapt

import (
	"errors"
	"fmt"
)

// EditScores are one edit's metrics, as EasyEdit defines them.
type EditScores struct {
	// Loss is the mean cross-entropy of the target tokens given the
	// prompt: what LocFT-BF trains down and stops on.
	Loss float64 `json:"loss"`
	// Reliability is the teacher-forced token accuracy of the target: the
	// share of its tokens that are the most likely one given the prompt
	// and the target's tokens before them.
	Reliability float64 `json:"reliability"`
	// Generalization is the same with the prompt replaced by each
	// rephrase, averaged over the rephrases; nil without rephrases.
	Generalization *float64 `json:"generalization,omitempty"`
	// Locality is the share of tokens of the locality prompts'
	// continuations whose most likely next token is the base model's,
	// averaged over the prompts; nil without locality prompts.
	Locality *float64 `json:"locality,omitempty"`
}

// EditMetrics are the metrics of every edit and their means over the
// edits (generalization over those with rephrases, locality over those
// with locality prompts).
type EditMetrics struct {
	Loss           float64      `json:"loss"`
	Reliability    float64      `json:"reliability"`
	Generalization *float64     `json:"generalization,omitempty"`
	Locality       *float64     `json:"locality,omitempty"`
	Edits          []EditScores `json:"edits,omitempty"`
}

// EditEval measures edits on adapted models against the base model. Each
// locality prompt is continued once, greedily, by the base model for a
// fixed number of tokens; an adapted model is then run teacher-forced on
// that continuation and its most likely token at each row compared with
// the base model's there (so one early difference does not derail the
// comparison of the rows after it). Every measure is one batched pass of
// a Scorer: the edits' targets, rephrases and locality continuations
// together.
type EditEval struct {
	edits []Edit
	// examples are the edits' targets, then each edit's rephrases with
	// its target, then the distinct locality continuations.
	examples []Example
	// rephrases[i] are the indices in examples of edit i's rephrases,
	// locality[i] those of its locality continuations.
	rephrases, locality [][]int
	// base holds the base model's predictions along each example (only
	// those of the locality continuations are used).
	base [][]int32
}

// NewEditEval prepares the measures of edits: base (a Scorer of the base
// model) continues each distinct locality prompt by k tokens (k ≥ 1) and
// records its predictions along them.
func NewEditEval(base *Scorer, edits []Edit, k int) (*EditEval, error) {
	if len(edits) == 0 {
		return nil, errors.New("adapt: edit metrics: no edits")
	}
	if k < 1 {
		return nil, fmt.Errorf("adapt: edit metrics: %d locality tokens, want at least 1", k)
	}
	ev := &EditEval{edits: edits, rephrases: make([][]int, len(edits)), locality: make([][]int, len(edits))}
	for _, ed := range edits {
		ev.examples = append(ev.examples, ed.Example())
	}
	for i, ed := range edits {
		for _, r := range ed.Rephrases {
			ev.rephrases[i] = append(ev.rephrases[i], len(ev.examples))
			ev.examples = append(ev.examples, Example{Prompt: r, Completion: ed.Target})
		}
	}
	// Edits often share locality prompts (a common set of the model's own
	// text): each distinct prompt is continued and scored once.
	at := map[string]int{}
	var prompts [][]int32
	for i, ed := range edits {
		for _, p := range ed.Locality {
			key := tokensKey(Example{Prompt: p})
			j, ok := at[key]
			if !ok {
				j = len(ev.examples) + len(prompts)
				at[key] = j
				prompts = append(prompts, p)
			}
			ev.locality[i] = append(ev.locality[i], j)
		}
	}
	ctx := base.e.Options().Context
	for i, ed := range edits {
		for _, p := range append([][]int32{ed.Prompt}, ed.Rephrases...) {
			if n := len(p) + len(ed.Target); n > ctx {
				return nil, fmt.Errorf("adapt: edit metrics: edit %d: a prompt and the target are %d tokens, more than the context of %d", i, n, ctx)
			}
		}
		for _, p := range ed.Locality {
			if n := len(p) + k; n > ctx {
				return nil, fmt.Errorf("adapt: edit metrics: edit %d: a locality prompt and %d tokens are %d tokens, more than the context of %d", i, k, n, ctx)
			}
		}
	}
	if len(prompts) > 0 {
		conts, err := base.Greedy(prompts, k)
		if err != nil {
			return nil, fmt.Errorf("adapt: edit metrics: %w", err)
		}
		for i, p := range prompts {
			ev.examples = append(ev.examples, Example{Prompt: p, Completion: conts[i]})
		}
	}
	var err error
	if ev.base, _, err = base.Predict(ev.examples); err != nil {
		return nil, fmt.Errorf("adapt: edit metrics: %w", err)
	}
	return ev, nil
}

// Measure returns the metrics of the model that sc runs (the base model
// itself gives locality 1).
func (ev *EditEval) Measure(sc *Scorer) (EditMetrics, error) {
	preds, losses, err := sc.Predict(ev.examples)
	if err != nil {
		return EditMetrics{}, fmt.Errorf("adapt: edit metrics: %w", err)
	}
	m := EditMetrics{Edits: make([]EditScores, len(ev.edits))}
	var gen, loc mean
	for i, ed := range ev.edits {
		s := &m.Edits[i]
		s.Loss = losses[i]
		s.Reliability = agreement(preds[i], ed.Target)
		s.Generalization = meanOver(ev.rephrases[i], func(j int) float64 { return agreement(preds[j], ed.Target) })
		s.Locality = meanOver(ev.locality[i], func(j int) float64 { return agreement(preds[j], ev.base[j]) })
		m.Loss += s.Loss / float64(len(ev.edits))
		m.Reliability += s.Reliability / float64(len(ev.edits))
		gen.add(s.Generalization)
		loc.add(s.Locality)
	}
	m.Generalization, m.Locality = gen.value(), loc.value()
	return m, nil
}

// agreement is the share of positions where got and want hold the same
// token (they have the same length).
func agreement(got, want []int32) float64 {
	n := 0
	for j := range want {
		if got[j] == want[j] {
			n++
		}
	}
	return float64(n) / float64(len(want))
}

// meanOver is the mean of f over idx, or nil when idx is empty.
func meanOver(idx []int, f func(int) float64) *float64 {
	var m mean
	for _, j := range idx {
		v := f(j)
		m.add(&v)
	}
	return m.value()
}

// mean accumulates the values that are present.
type mean struct {
	sum float64
	n   int
}

func (m *mean) add(v *float64) {
	if v != nil {
		m.sum += *v
		m.n++
	}
}

func (m *mean) value() *float64 {
	if m.n == 0 {
		return nil
	}
	v := m.sum / float64(m.n)
	return &v
}
