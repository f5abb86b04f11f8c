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
	if err := e.validate(batch, logits); err != nil {
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
		if err := e.forward(batch[:n], logits[:nLogits*e.cfg.NVocab]); err != nil {
			return err
		}
		logits, batch = logits[nLogits*e.cfg.NVocab:], batch[n:]
	}
	return nil
}

func (e *Engine) validate(batch []Entry, logits []float32) error {
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
		if en.Seq.n[0]+added > e.opts.Context {
			return fmt.Errorf("%w: entry %d: the sequence's context of %d tokens is full", ErrBatch, i, e.opts.Context)
		}
		if en.Logits {
			nLogits++
		}
	}
	if len(logits) < nLogits*e.cfg.NVocab {
		return fmt.Errorf("%w: %d logits rows requested, room for %d", ErrBatch, nLogits, len(logits)/e.cfg.NVocab)
	}
	return nil
}
