package engine

import (
	"errors"
	"fmt"

	"github.com/edged/edged/accel"
)

// Sequence is one stream of tokens and its KV cache. A Sequence belongs to
// the Engine that made it and is used only inside that engine's Steps.
type Sequence struct {
	e      *Engine
	k, v   []accel.Buffer // per layer: Context rows of KVDim values
	n      []int          // per layer: cache rows filled
	prefix int            // leading rows that came from a PrefixProvider
	tokens int            // tokens fed through Step
	mark   uint64         // the Step that last saw this sequence (validation)
}

// NewSequence allocates a sequence with an empty cache, or with the
// prefix rows of p when p is not nil.
func (e *Engine) NewSequence(p PrefixProvider) (*Sequence, error) {
	c := &e.cfg
	s := &Sequence{e: e, k: make([]accel.Buffer, c.NLayer), v: make([]accel.Buffer, c.NLayer), n: make([]int, c.NLayer)}
	size := e.opts.Context * c.KVDim()
	for l := range s.k {
		var errK, errV error
		be := e.stageOf(l).be
		s.k[l], errK = be.AllocCache(size, e.cacheType)
		s.v[l], errV = be.AllocCache(size, e.cacheType)
		if err := errors.Join(errK, errV); err != nil {
			s.Free()
			return nil, fmt.Errorf("engine: KV cache of %d tokens: %w", e.opts.Context, err)
		}
	}
	if p != nil {
		if err := s.setPrefix(p); err != nil {
			s.Free()
			return nil, err
		}
	}
	return s, nil
}

func (s *Sequence) setPrefix(p PrefixProvider) error {
	n, kvDim := p.PrefixLen(), s.e.cfg.KVDim()
	if n < 0 || n >= s.e.opts.Context {
		return fmt.Errorf("engine: prefix of %d rows does not fit a context of %d", n, s.e.opts.Context)
	}
	for l := range s.k {
		k, v := p.Prefix(l)
		if len(k) != n*kvDim || len(v) != n*kvDim {
			return fmt.Errorf("engine: prefix layer %d: %d/%d values, want %d", l, len(k), len(v), n*kvDim)
		}
		s.e.stageOf(l).be.WriteCache(s.k[l], s.v[l], kvDim, 0, k, v)
		s.n[l] = n
	}
	s.prefix = n
	return nil
}

// Len is the number of tokens fed to the sequence (prefix rows excluded).
func (s *Sequence) Len() int { return s.tokens }

// CacheLen is the number of cache rows filled at layer (prefix rows and
// rows pruned away accounted for).
func (s *Sequence) CacheLen(layer int) int { return s.n[layer] }

// Truncate forgets every token after the first n, keeping the prefix.
// Truncate(0) always succeeds; otherwise it is exact only when every layer
// holds every token (no token selector dropped rows, no StepTo or
// StepFrom ran only some layers), and returns an error when not.
func (s *Sequence) Truncate(n int) error {
	if n < 0 || n > s.tokens {
		return fmt.Errorf("engine: truncate to %d tokens of %d", n, s.tokens)
	}
	for l := range s.n {
		if n > 0 && s.n[l] != s.prefix+s.tokens {
			return fmt.Errorf("engine: truncate: layer %d holds %d rows, not the %d of every token; start a new sequence", l, s.n[l], s.prefix+s.tokens)
		}
	}
	for l := range s.n {
		s.n[l] = s.prefix + n
	}
	s.tokens = n
	return nil
}

// Free releases the cache. The sequence must not be used afterwards.
func (s *Sequence) Free() {
	for l := range s.k {
		be := s.e.stageOf(l).be
		if s.k[l] != nil {
			be.Free(s.k[l])
		}
		if s.v[l] != nil {
			be.Free(s.v[l])
		}
	}
	s.k, s.v = nil, nil
}
