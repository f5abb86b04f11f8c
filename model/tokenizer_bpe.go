package model

// The byte-level BPE family (tokenizer.ggml.model "gpt2"), as llama.cpp's
// llm_tokenizer_bpe: the text is cut into words by the pre-tokenizer that
// tokenizer.ggml.pre names (tokenizer_pretok.go), each word's bytes become
// GPT-2's printable characters, and adjacent pieces of a word are merged by
// the ranks of tokenizer.ggml.merges, the lowest rank first (ties to the
// leftmost). A final piece that is no token becomes the tokens of its single
// bytes, where the vocabulary has them, else nothing — as in llama.cpp.
//
// Every byte of a word is one character after the mapping, so the merge
// works on the word's bytes and on piece ids: each string a merge rule
// names has an id (its token id, or one past the vocabulary when it is no
// token), and a rule is looked up by the ids of its two sides.

import (
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"unicode/utf8"
)

const keyTokMerges = "tokenizer.ggml.merges"

func bpeSpec() familySpec {
	return familySpec{
		name: "BPE",
		defaults: tokSettings{
			bos: 11, eos: 11, unk: -1, sep: -1, pad: -1, mask: -1,
			cleanSpaces: true,
		},
		build: newBPE,
	}
}

// bpeMerge is the rank of a merge rule and the piece id of its result.
type bpeMerge struct {
	rank int32
	id   int32
}

type bpe struct {
	v     *vocab
	pre   preTokenizer
	bytes *byteMap

	ignoreMerges bool
	ranks        map[uint64]bpeMerge // (left id, right id) -> rule
	nPieces      int64               // pieces named: the vocabulary and the texts past it
	charID       [256]int32          // piece id of each byte's character, or -1
	byteTok      [256]int32          // token of each one-byte text, or -1

	sessions sync.Pool // *bpeSession
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func newBPE(f *File, v *vocab, s *tokSettings) (family, error) {
	pre, err := f.StringOr(keyTokPre, "")
	if err != nil {
		return nil, err
	}
	spec, err := preSpecOf(pre)
	if err != nil {
		return nil, err
	}
	s.addBOS = s.addBOS || spec.addBOS
	s.addSEP = s.addSEP || spec.addSEP
	s.cleanSpaces = s.cleanSpaces && !spec.keepSpaces
	if spec.noBOS {
		s.bos = -1
	}
	merges, err := Array[string](f, keyTokMerges)
	if err != nil {
		return nil, err
	}

	m := &bpe{v: v, pre: spec.pre, bytes: gpt2Bytes(), ignoreMerges: spec.ignoreMerges,
		ranks: make(map[uint64]bpeMerge, len(merges)), nPieces: int64(len(v.texts))}
	unicodeFlags() // build the tables now rather than in the first Encode
	extraIDs := map[string]int32{}
	pieceID := func(s []byte, add bool) int32 {
		if id, ok := v.ids[string(s)]; ok {
			return id
		}
		if id, ok := extraIDs[string(s)]; ok {
			return id
		}
		if !add {
			return -1
		}
		id := int32(m.nPieces)
		extraIDs[string(s)] = id
		m.nPieces++
		return id
	}
	var joined []byte
	for i, rule := range merges {
		// llama.cpp splits at the first space after the first byte; a
		// rule without one, or with an empty side, never applies.
		sp := -1
		if len(rule) > 1 {
			if j := strings.IndexByte(rule[1:], ' '); j >= 0 {
				sp = j + 1
			}
		}
		if sp < 0 || sp == len(rule)-1 {
			continue
		}
		if m.nPieces+3 > 1<<31-1 {
			return nil, fmt.Errorf("%s: too many pieces", keyTokMerges)
		}
		joined = append(append(joined[:0], rule[:sp]...), rule[sp+1:]...)
		left := pieceID(joined[:sp], true)
		right := pieceID(joined[sp:], true)
		key := pairKey(left, right)
		if _, dup := m.ranks[key]; dup {
			continue // the first rule for a pair wins, as in llama.cpp's emplace
		}
		m.ranks[key] = bpeMerge{rank: int32(i), id: pieceID(joined, true)}
	}
	for b := range 256 {
		m.charID[b] = pieceID([]byte(m.bytes.char[b]), false)
		m.byteTok[b] = v.id(string([]byte{byte(b)}))
	}
	return m, nil
}

// piece renders a normal token as llama.cpp's llama_decode_text: each
// character back to its byte. A character that stands for no byte becomes
// "[UNK_BYTE_0x<its UTF-8 in hex><the whole token text>]", llama.cpp's
// marker, text and all. Byte-type tokens render as nothing in llama.cpp's
// BPE, and so here.
func (m *bpe) appendPiece(b []byte, text string, a tokenAttr) []byte {
	if a&attrNormal == 0 {
		return b
	}
	for i := 0; i < len(text); {
		r, n := nextCpt(text, i)
		i += n
		if c, ok := m.bytes.byteOfChar(r); ok {
			b = append(b, c)
			continue
		}
		b = append(b, "[UNK_BYTE_0x"...)
		for _, c := range appendCpt(nil, r) {
			b = fmt.Appendf(b, "%02x", c)
		}
		b = append(b, text...)
		b = append(b, ']')
	}
	return b
}

// bpeSymbol is a piece of a word in the merge chain.
type bpeSymbol struct {
	id         int32 // piece id, -1 for a character no rule names
	start, n   int32 // the piece is word[start:start+n]; n == 0 once merged into its left neighbour
	prev, next int32
}

// bpeBigram is a candidate merge of the symbols left and right, valid while
// both still hold the pieces lid and rid.
type bpeBigram struct {
	rank, left, right int32
	lid, rid, id      int32
}

// before reports whether a merges before b: the lower rank, then the
// leftmost (llm_bigram_bpe::comparator).
func (a *bpeBigram) before(b *bpeBigram) bool {
	return a.rank < b.rank || a.rank == b.rank && a.left < b.left
}

type bpeQueue []bpeBigram

func (q *bpeQueue) push(x bpeBigram) {
	h := append(*q, x)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !x.before(&h[p]) {
			break
		}
		h[i] = h[p]
		i = p
	}
	h[i] = x
	*q = h
}

func (q *bpeQueue) pop() bpeBigram {
	h := *q
	top := h[0]
	last := len(h) - 1
	x := h[last]
	h = h[:last]
	i := 0
	for {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if c+1 < len(h) && h[c+1].before(&h[c]) {
			c++
		}
		if !h[c].before(&x) {
			break
		}
		h[i] = h[c]
		i = c
	}
	if len(h) > 0 {
		h[i] = x
	}
	*q = h
	return top
}

// bpeSession holds the buffers of one encode call, and a memo of the
// tokens of recent words (in English text almost every word is a repeat).
// Sessions are pooled.
type bpeSession struct {
	m      *bpe
	text   cptText
	ends   []int32
	buf    []int32
	src    []byte // the text re-encoded, when it is not valid UTF-8
	mapped []byte
	syms   []bpeSymbol
	q      bpeQueue
	memo   *wordMemo
}

// wordMemo remembers the tokens of recent words in a direct-mapped cache:
// a fixed size (300 KiB), and a lookup is a hash and a compare.
type wordMemo struct {
	seed  maphash.Seed
	slots [memoSlots]memoSlot
}

type memoSlot struct {
	nw, nt uint8 // word length, token count; nw == 0: empty
	word   [memoMaxWord]byte
	ids    [memoMaxTokens]int32
}

const (
	memoSlots     = 1 << 12
	memoMaxWord   = 32 // longer words are not remembered
	memoMaxTokens = 8  // nor words of more tokens
)

func (m *wordMemo) slot(w string) *memoSlot {
	return &m.slots[maphash.String(m.seed, w)&(memoSlots-1)]
}

// bpeMaxRun bounds the text one session splits, so that code point offsets
// fit int32. A longer run (over a gigabyte without a special token) is
// encoded in pieces cut at character boundaries, which may cut a word.
const bpeMaxRun = 1 << 30

func (m *bpe) encode(out []int32, text string, _ bool) []int32 {
	s, _ := m.sessions.Get().(*bpeSession)
	if s == nil {
		s = &bpeSession{m: m}
	}
	for len(text) > bpeMaxRun {
		cut := bpeMaxRun
		for cut > bpeMaxRun-utf8.UTFMax && text[cut]&0xC0 == 0x80 {
			cut--
		}
		out = s.encode(out, text[:cut])
		text = text[cut:]
	}
	out = s.encode(out, text)
	if cap(s.text.r) > 1<<16 { // do not keep a long text's buffers alive
		s.text, s.ends, s.buf, s.src = cptText{}, nil, nil, nil
	}
	m.sessions.Put(s)
	return out
}

func (s *bpeSession) encode(out []int32, text string) []int32 {
	t := &s.text
	if cap(t.r) < len(text) {
		t.r = make([]rune, 0, len(text))
	}
	t.r = appendCpts(t.r[:0], text)
	if cap(t.f) < len(t.r) {
		t.f = make([]cptFlags, len(t.r))
	}
	t.f = t.f[:len(t.r)]
	tab := unicodeFlags()
	for i, r := range t.r {
		t.f[i] = tab.flags(r)
	}
	s.ends, s.buf = s.m.pre.split(t, s.ends, s.buf)

	// The words are the code points re-encoded, as llama.cpp builds them:
	// the text itself when it is valid UTF-8.
	src := text
	if !utf8.ValidString(text) {
		s.src = s.src[:0]
		for _, r := range t.r {
			s.src = appendCpt(s.src, r)
		}
		src = string(s.src)
	}
	if s.memo == nil {
		s.memo = &wordMemo{seed: maphash.MakeSeed()}
	}
	c, at := 0, 0
	for _, e := range s.ends {
		n := 0
		for ; c < int(e); c++ {
			n += cptLen(t.r[c])
		}
		w := src[at : at+n]
		at += n
		if len(w) > memoMaxWord {
			out = s.word(out, w)
			continue
		}
		sl := s.memo.slot(w)
		if int(sl.nw) == len(w) && string(sl.word[:sl.nw]) == w {
			out = append(out, sl.ids[:sl.nt]...)
			continue
		}
		start := len(out)
		out = s.word(out, w)
		if nt := len(out) - start; nt <= memoMaxTokens {
			sl.nw, sl.nt = uint8(copy(sl.word[:], w)), uint8(copy(sl.ids[:], out[start:]))
		}
	}
	return out
}

// word appends the tokens of one word.
func (s *bpeSession) word(out []int32, w string) []int32 {
	m := s.m
	nv := int32(len(m.v.texts))
	if len(w) == 0 {
		return out
	}
	if m.ignoreMerges {
		if id, ok := m.v.ids[string(s.mapBytes(w))]; ok {
			return append(out, id)
		}
	}
	if len(w) == 1 {
		if id := m.charID[w[0]]; id >= 0 && id < nv {
			return append(out, id)
		}
		return s.fallback(out, w)
	}
	syms := s.syms[:0]
	for i := range len(w) {
		syms = append(syms, bpeSymbol{id: m.charID[w[i]], start: int32(i), n: 1, prev: int32(i - 1), next: int32(i + 1)})
	}
	syms[len(syms)-1].next = -1
	s.syms, s.q = syms, s.q[:0]
	for i := 1; i < len(syms); i++ {
		s.tryBigram(int32(i-1), int32(i))
	}
	for len(s.q) > 0 {
		bg := s.q.pop()
		l, r := &syms[bg.left], &syms[bg.right]
		if l.n == 0 || r.n == 0 || l.id != bg.lid || r.id != bg.rid {
			continue // a side changed since this candidate was queued
		}
		l.id = bg.id
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
		if sym := syms[i]; sym.id >= 0 && sym.id < nv {
			out = append(out, sym.id)
		} else {
			out = s.fallback(out, w[sym.start:sym.start+sym.n])
		}
	}
	return out
}

func (s *bpeSession) tryBigram(left, right int32) {
	if left < 0 || right < 0 {
		return
	}
	lid, rid := s.syms[left].id, s.syms[right].id
	if lid < 0 || rid < 0 {
		return
	}
	mg, ok := s.m.ranks[pairKey(lid, rid)]
	if !ok {
		return
	}
	s.q.push(bpeBigram{rank: mg.rank, left: left, right: right, lid: lid, rid: rid, id: mg.id})
}

// mapBytes returns the word's bytes as GPT-2 characters, in a buffer the
// next call reuses.
func (s *bpeSession) mapBytes(w string) []byte {
	s.mapped = s.mapped[:0]
	for i := 0; i < len(w); i++ {
		s.mapped = append(s.mapped, s.m.bytes.char[w[i]]...)
	}
	return s.mapped
}

// fallback appends the tokens of a piece that is no token: llama.cpp looks
// up each byte of its mapped text as a one-byte token and drops the bytes
// that are none.
func (s *bpeSession) fallback(out []int32, piece string) []int32 {
	for _, c := range s.mapBytes(piece) {
		if id := s.m.byteTok[c]; id >= 0 {
			out = append(out, id)
		}
	}
	return out
}
