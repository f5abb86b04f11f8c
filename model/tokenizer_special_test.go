package model

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// partitionNaive is llama.cpp's tokenizer_st_partition as llama.cpp writes
// it, one search of the text per candidate: the reference partition is
// checked against.
func (t *Tokenizer) partitionNaive(text string, parseSpecial bool) []fragment {
	if text == "" {
		return nil
	}
	frags := []fragment{{text: text, id: -1}}
	var next []fragment
	for _, id := range t.special {
		a := t.attrs[id]
		if !parseSpecial && a&attrSpecial != 0 {
			continue
		}
		tok := t.texts[id]
		next = next[:0]
		for _, fr := range frags {
			if fr.id >= 0 {
				next = append(next, fr)
				continue
			}
			rest := fr.text
			for rest != "" {
				i := strings.Index(rest, tok)
				if i < 0 {
					break
				}
				left := rest[:i]
				if a&attrLStrip != 0 {
					for left != "" && cSpace(left[len(left)-1]) {
						left = left[:len(left)-1]
					}
				}
				if left != "" {
					next = append(next, fragment{text: left, id: -1})
				}
				next = append(next, fragment{id: id})
				rest = rest[i+len(tok):]
				if a&attrRStrip != 0 {
					for rest != "" && cSpace(rest[0]) {
						rest = rest[1:]
					}
				}
			}
			if rest != "" {
				next = append(next, fragment{text: rest, id: -1})
			}
		}
		frags, next = next, frags
	}
	return frags
}

// partition finds the same fragments as llama.cpp's one-candidate-at-a-time
// search, on texts dense with special tokens, overlapping ones, and
// whitespace that stripping tokens eat.
func TestPartitionMatchesNaive(t *testing.T) {
	v := synthVocab{
		model:  "llama",
		tokens: []string{"<unk>", "<s>", "</s>", "a", "b", " ", "<a>", "<a><a>", "a><", "<l>", "<r>", "<lr>", "ab", "<a", "[PAD1]", "[PAD12]"},
		types:  []int32{2, 3, 3, 1, 1, 1, 4, 4, 4, 3, 3, 4, 4, 3, 4, 4},
	}
	synth, err := NewTokenizer(v.file(t))
	require.NoError(t, err)
	set := func(text string, a tokenAttr) { synth.attrs[synth.id(text)] |= a }
	set("<l>", attrLStrip)
	set("<r>", attrRStrip)
	set("<lr>", attrLStrip|attrRStrip)
	set("<a><a>", attrRStrip)

	toks := []*Tokenizer{synth,
		openTokenizer(t, "vocab", "ggml-vocab-phi-3.gguf"),
		openTokenizer(t, "vocab", "ggml-vocab-deepseek-coder.gguf")}
	pieces := []string{"<a>", "<a><a>", "a><", "<l>", "<r>", "<lr>", "<", ">", "a", "b", " ", "  ", "\n", "\t",
		"<s>", "</s>", "<unk>", "[PAD1]", "[PAD12]", "[PAD32022]", "[PAD", "<|user|>", "<|end|>", "<|assistant|>",
		"<|Assistant|>", "<｜begin▁of▁sentence｜>", "x"}
	r := rand.New(rand.NewPCG(7, 7))
	for range 20000 {
		var b strings.Builder
		for range 1 + r.IntN(12) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		text := b.String()
		for _, tok := range toks {
			for _, ps := range []bool{false, true} {
				want := tok.partitionNaive(text, ps)
				got := tok.partition(text, ps)
				if !assert.Equal(t, want, got, "%q parseSpecial=%v", text, ps) {
					return
				}
			}
		}
	}
}
