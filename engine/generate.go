package engine

import (
	"context"
	"fmt"

	"github.com/edged/edged/model"
)

// GenerateOptions control one generation.
type GenerateOptions struct {
	// MaxTokens is the most tokens to generate; 0: until an end token or a
	// full context.
	MaxTokens int
	Sampler   SamplerConfig
	// Stop strings end generation; the text emitted stops before them.
	Stop []string
}

// StopReason says why a generation ended.
type StopReason string

// Reasons a generation ends.
const (
	StopEnd    StopReason = "end"       // an end-of-generation token
	StopLength StopReason = "length"    // MaxTokens or a full context
	StopString StopReason = "stop"      // a stop string
	StopCancel StopReason = "cancelled" // ctx ended
)

// Generation is the result of Generate.
type Generation struct {
	IDs    []int32 // generated tokens, the end token excluded
	Reason StopReason
}

// Generate feeds prompt to seq (which may already hold earlier tokens),
// then samples tokens one at a time until an end-of-generation token (or
// BOS, which models such as llama2.c's use as a document separator), a stop
// string, MaxTokens, a full context or ctx's end. emit receives the text as
// it is produced, never half a UTF-8 character nor part of a stop string.
func (e *Engine) Generate(ctx context.Context, seq *Sequence, prompt []int32, tok *model.Tokenizer, opts GenerateOptions, emit func(string) error) (Generation, error) {
	var gen Generation
	if len(prompt) == 0 {
		return gen, fmt.Errorf("generate: empty prompt")
	}
	sampler, err := NewSampler(opts.Sampler)
	if err != nil {
		return gen, fmt.Errorf("generate: %w", err)
	}
	for _, id := range prompt {
		sampler.Accept(id)
	}
	stream, stops := tok.NewStreamDecoder(), NewStopMatcher(opts.Stop)
	logits := make([]float32, e.cfg.NVocab)
	batch := make([]Entry, len(prompt))
	for i, id := range prompt {
		batch[i] = Entry{Seq: seq, Token: id, Pos: int32(seq.Len() + i), Logits: i == len(prompt)-1}
	}
	for {
		if err := ctx.Err(); err != nil {
			gen.Reason = StopCancel
			return gen, err
		}
		if err := e.Step(batch, logits); err != nil {
			return gen, fmt.Errorf("generate: %w", err)
		}
		id := sampler.Sample(logits)
		if id < 0 {
			return gen, fmt.Errorf("generate: nothing to sample: every logit is NaN or -Inf")
		}
		if tok.IsEOG(id) || id == tok.BOS() {
			gen.Reason = StopEnd
			break
		}
		gen.IDs = append(gen.IDs, id)
		text, stopped := stops.Push(stream.Push(id))
		if err := emitNonEmpty(emit, text); err != nil {
			return gen, err
		}
		if stopped {
			gen.Reason = StopString
			return gen, nil
		}
		if len(gen.IDs) == opts.MaxTokens || seq.n[0] >= e.opts.Context {
			gen.Reason = StopLength
			break
		}
		batch = append(batch[:0], Entry{Seq: seq, Token: id, Pos: int32(seq.Len()), Logits: true})
	}
	text, stopped := stops.Push(stream.Flush())
	if stopped {
		gen.Reason = StopString
	} else {
		text += stops.Flush()
	}
	return gen, emitNonEmpty(emit, text)
}

func emitNonEmpty(emit func(string) error, text string) error {
	if text == "" || emit == nil {
		return nil
	}
	return emit(text)
}
