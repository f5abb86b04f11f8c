package model

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
)

// words splits text with a pre-tokenizer and returns the words.
func words(p preTokenizer, text string) []string {
	t := &cptText{r: appendCpts(nil, text)}
	tab := unicodeFlags()
	for _, r := range t.r {
		t.f = append(t.f, tab.flags(r))
	}
	ends, _ := p.split(t, nil, nil)
	var out []string
	lo := 0
	for _, e := range ends {
		out = append(out, string(t.r[lo:e]))
		lo = int(e)
	}
	return out
}

func TestPreTokenizerSplits(t *testing.T) {
	for _, tc := range []struct {
		pre, text string
		want      []string
	}{
		// GPT-2: contractions are lower-case only; a run of spaces leaves its
		// last space to the next word; digits in any number.
		{"gpt-2", "I've  been 'RE 12345 x!!  ", []string{"I", "'ve", " ", " been", " '", "RE", " 12345", " x", "!!", "  "}},
		{"gpt-2", "Hello\n\n world", []string{"Hello", "\n\n", " world"}},
		// Llama 3: case-insensitive contractions, a leading non-letter joins a
		// word, digits by three, newlines end a whitespace run.
		{"llama3", "I'VE 1234567 $x \n\n\tfoo!\n", []string{"I", "'VE", " ", "123", "456", "7", " $", "x", " \n\n", "\tfoo", "!\n"}},
		// Qwen2: the same with one digit per word.
		{"qwen2", "ab 123", []string{"ab", " ", "1", "2", "3"}},
		// Default: punctuation runs first, then GPT-2, numbers, then three
		// ASCII digits at a time.
		{"default", "a, 12345.", []string{"a", ",", " ", "123", "45", "."}},
		{"default", "x1234", []string{"x", "123", "4"}},
		// Falcon: ` counts as punctuation too.
		{"falcon", "a`b 1234", []string{"a", "`", "b", " ", "123", "4"}},
		// StarCoder: every digit alone.
		{"starcoder", "x 42", []string{"x", " ", "4", "2"}},
		// DeepSeek Coder: newlines alone, letters with one leading space,
		// CJK runs, digits alone.
		{"deepseek-coder", "Hi\n你好 42!", []string{"Hi", "\n", "你好", " ", "4", "2", "!"}},
		// DeepSeek LLM: U+3000 is whitespace, so in no literal class, while
		// "。" is both punctuation and in the CJK range U+0800..U+4E00.
		{"deepseek-llm", "Hi \u3000。x  ", []string{"Hi", " ", "\u3000", "。", "x", "  "}},
	} {
		spec, err := preSpecOf(tc.pre)
		require.NoError(t, err, tc.pre)
		assert.Equal(t, tc.want, words(spec.pre, tc.text), "%s %q", tc.pre, tc.text)
	}
}

func TestPreSpecOf(t *testing.T) {
	for name, kind := range map[string]string{
		"": "default", "default": "default", "gpt-2": "gpt2", "mpt": "gpt2", "gpt-neox": "gpt2",
		"llama3": "llama3", "llama-bpe": "llama3", "qwen2": "qwen2", "deepseek-llm": "deepseek-llm",
		"deepseek-coder": "deepseek-coder", "falcon": "falcon", "starcoder": "starcoder", "refact": "starcoder",
	} {
		spec, err := preSpecOf(name)
		require.NoError(t, err, name)
		assert.Equal(t, kind, spec.pre.name, name)
	}
	llama3, _ := preSpecOf("llama-bpe")
	assert.True(t, llama3.ignoreMerges && llama3.addBOS)
	qwen2, _ := preSpecOf("qwen2")
	assert.True(t, qwen2.keepSpaces)
	assert.False(t, qwen2.addBOS)

	_, err := preSpecOf("klingon")
	assert.ErrorIs(t, err, ErrUnknownTokenizer)
	assert.Contains(t, err.Error(), `"klingon"`)
	_, err = preSpecOf("tekken")
	assert.ErrorIs(t, err, ErrUnsupportedTokenizer)
	assert.Contains(t, err.Error(), `"tekken"`)
}

// tinyBPE is a hand-made byte-level BPE vocabulary over "a", "b", "c" and
// the space ("Ġ").
func tinyBPE(pre string, merges ...string) synthVocab {
	return synthVocab{
		model:  "gpt2",
		tokens: []string{"a", "b", "c", "Ġ", "ab", "bc", "abc", "Ġa", "<|end|>", "<x>"},
		types:  []int32{1, 1, 1, 1, 1, 1, 1, 1, 3, 4},
		extra: map[string]any{
			keyTokPre:                     pre,
			keyTokMerges:                  merges,
			"tokenizer.ggml.bos_token_id": uint32(8),
			"tokenizer.ggml.eos_token_id": uint32(8),
		},
	}
}

func TestBPEMerges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		merges []string
		text   string
		want   []int32
	}{
		{"lower rank first", []string{"b c", "a b", "a bc"}, "abc", []int32{6}},
		{"rank decides", []string{"b c", "a b"}, "abc", []int32{0, 5}},
		{"tie impossible: leftmost of equal pairs", []string{"a b"}, "abab", []int32{4, 4}},
		{"space", []string{"Ġ a"}, "a a", []int32{0, 7}},
		// A piece no token spells falls back to its single bytes: "bc" is
		// merged from rule 1 but the vocabulary lacks "cb", so "cb" stays.
		{"no rule", nil, "cab", []int32{2, 0, 1}},
		// A character outside the vocabulary is dropped, as in llama.cpp.
		{"unknown byte dropped", nil, "a\x00b", []int32{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := NewTokenizer(tinyBPE("gpt-2", tc.merges...).file(t))
			require.NoError(t, err)
			assert.Equal(t, tc.want, tok.Encode(tc.text, false, false))
		})
	}
}

func TestBPESettings(t *testing.T) {
	tok, err := NewTokenizer(tinyBPE("gpt-2", "a b").file(t))
	require.NoError(t, err)
	assert.False(t, tok.addBOS, "GPT-2 adds no BOS")
	assert.True(t, tok.cleanSpaces)
	assert.Equal(t, []int32{4}, tok.Encode("ab", true, false))
	assert.Equal(t, []int32{4, 9, 2}, tok.Encode("ab<x>c", false, false), "user-defined tokens match in text")
	assert.Equal(t, []int32{8, 4}, tok.Encode("<|end|>ab", false, true))
	assert.True(t, tok.IsEOG(8))

	// Llama 3's pre-tokenizer adds BOS and takes a word that is a token
	// whole, without merging.
	tok, err = NewTokenizer(tinyBPE("llama3").file(t))
	require.NoError(t, err)
	assert.True(t, tok.addBOS)
	assert.Equal(t, []int32{8, 6}, tok.Encode("abc", true, false))

	tok, err = NewTokenizer(tinyBPE("qwen2", "a b").file(t))
	require.NoError(t, err)
	assert.False(t, tok.cleanSpaces)
}

func TestBPEPiece(t *testing.T) {
	tok := openTokenizer(t, "vocab", "ggml-vocab-gpt-2.gguf")
	for text, want := range map[string]string{"Ġthe": " the", "Ċ": "\n", "âĢ": "\xe2\x80", "<|endoftext|>": "<|endoftext|>"} {
		id := tok.id(text)
		require.GreaterOrEqual(t, id, int32(0), text)
		assert.Equal(t, []byte(want), tok.Piece(id), text)
	}
	m := &bpe{bytes: gpt2Bytes()}
	assert.Equal(t, "a[UNK_BYTE_0xe29681a▁]", string(m.appendPiece(nil, "a▁", attrNormal)),
		"llama.cpp's marker for a character that is no byte")
	assert.Empty(t, m.appendPiece(nil, "<0x41>", attrByte), "byte tokens render as nothing in BPE")
}

// Decode gives back every conformance string, with and without the
// special tokens Encode adds, for every vocabulary llama.cpp encodes
// without loss (SPM and byte-level BPE; WPM lower-cases and drops
// whitespace).
func TestTokenizerRoundTripAll(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(fixture.Dir(t, "vocab"), "ggml-vocab-*.gguf"))
	require.NoError(t, err)
	n := 0
	for _, path := range paths {
		name := filepath.Base(path)
		tok := openTokenizer(t, "vocab", name)
		if tok.model == "bert" {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			texts := append(vocabSuite(t, name).inputs, "🦙 llama.cpp", "нещо на Български", "Äpfel ½ 𝄞",
				"a\u00a0b\u3000c", "tab\tnew\nline\r\n", " leading and trailing  ", "<|endoftext|> <s> [PAD]")
			for _, in := range texts {
				assert.Equal(t, in, tok.Decode(tok.Encode(in, false, false)), "%q", in)
				assert.Equal(t, in, tok.Decode(tok.Encode(in, true, false)), "%q with special tokens", in)
			}
		})
	}
	assert.Equal(t, 7, n, "vocabularies checked")
}

// The random-weight qwen2 models' prompts encode as llama.cpp did: qwen2's
// metadata turns BOS off.
func TestTokenizerQwen2Prompt(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(fixture.Dir(t, "gguf"), "tiny-qwen2-*.golden.json"))
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	for _, path := range paths {
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		var g struct {
			Model     string  `json:"model"`
			Prompt    string  `json:"prompt"`
			PromptIDs []int32 `json:"prompt_ids"`
		}
		require.NoError(t, json.Unmarshal(raw, &g))
		tok := openTokenizer(t, "gguf", g.Model)
		assert.False(t, tok.addBOS, g.Model)
		assert.Equal(t, g.PromptIDs, tok.Encode(g.Prompt, true, false), g.Model)
		assert.Equal(t, g.Prompt, tok.Decode(g.PromptIDs), g.Model)
	}
}

func TestDetokenize(t *testing.T) {
	gpt2 := openTokenizer(t, "vocab", "ggml-vocab-gpt-2.gguf")
	text := "Hello , world ! It 's a ' test ' . We 're here , I 'd say ."
	ids := gpt2.Encode(text, false, false)
	assert.Equal(t, text, gpt2.Decode(ids), "Decode keeps every space")
	assert.Equal(t, "Hello, world! It's a'test '. We're here, I 'd say.", gpt2.Detokenize(ids, false, false),
		"llama.cpp's clean-up of tokenization spaces")

	// deepseek-coder keeps the spaces and strips its BOS when asked.
	ds := openTokenizer(t, "vocab", "ggml-vocab-deepseek-coder.gguf")
	ids = ds.Encode("Hi , there", true, false)
	require.Equal(t, ds.BOS(), ids[0])
	assert.Equal(t, "Hi , there", ds.Detokenize(ids, true, false))
	assert.Equal(t, "<｜begin▁of▁sentence｜>Hi , there", ds.Detokenize(ids, false, true))

	// SPM: the space Encode put in front goes, but only from the first
	// token, and not when a BOS was stripped before it (llama.cpp's rule).
	spm := openTokenizer(t, "vocab", "ggml-vocab-llama-spm.gguf")
	assert.Equal(t, "Hello", spm.Detokenize(spm.Encode("Hello", false, false), false, false))
	ids = spm.Encode("Hello", true, false)
	assert.Equal(t, " Hello", spm.Detokenize(ids, true, false))
	assert.Equal(t, " Hello", spm.Detokenize(ids, false, false))
	assert.Equal(t, "Hello", spm.Decode(ids), "Decode passes over the BOS")
}

func TestCleanSpaces(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		" ?":                 "?",
		"a ? b ! c . ,":      "a? b! c.,",
		"x ' y":              "x'y",
		"x ' ' y":            "x'' y",
		"it 's I 'm":         "it's I'm",
		"we 're you 've":     "we're you've",
		"don 't I 'd we 'll": "don 't I 'd we 'll",
		"a 'x":               "a 'x",
		"end '":              "end '",
	} {
		assert.Equal(t, want, string(cleanSpaces([]byte(in))), "%q", in)
	}
}

func TestUnicodeTables(t *testing.T) {
	tab := unicodeFlags()
	for r, want := range map[rune]cptFlags{
		'a': cfLetter, '7': cfNumber, '!': cfPunct, '$': cfSymbol, ' ': cfSeparator | cfSpace,
		'\n': cfControl | cfSpace, 0x85: cfControl | cfSpace, 0xA0: cfSeparator | cfSpace,
		0x3000: cfSeparator | cfSpace, 0x0301: cfMark, 0x00AD: cfControl, 0xE000: cfControl,
		0x0378: cfUndefined, 0x2EBF0: cfLetter, 0x31EF: cfSymbol, 0x10FFFF: cfUndefined, 0x110000: cfUndefined,
		-1: cfUndefined,
	} {
		assert.Equal(t, want, tab.flags(r), "U+%04X", r)
	}
	assert.Equal(t, 'e', nfdFirst('é'))
	assert.Equal(t, 'A', nfdFirst('Å'))
	assert.Equal(t, rune(0x1100), nfdFirst('가'))
	assert.Equal(t, 'Ω', nfdFirst('\u2126'), "the ohm sign is Omega")
	assert.Equal(t, 'a', nfdFirst('a'))
	assert.Equal(t, 'i', cptLower('İ'))
	assert.Equal(t, 'ǆ', cptLower('ǅ'))

	for _, tc := range []struct {
		in   string
		want []rune
	}{
		{"aé€🦙", []rune{'a', 'é', '€', '🦙'}},
		{"\xff\x80a", []rune{0xFFFD, 0xFFFD, 'a'}},
		{"\xc3", []rune{0xFFFD}},
		{"\xe2\x82(", []rune{0xFFFD, 0xFFFD, '('}},
		{"\xc0\x80", []rune{0}},                                      // overlong NUL decodes
		{"\xed\xa0\x80", []rune{0xD800}},                             // so does a surrogate
		{"\xf4\x90\x80\x80", []rune{0xFFFD, 0xFFFD, 0xFFFD, 0xFFFD}}, // above U+10FFFF
	} {
		got := appendCpts(nil, tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
	}
	assert.Equal(t, "\xed\xa0\x80", string(appendCpt(nil, 0xD800)))
	for _, r := range []rune{0, 0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000, 0x10FFFF} {
		assert.Equal(t, cptLen(r), len(appendCpt(nil, r)))
		if r < 0xD800 || r > 0xDFFF {
			assert.Equal(t, string(r), string(appendCpt(nil, r)))
		}
	}

	m := gpt2Bytes()
	seen := map[string]bool{}
	for b := range 256 {
		c := m.char[b]
		require.Equal(t, 1, utf8.RuneCountInString(c))
		assert.False(t, seen[c])
		seen[c] = true
		r, _ := utf8.DecodeRuneInString(c)
		back, ok := m.byteOfChar(r)
		assert.True(t, ok)
		assert.Equal(t, byte(b), back)
	}
	assert.Equal(t, "Ġ", m.char[' '])
	assert.Equal(t, "Ċ", m.char['\n'])
	assert.Equal(t, "a", m.char['a'])
	_, ok := m.byteOfChar('▁')
	assert.False(t, ok)
}

func TestWPM(t *testing.T) {
	v := synthVocab{
		model: "bert",
		tokens: []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "▁hello", "▁world", "▁cafe", "▁un", "aff",
			"able", "▁!", "▁你", "▁好", "▁x"},
		types: []int32{3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
		extra: map[string]any{
			"tokenizer.ggml.unknown_token_id":   uint32(1),
			"tokenizer.ggml.bos_token_id":       uint32(2),
			"tokenizer.ggml.seperator_token_id": uint32(3),
			"tokenizer.ggml.padding_token_id":   uint32(0),
			"tokenizer.ggml.mask_token_id":      uint32(4),
		},
	}
	tok, err := NewTokenizer(v.file(t))
	require.NoError(t, err)
	for _, tc := range []struct {
		text string
		want []int32
	}{
		{"Hello WORLD!", []int32{5, 6, 11}},
		{"Café unaffable", []int32{7, 8, 9, 10}},
		{"Cafe\u0301", []int32{7}}, // the combining accent is stripped
		{"你好", []int32{12, 13}},    // each ideograph is a word
		{"hello zzz x", []int32{5, 1, 14}},
		{"unaffx", []int32{1}}, // no cover of the whole word: unknown
		{"\x00 \u200b\xff", nil},
		{"", nil},
	} {
		assert.Equal(t, tc.want, tok.Encode(tc.text, false, false), "%q", tc.text)
	}
	assert.Equal(t, []int32{2, 5, 3}, tok.Encode("hello", true, false), "[CLS] text [SEP]")
	assert.Equal(t, []int32{2, 3}, tok.Encode("", true, false))
	assert.Equal(t, []int32{5, 4, 6}, tok.Encode("hello[MASK]world", false, true))
	assert.Equal(t, " hello world", tok.Decode(tok.Encode("Hello world", true, false)))
	assert.Equal(t, " hello world!", tok.Detokenize(tok.Encode("Hello world !", false, false), false, false),
		"clean-up removes the space before !")

	v.extra["tokenizer.ggml.normalizer.lowercase"] = false
	tok, err = NewTokenizer(v.file(t))
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 5}, tok.Encode("Hello hello", false, false), "no lower-casing, no accent stripping")
	assert.Equal(t, []int32{1}, tok.Encode("Café", false, false))
}

func TestBPEVocabErrors(t *testing.T) {
	v := tinyBPE("gpt-2", "a b")
	delete(v.extra, keyTokMerges)
	_, err := NewTokenizer(v.file(t))
	assert.True(t, errors.Is(err, ErrMissingKey), "%v", err)
	assert.True(t, strings.Contains(err.Error(), keyTokMerges))
}

// GPT-2's and DeepSeek's vocabularies have a token for every byte, so
// every text round-trips through them (FuzzTokenizers checks the others on
// the texts whose bytes they cover).
func TestBPEByteCoverage(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, name := range []string{"ggml-vocab-gpt-2.gguf", "ggml-vocab-deepseek-llm.gguf", "ggml-vocab-deepseek-coder.gguf"} {
		assert.True(t, bytesCovered(openTokenizer(t, "vocab", name), string(all)), name)
	}
	assert.False(t, bytesCovered(openTokenizer(t, "vocab", "ggml-vocab-falcon.gguf"), "\x03"))
}

// BPE and WPM encoders share pooled buffers and a word memo between calls;
// concurrent calls give the ids of sequential ones.
func TestTokenizerConcurrentBPEWPM(t *testing.T) {
	text := englishText(4 << 10)
	for _, name := range []string{"ggml-vocab-gpt-2.gguf", "ggml-vocab-deepseek-llm.gguf", "ggml-vocab-bert-bge.gguf"} {
		tok := openTokenizer(t, "vocab", name)
		want := tok.Encode(text, true, false)
		errs := make(chan error, 4)
		for g := range 4 {
			go func() {
				for i := range 20 {
					tok.Encode(text[(g*7+i)%64:], true, false) // other words through the same memo
					if got := tok.Encode(text, true, false); !slices.Equal(got, want) {
						errs <- errors.New(name + ": concurrent Encode differs")
						return
					}
				}
				errs <- nil
			}()
		}
		for range 4 {
			require.NoError(t, <-errs)
		}
		assert.Equal(t, want, tok.Encode(text, true, false), name)
	}
}
