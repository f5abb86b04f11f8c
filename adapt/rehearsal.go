package adapt

import (
	"errors"
	"fmt"

	"github.com/edged/edged/engine"
)

// SelfSamples returns n sequences of length tokens that the Scorer's
// model writes from BOS at temperature 1 with no truncation, as examples
// scored from the first token after BOS; sample i has the sampler seed
// seed+i. They stand for "the model's own text": held-out text to measure
// what an adapter moved, rehearsal data, the reference inputs of
// InitFromData.
func (s *Scorer) SelfSamples(bos int32, n, length int, seed uint64) ([]Example, error) {
	if n <= 0 {
		return nil, nil
	}
	if bos < 0 {
		return nil, errors.New("adapt: samples of the model start at BOS, which needs the model's tokenizer")
	}
	prompts := make([][]int32, n)
	for i := range prompts {
		prompts[i] = []int32{bos}
	}
	outs, err := s.Sample(prompts, length, engine.SamplerConfig{Temperature: 1, TopP: 1, Seed: seed})
	if err != nil {
		return nil, err
	}
	ex := make([]Example, n)
	for i, o := range outs {
		ex[i] = Example{Prompt: prompts[i], Completion: o}
	}
	return ex, nil
}

// Rehearsal returns SelfSamples with the Scorer's distributions at every
// token as their Reference: training on them (with a Scorer of the base
// model) pays KL(base ‖ adapted) at each token, so that it keeps what the
// model did.
func (s *Scorer) Rehearsal(bos int32, n, length int, seed uint64) ([]Example, error) {
	ex, err := s.SelfSamples(bos, n, length, seed)
	if err != nil || len(ex) == 0 {
		return ex, err
	}
	refs, err := s.References(ex)
	if err != nil {
		return nil, fmt.Errorf("adapt: rehearsal: %w", err)
	}
	for i := range ex {
		ex[i].Reference = refs[i]
	}
	return ex, nil
}
