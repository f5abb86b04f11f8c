package adapt

import (
	"fmt"
	"sync"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/engine"
)

// Applied is a LoRA attached to a sequence with a user scale (llama.cpp's
// adapter scale; 1 applies the adapter as trained).
type Applied struct {
	LoRA  *LoRA
	Scale float32
}

// Set chooses the LoRA adapters of each sequence, so that one batch can mix
// sequences with different adapters and with none. Give it to the engine
// as Hooks.Delta. Adapters attach and detach between Steps without
// reloading the base model. A Set serves one engine.
type Set struct {
	mu    sync.RWMutex // guards bySeq; Apply holds it for reading
	bySeq map[*engine.Sequence][]Applied
	s     scratch // used only inside Apply, which the engine never runs concurrently
	// rec, while set, copies the rows entering the projections of some
	// LoRA pairs (see Scorer.Inputs); only Apply touches its rows.
	rec map[target]*recording
}

// recording collects the rows entering one projection, width values each,
// in the order the engine computed them.
type recording struct {
	width int
	rows  []float32
}

// record starts (r not nil) or stops copying projections' input rows.
func (s *Set) record(r map[target]*recording) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rec = r
}

// NewSet returns an empty Set: every sequence runs the base model.
func NewSet() *Set {
	return &Set{bySeq: map[*engine.Sequence][]Applied{}}
}

// Use attaches adapters to seq, replacing any attached before; none
// detaches all.
func (s *Set) Use(seq *engine.Sequence, adapters ...Applied) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(adapters) == 0 {
		delete(s.bySeq, seq)
		return
	}
	s.bySeq[seq] = append([]Applied(nil), adapters...)
}

// Forget detaches seq's adapters (call it before freeing seq).
func (s *Set) Forget(seq *engine.Sequence) { s.Use(seq) }

// Adapters returns the adapters attached to seq.
func (s *Set) Adapters(seq *engine.Sequence) []Applied {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bySeq[seq]
}

// Apply implements engine.DeltaProvider: each run of consecutive rows of
// one sequence gets that sequence's adapters.
func (s *Set) Apply(b accel.Backend, layer int, p engine.Proj, x, y accel.Buffer, rows []engine.Row) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if r := s.rec[target{layer, p}]; r != nil {
		if x.Len() < len(rows)*r.width {
			return fmt.Errorf("adapt: recording blk.%d.%s: %d values for %d rows of %d", layer, projName(p), x.Len(), len(rows), r.width)
		}
		n := len(r.rows)
		r.rows = append(r.rows, make([]float32, len(rows)*r.width)...)
		b.Read(r.rows[n:], x, 0)
	}
	for from := 0; from < len(rows); {
		to := from + 1
		for to < len(rows) && rows[to].Seq == rows[from].Seq {
			to++
		}
		for _, a := range s.bySeq[rows[from].Seq] {
			pr := a.LoRA.Pair(layer, p)
			if pr == nil {
				continue
			}
			if err := s.s.apply(b, pr, a.Scale*a.LoRA.Scale(pr), x, y, from, to); err != nil {
				return err
			}
		}
		from = to
	}
	return nil
}
