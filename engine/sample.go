package engine

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// ErrSamplerConfig is returned (wrapped, with every problem listed) by
// NewSampler when a SamplerConfig holds an invalid value.
var ErrSamplerConfig = errors.New("engine: invalid sampler config")

// DefaultPenaltyLastN is the penalty window used when
// SamplerConfig.PenaltyLastN is 0. It is llama.cpp's default.
const DefaultPenaltyLastN = 64

// maxPenaltyTokenID bounds the token ids the penalty history records, so
// that a corrupt id cannot make the per-token table huge. Real vocabularies
// are far smaller.
const maxPenaltyTokenID = 1 << 24

// SamplerConfig selects how a Sampler turns logits into a token. The zero
// value is greedy decoding with no penalties.
//
// The stages run in llama.cpp's default order:
//
//	penalties → top-k → top-p → min-p → temperature → softmax → draw
//
// Top-p and min-p therefore see the distribution at temperature 1, as in
// llama.cpp; the temperature only reshapes what they kept.
type SamplerConfig struct {
	// Temperature divides the logits before the softmax. 0 is greedy
	// decoding: the highest (penalized) logit wins, ties going to the lowest
	// id. Negative, NaN or infinite values are rejected.
	Temperature float32

	// TopK keeps only the K highest logits. <= 0 (or >= the vocabulary) is
	// off.
	TopK int

	// TopP keeps the smallest set of most likely tokens whose probabilities
	// add up to at least TopP. Values <= 0 or >= 1 are off.
	TopP float32

	// MinP drops tokens whose probability is below MinP times the
	// probability of the most likely token. <= 0 is off; above 1 is rejected.
	MinP float32

	// RepeatPenalty divides positive logits and multiplies negative ones of
	// tokens seen in the penalty window (llama.cpp semantics). 0 or 1 is
	// off; negative, NaN or infinite values are rejected.
	RepeatPenalty float32

	// FrequencyPenalty is subtracted once per occurrence of a token in the
	// penalty window; PresencePenalty is subtracted once from every token
	// that occurs in it (OpenAI semantics). 0 is off; either may be
	// negative to encourage repetition.
	FrequencyPenalty, PresencePenalty float32

	// PenaltyLastN is how many of the most recent tokens (accepted or
	// sampled) the penalties look at: 0 means DefaultPenaltyLastN (64),
	// -1 means the whole history since the last Reset. Values below -1 are
	// rejected.
	PenaltyLastN int

	// Seed seeds the sampler's own generator (a math/rand/v2 PCG): the
	// same seed, configuration and sequence of logits give the same tokens.
	Seed uint64
}

// validate reports every invalid field at once.
func (c SamplerConfig) validate() error {
	var bad []string
	finite := func(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }
	if !finite(c.Temperature) || c.Temperature < 0 {
		bad = append(bad, fmt.Sprintf("temperature %v must be finite and >= 0", c.Temperature))
	}
	if math.IsNaN(float64(c.TopP)) {
		bad = append(bad, "top-p is NaN")
	}
	if math.IsNaN(float64(c.MinP)) || c.MinP > 1 {
		bad = append(bad, fmt.Sprintf("min-p %v must be <= 1", c.MinP))
	}
	if !finite(c.RepeatPenalty) || c.RepeatPenalty < 0 {
		bad = append(bad, fmt.Sprintf("repeat penalty %v must be finite and >= 0", c.RepeatPenalty))
	}
	if !finite(c.FrequencyPenalty) {
		bad = append(bad, fmt.Sprintf("frequency penalty %v must be finite", c.FrequencyPenalty))
	}
	if !finite(c.PresencePenalty) {
		bad = append(bad, fmt.Sprintf("presence penalty %v must be finite", c.PresencePenalty))
	}
	if c.PenaltyLastN < -1 {
		bad = append(bad, fmt.Sprintf("penalty window %d must be >= -1", c.PenaltyLastN))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrSamplerConfig, strings.Join(bad, "; "))
	}
	return nil
}

// candidate is one token still in the running, with its probability weight
// once the temperature has been applied.
type candidate struct {
	id    int32
	logit float32
	p     float64
}

// better orders candidates best first: higher logit, then lower id.
func better(a, b candidate) bool {
	return a.logit > b.logit || (a.logit == b.logit && a.id < b.id)
}

// worse is the reverse of better.
func worse(a, b candidate) bool { return better(b, a) }

// Sampler picks the next token from a row of logits. It keeps the history
// the penalties need and a seeded generator, and reuses its scratch buffers,
// so that sampling allocates nothing once it has seen the vocabulary size.
// A token costs O(V) for the copy and the penalties, O(V log k) with top-k,
// and O(V) expected for top-p without top-k (no full sort of the
// vocabulary). A Sampler serves one sequence and is not safe for concurrent
// use.
type Sampler struct {
	cfg      SamplerConfig
	penalize bool // some penalty is on
	window   int  // penalty window; 0 = whole history
	pcg      *rand.PCG
	rng      *rand.Rand

	work  []float32   // penalized copy of the caller's logits
	cands []candidate // candidate scratch, cap = vocabulary

	// Penalty history. ring holds the window (unused when window is 0);
	// seen lists the distinct ids in it, count[i] how often seen[i] occurs,
	// and pos[id]-1 is the index of id in seen (0: absent).
	ring  []int32
	head  int
	seen  []int32
	count []int32
	pos   []int32
}

// NewSampler validates cfg and returns a sampler with an empty history.
func NewSampler(cfg SamplerConfig) (*Sampler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Sampler{cfg: cfg}
	rp := cfg.RepeatPenalty
	s.penalize = (rp != 0 && rp != 1) || cfg.FrequencyPenalty != 0 || cfg.PresencePenalty != 0
	switch cfg.PenaltyLastN {
	case 0:
		s.window = DefaultPenaltyLastN
	case -1:
		s.window = 0
	default:
		s.window = cfg.PenaltyLastN
	}
	s.pcg = rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)
	s.rng = rand.New(s.pcg)
	return s, nil
}

// Reset forgets the history and reseeds the generator, so the sampler
// behaves exactly as a new one with the same configuration.
func (s *Sampler) Reset() {
	for _, id := range s.seen {
		s.pos[id] = 0
	}
	s.seen = s.seen[:0]
	s.count = s.count[:0]
	s.ring = s.ring[:0]
	s.head = 0
	s.pcg.Seed(s.cfg.Seed, s.cfg.Seed^0x9e3779b97f4a7c15)
}

// Accept records a token that was not sampled (a prompt token, a forced
// token) so that the penalties see it. Negative ids are ignored.
func (s *Sampler) Accept(id int32) {
	s.record(id)
}

// Sample applies the penalties from the sampler's history to a copy of
// logits (the caller's slice is never modified), runs the chain, draws a
// token and records it in the history. NaN logits count as -Inf and are
// never chosen; +Inf counts as the largest float32. When no token can be
// chosen (logits empty, or all NaN or -Inf) Sample returns -1 and records
// nothing.
func (s *Sampler) Sample(logits []float32) int32 {
	var id int32 = -1
	if s.cfg.Temperature == 0 || s.cfg.TopK == 1 {
		// Every filter keeps the best token, so greedy is the argmax. NaN
		// compares false and +Inf wins, so raw logits need no copy.
		if s.penalize {
			id = Argmax(s.penalized(logits))
		} else {
			id = Argmax(logits)
		}
	} else if c := s.candidates(logits); len(c) > 0 {
		id = s.draw(c)
	}
	if id >= 0 {
		s.record(id)
	}
	return id
}

// penalized copies logits into the scratch buffer, sanitizing NaN and +Inf,
// and applies the penalties.
func (s *Sampler) penalized(logits []float32) []float32 {
	n := len(logits)
	if cap(s.work) < n {
		s.work = make([]float32, n)
		s.cands = make([]candidate, 0, n)
	}
	if s.penalize && len(s.pos) < n {
		s.pos = append(s.pos, make([]int32, n-len(s.pos))...)
	}
	w := s.work[:n]
	for i, l := range logits {
		w[i] = sanitizeLogit(l)
	}
	if !s.penalize {
		return w
	}
	rp := s.cfg.RepeatPenalty
	if rp == 0 {
		rp = 1
	}
	for i, id := range s.seen {
		if int(id) >= n {
			continue
		}
		l := w[id]
		if l > 0 {
			l /= rp
		} else {
			l *= rp
		}
		// Extreme negative penalties can overflow to +Inf or give NaN.
		w[id] = sanitizeLogit(l - float32(s.count[i])*s.cfg.FrequencyPenalty - s.cfg.PresencePenalty)
	}
	return w
}

// sanitizeLogit maps NaN to -Inf (never chosen) and +Inf to the largest float32,
// so that differences of logits stay well defined.
func sanitizeLogit(l float32) float32 {
	switch {
	case math.IsNaN(float64(l)):
		return float32(math.Inf(-1))
	case l > math.MaxFloat32:
		return math.MaxFloat32
	}
	return l
}

// Argmax is the greedy choice: the index of the largest value, the lowest
// on ties (NaN never wins), or -1 when every value is -Inf or NaN.
func Argmax(w []float32) int32 {
	best := int32(-1)
	top := float32(math.Inf(-1))
	for i, l := range w {
		if l > top {
			best, top = int32(i), l
		}
	}
	return best
}

// candidates runs penalties, top-k, top-p, min-p and the temperature, and
// returns the surviving tokens with unnormalized weights in p. The slice
// aliases the sampler's scratch buffer.
func (s *Sampler) candidates(logits []float32) []candidate {
	w := s.penalized(logits)
	n := len(w)
	c := s.cands[:0]
	sorted := false // c is ordered best first

	if k := s.cfg.TopK; k > 0 && k < n {
		// Keep the k best in a heap whose root is the worst kept: O(n log k).
		for i, l := range w {
			if math.IsInf(float64(l), -1) {
				continue
			}
			x := candidate{id: int32(i), logit: l}
			if len(c) < k {
				c = append(c, x)
				siftUp(c, len(c)-1, worse)
			} else if better(x, c[0]) {
				c[0] = x
				siftDown(c, 0, worse)
			}
		}
		// Heapsort: repeatedly move the worst to the end, leaving c best first.
		for end := len(c) - 1; end > 0; end-- {
			c[0], c[end] = c[end], c[0]
			siftDown(c[:end], 0, worse)
		}
		sorted = true
	} else {
		for i, l := range w {
			if !math.IsInf(float64(l), -1) {
				c = append(c, candidate{id: int32(i), logit: l})
			}
		}
	}
	if len(c) == 0 {
		return c
	}

	top := c[0].logit // the highest logit
	if !sorted {
		for _, x := range c {
			if x.logit > top {
				top = x.logit
			}
		}
	}

	if p := float64(s.cfg.TopP); p > 0 && p < 1 {
		c = topP(c, sorted, top, p)
	}

	if mp := float64(s.cfg.MinP); mp > 0 {
		// In logit space: p_i >= mp * p_max  <=>  l_i >= l_max + ln(mp).
		floor := float64(top) + math.Log(mp)
		if sorted {
			m := 1
			for m < len(c) && float64(c[m].logit) >= floor {
				m++
			}
			c = c[:m]
		} else {
			m := 0
			for _, x := range c {
				if float64(x.logit) >= floor {
					c[m] = x
					m++
				}
			}
			c = c[:m]
		}
	}

	inv := 1 / float64(s.cfg.Temperature)
	for i := range c {
		c[i].p = math.Exp((float64(c[i].logit) - float64(top)) * inv)
	}
	return c
}

// topP keeps the tokens of the shortest best-first prefix of c whose
// softmax probabilities (at temperature 1) add up to at least p. A sorted c
// is cut in place. An unsorted c is partitioned around pivots, as in
// quickselect, so that finding the cut costs O(n) expected instead of a full
// sort; the kept tokens are then returned in no particular order.
func topP(c []candidate, sorted bool, top float32, p float64) []candidate {
	var z float64
	for i := range c {
		c[i].p = math.Exp(float64(c[i].logit) - float64(top))
		z += c[i].p
	}
	need := p * z // probability mass still to be covered, unnormalized
	if sorted {
		for i, x := range c {
			if need -= x.p; need <= 0 {
				return c[:i+1]
			}
		}
		return c
	}

	// Invariant: c[:lo] is kept, c[hi:] is dropped, and every token in
	// c[lo:hi] is worse than those in c[:lo] and better than those in c[hi:].
	lo, hi := 0, len(c)
	for rounds := 0; hi-lo > 32 && rounds < 64; rounds++ {
		r := c[lo:hi]
		last := len(r) - 1
		pv := medianOfThree(r)
		r[pv], r[last] = r[last], r[pv]
		pivot := r[last]
		m := 0
		var above float64 // mass of the tokens better than the pivot
		for i := range last {
			if better(r[i], pivot) {
				r[i], r[m] = r[m], r[i]
				above += r[m].p
				m++
			}
		}
		r[m], r[last] = r[last], r[m]
		if above >= need {
			hi = lo + m
			continue
		}
		need -= above + pivot.p
		lo += m + 1
		if need <= 0 {
			return c[:lo]
		}
	}
	// Few tokens left (or unlucky pivots): sort what remains undecided.
	r := c[lo:hi]
	slices.SortFunc(r, compareCandidates)
	for i, x := range r {
		if need -= x.p; need <= 0 {
			return c[:lo+i+1]
		}
	}
	return c[:hi]
}

// medianOfThree returns the index of the median of the first, middle and
// last candidates of r.
func medianOfThree(r []candidate) int {
	a, b, c := 0, len(r)/2, len(r)-1
	if better(r[b], r[a]) {
		a, b = b, a
	}
	if better(r[c], r[b]) {
		b = c
		if better(r[b], r[a]) {
			b = a
		}
	}
	return b
}

// compareCandidates orders candidates best first, for slices.SortFunc.
func compareCandidates(a, b candidate) int {
	switch {
	case better(a, b):
		return -1
	case better(b, a):
		return 1
	}
	return 0
}

// draw picks one candidate with probability proportional to its weight.
func (s *Sampler) draw(c []candidate) int32 {
	var sum float64
	for _, x := range c {
		sum += x.p
	}
	r := s.rng.Float64() * sum
	var cum float64
	for _, x := range c {
		cum += x.p
		if r < cum {
			return x.id
		}
	}
	// Rounding left r at or past the total: take the last token with weight.
	for i := len(c) - 1; i >= 0; i-- {
		if c[i].p > 0 {
			return c[i].id
		}
	}
	return c[0].id
}

// record adds id to the penalty history, dropping the token that leaves
// the window.
func (s *Sampler) record(id int32) {
	if !s.penalize || id < 0 || id >= maxPenaltyTokenID {
		return
	}
	if s.window > 0 {
		if len(s.ring) < s.window {
			s.ring = append(s.ring, id)
		} else {
			s.forget(s.ring[s.head])
			s.ring[s.head] = id
			s.head = (s.head + 1) % s.window
		}
	}
	if int(id) >= len(s.pos) {
		s.pos = append(s.pos, make([]int32, int(id)+1-len(s.pos))...)
	}
	if i := s.pos[id]; i > 0 {
		s.count[i-1]++
		return
	}
	s.seen = append(s.seen, id)
	s.count = append(s.count, 1)
	s.pos[id] = int32(len(s.seen))
}

// forget removes one occurrence of id from the history.
func (s *Sampler) forget(id int32) {
	i := s.pos[id] - 1
	if s.count[i]--; s.count[i] > 0 {
		return
	}
	last := len(s.seen) - 1
	moved := s.seen[last]
	s.seen[i], s.count[i] = moved, s.count[last]
	s.pos[moved] = i + 1
	s.pos[id] = 0
	s.seen, s.count = s.seen[:last], s.count[:last]
}

func siftDown(c []candidate, i int, before func(a, b candidate) bool) {
	for {
		l := 2*i + 1
		if l >= len(c) {
			return
		}
		j := l
		if r := l + 1; r < len(c) && before(c[r], c[l]) {
			j = r
		}
		if !before(c[j], c[i]) {
			return
		}
		c[i], c[j] = c[j], c[i]
		i = j
	}
}

func siftUp(c []candidate, i int, before func(a, b candidate) bool) {
	for i > 0 {
		p := (i - 1) / 2
		if !before(c[i], c[p]) {
			return
		}
		c[i], c[p] = c[p], c[i]
		i = p
	}
}

// StopMatcher reports when generated text ends with one of the stop
// strings, holding back text that could be the start of a stop string so
// streamed output never shows part of a stop string. Stop strings and the
// token limit belong to generation, not to the Sampler.
type StopMatcher struct {
	stops   []string
	held    string // tail that is a proper prefix of some stop string
	stopped bool
}

// NewStopMatcher returns a matcher for stops. Empty stop strings are
// ignored; with none left, Push passes text straight through.
func NewStopMatcher(stops []string) *StopMatcher {
	m := &StopMatcher{}
	for _, st := range stops {
		if st != "" {
			m.stops = append(m.stops, st)
		}
	}
	return m
}

// Push takes newly decoded text and returns the text that is safe to show.
// When a stop string has appeared, it returns the text before the earliest
// one and stopped = true; the stop string and anything after it are
// dropped, and later calls return ("", true).
func (m *StopMatcher) Push(text string) (emit string, stopped bool) {
	if m.stopped {
		return "", true
	}
	if len(m.stops) == 0 {
		return text, false
	}
	s := m.held + text
	cut := -1
	for _, st := range m.stops {
		if i := strings.Index(s, st); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		m.stopped = true
		m.held = ""
		return s[:cut], true
	}
	hold := 0
	for _, st := range m.stops {
		for k := min(len(st)-1, len(s)); k > hold; k-- {
			if strings.HasSuffix(s, st[:k]) {
				hold = k
				break
			}
		}
	}
	m.held = s[len(s)-hold:]
	return s[:len(s)-hold], false
}

// Flush returns the held-back text at the end of generation (empty when a
// stop string matched) and clears it.
func (m *StopMatcher) Flush() string {
	out := m.held
	m.held = ""
	if m.stopped {
		return ""
	}
	return out
}
