package model

// The SentencePiece-style family (tokenizer.ggml.model "llama"), as
// llama.cpp's llm_tokenizer_spm: spaces become U+2581 ("▁"), a space is put
// before the first text run and after each special token (add_space_prefix),
// the text is cut into UTF-8 characters, and adjacent pieces are merged while
// their concatenation is a token, the best-scoring pair first (ties to the
// leftmost), through a priority queue: O(n log n) in the length of the run,
// with no splitting on spaces or anything else. A character no token covers
// becomes its bytes' <0xXX> tokens.

import (
	"fmt"
	"strings"
)

func spmSpec() familySpec {
	return familySpec{
		name: "SPM",
		defaults: tokSettings{
			bos: 1, eos: 2, unk: 0, sep: -1, pad: -1, mask: -1,
			addSpacePrefix: true,
			addBOS:         true,
		},
		build:       newSPM,
		spacePrefix: true,
	}
}

// spmSpace is the escaped space, U+2581 LOWER ONE EIGHTH BLOCK.
const spmSpace = "\u2581"

// spmMaxRun bounds the text one merge session sees, so that byte offsets fit
// int32. A longer run (over a gigabyte without a special token) is encoded in
// pieces cut at character boundaries.
const spmMaxRun = 1 << 30

type spm struct {
	v *vocab
	s *tokSettings // the tokenizer's settings: read at encode time, when they are final
	// byteID is the byte-fallback token of each byte (llama_vocab::byte_to_token:
	// "<0xXX>", else the one-byte text), or -1.
	byteID [256]int32
	// pairs holds every two characters that sit side by side in some token,
	// with the id of the two as a token, or -1.
	pairs map[string]int32
}

func newSPM(_ *File, v *vocab, s *tokSettings) (family, error) {
	m := &spm{v: v, s: s}
	for b := range m.byteID {
		id := v.id(fmt.Sprintf("<0x%02X>", b))
		if id < 0 {
			id = v.id(string([]byte{byte(b)}))
		}
		m.byteID[b] = id
	}
	m.pairs = make(map[string]int32, len(v.texts))
	for _, s := range v.texts {
		a := 0 // start of the previous character
		for off := min(utf8SeqLen(s[0]), len(s)); off < len(s); {
			n := min(utf8SeqLen(s[off]), len(s)-off)
			if p := s[a : off+n]; !hasKey(m.pairs, p) {
				m.pairs[p] = v.id(p)
			}
			a = off
			off += n
		}
	}
	return m, nil
}

// appendPiece turns "▁" back into spaces and a byte token into its byte.
func (m *spm) appendPiece(dst []byte, text string, a tokenAttr) []byte {
	return appendSPMPiece(dst, text, a)
}

func (m *spm) encode(out []int32, text string, afterSpecial bool) []int32 {
	var b strings.Builder
	b.Grow(len(text) + 2*strings.Count(text, " ") + len(spmSpace))
	if m.s.addSpacePrefix && afterSpecial {
		b.WriteString(spmSpace)
	}
	for {
		i := strings.IndexByte(text, ' ')
		if i < 0 {
			b.WriteString(text)
			break
		}
		b.WriteString(text[:i])
		b.WriteString(spmSpace)
		text = text[i+1:]
	}
	s := b.String()
	for len(s) > spmMaxRun {
		cut := spmMaxRun
		for cut > 0 && s[cut]&0xC0 == 0x80 {
			cut--
		}
		if cut == 0 {
			cut = spmMaxRun // no character boundary at all: cut anywhere
		}
		out = m.session(out, s[:cut])
		s = s[cut:]
	}
	return m.session(out, s)
}

// utf8SeqLen is llama.cpp's unicode_len_utf8: the length a lead byte
// announces, 1 for a stray continuation byte.
func utf8SeqLen(b byte) int {
	switch {
	case b < 0xC0:
		return 1
	case b < 0xE0:
		return 2
	case b < 0xF0:
		return 3
	}
	return 4
}

// spmSymbol is a piece of the text in the merge chain.
type spmSymbol struct {
	start, n   int32 // the piece is text[start:start+n]; n == 0 once merged into its left neighbour
	prev, next int32 // neighbours in the chain, -1 at the ends of the segment
}

// spmBigram is a candidate merge of symbol left with its right neighbour.
// It is stale once either side has changed, which changes their total size
// (a side only grows, or vanishes into its left neighbour).
type spmBigram struct {
	left  int32
	size  int32 // bytes of the merged text when queued
	score float32
}

// before reports whether a is merged before b: higher score first, then the
// leftmost (llm_bigram_spm::comparator).
func (a *spmBigram) before(b *spmBigram) bool {
	return a.score > b.score || a.score == b.score && a.left < b.left
}

// spmQueue is a 4-ary heap of candidates, best at index 0: shallower than a
// binary heap, so fewer cache misses when a long run fills it.
type spmQueue []spmBigram

func (q *spmQueue) push(x spmBigram) {
	h := append(grow2(*q), x)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 4
		if !x.before(&h[p]) {
			break
		}
		h[i] = h[p]
		i = p
	}
	h[i] = x
	*q = h
}

func (q *spmQueue) pop() spmBigram {
	h := *q
	top := h[0]
	last := len(h) - 1
	x := h[last]
	h = h[:last]
	i := 0
	for {
		c := 4*i + 1
		if c >= len(h) {
			break
		}
		best := c
		for j := c + 1; j < c+4 && j < len(h); j++ {
			if h[j].before(&h[best]) {
				best = j
			}
		}
		if !h[best].before(&x) {
			break
		}
		h[i] = h[best]
		i = best
	}
	if len(h) > 0 {
		h[i] = x
	}
	*q = h
	return top
}

// spmSession holds the buffers of one Encode call.
type spmSession struct {
	m    *spm
	text string
	syms []spmSymbol
	q    spmQueue
}

// session tokenizes one escaped run (llm_tokenizer_spm_session::tokenize).
//
// llama.cpp merges over the whole run with one queue. Merges only ever join
// characters that sit side by side inside some token, so where two adjacent
// characters appear together in no token (as "s" and "▁" in "dogs▁run") no
// merge crosses, and the two sides merge independently: the order of merges
// within each side, and so the result, is the same. The run is therefore
// merged segment by segment, with small queues that stay in cache; a run
// without such a place (a long word, text without spaces) is one segment,
// merged in O(n log n).
func (m *spm) session(out []int32, text string) []int32 {
	s := spmSession{m: m, text: text}
	prev := -1 // start of the previous character
	for off := 0; off < len(text); {
		n := min(utf8SeqLen(text[off]), len(text)-off)
		if prev >= 0 {
			id, inside := m.pairs[text[prev:off+n]]
			if !inside {
				out = s.merge(out)
			} else if id >= 0 {
				left := int32(len(s.syms) - 1)
				s.q.push(spmBigram{left: left, size: int32(off + n - prev), score: m.v.scores[id]})
			}
		}
		i := int32(len(s.syms))
		s.syms = append(grow2(s.syms), spmSymbol{start: int32(off), n: int32(n), prev: i - 1, next: i + 1})
		prev = off
		off += n
	}
	return s.merge(out)
}

// merge runs the merges of the segment held in s.syms, appends its tokens
// and empties the buffers for the next segment.
func (s *spmSession) merge(out []int32) []int32 {
	if len(s.syms) == 0 {
		return out
	}
	syms := s.syms
	syms[len(syms)-1].next = -1
	for len(s.q) > 0 {
		bg := s.q.pop()
		l := &syms[bg.left]
		if l.n == 0 || l.next < 0 {
			continue
		}
		r := &syms[l.next]
		if l.n+r.n != bg.size {
			continue // a side changed since this candidate was queued
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = bg.left
		}
		s.tryBigram(l.prev, bg.left)
		s.tryBigram(bg.left, l.next)
	}
	for i := int32(0); i != -1; i = syms[i].next {
		out = s.m.resegment(out, s.text[syms[i].start:syms[i].start+syms[i].n])
	}
	s.syms, s.q = syms[:0], s.q[:0]
	return out
}

func (s *spmSession) tryBigram(left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	start := s.syms[left].start
	size := s.syms[left].n + s.syms[right].n
	if int(size) > s.m.v.maxLen {
		return
	}
	id := s.m.v.id(s.text[start : start+size])
	if id < 0 {
		return
	}
	s.q.push(spmBigram{left: left, size: size, score: s.m.v.scores[id]})
}

// resegment appends the ids of one final symbol: its token, else its bytes'
// fallback tokens. Every merged symbol is a token, so llama.cpp's recursive
// resegmentation through rev_merge never applies and is left out. Where a
// byte has no fallback token (llama.cpp throws there) the character becomes
// one unknown token, as in SentencePiece, or nothing without one.
func (m *spm) resegment(out []int32, text string) []int32 {
	if id := m.v.id(text); id >= 0 {
		return append(out, id)
	}
	for i := 0; i < len(text); i++ {
		if m.byteID[text[i]] < 0 {
			if m.s.unk >= 0 {
				out = append(out, m.s.unk)
			}
			return out
		}
	}
	for i := 0; i < len(text); i++ {
		out = append(out, m.byteID[text[i]])
	}
	return out
}

func hasKey(m map[string]int32, k string) bool {
	_, ok := m[k]
	return ok
}

// grow2 makes room for one more element, doubling a full slice: append grows
// large slices by a quarter, which copies a long run's buffers many times.
func grow2[T any](s []T) []T {
	if len(s) < cap(s) {
		return s
	}
	g := make([]T, len(s), max(2*cap(s), 64))
	copy(g, s)
	return g
}
