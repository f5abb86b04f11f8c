package model

// The WordPiece family (tokenizer.ggml.model "bert"), as llama.cpp's
// llm_tokenizer_wpm. The text is normalized code point by code point, as
// BERT's normalizer: accents stripped (each code point replaced by the first
// of its canonical decomposition, so "é" becomes "e", and combining marks
// dropped), lower-cased, control characters, NUL and U+FFFD removed; then it
// is cut into words at whitespace, with each punctuation character, ASCII
// symbol and CJK ideograph a word of its own. tokenizer.ggml.normalizer.
// lowercase (default true) and .strip_accents (default: lowercase) turn the
// first two steps off, as in current llama.cpp; the fixtures' llama.cpp
// (c9ced491) always does both and keeps combining marks, which current
// llama.cpp and Hugging Face's BertNormalizer drop. Each word,
// with "▁" before it (llama.cpp's converter writes word-initial pieces that
// way and drops the "##" of the others), is covered greedily by the longest
// tokens from the left; a word that cannot be covered is one unknown token.
// With addSpecial the text is framed by CLS (the BOS id) and SEP.

import (
	"strings"
	"sync"
	"unicode/utf8"
)

func wpmSpec() familySpec {
	return familySpec{
		name: "WPM",
		defaults: tokSettings{
			bos: 101, eos: -1, unk: 100, sep: 102, pad: 0, mask: 103,
			addBOS: true, addSEP: true, cleanSpaces: true,
		},
		build:    newWPM,
		endsWith: endSEP,
	}
}

const (
	keyTokLowercase    = "tokenizer.ggml.normalizer.lowercase"
	keyTokStripAccents = "tokenizer.ggml.normalizer.strip_accents"
)

type wpm struct {
	v     *vocab
	s     *tokSettings // read at encode time, when final
	words sync.Pool    // *[]byte: the buffer of the current word

	lowercase, stripAccents bool
}

func newWPM(f *File, v *vocab, s *tokSettings) (family, error) {
	m := &wpm{v: v, s: s}
	unicodeFlags() // build the tables now rather than in the first Encode
	var err error
	if m.lowercase, err = f.BoolOr(keyTokLowercase, true); err != nil {
		return nil, err
	}
	if m.stripAccents, err = f.BoolOr(keyTokStripAccents, m.lowercase); err != nil {
		return nil, err
	}
	return m, nil
}

// appendPiece renders a normal token with "▁" as a space and a byte token
// as its byte, as llama.cpp does for WPM.
func (m *wpm) appendPiece(dst []byte, text string, a tokenAttr) []byte {
	return appendSPMPiece(dst, text, a)
}

func (m *wpm) encode(out []int32, text string, _ bool) []int32 {
	bp, _ := m.words.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	word := append((*bp)[:0], spmSpace...)
	flush := func() {
		if len(word) > len(spmSpace) {
			out = m.word(out, string(word))
		}
		word = word[:len(spmSpace)]
	}
	tab := unicodeFlags()
	for i := 0; i < len(text); {
		r, n := nextCpt(text, i)
		i += n
		if m.stripAccents {
			r = nfdFirst(r)
		}
		f := tab.flags(r)
		switch {
		case f&cfSpace != 0:
			flush()
			continue
		case r == 0 || r == utf8.RuneError || f&cfControl != 0:
			continue
		case m.stripAccents && f&cfMark != 0:
			continue
		}
		lr := r
		if m.lowercase {
			lr = cptLower(r)
		}
		if f&cfPunct != 0 || r < 0x7F && f&cfSymbol != 0 || isChineseChar(r) {
			flush()
			word = appendCpt(word, lr)
			flush()
			continue
		}
		word = appendCpt(word, lr)
	}
	flush()
	*bp = word
	m.words.Put(bp)
	return out
}

// word appends the tokens of "▁"+word: the longest token at each place, from
// the left, or one unknown token when some place starts none.
func (m *wpm) word(out []int32, w string) []int32 {
	start := len(out)
	for i := 0; i < len(w); {
		j := min(len(w), i+m.v.maxLen)
		for ; j > i; j-- {
			if id, ok := m.v.ids[w[i:j]]; ok {
				out = append(out, id)
				break
			}
		}
		if j == i {
			out = out[:start]
			break
		}
		i = j
	}
	if len(out) == start && m.s.unk >= 0 {
		out = append(out, m.s.unk)
	}
	return out
}

// isChineseChar is llama.cpp's (and BERT's) test for a CJK ideograph, with
// its range U+2B920..U+2CEAF where the blocks say U+2B820.
func isChineseChar(r rune) bool {
	return 0x4E00 <= r && r <= 0x9FFF ||
		0x3400 <= r && r <= 0x4DBF ||
		0x20000 <= r && r <= 0x2A6DF ||
		0x2A700 <= r && r <= 0x2B73F ||
		0x2B740 <= r && r <= 0x2B81F ||
		0x2B920 <= r && r <= 0x2CEAF ||
		0xF900 <= r && r <= 0xFAFF ||
		0x2F800 <= r && r <= 0x2FA1F
}

// appendSPMPiece renders a non-special token as SPM and WPM do: a normal
// token's text with "▁" as a space, a byte token's byte, anything else
// nothing.
func appendSPMPiece(dst []byte, text string, a tokenAttr) []byte {
	switch {
	case a&attrNormal != 0:
		for {
			i := strings.Index(text, spmSpace)
			if i < 0 {
				return append(dst, text...)
			}
			dst = append(append(dst, text[:i]...), ' ')
			text = text[i+len(spmSpace):]
		}
	case a&attrByte != 0:
		return append(dst, byteOfToken(text))
	}
	return dst
}
