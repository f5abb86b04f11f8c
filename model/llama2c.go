package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/edged/edged/quant"
)

// ErrLlama2c is wrapped by every error that reports a llama2.c checkpoint or
// tokenizer that does not follow the format, or the two not matching.
var ErrLlama2c = errors.New("malformed llama2.c file")

// Bounds on the header of a llama2.c checkpoint. They are far above any
// model llama2.c can run and keep every size computed below well inside an
// int64.
const (
	llama2cHeaderBytes  = 7 * 4
	llama2cMaxDim       = 1 << 16
	llama2cMaxHiddenDim = 1 << 18
	llama2cMaxLayers    = 1 << 10
	llama2cMaxVocab     = 1 << 20
	llama2cMaxSeqLen    = 1 << 20
	llama2cMaxTokenLen  = 1 << 16
)

// llama.cpp's token types (llama_token_type), as written to
// tokenizer.ggml.token_type.
const (
	llama2cTokenNormal  int32 = 1
	llama2cTokenUnknown int32 = 2
	llama2cTokenControl int32 = 3
	llama2cTokenByte    int32 = 6
)

// The special ids llama2.c's SentencePiece vocabularies use.
const (
	llama2cUnkID = 0
	llama2cBOSID = 1
	llama2cEOSID = 2
)

// llama2cConfig is the header of a llama2.c checkpoint (run.c's Config).
type llama2cConfig struct {
	Dim       int // transformer width
	HiddenDim int // FFN width
	Layers    int
	Heads     int // query heads
	KVHeads   int // key/value heads (grouped-query attention when < Heads)
	Vocab     int
	SeqLen    int // maximum sequence length
	// SharedClassifier is set when the classifier is the token embedding
	// (a positive vocab_size in the header).
	SharedClassifier bool
}

// HeadDim is the width of one attention head.
func (c *llama2cConfig) HeadDim() int { return c.Dim / c.Heads }

// KVDim is the width of the keys and values of one position.
func (c *llama2cConfig) KVDim() int { return c.HeadDim() * c.KVHeads }

// FileSize is the exact length of a checkpoint with this header.
func (c *llama2cConfig) FileSize() int64 {
	dim, hidden, layers := int64(c.Dim), int64(c.HiddenDim), int64(c.Layers)
	vocab, kvDim := int64(c.Vocab), int64(c.KVDim())
	floats := vocab*dim + // token embedding
		layers*dim + // attention norms
		layers*dim*(2*dim+2*kvDim) + // wq, wk, wv, wo
		layers*dim + // ffn norms
		layers*3*dim*hidden + // w1, w2, w3
		dim + // final norm
		int64(c.SeqLen)*int64(c.HeadDim()) // freq_cis real and imag, unused
	if !c.SharedClassifier {
		floats += vocab * dim
	}
	return llama2cHeaderBytes + 4*floats
}

// classifier says whether the classifier is shared, for messages.
func (c *llama2cConfig) classifier() string {
	if c.SharedClassifier {
		return "a shared classifier"
	}
	return "a separate classifier"
}

func (c *llama2cConfig) String() string {
	return fmt.Sprintf("dim=%d hidden_dim=%d n_layers=%d n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d with %s",
		c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KVHeads, c.Vocab, c.SeqLen, c.classifier())
}

// parseLlama2cHeader reads and checks the header of the checkpoint data,
// including that data holds exactly the weights the header describes.
func parseLlama2cHeader(data []byte) (*llama2cConfig, error) {
	if len(data) < llama2cHeaderBytes {
		return nil, fmt.Errorf("%w: %d bytes, too short for the %d-byte header", ErrLlama2c, len(data), llama2cHeaderBytes)
	}
	var h [7]int32
	for i := range h {
		h[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
	}
	vocab := int64(h[5])
	c := &llama2cConfig{
		Dim: int(h[0]), HiddenDim: int(h[1]), Layers: int(h[2]), Heads: int(h[3]), KVHeads: int(h[4]),
		Vocab: int(max(vocab, -vocab)), SeqLen: int(h[6]), SharedClassifier: vocab > 0,
	}
	fields := []struct {
		name     string
		v, limit int
	}{
		{"dim", c.Dim, llama2cMaxDim},
		{"hidden_dim", c.HiddenDim, llama2cMaxHiddenDim},
		{"n_layers", c.Layers, llama2cMaxLayers},
		{"n_heads", c.Heads, c.Dim},
		{"n_kv_heads", c.KVHeads, c.Heads},
		{"vocab_size", c.Vocab, llama2cMaxVocab},
		{"seq_len", c.SeqLen, llama2cMaxSeqLen},
	}
	for _, f := range fields {
		if f.v < 1 || f.v > f.limit {
			return nil, fmt.Errorf("%w: header: %s = %d, want 1 to %d", ErrLlama2c, f.name, f.v, f.limit)
		}
	}
	if c.Dim%c.Heads != 0 {
		return nil, fmt.Errorf("%w: header: n_heads = %d does not divide dim = %d", ErrLlama2c, c.Heads, c.Dim)
	}
	if c.Heads%c.KVHeads != 0 {
		return nil, fmt.Errorf("%w: header: n_kv_heads = %d does not divide n_heads = %d", ErrLlama2c, c.KVHeads, c.Heads)
	}
	if c.HeadDim()%2 != 0 {
		return nil, fmt.Errorf("%w: header: head size dim/n_heads = %d is odd, but RoPE rotates pairs", ErrLlama2c, c.HeadDim())
	}
	if want, got := c.FileSize(), int64(len(data)); got != want {
		hint := "truncated?"
		if got > want {
			hint = "trailing data?"
		}
		other := *c
		other.SharedClassifier = !c.SharedClassifier
		if other.FileSize() == got {
			hint = "that is the size with " + other.classifier() + ": is the sign of vocab_size wrong?"
		}
		return nil, fmt.Errorf("%w: %d bytes, expected %d for %s (%s)", ErrLlama2c, got, want, c, hint)
	}
	return c, nil
}

// llama2cWeights are views into the checkpoint's bytes, shaped as run.c's
// TransformerWeights. Per-layer tensors are split by layer; every matrix is
// row-major (out, in), which is ggml's (in, out).
type llama2cWeights struct {
	TokenEmbedding []byte   // (vocab, dim)
	RMSAtt         [][]byte // per layer: (dim)
	WQ             [][]byte // per layer: (dim, dim)
	WK             [][]byte // per layer: (kv_dim, dim)
	WV             [][]byte // per layer: (kv_dim, dim)
	WO             [][]byte // per layer: (dim, dim)
	RMSFFN         [][]byte // per layer: (dim)
	W1             [][]byte // per layer: (hidden_dim, dim), gate
	W2             [][]byte // per layer: (dim, hidden_dim), down
	W3             [][]byte // per layer: (hidden_dim, dim), up
	RMSFinal       []byte   // (dim)
	Classifier     []byte   // (vocab, dim); the token embedding when shared
}

// llama2cCursor hands out consecutive float32 runs of a checkpoint.
type llama2cCursor struct {
	buf []byte
	off int64
}

// take returns the next n floats.
func (r *llama2cCursor) take(n int64) []byte {
	b := r.buf[r.off : r.off+4*n : r.off+4*n]
	r.off += 4 * n
	return b
}

// takeLayers returns the next layers×n floats, split into one view per layer.
func (r *llama2cCursor) takeLayers(layers int, n int64) [][]byte {
	out := make([][]byte, layers)
	for l := range out {
		out[l] = r.take(n)
	}
	return out
}

// llama2cViews slices a checkpoint whose size parseLlama2cHeader accepted.
func llama2cViews(c *llama2cConfig, data []byte) *llama2cWeights {
	dim, hidden, kvDim := int64(c.Dim), int64(c.HiddenDim), int64(c.KVDim())
	r := &llama2cCursor{buf: data, off: llama2cHeaderBytes}
	w := &llama2cWeights{}
	w.TokenEmbedding = r.take(int64(c.Vocab) * dim)
	w.RMSAtt = r.takeLayers(c.Layers, dim)
	w.WQ = r.takeLayers(c.Layers, dim*dim)
	w.WK = r.takeLayers(c.Layers, kvDim*dim)
	w.WV = r.takeLayers(c.Layers, kvDim*dim)
	w.WO = r.takeLayers(c.Layers, dim*dim)
	w.RMSFFN = r.takeLayers(c.Layers, dim)
	w.W1 = r.takeLayers(c.Layers, hidden*dim)
	w.W2 = r.takeLayers(c.Layers, dim*hidden)
	w.W3 = r.takeLayers(c.Layers, hidden*dim)
	w.RMSFinal = r.take(dim)
	r.take(int64(c.SeqLen) * int64(c.HeadDim())) // freq_cis_real, freq_cis_imag
	w.Classifier = w.TokenEmbedding
	if !c.SharedClassifier {
		w.Classifier = r.take(int64(c.Vocab) * dim)
	}
	return w
}

// llama2cVocab is a llama2.c tokenizer.bin read into GGUF's arrays.
type llama2cVocab struct {
	Tokens []string
	Scores []float32
	Types  []int32
}

// parseLlama2cTokenizer reads a tokenizer.bin: int32 max_token_length, then
// per token float32 score, int32 length and the piece's bytes, to the end of
// the file. Pieces are renamed and typed as llama.cpp's converter does.
func parseLlama2cTokenizer(data []byte) (*llama2cVocab, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("%w: %d bytes, too short for the 4-byte max_token_length", ErrLlama2c, len(data))
	}
	maxLen := int64(int32(binary.LittleEndian.Uint32(data)))
	if maxLen < 1 || maxLen > llama2cMaxTokenLen {
		return nil, fmt.Errorf("%w: max_token_length = %d, want 1 to %d", ErrLlama2c, maxLen, llama2cMaxTokenLen)
	}
	v := &llama2cVocab{}
	for off := int64(4); off < int64(len(data)); {
		id := len(v.Tokens)
		if int64(len(data))-off < 8 {
			return nil, fmt.Errorf("%w: token %d: its score and length at byte %d run past the end of the %d-byte file (truncated?)",
				ErrLlama2c, id, off, len(data))
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int64(int32(binary.LittleEndian.Uint32(data[off+4:])))
		off += 8
		if n < 0 || n > maxLen {
			return nil, fmt.Errorf("%w: token %d: length %d at byte %d, want 0 to max_token_length %d", ErrLlama2c, id, n, off-4, maxLen)
		}
		if int64(len(data))-off < n {
			return nil, fmt.Errorf("%w: token %d: its %d bytes at byte %d run past the end of the %d-byte file (truncated?)",
				ErrLlama2c, id, n, off, len(data))
		}
		text, typ := llama2cPiece(id, string(data[off:off+n]))
		off += n
		v.Tokens = append(v.Tokens, text)
		v.Scores = append(v.Scores, score)
		v.Types = append(v.Types, typ)
	}
	return v, nil
}

// llama2cPiece returns the GGUF text and token type of piece id: the special
// ids get their usual names (llama2.c stores BOS and EOS as "\n<s>\n" and
// "\n</s>\n"), "<0xXX>" pieces are bytes, an empty piece is a control token,
// and spaces become U+2581 as in SentencePiece vocabularies.
func llama2cPiece(id int, piece string) (string, int32) {
	switch {
	case id == llama2cUnkID:
		return "<unk>", llama2cTokenUnknown
	case id == llama2cBOSID:
		return "<s>", llama2cTokenControl
	case id == llama2cEOSID:
		return "</s>", llama2cTokenControl
	case piece == "":
		return "", llama2cTokenControl
	case isBytePiece(piece):
		return piece, llama2cTokenByte
	}
	return strings.ReplaceAll(piece, " ", "\u2581"), llama2cTokenNormal
}

// isBytePiece reports whether piece is "<0xXX>" with two hex digits.
func isBytePiece(piece string) bool {
	if len(piece) != 6 || !strings.HasPrefix(piece, "<0x") || piece[5] != '>' {
		return false
	}
	for _, c := range piece[3:5] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// ConvertLlama2c converts a llama2.c checkpoint (run.c's format: a header of
// seven int32 values, then float32 weights) and a llama2.c tokenizer.bin
// into an F32 GGUF file at outPath for the llama architecture, with the
// metadata, tensor names and shapes llama.cpp's convert-llama2c-to-ggml
// writes, so that both edged and llama.cpp load it.
//
// Where llama.cpp's converter differs, ConvertLlama2c writes
// llama.context_length = seq_len (llama.cpp writes its default 128),
// llama.rope.dimension_count = the head size (llama.cpp caps it at 64),
// general.name = the checkpoint's file name without its extension, and no
// separator or padding token ids (llama.cpp writes 0xFFFFFFFF, "none"). It
// adds tokenizer.ggml.add_bos_token, tokenizer.ggml.add_space_prefix (true,
// as llama2.c encodes) and llama.rope.freq_base (10000, llama2.c's theta).
// A shared classifier is written as output.weight holding a copy of the
// token embedding, as llama.cpp's converter does. The RoPE in llama2.c
// rotates adjacent pairs, as llama.cpp's does for llama, so the query and
// key weights are written unpermuted.
//
// The checkpoint is memory-mapped and the tensors written straight from it.
// Every size in both files is checked before use; errors wrap ErrLlama2c.
func ConvertLlama2c(checkpointPath, tokenizerPath, outPath string) (err error) {
	ckpt, unmap, err := mapFile(checkpointPath)
	if err != nil {
		return fmt.Errorf("llama2c: %s: %w", checkpointPath, err)
	}
	defer func() {
		if uerr := unmap(); uerr != nil && err == nil {
			err = fmt.Errorf("llama2c: %s: unmap: %w", checkpointPath, uerr)
		}
	}()
	cfg, err := parseLlama2cHeader(ckpt)
	if err != nil {
		return fmt.Errorf("llama2c: %s: %w", checkpointPath, err)
	}
	tok, unmapTok, err := mapFile(tokenizerPath)
	if err != nil {
		return fmt.Errorf("llama2c: %s: %w", tokenizerPath, err)
	}
	vocab, err := parseLlama2cTokenizer(tok)
	_ = unmapTok() // the vocabulary holds copies of the pieces
	if err != nil {
		return fmt.Errorf("llama2c: %s: %w", tokenizerPath, err)
	}
	if len(vocab.Tokens) != cfg.Vocab {
		return fmt.Errorf("llama2c: %s: %w: holds %d tokens, but %s has vocab_size %d",
			tokenizerPath, ErrLlama2c, len(vocab.Tokens), checkpointPath, cfg.Vocab)
	}
	name := strings.TrimSuffix(filepath.Base(checkpointPath), filepath.Ext(checkpointPath))
	w, err := llama2cWriter(cfg, llama2cViews(cfg, ckpt), vocab, name)
	if err != nil {
		return fmt.Errorf("llama2c: %s: %w", outPath, err)
	}
	if err := w.WriteFile(outPath); err != nil {
		return fmt.Errorf("llama2c: %w", err)
	}
	return nil
}

// llama2cWriter lays out the GGUF file: metadata, then the tensors in the
// order llama.cpp's converter writes them.
func llama2cWriter(c *llama2cConfig, wt *llama2cWeights, v *llama2cVocab, name string) (*Writer, error) {
	w := NewWriter()
	meta := []struct {
		key string
		val any
	}{
		{"general.architecture", "llama"},
		{"general.name", name},
		{"llama.context_length", uint32(c.SeqLen)},
		{"llama.embedding_length", uint32(c.Dim)},
		{"llama.feed_forward_length", uint32(c.HiddenDim)},
		{"llama.block_count", uint32(c.Layers)},
		{"llama.attention.head_count", uint32(c.Heads)},
		{"llama.attention.head_count_kv", uint32(c.KVHeads)},
		{"llama.rope.dimension_count", uint32(c.HeadDim())},
		{"llama.rope.freq_base", float32(10000)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", v.Tokens},
		{"tokenizer.ggml.scores", v.Scores},
		{"tokenizer.ggml.token_type", v.Types},
		{"tokenizer.ggml.unknown_token_id", uint32(llama2cUnkID)},
		{"tokenizer.ggml.bos_token_id", uint32(llama2cBOSID)},
		{"tokenizer.ggml.eos_token_id", uint32(llama2cEOSID)},
		{"tokenizer.ggml.add_bos_token", true},
		{"tokenizer.ggml.add_space_prefix", true},
	}
	for _, m := range meta {
		if err := w.Set(m.key, m.val); err != nil {
			return nil, err
		}
	}

	dim, hidden, kvDim, vocab := int64(c.Dim), int64(c.HiddenDim), int64(c.KVDim()), int64(c.Vocab)
	type tensor struct {
		name string
		dims []int64 // ggml order
		data []byte
	}
	tensors := []tensor{
		{"token_embd.weight", []int64{dim, vocab}, wt.TokenEmbedding},
		{"output_norm.weight", []int64{dim}, wt.RMSFinal},
		{"output.weight", []int64{dim, vocab}, wt.Classifier},
	}
	for l := 0; l < c.Layers; l++ {
		blk := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", l, s) }
		tensors = append(tensors,
			tensor{blk("attn_q"), []int64{dim, dim}, wt.WQ[l]},
			tensor{blk("attn_k"), []int64{dim, kvDim}, wt.WK[l]},
			tensor{blk("attn_v"), []int64{dim, kvDim}, wt.WV[l]},
			tensor{blk("attn_output"), []int64{dim, dim}, wt.WO[l]},
			tensor{blk("attn_norm"), []int64{dim}, wt.RMSAtt[l]},
			tensor{blk("ffn_gate"), []int64{dim, hidden}, wt.W1[l]},
			tensor{blk("ffn_down"), []int64{hidden, dim}, wt.W2[l]},
			tensor{blk("ffn_up"), []int64{dim, hidden}, wt.W3[l]},
			tensor{blk("ffn_norm"), []int64{dim}, wt.RMSFFN[l]},
		)
	}
	for _, t := range tensors {
		if err := w.AddTensor(t.name, quant.F32, t.dims, t.data); err != nil {
			return nil, err
		}
	}
	return w, nil
}
