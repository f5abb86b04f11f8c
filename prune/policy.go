package prune

import (
	"cmp"
	"slices"
	"sync"

	"github.com/edged/edged/engine"
)

// policy is what every policy shares: its configuration, the sequences it
// acts on and their state during one forward pass.
type policy struct {
	cfg Config

	mu   sync.Mutex // guards seqs and the states in it
	seqs map[*engine.Sequence]*seqState
}

// seqState is one enabled sequence's state. It is reset at the first layer
// of every forward pass, so that each prefill starts afresh.
type seqState struct {
	n0     int       // the sequence's rows entering the forward pass
	scores []float32 // importance of the current rows (Zero-TPrune)
	scored bool      // scores belong to this layer of this forward pass
	work   []float32 // per-head scratch (Zero-TPrune)
	keys   []float32 // key rows of the current rows (Zero-TPrune's similarity stage)
}

// scoresFor starts the ranking of seq's rows of one forward pass from
// attention m (heads × rows × (past+rows) values): it returns seq's state
// with its scores sized for the rows, not yet scored, or nil when seq is
// not enabled or there is nothing to rank. The caller holds p.mu and sets
// scored once it has filled the scores.
func (p *policy) scoresFor(seq *engine.Sequence, past, rows, heads int, m []float32) *seqState {
	st := p.seqs[seq]
	if st == nil {
		return nil
	}
	st.scored = false
	if rows <= 1 || len(m) < heads*rows*(past+rows) {
		return nil
	}
	st.scores = slices.Grow(st.scores[:0], rows)[:rows]
	return st
}

// init sets p up for cfg, defaults filled in.
func (p *policy) init(cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	p.cfg, p.seqs = cfg, make(map[*engine.Sequence]*seqState)
	return nil
}

// Config returns the configuration in force, defaults filled in.
func (p *policy) Config() Config {
	c := p.cfg
	c.Layers = slices.Clone(c.Layers)
	return c
}

// Enable makes the policy act on seq's future forward passes.
func (p *policy) Enable(seq *engine.Sequence) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seqs[seq] == nil {
		p.seqs[seq] = &seqState{}
	}
}

// Disable stops the policy acting on seq and forgets its state. Call it
// before freeing an enabled sequence.
func (p *policy) Disable(seq *engine.Sequence) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.seqs, seq)
}

// Enabled reports whether the policy acts on seq.
func (p *policy) Enabled(seq *engine.Sequence) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seqs[seq] != nil
}

// scoreFunc ranks the rows of one sequence's segment: scores[i] is row i's
// importance (higher is kept first). It returns false when it has no
// ranking, and then every row is kept.
type scoreFunc func(layer int, st *seqState, seg []engine.Row, scores []float32) bool

// selectRows implements engine.TokenSelector for every policy: after a
// pruning layer each enabled sequence keeps its protected rows and the
// best-ranked others, up to its target count.
//
// p.mu must not be held.
func (p *policy) selectRows(layer int, rows []engine.Row, score scoreFunc) []int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seqs) == 0 {
		return nil
	}
	if layer == 0 {
		// The first layer of a forward pass: each enabled sequence's
		// rows are counted afresh.
		forSegments(rows, func(seg []engine.Row, _ int) {
			if st := p.seqs[seg[0].Seq]; st != nil {
				st.n0 = len(seg)
			}
		})
	}
	stage := p.cfg.stage(layer)
	if stage < 0 {
		return nil
	}
	var keep []int32
	dropped := false
	forSegments(rows, func(seg []engine.Row, start int) {
		kept := len(seg)
		if st := p.seqs[seg[0].Seq]; st != nil {
			kept = p.chooseSegment(layer, stage, st, seg, score, &keep, start)
		} else {
			keep = appendRange(keep, start, start+len(seg))
		}
		dropped = dropped || kept < len(seg)
	})
	if !dropped {
		return nil
	}
	return keep
}

// chooseSegment appends to keep the batch indices (offset by base) of the
// rows of seg to keep and returns how many it appended.
func (p *policy) chooseSegment(layer, stage int, st *seqState, seg []engine.Row, score scoreFunc, keep *[]int32, base int) int {
	n := len(seg)
	mandatory, want := p.plan(stage, st, seg)
	nMandatory := 0
	for _, m := range mandatory {
		if m {
			nMandatory++
		}
	}
	scores := make([]float32, n)
	if want == n || !score(layer, st, seg, scores) {
		*keep = appendRange(*keep, base, base+n)
		return n
	}
	order := make([]int, 0, n-nMandatory)
	for i := range seg {
		if !mandatory[i] {
			order = append(order, i)
		}
	}
	// Highest score first; ties to the earlier row, so that the choice is
	// deterministic.
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	for _, i := range order[:want-nMandatory] {
		mandatory[i] = true
	}
	for i, m := range mandatory {
		if m {
			*keep = append(*keep, int32(base+i))
		}
	}
	return want
}

// plan marks the rows of seg that must be kept (BOS, rows that want
// logits, the last Window rows) and returns how many rows to keep after
// pruning stage.
func (p *policy) plan(stage int, st *seqState, seg []engine.Row) (mandatory []bool, want int) {
	n := len(seg)
	mandatory = make([]bool, n)
	nMandatory := 0
	for i, r := range seg {
		if r.Pos == 0 || r.Logits || i >= n-p.cfg.Window {
			mandatory[i] = true
			nMandatory++
		}
	}
	return mandatory, max(min(p.cfg.target(max(st.n0, n), stage), n), nMandatory)
}

// forSegments calls f with each sequence's consecutive rows and the index
// of the first.
func forSegments(rows []engine.Row, f func(seg []engine.Row, start int)) {
	for start := 0; start < len(rows); {
		end := start + 1
		for end < len(rows) && rows[end].Seq == rows[start].Seq {
			end++
		}
		f(rows[start:end], start)
		start = end
	}
}

func appendRange(keep []int32, from, to int) []int32 {
	for i := from; i < to; i++ {
		keep = append(keep, int32(i))
	}
	return keep
}
