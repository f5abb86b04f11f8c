package model

import (
	"fmt"
	"iter"
)

// synthVocabulary is a vocabulary in GGUF's arrays.
type synthVocabulary struct {
	tokens []string
	scores []float32 // SentencePiece only
	types  []int32
	merges []string // BPE only
}

// vocab builds the shape's vocabulary: exactly Vocab unique tokens.
// SentencePiece vocabularies have <0xXX> byte tokens and scored pieces;
// BPE vocabularies start their normal tokens with GPT-2's 256 byte
// characters, and each later piece has the merge that makes it.
func (s *Shape) vocab() (*synthVocabulary, error) {
	tk := &s.Tokenizer
	normal := tk.Normal
	if normal == 0 {
		normal = s.Vocab - len(tk.Leading) - len(tk.Trailing)
	}
	if normal < 256 || len(tk.Leading)+normal+len(tk.Trailing) > s.Vocab {
		return nil, fmt.Errorf("%w: shape %s: %d special and %d normal tokens do not fit a vocabulary of %d with 256 byte tokens",
			ErrSynth, s.Name, len(tk.Leading)+len(tk.Trailing), normal, s.Vocab)
	}
	v := &synthVocabulary{}
	add := func(text string, typ int32, score float32) {
		v.tokens = append(v.tokens, text)
		v.types = append(v.types, typ)
		v.scores = append(v.scores, score)
	}
	for i, text := range tk.Leading {
		typ := synthTokControl
		if int32(i) == tk.UNK {
			typ = synthTokUnknown
		}
		add(text, typ, 0)
	}
	end := len(v.tokens) + normal
	switch tk.Model {
	case "llama":
		for b := range 256 {
			add(fmt.Sprintf("<0x%02X>", b), synthTokByte, 0)
		}
		for piece := range synthSPMPieces() {
			if len(v.tokens) == end {
				break
			}
			add(piece, synthTokNormal, -float32(len(v.tokens)-len(tk.Leading)-256))
		}
	case "gpt2":
		bytes := gpt2Bytes()
		for b := range 256 {
			add(bytes.char[b], synthTokNormal, 0)
		}
		for left, right := range synthBPEPieces(bytes.char[' ']) {
			if len(v.tokens) == end {
				break
			}
			add(left+right, synthTokNormal, 0)
			v.merges = append(v.merges, left+" "+right)
		}
	default:
		return nil, fmt.Errorf("%w: shape %s: tokenizer model %q: want llama or gpt2", ErrSynth, s.Name, tk.Model)
	}
	for _, text := range tk.Trailing {
		add(text, synthTokControl, 0)
	}
	for id := len(v.tokens); id < s.Vocab; id++ {
		add(fmt.Sprintf("[PAD%d]", id), synthTokUnused, 0)
	}
	if tk.Model != "llama" {
		v.scores = nil // the converter writes scores for SentencePiece only
	}
	seen := make(map[string]int, len(v.tokens))
	for i, t := range v.tokens {
		if j, dup := seen[t]; dup {
			return nil, fmt.Errorf("%w: shape %s: token %q has ids %d and %d", ErrSynth, s.Name, t, j, i)
		}
		seen[t] = i
	}
	for name, id := range map[string]int32{"BOS": tk.BOS, "EOS": tk.EOS, "UNK": tk.UNK, "PAD": tk.PAD} {
		if id >= int32(s.Vocab) || id < -1 {
			return nil, fmt.Errorf("%w: shape %s: %s id %d outside the vocabulary", ErrSynth, s.Name, name, id)
		}
	}
	return v, nil
}

// synthWords yields the strings over a..z by length, then in alphabetical order.
func synthWords(yield func(string) bool) {
	var buf []byte
	for n := 1; ; n++ {
		buf = append(buf, 'a')
		for i := range buf {
			buf[i] = 'a'
		}
		for {
			if !yield(string(buf)) {
				return
			}
			i := n - 1
			for i >= 0 && buf[i] == 'z' {
				buf[i] = 'a'
				i--
			}
			if i < 0 {
				break
			}
			buf[i]++
		}
	}
}

// synthSPMPieces yields SentencePiece pieces: "▁", the printable ASCII
// characters, "▁" and each letter, then each word of two or more letters
// bare and after "▁".
func synthSPMPieces() iter.Seq[string] {
	return func(yield func(string) bool) {
		const space = "\u2581"
		if !yield(space) {
			return
		}
		for c := byte('!'); c <= '~'; c++ {
			if !yield(string(c)) {
				return
			}
		}
		for w := range synthWords {
			if len(w) > 1 && !yield(w) || !yield(space+w) {
				return
			}
		}
	}
}

// synthBPEPieces yields the merges of byte-level BPE pieces, as (left, right)
// pairs whose concatenation is the new piece: the space character and each
// letter, then each word of two or more letters bare and after the space
// character, each made from its prefix and its last letter.
func synthBPEPieces(space string) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for w := range synthWords {
			head, last := w[:len(w)-1], w[len(w)-1:]
			if len(w) > 1 && !yield(head, last) || !yield(space+head, last) {
				return
			}
		}
	}
}
