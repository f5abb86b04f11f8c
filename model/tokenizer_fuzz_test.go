package model

import (
	"bytes"
	"math/rand/v2"
	"path/filepath"
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

// fuzzTokenizer is one tokenizer under fuzzing.
type fuzzTokenizer struct {
	name string
	tok  *Tokenizer
}

// withPreTokenizer returns the vocabulary of a GGUF file with its
// tokenizer.ggml.pre replaced, in memory.
func withPreTokenizer(t testing.TB, f *File, pre string) *File {
	t.Helper()
	w := NewWriter()
	for _, k := range f.Keys() {
		v, _ := f.Meta(k)
		if k == keyTokPre {
			v = pre
		}
		if err := w.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// fuzzTokenizers loads every vocabulary of the suite, the qwen2 fixture,
// and GPT-2's vocabulary under every pre-tokenizer, so that each family and
// each splitter is fuzzed.
func fuzzTokenizers(t testing.TB) []fuzzTokenizer {
	paths, err := filepath.Glob(filepath.Join(fixture.Dir(t, "vocab"), "ggml-vocab-*.gguf"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no vocabularies: %v", err)
	}
	var out []fuzzTokenizer
	for _, p := range paths {
		out = append(out, fuzzTokenizer{filepath.Base(p), openTokenizer(t, "vocab", filepath.Base(p))})
	}
	out = append(out, fuzzTokenizer{"tiny-qwen2", openTokenizer(t, "gguf", "tiny-qwen2-f16.gguf")})
	f, err := Open(fixture.Path(t, "vocab", "ggml-vocab-gpt-2.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	for _, pre := range []string{"default", "llama3", "qwen2", "deepseek-llm", "deepseek-coder", "falcon", "starcoder", "chatglm-bpe"} {
		tok, err := NewTokenizer(withPreTokenizer(t, f, pre))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fuzzTokenizer{"gpt-2 as " + pre, tok})
	}
	return out
}

// bytesCovered reports whether a byte-level BPE vocabulary has a token for
// the character of every byte of s. Falcon's lacks some control characters
// (\x03, \x04, …) and StarCoder's the lead byte 0xF1; llama.cpp drops such
// bytes, and so does edged.
func bytesCovered(tok *Tokenizer, s string) bool {
	m := tok.fam.(*bpe)
	for i := 0; i < len(s); i++ {
		if id := m.charID[s[i]]; id < 0 || int(id) >= tok.NVocab() {
			return false
		}
	}
	return true
}

// Arbitrary bytes, invalid UTF-8 included, make no tokenizer panic; ids stay
// in the vocabulary; byte-level BPE gives back any valid UTF-8 exactly (when
// its vocabulary has every byte); SPM gives back valid UTF-8 without "▁"
// (see FuzzTokenizerSPM); streaming decoding emits valid UTF-8, equal to
// Decode when that is valid.
func FuzzTokenizers(f *testing.F) {
	toks := fuzzTokenizers(f)
	for _, s := range vocabSuite(f, "ggml-vocab-gpt-2.gguf").inputs {
		f.Add([]byte(s))
	}
	for _, s := range []string{"", "\xff", "\xe2\x96", "a\xc3(b", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"<|endoftext|>x<s>[CLS]", "I'VE 'll   \n\n\t x", "你好\u3000。１２３", "e\u0301\u200b\u00ad", "  \u00a0 ", "[PAD100015]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := string(data)
		for _, ft := range toks {
			tok := ft.tok
			for _, mode := range [][2]bool{{false, false}, {true, false}, {true, true}} {
				ids := tok.Encode(s, mode[0], mode[1])
				for _, id := range ids {
					if id < 0 || int(id) >= tok.NVocab() {
						t.Fatalf("%s: Encode(%q) gave id %d outside the vocabulary", ft.name, s, id)
					}
				}
				dec := tok.Decode(ids)
				_ = tok.DecodeSpecial(ids)
				_ = tok.Detokenize(ids, mode[0], mode[1])
				if !mode[1] && utf8.ValidString(s) && dec != s {
					switch tok.model {
					case "gpt2":
						if bytesCovered(tok, s) {
							t.Fatalf("%s: Decode(Encode(%q)) = %q", ft.name, s, dec)
						}
					case "llama":
						if !strings.Contains(s, spmSpace) {
							t.Fatalf("%s: Decode(Encode(%q)) = %q", ft.name, s, dec)
						}
					}
				}
				var b strings.Builder
				d := tok.NewStreamDecoder()
				for _, id := range ids {
					b.WriteString(d.Push(id))
				}
				b.WriteString(d.Flush())
				got := b.String()
				if !utf8.ValidString(got) {
					t.Fatalf("%s: stream of %q is not valid UTF-8: %q", ft.name, s, got)
				}
				if utf8.ValidString(dec) && got != dec {
					t.Fatalf("%s: stream of %q = %q, Decode = %q", ft.name, s, got, dec)
				}
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

// BenchmarkEncodeBPE tokenizes 1 MiB of English text with each byte-level
// BPE vocabulary (each has its own pre-tokenizer).
func BenchmarkEncodeBPE(b *testing.B) {
	text := englishText(1 << 20)
	for _, name := range []string{"gpt-2", "deepseek-llm", "deepseek-coder", "falcon", "starcoder"} {
		tok := openTokenizer(b, "vocab", "ggml-vocab-"+name+".gguf")
		b.Run(name+"/english-1MB", func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			var n int
			for b.Loop() {
				n = len(tok.Encode(text, true, false))
			}
			b.ReportMetric(float64(n), "tokens")
		})
	}
	// Every word new: the word memo does not help.
	tok := openTokenizer(b, "vocab", "ggml-vocab-gpt-2.gguf")
	r := rand.New(rand.NewPCG(3, 4))
	var sb strings.Builder
	for sb.Len() < 1<<20 {
		for range 3 + r.IntN(8) {
			sb.WriteByte(byte('a' + r.IntN(26)))
		}
		sb.WriteByte(' ')
	}
	random := sb.String()
	b.Run("gpt-2/random-words-1MB", func(b *testing.B) {
		b.SetBytes(int64(len(random)))
		for b.Loop() {
			tok.Encode(random, true, false)
		}
	})
}

func BenchmarkEncodeWPM(b *testing.B) {
	tok := openTokenizer(b, "vocab", "ggml-vocab-bert-bge.gguf")
	text := englishText(1 << 20)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tok.Encode(text, true, false)
	}
}

func BenchmarkDecodeBPE(b *testing.B) {
	tok := openTokenizer(b, "vocab", "ggml-vocab-gpt-2.gguf")
	text := englishText(1 << 20)
	ids := tok.Encode(text, true, false)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		_ = tok.Decode(ids)
	}
}

func BenchmarkNewTokenizerBPE(b *testing.B) {
	for _, name := range []string{"gpt-2", "deepseek-llm"} {
		f, err := Open(fixture.Path(b, "vocab", "ggml-vocab-"+name+".gguf"))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := NewTokenizer(f); err != nil {
					b.Fatal(err)
				}
			}
		})
		f.Close()
	}
}
