package model

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
)

// openTokenizer loads the tokenizer of a fixture file, skipping when the
// shared fixtures are absent.
func openTokenizer(t testing.TB, sub, name string) *Tokenizer {
	t.Helper()
	f, err := Open(fixture.Path(t, sub, name))
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	tok, err := NewTokenizer(f)
	require.NoError(t, err)
	return tok
}

// synthVocab describes a small vocabulary written to an in-memory GGUF.
type synthVocab struct {
	model  string
	tokens []string
	scores []float32
	types  []int32
	extra  map[string]any
}

func (v synthVocab) file(t testing.TB) *File {
	t.Helper()
	w := NewWriter()
	require.NoError(t, w.Set("general.architecture", "llama"))
	if v.model != "" {
		require.NoError(t, w.Set(keyTokModel, v.model))
	}
	require.NoError(t, w.Set(keyTokTokens, v.tokens))
	if v.scores != nil {
		require.NoError(t, w.Set(keyTokScores, v.scores))
	}
	if v.types != nil {
		require.NoError(t, w.Set(keyTokTypes, v.types))
	}
	for k, x := range v.extra {
		require.NoError(t, w.Set(k, x))
	}
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	require.NoError(t, err)
	f, err := Parse(buf.Bytes())
	require.NoError(t, err)
	return f
}

// tinySPM is a hand-made SPM vocabulary: no byte tokens, "ab" and "ba" with
// scores set per test.
func tinySPM(abScore, baScore float32) synthVocab {
	return synthVocab{
		model:  "llama",
		tokens: []string{"<unk>", "<s>", "</s>", "▁", "a", "b", "ab", "ba", "▁b", "<extra>"},
		scores: []float32{0, 0, 0, -5, -2, -2, abScore, baScore, -3, 0},
		types:  []int32{2, 3, 3, 1, 1, 1, 1, 1, 1, 4},
	}
}

func TestNewTokenizerErrors(t *testing.T) {
	base := tinySPM(-1, -1)
	for _, tc := range []struct {
		name   string
		mutate func(v *synthVocab)
		is     error
		substr string
	}{
		{"t5 not yet", func(v *synthVocab) { v.model = "t5" }, ErrUnsupportedTokenizer, `"t5"`},
		{"gpt2 without merges", func(v *synthVocab) {
			v.model, v.extra = "gpt2", map[string]any{keyTokPre: "gpt-2"}
		}, ErrMissingKey, keyTokMerges},
		{"unknown pre-tokenizer", func(v *synthVocab) {
			v.model, v.extra = "gpt2", map[string]any{keyTokPre: "klingon-bpe", keyTokMerges: []string{"a b"}}
		}, ErrUnknownTokenizer, `"klingon-bpe"`},
		{"pre-tokenizer not yet", func(v *synthVocab) {
			v.model, v.extra = "gpt2", map[string]any{keyTokPre: "tekken", keyTokMerges: []string{"a b"}}
		}, ErrUnsupportedTokenizer, `"tekken"`},
		{"unknown family", func(v *synthVocab) { v.model = "klingon" }, ErrUnknownTokenizer, `"klingon"`},
		{"no model key", func(v *synthVocab) { v.model = "" }, ErrMissingKey, keyTokModel},
		{"duplicate token", func(v *synthVocab) { v.tokens = append([]string{}, v.tokens...); v.tokens[4] = "b" }, nil, "duplicate token"},
		{"short scores", func(v *synthVocab) { v.scores = v.scores[:3] }, nil, "scores"},
		{"short types", func(v *synthVocab) { v.types = v.types[:3] }, nil, "types"},
		{"add_bos without bos", func(v *synthVocab) {
			v.tokens, v.scores, v.types = v.tokens[:1], v.scores[:1], v.types[:1]
		}, nil, "add_bos_token is true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := base
			tc.mutate(&v)
			_, err := NewTokenizer(v.file(t))
			require.Error(t, err)
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			}
			assert.Contains(t, err.Error(), tc.substr)
		})
	}
}

func TestSPMMergeOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ab, ba   float32
		text     string
		want     []int32
		wantText string
	}{
		// "▁aba": ▁ + a + b + a; "ab" and "ba" tie, so the leftmost merges.
		{"tie goes left", -1, -1, "aba", []int32{3, 6, 4}, "aba"},
		{"higher score first", -1, 0, "aba", []int32{3, 4, 7}, "aba"},
		{"space becomes ▁ and merges", -1, -1, "a b", []int32{3, 4, 8}, "a b"},
		// No byte tokens: a character outside the vocabulary is <unk>, one
		// per character.
		{"unknown without byte tokens", -1, -1, "aé€b", []int32{3, 4, 0, 0, 5}, "ab"},
		{"empty", -1, -1, "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := NewTokenizer(tinySPM(tc.ab, tc.ba).file(t))
			require.NoError(t, err)
			got := tok.Encode(tc.text, false, false)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.wantText, tok.Decode(got))
		})
	}
}

func TestSPMSettings(t *testing.T) {
	v := tinySPM(-1, -1)
	tok, err := NewTokenizer(v.file(t))
	require.NoError(t, err)
	assert.Equal(t, 10, tok.NVocab())
	assert.Equal(t, int32(1), tok.BOS())
	assert.Equal(t, int32(2), tok.EOS())
	assert.Equal(t, []int32{1}, tok.Encode("", true, false), "empty prompt is just BOS")
	assert.Equal(t, []int32{1, 3, 4}, tok.Encode("a", true, false))
	assert.True(t, tok.IsEOG(2))
	assert.False(t, tok.IsEOG(1))
	assert.False(t, tok.IsEOG(-1))
	assert.False(t, tok.IsEOG(1000))

	v.extra = map[string]any{
		keyTokSpacePrefix:                 false,
		keyTokAddBOS:                      false,
		keyTokAddEOS:                      true,
		"tokenizer.ggml.eos_token_id":     uint32(9),
		"tokenizer.ggml.eot_token_id":     uint32(2),
		"tokenizer.ggml.bos_token_id":     uint32(4000), // out of range: the default stays
		"tokenizer.ggml.unknown_token_id": uint32(0),
	}
	tok, err = NewTokenizer(v.file(t))
	require.NoError(t, err)
	assert.Equal(t, int32(1), tok.BOS())
	assert.Equal(t, int32(9), tok.EOS())
	assert.Equal(t, []int32{4, 9}, tok.Encode("a", true, false), "no space prefix, no BOS, EOS added")
	assert.True(t, tok.IsEOG(9), "EOS")
	assert.True(t, tok.IsEOG(2), "EOT, and </s> by its text")
}

// User-defined tokens are matched in the text even without parseSpecial;
// control tokens only with it.
func TestSPMSpecialPartition(t *testing.T) {
	tok, err := NewTokenizer(tinySPM(-1, -1).file(t))
	require.NoError(t, err)
	assert.Equal(t, []int32{3, 4, 9, 8}, tok.Encode("a<extra>b", false, false))
	assert.Equal(t, []int32{1, 3, 4, 2}, tok.Encode("<s>a</s>", false, true))
	assert.NotContains(t, tok.Encode("<s>a</s>", false, false), int32(1))
}

func TestTokenizerParseSpecial(t *testing.T) {
	tok := openTokenizer(t, "vocab", "ggml-vocab-llama-spm.gguf")
	hello := tok.Encode("hello", false, false)

	got := tok.Encode("<s>hello</s>", false, true)
	want := append(append([]int32{tok.BOS()}, hello...), tok.EOS())
	assert.Equal(t, want, got, "special tokens parsed; the text after <s> gets its space prefix")
	assert.Equal(t, "hello", tok.Decode(got))
	assert.Equal(t, "<s>hello</s>", tok.DecodeSpecial(got))

	literal := tok.Encode("<s>hello</s>", false, false)
	assert.NotContains(t, literal, tok.BOS())
	assert.NotContains(t, literal, tok.EOS())
	assert.Equal(t, "<s>hello</s>", tok.Decode(literal))

	assert.Equal(t, append([]int32{tok.BOS()}, got...), tok.Encode("<s>hello</s>", true, true),
		"addSpecial adds a BOS even before a parsed one, as llama.cpp does")
}

// Phi-3 marks its special tokens to eat the whitespace after them
// (llama.cpp sets RSTRIP by model name).
func TestTokenizerPhi3RStrip(t *testing.T) {
	tok := openTokenizer(t, "vocab", "ggml-vocab-phi-3.gguf")
	const user, end, assistant = 32010, 32007, 32001
	hello := tok.Encode("Hello", false, false)
	got := tok.Encode("<|user|>\nHello<|end|>\n<|assistant|>", false, true)
	want := append(append([]int32{user}, hello...), end, assistant)
	assert.Equal(t, want, got)

	assert.Equal(t, int32(32000), tok.EOS())
	for _, id := range []int32{32000, end, 2} {
		assert.True(t, tok.IsEOG(id), "id %d", id)
	}
	assert.False(t, tok.IsEOG(user))
}

func TestTokenizerPiece(t *testing.T) {
	tok := openTokenizer(t, "vocab", "ggml-vocab-llama-spm.gguf")
	for _, tc := range []struct {
		text string
		want string
	}{
		{"<0x0A>", "\n"},
		{"<0xE2>", "\xe2"},
		{"▁the", " the"},
		{"<s>", "<s>"},
		{"<unk>", "<unk>"},
	} {
		id := tok.id(tc.text)
		require.GreaterOrEqual(t, id, int32(0), tc.text)
		assert.Equal(t, []byte(tc.want), tok.Piece(id), tc.text)
	}
	assert.Nil(t, tok.Piece(-1))
	assert.Nil(t, tok.Piece(int32(tok.NVocab())))
	assert.Equal(t, "", tok.Decode([]int32{-5, int32(tok.NVocab())}), "ids outside the vocabulary render as nothing")
}

// streamAll decodes ids through a StreamDecoder, checking every chunk is
// valid UTF-8, and reports whether some token's bytes were held back.
func streamAll(t *testing.T, d *StreamDecoder, ids []int32) (text string, heldBack bool) {
	t.Helper()
	var b strings.Builder
	for _, id := range ids {
		out := d.Push(id)
		assert.True(t, utf8.ValidString(out), "chunk %q", out)
		if out == "" && len(d.pending) > 0 {
			heldBack = true
		}
		b.WriteString(out)
	}
	out := d.Flush()
	assert.True(t, utf8.ValidString(out), "flush %q", out)
	b.WriteString(out)
	return b.String(), heldBack
}

func TestStreamDecoder(t *testing.T) {
	tok := openTokenizer(t, "vocab", "ggml-vocab-llama-spm.gguf")
	held := false
	texts := append(vocabSuite(t, "ggml-vocab-llama-spm.gguf").inputs,
		"🦙 llama.cpp", "нещо на Български", "こんにちは世界", "🚀 (normal) 😶‍🌫️ ✅", "Äpfel ½ 𝄞")
	for _, s := range texts {
		for _, addSpecial := range []bool{false, true} {
			ids := tok.Encode(s, addSpecial, false)
			got, h := streamAll(t, tok.NewStreamDecoder(), ids)
			held = held || h
			assert.Equal(t, tok.Decode(ids), got, "%q", s)
			assert.Equal(t, s, got, "%q", s)
		}
	}
	assert.True(t, held, "no text split a character across byte tokens")

	// A continuation keeps every token's leading space.
	ids := tok.Encode("Hello 🦙", false, false)
	got, _ := streamAll(t, tok.NewContinuationDecoder(), ids)
	assert.Equal(t, " Hello 🦙", got)
}

func TestStreamDecoderInvalid(t *testing.T) {
	tok := openTokenizer(t, "vocab", "ggml-vocab-llama-spm.gguf")
	b := func(s string) int32 { return tok.id(s) }
	d := tok.NewContinuationDecoder()
	assert.Equal(t, "", d.Push(b("<0xE2>")))
	assert.Equal(t, "", d.Push(b("<0x96>")))
	assert.Equal(t, "\uFFFD", d.Flush(), "an unfinished character")
	assert.Equal(t, "", d.Flush())

	assert.Equal(t, "\uFFFD", d.Push(b("<0xFF>")), "a byte that starts nothing")
	assert.Equal(t, "", d.Push(b("<0xE2>")))
	assert.Equal(t, "\uFFFDa", d.Push(b("a")), "a lead byte followed by ASCII")
	assert.Equal(t, "", d.Push(b("<0xF0>")))
	assert.Equal(t, "", d.Push(b("<0x9F>")))
	assert.Equal(t, "", d.Push(b("<0xA6>")))
	assert.Equal(t, "🦙", d.Push(b("<0x99>")))
	assert.Equal(t, "", d.Flush())
}

func TestTokenizerConcurrent(t *testing.T) {
	tok := openTokenizer(t, "vocab", "ggml-vocab-llama-spm.gguf")
	want := tok.Encode("The quick brown fox 🦙 jumps", true, false)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 100 {
				if got := tok.Encode("The quick brown fox 🦙 jumps", true, false); !slices.Equal(got, want) {
					errs <- errors.New("concurrent Encode differs")
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		require.NoError(t, <-errs)
	}
}
