package model

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/quant"
)

// llama2cDiffering lists the fixture's keys whose values we deliberately do
// not copy from llama.cpp's converter, with the reason.
var llama2cDiffering = map[string]string{
	"general.name":                      "the checkpoint's file name, not the constant \"llama\"",
	"tokenizer.ggml.seperator_token_id": "omitted: llama.cpp writes 0xFFFFFFFF (none), which its loader reports as a bad special token id",
	"tokenizer.ggml.padding_token_id":   "omitted: as the separator id",
	"llama.context_length":              "seq_len; llama.cpp writes its default n_ctx 128 (equal here)",
	"llama.rope.dimension_count":        "the head size; llama.cpp caps it at 64 (equal here)",
	"tokenizer.ggml.add_bos_token":      "added",
	"tokenizer.ggml.add_space_prefix":   "added",
	"llama.rope.freq_base":              "added",
}

func convertLlama2cFixture(t *testing.T, model, tok string) (*File, string) {
	t.Helper()
	ckpt := fixture.Path(t, "llama2c", model)
	out := filepath.Join(t.TempDir(), "out.gguf")
	require.NoError(t, ConvertLlama2c(ckpt, fixture.Path(t, "llama2c", tok), out))
	f, err := Open(out)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f, ckpt
}

func TestConvertLlama2cMatchesLlamaCpp(t *testing.T) {
	ours, _ := convertLlama2cFixture(t, "aidreams260K.bin", "tok512-aidreams.bin")
	ref, err := Open(fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf"))
	require.NoError(t, err)
	defer ref.Close()

	require.Len(t, ours.Tensors, len(ref.Tensors))
	for i, rt := range ref.Tensors {
		ot, ok := ours.Tensor(rt.Name)
		require.True(t, ok, "tensor %s missing", rt.Name)
		assert.Equal(t, rt.Name, ours.Tensors[i].Name, "tensor order")
		assert.Equal(t, rt.Dims, ot.Dims, rt.Name)
		assert.Equal(t, rt.Type, ot.Type, rt.Name)
		assert.True(t, bytes.Equal(ref.TensorData(&rt), ours.TensorData(ot)), "%s: bytes differ", rt.Name)
	}

	for _, k := range ref.Keys() {
		rv, _ := ref.Meta(k)
		ov, ok := ours.Meta(k)
		if why, differs := llama2cDiffering[k]; differs {
			t.Logf("%s: llama.cpp %v, ours %v (%s)", k, rv, ov, why)
			continue
		}
		require.True(t, ok, "key %s missing", k)
		if rs, isF32 := rv.([]float32); isF32 {
			fs, _ := ov.([]float32)
			require.Len(t, fs, len(rs), k)
			for i := range rs {
				require.Equal(t, math.Float32bits(rs[i]), math.Float32bits(fs[i]), "%s[%d]", k, i)
			}
			continue
		}
		assert.Equal(t, rv, ov, k)
	}
	for k, want := range map[string]any{
		"general.name":                    "aidreams260K",
		"llama.context_length":            uint32(128),
		"llama.rope.dimension_count":      uint32(16),
		"llama.rope.freq_base":            float32(10000),
		"tokenizer.ggml.add_bos_token":    true,
		"tokenizer.ggml.add_space_prefix": true,
	} {
		got, _ := ours.Meta(k)
		assert.Equal(t, want, got, k)
	}
	for _, k := range []string{"tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id"} {
		_, ok := ours.Meta(k)
		assert.False(t, ok, k)
	}
}

func TestConvertLlama2cStories(t *testing.T) {
	// Its tokenizer is not published; any 512-token vocabulary stands in.
	f, _ := convertLlama2cFixture(t, "stories260K.bin", "tok512-aidreams.bin")
	for k, want := range map[string]int64{
		"llama.block_count":             5,
		"llama.attention.head_count":    8,
		"llama.attention.head_count_kv": 4,
		"llama.embedding_length":        64,
		"llama.feed_forward_length":     172,
		"llama.context_length":          512,
		"llama.rope.dimension_count":    8,
	} {
		got, err := f.Int(k)
		require.NoError(t, err)
		assert.Equal(t, want, got, k)
	}
	tokens, err := Array[string](f, "tokenizer.ggml.tokens")
	require.NoError(t, err)
	assert.Len(t, tokens, 512)

	// stories260K's header has a positive vocab_size: the classifier is
	// the embedding, written again as output.weight.
	emb, ok := f.Tensor("token_embd.weight")
	require.True(t, ok)
	out, ok := f.Tensor("output.weight")
	require.True(t, ok)
	assert.Equal(t, []int64{64, 512}, out.Dims)
	assert.True(t, bytes.Equal(f.TensorData(emb), f.TensorData(out)))
	k, ok := f.Tensor("blk.4.attn_k.weight")
	require.True(t, ok)
	assert.Equal(t, []int64{64, 32}, k.Dims)
	assert.Len(t, f.Tensors, 3+5*9)
}

// llama2cHeader is a checkpoint header in file order.
type llama2cHeader struct{ dim, hidden, layers, heads, kvHeads, vocab, seqLen int32 }

// sections returns the float counts of the checkpoint's arrays in file
// order, the RoPE tables last but one.
func (h llama2cHeader) sections() []int {
	dim, hidden, layers, vocab := int(h.dim), int(h.hidden), int(h.layers), int(h.vocab)
	kvDim := dim / int(h.heads) * int(h.kvHeads)
	s := []int{vocab * dim, layers * dim, layers * dim * dim, layers * kvDim * dim, layers * kvDim * dim,
		layers * dim * dim, layers * dim, layers * hidden * dim, layers * dim * hidden, layers * hidden * dim,
		dim, int(h.seqLen) * dim / int(h.heads)}
	if vocab < 0 {
		s[0] = -vocab * dim
		s = append(s, -vocab*dim)
	}
	return s
}

// makeLlama2c returns a checkpoint whose i-th float is i.
func makeLlama2c(h llama2cHeader) []byte {
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, []int32{h.dim, h.hidden, h.layers, h.heads, h.kvHeads, h.vocab, h.seqLen})
	n := 0
	for _, s := range h.sections() {
		n += s
	}
	for i := 0; i < n; i++ {
		_ = binary.Write(&buf, binary.LittleEndian, float32(i))
	}
	return buf.Bytes()
}

// makeTokenizer returns a tokenizer.bin of n pieces: the three specials,
// then bytes and words, with a space in some.
func makeTokenizer(n int) []byte {
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, int32(8))
	for i := 0; i < n; i++ {
		piece := []string{"<unk>", "\n<s>\n", "\n</s>\n", "<0x41>", " the", "", "a b"}[min(i, 6)]
		_ = binary.Write(&buf, binary.LittleEndian, float32(-i))
		_ = binary.Write(&buf, binary.LittleEndian, int32(len(piece)))
		buf.WriteString(piece)
	}
	return buf.Bytes()
}

func writeTemp(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, data, 0o644))
	return p
}

// TestConvertLlama2cLayout checks, on a synthetic grouped-query model with
// a separate classifier, that the tensors hold the checkpoint's arrays in
// order, split by layer, with the RoPE tables left out.
func TestConvertLlama2cLayout(t *testing.T) {
	h := llama2cHeader{dim: 8, hidden: 12, layers: 2, heads: 4, kvHeads: 2, vocab: -7, seqLen: 3}
	ckptBytes := makeLlama2c(h)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.gguf")
	require.NoError(t, ConvertLlama2c(writeTemp(t, dir, "m.bin", ckptBytes), writeTemp(t, dir, "t.bin", makeTokenizer(7)), out))
	f, err := Open(out)
	require.NoError(t, err)
	defer f.Close()

	order := []string{"token_embd", "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
		"ffn_gate", "ffn_down", "ffn_up", "output_norm", "", "output"}
	var got, want []byte
	off := llama2cHeaderBytes
	for i, n := range h.sections() {
		if order[i] != "" {
			want = append(want, ckptBytes[off:off+4*n]...)
		}
		off += 4 * n
		names := []string{order[i] + ".weight"}
		if i >= 1 && i <= 9 {
			names = []string{"blk.0." + order[i] + ".weight", "blk.1." + order[i] + ".weight"}
		}
		for _, name := range names {
			if order[i] == "" {
				continue
			}
			ti, ok := f.Tensor(name)
			require.True(t, ok, name)
			assert.Equal(t, quant.F32, ti.Type)
			got = append(got, f.TensorData(ti)...)
		}
	}
	require.Equal(t, len(ckptBytes), off)
	assert.True(t, bytes.Equal(want, got), "tensor bytes are not the checkpoint's arrays in order")

	k, _ := f.Tensor("blk.1.attn_k.weight")
	assert.Equal(t, []int64{8, 4}, k.Dims)
	down, _ := f.Tensor("blk.1.ffn_down.weight")
	assert.Equal(t, []int64{12, 8}, down.Dims)
	emb, _ := f.Tensor("token_embd.weight")
	cls, _ := f.Tensor("output.weight")
	assert.False(t, bytes.Equal(f.TensorData(emb), f.TensorData(cls)), "separate classifier")

	tokens, err := Array[string](f, "tokenizer.ggml.tokens")
	require.NoError(t, err)
	assert.Equal(t, []string{"<unk>", "<s>", "</s>", "<0x41>", "\u2581the", "", "a\u2581b"}, tokens)
	types, err := Array[int32](f, "tokenizer.ggml.token_type")
	require.NoError(t, err)
	assert.Equal(t, []int32{2, 3, 3, 6, 1, 3, 1}, types)
	scores, err := Array[float32](f, "tokenizer.ggml.scores")
	require.NoError(t, err)
	assert.Equal(t, float32(-6), scores[6])
}

func TestConvertLlama2cMalformed(t *testing.T) {
	good := llama2cHeader{dim: 8, hidden: 12, layers: 2, heads: 4, kvHeads: 2, vocab: 7, seqLen: 3}
	withHeader := func(h llama2cHeader) []byte {
		b := makeLlama2c(good)
		for i, v := range []int32{h.dim, h.hidden, h.layers, h.heads, h.kvHeads, h.vocab, h.seqLen} {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
		}
		return b
	}
	edit := func(f func(*llama2cHeader)) []byte {
		h := good
		f(&h)
		return withHeader(h)
	}
	goodCkpt, goodTok := makeLlama2c(good), makeTokenizer(7)
	tokWith := func(maxLen, n int32, piece string) []byte {
		var buf bytes.Buffer
		_ = binary.Write(&buf, binary.LittleEndian, maxLen)
		buf.Write(goodTok[4:])
		_ = binary.Write(&buf, binary.LittleEndian, float32(0))
		_ = binary.Write(&buf, binary.LittleEndian, n)
		buf.WriteString(piece)
		return buf.Bytes()
	}

	cases := []struct {
		name      string
		ckpt, tok []byte
		want      []string // substrings of the message
		inTok     bool     // the message names the tokenizer
	}{
		{"empty checkpoint", nil, goodTok, []string{"0 bytes, too short for the 28-byte header"}, false},
		{"short header", goodCkpt[:20], goodTok, []string{"too short"}, false},
		{"truncated", goodCkpt[:len(goodCkpt)-4], goodTok,
			[]string{"bytes, expected", "truncated?"}, false},
		{"trailing", append(append([]byte{}, goodCkpt...), 0, 0, 0, 0), goodTok, []string{"trailing data?"}, false},
		{"sign of vocab", edit(func(h *llama2cHeader) { h.vocab = -7 }), goodTok,
			[]string{"a separate classifier", "is the sign of vocab_size wrong?"}, false},
		{"zero dim", edit(func(h *llama2cHeader) { h.dim = 0 }), goodTok, []string{"dim = 0, want 1 to 65536"}, false},
		{"negative layers", edit(func(h *llama2cHeader) { h.layers = -2 }), goodTok, []string{"n_layers = -2"}, false},
		{"zero heads", edit(func(h *llama2cHeader) { h.heads = 0 }), goodTok, []string{"n_heads = 0"}, false},
		{"absurd dim", edit(func(h *llama2cHeader) { h.dim = 1 << 30 }), goodTok, []string{"dim = 1073741824"}, false},
		{"absurd hidden", edit(func(h *llama2cHeader) { h.hidden = math.MaxInt32 }), goodTok, []string{"hidden_dim = 2147483647"}, false},
		{"min int vocab", edit(func(h *llama2cHeader) { h.vocab = math.MinInt32 }), goodTok, []string{"vocab_size = 2147483648"}, false},
		{"zero vocab", edit(func(h *llama2cHeader) { h.vocab = 0 }), goodTok, []string{"vocab_size = 0"}, false},
		{"negative seq_len", edit(func(h *llama2cHeader) { h.seqLen = -1 }), goodTok, []string{"seq_len = -1"}, false},
		{"heads do not divide dim", edit(func(h *llama2cHeader) { h.heads = 3 }), goodTok, []string{"n_heads = 3 does not divide dim = 8"}, false},
		{"kv heads do not divide heads", edit(func(h *llama2cHeader) { h.kvHeads = 3 }), goodTok, []string{"n_kv_heads = 3 does not divide n_heads = 4"}, false},
		{"more kv heads than heads", edit(func(h *llama2cHeader) { h.kvHeads = 8 }), goodTok, []string{"n_kv_heads = 8, want 1 to 4"}, false},
		{"odd head size", edit(func(h *llama2cHeader) { h.heads = 8 }), goodTok, []string{"head size dim/n_heads = 1 is odd"}, false},
		{"fewer tokens", goodCkpt, makeTokenizer(6), []string{"holds 6 tokens", "vocab_size 7"}, true},
		{"more tokens", goodCkpt, makeTokenizer(9), []string{"holds 9 tokens", "vocab_size 7"}, true},
		{"empty tokenizer", goodCkpt, nil, []string{"too short for the 4-byte max_token_length"}, true},
		{"zero max_token_length", goodCkpt, tokWith(0, 1, "x"), []string{"max_token_length = 0"}, true},
		{"truncated entry header", goodCkpt, goodTok[:len(goodTok)-5], []string{"token 6: its score and length", "truncated?"}, true},
		{"truncated piece", goodCkpt, goodTok[:len(goodTok)-1], []string{"token 6: its 3 bytes", "truncated?"}, true},
		{"negative length", goodCkpt, tokWith(8, -1, ""), []string{"token 7: length -1"}, true},
		{"length over max", goodCkpt, tokWith(8, 9, "123456789"), []string{"token 7: length 9", "max_token_length 8"}, true},
		{"length past end", goodCkpt, tokWith(1<<16, 1<<16, "x"), []string{"token 7: its 65536 bytes", "past the end"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ckpt, tok := writeTemp(t, dir, "m.bin", c.ckpt), writeTemp(t, dir, "t.bin", c.tok)
			out := filepath.Join(dir, "out.gguf")
			err := ConvertLlama2c(ckpt, tok, out)
			require.Error(t, err)
			require.ErrorIs(t, err, ErrLlama2c)
			named := ckpt
			if c.inTok {
				named = tok
			}
			assert.Contains(t, err.Error(), "llama2c: "+named+": ")
			for _, w := range c.want {
				assert.Contains(t, err.Error(), w)
			}
			_, statErr := os.Stat(out)
			assert.True(t, os.IsNotExist(statErr), "no output on error")
		})
	}

	t.Run("missing files", func(t *testing.T) {
		dir := t.TempDir()
		tok := writeTemp(t, dir, "t.bin", goodTok)
		err := ConvertLlama2c(filepath.Join(dir, "nope.bin"), tok, filepath.Join(dir, "out.gguf"))
		require.ErrorIs(t, err, os.ErrNotExist)
		assert.Contains(t, err.Error(), "llama2c: ")
		ckpt := writeTemp(t, dir, "m.bin", goodCkpt)
		err = ConvertLlama2c(ckpt, filepath.Join(dir, "nope.bin"), filepath.Join(dir, "out.gguf"))
		require.ErrorIs(t, err, os.ErrNotExist)
	})

	t.Run("truncated fixture", func(t *testing.T) {
		data, err := os.ReadFile(fixture.Path(t, "llama2c", "aidreams260K.bin"))
		require.NoError(t, err)
		dir := t.TempDir()
		ckpt := writeTemp(t, dir, "m.bin", data[:len(data)-1000])
		err = ConvertLlama2c(ckpt, fixture.Path(t, "llama2c", "tok512-aidreams.bin"), filepath.Join(dir, "out.gguf"))
		require.ErrorIs(t, err, ErrLlama2c)
		assert.Contains(t, err.Error(), "931124 bytes, expected 932124 for dim=64 hidden_dim=172 n_layers=4 n_heads=4 n_kv_heads=4 vocab_size=512 seq_len=128 with a shared classifier")
	})
}

// FuzzLlama2cHeader converts arbitrary checkpoints with a valid tokenizer:
// an error or a GGUF that opens, never a panic. Slow inputs come from the
// engine minimizing each new one; -fuzzminimizetime=2s keeps it moving.
func FuzzLlama2cHeader(f *testing.F) {
	good := llama2cHeader{dim: 8, hidden: 12, layers: 2, heads: 4, kvHeads: 2, vocab: 7, seqLen: 3}
	f.Add(makeLlama2c(good))
	good.vocab = -7
	f.Add(makeLlama2c(good))
	f.Add(makeLlama2c(good)[:40])
	f.Add([]byte{})
	f.Add(makeLlama2c(llama2cHeader{dim: 4, hidden: 4, layers: 1, heads: 2, kvHeads: 1, vocab: 7, seqLen: 1}))
	dir := f.TempDir()
	tok := writeTemp(f, dir, "t.bin", makeTokenizer(7))
	f.Fuzz(func(t *testing.T, ckpt []byte) {
		d := t.TempDir()
		out := filepath.Join(d, "out.gguf")
		err := ConvertLlama2c(writeTemp(t, d, "m.bin", ckpt), tok, out)
		if err != nil {
			return
		}
		g, err := Open(out)
		require.NoError(t, err)
		defer g.Close()
		n, err := g.Int("llama.block_count")
		require.NoError(t, err)
		assert.Equal(t, int64(3+9*n), int64(len(g.Tensors)))
	})
}
