package model

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/edged/edged/internal/fixture"
)

// Arbitrary bytes, invalid UTF-8 included, never make the SPM tokenizer
// panic; the ids stay in the vocabulary, valid UTF-8 without "▁" round-trips,
// and streaming emits only valid UTF-8, equal to Decode when that is valid.
// (Invalid UTF-8 need not round-trip: as in llama.cpp, spaces become "▁"
// before the text is cut into characters, so in "\xd0 " the stray lead byte
// swallows the first byte of the "▁" and the space comes back as "▁".)
func FuzzTokenizerSPM(f *testing.F) {
	tok := openTokenizer(f, "vocab", "ggml-vocab-llama-spm.gguf")
	for _, s := range vocabSuite(f, "ggml-vocab-llama-spm.gguf").inputs {
		f.Add([]byte(s))
	}
	for _, s := range []string{"", "\xff", "\xe2\x96", "a\xc3(b", "<s>x</s><unk>", "▁▁ ▁", "\x00\x80\xbf\xf8\xfe", "\xd0 "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := string(data)
		for _, mode := range [][2]bool{{false, false}, {true, false}, {true, true}} {
			ids := tok.Encode(s, mode[0], mode[1])
			for _, id := range ids {
				if id < 0 || int(id) >= tok.NVocab() {
					t.Fatalf("Encode(%q) gave id %d outside the vocabulary", s, id)
				}
			}
			dec := tok.Decode(ids)
			_ = tok.DecodeSpecial(ids)
			if !mode[1] && utf8.ValidString(s) && !strings.Contains(s, spmSpace) && dec != s {
				t.Fatalf("Decode(Encode(%q)) = %q", s, dec)
			}
			var b strings.Builder
			d := tok.NewStreamDecoder()
			for _, id := range ids {
				b.WriteString(d.Push(id))
			}
			b.WriteString(d.Flush())
			got := b.String()
			if !utf8.ValidString(got) {
				t.Fatalf("stream of %q is not valid UTF-8: %q", s, got)
			}
			if utf8.ValidString(dec) && got != dec {
				t.Fatalf("stream of %q = %q, Decode = %q", s, got, dec)
			}
		}
	})
}

// englishText returns about n bytes of English-like text, the same every
// time: words from a fixed list, sentences, commas, paragraphs.
func englishText(n int) string {
	words := strings.Fields(`the of and to in is was that for it with as his on be at by had are
		but from or have an they which one you were her all she there would their we him been has
		when who will more no if out so said what up its about into than them can only other new
		some could time these two may then do first any my now such like our over man me even most
		made after also did many before must through back years where much your way well down should
		because each just those people how too little state good very make world still own see men
		work long get here between both life being under never day same another know while last
		might us great old year off come since against go came right used take three machine learning
		model token inference device memory quantized vector attention layer network daemon`)
	r := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	b.Grow(n + 64)
	for b.Len() < n {
		nw := 5 + r.IntN(15)
		for i := range nw {
			w := words[r.IntN(len(words))]
			if i == 0 {
				w = strings.ToUpper(w[:1]) + w[1:]
			}
			b.WriteString(w)
			switch {
			case i == nw-1:
				b.WriteString([]string{". ", "! ", "? ", ".\n\n"}[r.IntN(4)])
			case r.IntN(8) == 0:
				b.WriteString(", ")
			default:
				b.WriteByte(' ')
			}
		}
	}
	return b.String()
}

func BenchmarkEncodeSPM(b *testing.B) {
	tok := openTokenizer(b, "vocab", "ggml-vocab-llama-spm.gguf")
	for _, bc := range []struct {
		name string
		text string
	}{
		{"english-1MB", englishText(1 << 20)},
		// No spaces at all: one merge session over the whole text.
		{"nospace-1MB", strings.Repeat("abcdefghij", 1<<20/10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.text)))
			var n int
			for b.Loop() {
				n = len(tok.Encode(bc.text, true, false))
			}
			b.ReportMetric(float64(n), "tokens")
		})
	}
}

func BenchmarkDecodeSPM(b *testing.B) {
	tok := openTokenizer(b, "vocab", "ggml-vocab-llama-spm.gguf")
	text := englishText(1 << 20)
	ids := tok.Encode(text, true, false)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		_ = tok.Decode(ids)
	}
}

func BenchmarkNewTokenizerSPM(b *testing.B) {
	f, err := Open(fixture.Path(b, "vocab", "ggml-vocab-llama-spm.gguf"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for b.Loop() {
		if _, err := NewTokenizer(f); err != nil {
			b.Fatal(err)
		}
	}
}
