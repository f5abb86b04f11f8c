package engine

import (
	"errors"
	"fmt"
)

// Entry is one token row of a batch.
type Entry struct {
	Seq    *Sequence
	Token  int32
	Pos    int32 // position used for the rotary embedding
	Logits bool  // return this row's logits
}

// ErrBatch is wrapped by the errors that reject a malformed batch.
var ErrBatch = errors.New("invalid batch")

// Step runs one forward pass over batch and writes the logits of the rows
// marked Logits, in batch order, NVocab values each, into logits. The
// entries of one sequence must be consecutive and continue that sequence;
// batches longer than Options.BatchSize are computed in slices.
func (e *Engine) Step(batch []Entry, logits []float32) error {
	return e.run(batch, span{to: e.cfg.NLayer}, nil, logits)
}

// StepTo runs batch through layers [0, layer) only and writes the residual
// stream entering layer (NLayer: leaving the last), NEmbd values per
// entry, into x. With StepFrom it splits a Step in two: a caller whose
// changes (an adapter's) start at layer computes the frozen layers below
// once and runs only the rest again. The sequences' caches of layers
// below layer advance; those of layer and above do not. No token selector
// may drop rows of batch.
func (e *Engine) StepTo(batch []Entry, layer int, x []float32) error {
	if err := e.checkSplit(batch, layer, 1, e.cfg.NLayer, x); err != nil {
		return err
	}
	return e.run(batch, span{to: layer}, x, nil)
}

// StepFrom continues batch from x, the residual stream entering layer
// (NEmbd values per entry, as StepTo writes it): it runs layers [layer,
// NLayer) and writes the logits as Step does. Only the caches of layer
// and above advance, so a sequence run this way serves further StepFrom
// calls from the same layer, or Truncate(0), and not Step.
func (e *Engine) StepFrom(batch []Entry, layer int, x, logits []float32) error {
	if err := e.checkSplit(batch, layer, 0, e.cfg.NLayer-1, x); err != nil {
		return err
	}
	return e.run(batch, span{from: layer, to: e.cfg.NLayer}, x, logits)
}

// checkSplit checks the layer of a StepTo or StepFrom against [lo, hi] and
// the size of its residual stream x.
func (e *Engine) checkSplit(batch []Entry, layer, lo, hi int, x []float32) error {
	if layer < lo || layer > hi {
		return fmt.Errorf("%w: layer %d, want %d to %d", ErrBatch, layer, lo, hi)
	}
	if len(x) != len(batch)*e.cfg.NEmbd {
		return fmt.Errorf("%w: %d residual values for %d rows of %d", ErrBatch, len(x), len(batch), e.cfg.NEmbd)
	}
	return nil
}

// span is a range of layers [from, to) a forward pass runs.
type span struct{ from, to int }

// run validates batch and runs it through the layers of sp in slices of
// at most BatchSize rows. x is the residual stream entering sp.from when
// that is not 0, and receives the one entering sp.to when that is not the
// last layer; logits are computed only when sp ends at the last layer.
func (e *Engine) run(batch []Entry, sp span, x, logits []float32) error {
	if err := e.validate(batch, sp, logits); err != nil {
		return err
	}
	for len(batch) > 0 {
		n := min(len(batch), e.opts.BatchSize)
		nLogits := 0
		for _, en := range batch[:n] {
			if en.Logits {
				nLogits++
			}
		}
		var xs []float32
		if x != nil {
			xs, x = x[:n*e.cfg.NEmbd], x[n*e.cfg.NEmbd:]
		}
		var ls []float32
		if sp.to == e.cfg.NLayer {
			ls, logits = logits[:nLogits*e.cfg.NVocab], logits[nLogits*e.cfg.NVocab:]
		}
		if err := e.forward(batch[:n], sp, xs, ls); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// validate checks batch for a pass over the layers of sp: the caches of
// its first layer bound the context, and logits need room only when it
// ends at the output.
func (e *Engine) validate(batch []Entry, sp span, logits []float32) error {
	nLogits := 0
	e.stepID++
	var prev *Sequence
	added := 0
	for i, en := range batch {
		if en.Seq == nil || en.Seq.e != e || en.Seq.k == nil {
			return fmt.Errorf("%w: entry %d: sequence is nil, freed or from another engine", ErrBatch, i)
		}
		if en.Token < 0 || int(en.Token) >= e.cfg.NVocab {
			return fmt.Errorf("%w: entry %d: token %d outside the vocabulary of %d", ErrBatch, i, en.Token, e.cfg.NVocab)
		}
		if en.Pos < 0 {
			return fmt.Errorf("%w: entry %d: negative position %d", ErrBatch, i, en.Pos)
		}
		if en.Seq != prev {
			if en.Seq.mark == e.stepID {
				return fmt.Errorf("%w: entry %d: the rows of a sequence must be consecutive", ErrBatch, i)
			}
			en.Seq.mark, prev, added = e.stepID, en.Seq, 0
		}
		added++
		if en.Seq.n[sp.from]+added > e.opts.Context {
			return fmt.Errorf("%w: entry %d: the sequence's context of %d tokens is full", ErrBatch, i, e.opts.Context)
		}
		if en.Logits {
			nLogits++
		}
	}
	if sp.to == e.cfg.NLayer && len(logits) < nLogits*e.cfg.NVocab {
		return fmt.Errorf("%w: %d logits rows requested, room for %d", ErrBatch, nLogits, len(logits)/e.cfg.NVocab)
	}
	return nil
}
