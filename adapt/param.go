package adapt

import (
	"errors"

	"github.com/edged/edged/engine"
)

// Param is one tensor of an adapter: its name in the adapter file and its
// float32 values, which an optimizer updates in place unless Frozen.
type Param struct {
	Name string
	Data []float32
	// Frozen tensors are saved and checkpointed but not trained (a LoRA's
	// A when its rows were chosen from data, see LoRA.InitFromInputs).
	Frozen bool
}

// Trainable is an adapter MeZO can train: *LoRA or *Prefix.
type Trainable interface {
	// Params lists the tensors in a fixed order (the order defines the
	// tensor index of the perturbation generator).
	Params() []Param
	// attach returns a new sequence of e that runs with the adapter.
	attach(e *engine.Engine) (*engine.Sequence, error)
	// detach undoes attach and frees s.
	detach(e *engine.Engine, s *engine.Sequence)
	// live reports whether attached sequences see later changes of the
	// tensors (LoRA) rather than a copy made by attach (prefix).
	live() bool
	// cacheRows is the number of cache rows the adapter fills before a
	// sequence's first token. Token positions start at 0 all the same.
	cacheRows() int
	// firstLayer is the lowest layer whose output the adapter changes:
	// the layers below compute the same whatever its values.
	firstLayer() int
}

func (lo *LoRA) attach(e *engine.Engine) (*engine.Sequence, error) {
	set, ok := e.Options().Hooks.Delta.(*Set)
	if !ok {
		return nil, errors.New("adapt: running a LoRA needs an engine with an adapt.Set as Hooks.Delta")
	}
	s, err := e.NewSequence(nil)
	if err != nil {
		return nil, err
	}
	set.Use(s, Applied{LoRA: lo, Scale: 1})
	return s, nil
}

func (lo *LoRA) detach(e *engine.Engine, s *engine.Sequence) {
	if set, ok := e.Options().Hooks.Delta.(*Set); ok {
		set.Forget(s)
	}
	s.Free()
}

func (lo *LoRA) live() bool     { return true }
func (lo *LoRA) cacheRows() int { return 0 }

func (lo *LoRA) firstLayer() int {
	if len(lo.Pairs) == 0 {
		return 0
	}
	return lo.Pairs[0].Layer // pairs are sorted by layer
}

func (p *Prefix) attach(e *engine.Engine) (*engine.Sequence, error) { return e.NewSequence(p) }
func (p *Prefix) detach(_ *engine.Engine, s *engine.Sequence)       { s.Free() }
func (p *Prefix) live() bool                                        { return false }
func (p *Prefix) cacheRows() int                                    { return p.Len }
func (p *Prefix) firstLayer() int                                   { return 0 }

// base is the absent adapter: a Scorer over base runs the plain model.
type base struct{}

func (base) Params() []Param                                   { return nil }
func (base) attach(e *engine.Engine) (*engine.Sequence, error) { return e.NewSequence(nil) }
func (base) detach(_ *engine.Engine, s *engine.Sequence)       { s.Free() }
func (base) live() bool                                        { return true }
func (base) cacheRows() int                                    { return 0 }
func (base) firstLayer() int                                   { return 0 }
