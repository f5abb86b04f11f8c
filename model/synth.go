package model

// Synthetic models: random weights in the exact shape of a real model, with
// the metadata, tensor names, tensor order and per-tensor storage types that
// llama.cpp's converter and llama-quantize write, and a valid tokenizer
// padded to the real vocabulary size. Speed does not depend on the weight
// values, so edged and llama.cpp can be timed on the same file without
// downloading the real one.
//
// The weights follow the recipe of the reference files in BASELINES.md: an
// F16 source of normal values scaled by 1/sqrt(fan-in) (the row length),
// norms set to one, then quantized per tensor. Biases are normal with a
// standard deviation of 0.02; llama 3's rope_freqs are computed as its
// converter computes them.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"iter"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/edged/edged/quant"
)

// ErrSynth is wrapped by the errors that reject a shape or a file type.
var ErrSynth = errors.New("cannot synthesize")

// FType is llama.cpp's llama_ftype, written to general.file_type: the file
// type a model is "mostly" stored in. The numbers are llama.h's.
type FType uint32

// The file types Synthesize writes: those whose every tensor type the
// quantizer supports.
const (
	FTypeF32   FType = 0
	FTypeF16   FType = 1
	FTypeQ4_0  FType = 2
	FTypeQ4_1  FType = 3
	FTypeQ8_0  FType = 7
	FTypeQ5_0  FType = 8
	FTypeQ5_1  FType = 9
	FTypeQ2_K  FType = 10
	FTypeQ3_KS FType = 11
	FTypeQ3_KM FType = 12
	FTypeQ3_KL FType = 13
	FTypeQ4_KS FType = 14
	FTypeQ4_KM FType = 15
	FTypeQ5_KS FType = 16
	FTypeQ5_KM FType = 17
	FTypeQ6_K  FType = 18
	FTypeQ2_KS FType = 21
	FTypeBF16  FType = 32
)

// ftypes lists each file type's name (as llama-quantize spells it) and its
// default tensor type.
var ftypes = []struct {
	ft   FType
	name string
	base quant.Type
}{
	{FTypeF32, "F32", quant.F32},
	{FTypeF16, "F16", quant.F16},
	{FTypeBF16, "BF16", quant.BF16},
	{FTypeQ4_0, "Q4_0", quant.Q4_0},
	{FTypeQ4_1, "Q4_1", quant.Q4_1},
	{FTypeQ5_0, "Q5_0", quant.Q5_0},
	{FTypeQ5_1, "Q5_1", quant.Q5_1},
	{FTypeQ8_0, "Q8_0", quant.Q8_0},
	{FTypeQ2_K, "Q2_K", quant.Q2_K},
	{FTypeQ2_KS, "Q2_K_S", quant.Q2_K},
	{FTypeQ3_KS, "Q3_K_S", quant.Q3_K},
	{FTypeQ3_KM, "Q3_K_M", quant.Q3_K},
	{FTypeQ3_KL, "Q3_K_L", quant.Q3_K},
	{FTypeQ4_KS, "Q4_K_S", quant.Q4_K},
	{FTypeQ4_KM, "Q4_K_M", quant.Q4_K},
	{FTypeQ5_KS, "Q5_K_S", quant.Q5_K},
	{FTypeQ5_KM, "Q5_K_M", quant.Q5_K},
	{FTypeQ6_K, "Q6_K", quant.Q6_K},
}

// ftypeAliases are llama-quantize's short names for the medium k-quants.
var ftypeAliases = map[string]FType{"Q3_K": FTypeQ3_KM, "Q4_K": FTypeQ4_KM, "Q5_K": FTypeQ5_KM}

// ParseFType maps a name such as "q4_0" or "Q4_K_M" to its file type.
func ParseFType(name string) (FType, error) {
	up := strings.ToUpper(name)
	if ft, ok := ftypeAliases[up]; ok {
		return ft, nil
	}
	for _, f := range ftypes {
		if f.name == up {
			return f.ft, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown file type %q (known: %s)", ErrSynth, name, strings.Join(FTypeNames(), ", "))
}

// FTypeNames lists the file types Synthesize writes, in lower case.
func FTypeNames() []string {
	names := make([]string, len(ftypes))
	for i, f := range ftypes {
		names[i] = strings.ToLower(f.name)
	}
	return names
}

func (ft FType) String() string {
	for _, f := range ftypes {
		if f.ft == ft {
			return f.name
		}
	}
	return fmt.Sprintf("ftype(%d)", uint32(ft))
}

// base is the type of the tensors that no rule singles out.
func (ft FType) base() (quant.Type, bool) {
	for _, f := range ftypes {
		if f.ft == ft {
			return f.base, true
		}
	}
	return 0, false
}

// Shape is the architecture, sizes and tokenizer of a model.
type Shape struct {
	Name    string
	Arch    string // general.architecture: "llama" or "qwen2"
	Embd    int    // width of the residual stream
	Layers  int
	Heads   int // query heads
	KVHeads int
	// HeadDim is the width of a head when the model's config states it (it
	// is then written as attention.key_length and value_length); 0 means
	// Embd/Heads, not written.
	HeadDim   int
	FF        int // hidden width of the MLP
	Vocab     int // rows of the token embedding
	Context   int // training context length
	RopeTheta float32
	RMSEps    float32
	Tied      bool        // the output projection is the token embedding
	Llama3    *RopeLlama3 // llama 3 frequency scaling: adds rope_freqs.weight
	Tokenizer SynthTokenizer
}

// RopeLlama3 is llama 3's RoPE frequency scaling (rope_type "llama3" in the
// Hugging Face config), which the converter stores as rope_freqs.weight.
type RopeLlama3 struct {
	Factor, LowFreqFactor, HighFreqFactor float64
	OrigContext                           int // original_max_position_embeddings
}

// SynthTokenizer lays out a synthetic vocabulary: special tokens first, the
// normal tokens (the 256 byte tokens, then made-up pieces), more special
// tokens, and "[PAD<id>]" tokens up to the vocabulary size, as the converter
// pads a vocabulary shorter than the embedding.
type SynthTokenizer struct {
	Model    string   // tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
	Pre      string   // tokenizer.ggml.pre
	Leading  []string // special tokens at ids 0, 1, …
	Normal   int      // normal tokens after them, byte tokens included; 0: all up to Trailing
	Trailing []string // special tokens after the normal ones
	// Special ids; -1: not written.
	BOS, EOS, UNK, PAD int32
	AddBOS             bool
}

// Shapes returns the shapes Synthesize knows: the four of BASELINES.md with
// the hyper-parameters of the released models, and two tiny ones for tests.
func Shapes() []Shape {
	return []Shape{
		{
			Name: "smollm2-135m", Arch: "llama", Embd: 576, Layers: 30, Heads: 9, KVHeads: 3, FF: 1536, Vocab: 49152,
			Context: 8192, RopeTheta: 100000, RMSEps: 1e-5, Tied: true,
			Tokenizer: SynthTokenizer{Model: "gpt2", Pre: "smollm", Leading: synthSmolLMSpecials, BOS: 0, EOS: 0, UNK: -1, PAD: -1},
		},
		{
			Name: "qwen2.5-0.5b", Arch: "qwen2", Embd: 896, Layers: 24, Heads: 14, KVHeads: 2, FF: 4864, Vocab: 151936,
			Context: 32768, RopeTheta: 1e6, RMSEps: 1e-6, Tied: true,
			Tokenizer: SynthTokenizer{Model: "gpt2", Pre: "qwen2", Normal: 151643, Trailing: synthQwen2Specials,
				BOS: 151643, EOS: 151643, UNK: -1, PAD: 151643},
		},
		{
			Name: "llama3.2-1b", Arch: "llama", Embd: 2048, Layers: 16, Heads: 32, KVHeads: 8, HeadDim: 64, FF: 8192, Vocab: 128256,
			Context: 131072, RopeTheta: 500000, RMSEps: 1e-5, Tied: true,
			Llama3:    &RopeLlama3{Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OrigContext: 8192},
			Tokenizer: SynthTokenizer{Model: "gpt2", Pre: "llama-bpe", Normal: 128000, Trailing: synthLlama3Specials(), BOS: 128000, EOS: 128001, UNK: -1, PAD: -1, AddBOS: true},
		},
		{
			Name: "tinyllama-1.1b", Arch: "llama", Embd: 2048, Layers: 22, Heads: 32, KVHeads: 4, FF: 5632, Vocab: 32000,
			Context: 2048, RopeTheta: 10000, RMSEps: 1e-5,
			Tokenizer: SynthTokenizer{Model: "llama", Pre: "default", Leading: []string{"<unk>", "<s>", "</s>"}, UNK: 0, BOS: 1, EOS: 2, PAD: 2, AddBOS: true},
		},
		{
			Name: "test-llama-tiny", Arch: "llama", Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, FF: 512, Vocab: 600,
			Context: 512, RopeTheta: 10000, RMSEps: 1e-5,
			Tokenizer: SynthTokenizer{Model: "llama", Pre: "default", Leading: []string{"<unk>", "<s>", "</s>"}, UNK: 0, BOS: 1, EOS: 2, PAD: -1, AddBOS: true},
		},
		{
			Name: "test-qwen2-tiny", Arch: "qwen2", Embd: 256, Layers: 2, Heads: 4, KVHeads: 2, FF: 512, Vocab: 640,
			Context: 512, RopeTheta: 1e6, RMSEps: 1e-6, Tied: true,
			Tokenizer: SynthTokenizer{Model: "gpt2", Pre: "qwen2", Normal: 600, Trailing: synthQwen2Specials[:3], BOS: 600, EOS: 600, UNK: -1, PAD: 600},
		},
	}
}

// ShapeByName returns the shape called name.
func ShapeByName(name string) (Shape, error) {
	var names []string
	for _, s := range Shapes() {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	return Shape{}, fmt.Errorf("%w: unknown shape %q (known: %s)", ErrSynth, name, strings.Join(names, ", "))
}

// The special tokens of the real vocabularies, at their real ids.
var (
	synthSmolLMSpecials = []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
		"<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
		"<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>"}
	synthQwen2Specials = []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
		"<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
		"<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
		"<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}
)

// synthLlama3Specials are the 256 special tokens of llama 3's vocabulary.
func synthLlama3Specials() []string {
	named := map[int]string{0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>",
		6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>", 10: "<|python_tag|>"}
	out := make([]string, 256)
	reserved := 0
	for i := range out {
		if s, ok := named[i]; ok {
			out[i] = s
			continue
		}
		out[i] = fmt.Sprintf("<|reserved_special_token_%d|>", reserved)
		reserved++
	}
	return out
}

// headDim is the width of one attention head.
func (s *Shape) headDim() int {
	if s.HeadDim > 0 {
		return s.HeadDim
	}
	if s.Heads <= 0 {
		return 0
	}
	return s.Embd / s.Heads
}

// validate checks the sizes, reporting every problem at once.
func (s *Shape) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	const limit = 1 << 20
	for _, v := range []struct {
		name string
		n    int
	}{{"Embd", s.Embd}, {"Layers", s.Layers}, {"Heads", s.Heads}, {"KVHeads", s.KVHeads}, {"FF", s.FF},
		{"Vocab", s.Vocab}, {"Context", s.Context}} {
		check(v.n > 0 && v.n <= limit, "%s = %d is outside [1, %d]", v.name, v.n, limit)
	}
	check(s.HeadDim >= 0, "HeadDim = %d is negative", s.HeadDim)
	if s.Heads > 0 && s.KVHeads > 0 {
		check(s.Heads%s.KVHeads == 0, "Heads = %d is not a multiple of KVHeads = %d", s.Heads, s.KVHeads)
		check(s.HeadDim > 0 || s.Embd%s.Heads == 0, "Heads = %d does not divide Embd = %d", s.Heads, s.Embd)
		check(s.headDim() > 0 && s.headDim()%2 == 0, "the head width %d is not even", s.headDim())
	}
	check(s.RopeTheta > 0 && s.RMSEps > 0, "RopeTheta and RMSEps must be positive")
	if _, ok := archs[s.Arch]; !ok {
		errs = append(errs, fmt.Errorf("architecture %q is not one of %s", s.Arch, strings.Join(SupportedArchs(), ", ")))
	}
	if r := s.Llama3; r != nil {
		check(r.Factor > 0 && r.LowFreqFactor > 0 && r.HighFreqFactor > r.LowFreqFactor && r.OrigContext > 0,
			"Llama3 rope scaling %+v is not valid", *r)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: shape %s: %w", ErrSynth, s.Name, err)
	}
	return nil
}

// Token types as stored in tokenizer.ggml.token_type.
const (
	synthTokNormal  = int32(TokenNormal)
	synthTokUnknown = int32(TokenUnknown)
	synthTokControl = int32(TokenControl)
	synthTokUnused  = int32(TokenUnused)
	synthTokByte    = int32(TokenByte)
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

// synthTensor is one tensor of the plan.
type synthTensor struct {
	info  TensorInfo
	layer int    // -1 outside the blocks
	role  string // the name without "blk.N." and ".weight"/".bias"
	init  synthInit
}

type synthInit int

const (
	synthInitWeight    synthInit = iota // normal / sqrt(row length), through F16
	synthInitOnes                       // norms
	synthInitBias                       // normal * 0.02, through F16
	synthInitRopeFreqs                  // llama 3 frequency factors
)

// SynthPlan is the file Synthesize writes, without the tensor data.
type SynthPlan struct {
	Shape   Shape
	FType   FType
	Tensors []TensorInfo // in file order; Offset is not set
	meta    []synthKV
	plan    []synthTensor
}

type synthKV struct {
	key string
	val any
}

// Size is the number of tensor bytes (llama-bench's model size).
func (p *SynthPlan) Size() int64 {
	var n int64
	for _, t := range p.Tensors {
		n += t.Size
	}
	return n
}

// Params is the number of weights.
func (p *SynthPlan) Params() int64 {
	var n int64
	for _, t := range p.Tensors {
		n += t.Elements()
	}
	return n
}

// PlanSynth lays out the file for shape in file type ft: metadata, tensors
// and their storage types.
func PlanSynth(shape Shape, ft FType) (*SynthPlan, error) {
	if err := shape.validate(); err != nil {
		return nil, err
	}
	if _, ok := ft.base(); !ok {
		return nil, fmt.Errorf("%w: file type %s is not supported", ErrSynth, ft)
	}
	v, err := shape.vocab()
	if err != nil {
		return nil, err
	}
	p := &SynthPlan{Shape: shape, FType: ft, meta: shape.metadata(ft, v)}
	for _, t := range shape.tensors() {
		typ, err := ft.tensorType(&shape, t)
		if err != nil {
			return nil, err
		}
		rowBytes, err := typ.RowSize(int(t.info.Dims[0]))
		if err != nil {
			return nil, fmt.Errorf("%w: %s as %s: %w", ErrSynth, t.info.Name, typ, err)
		}
		t.info.Type = typ
		t.info.Size = int64(rowBytes) * t.info.Rows()
		p.plan = append(p.plan, t)
		p.Tensors = append(p.Tensors, t.info)
	}
	return p, nil
}

// metadata lists the keys in the order the converter writes them, then the
// one llama-quantize adds. vocab_size and rope.dimension_count are written
// for llama only, as the converter does.
func (s *Shape) metadata(ft FType, v *synthVocabulary) []synthKV {
	a := s.Arch + "."
	kv := []synthKV{
		{"general.architecture", s.Arch},
		{"general.type", "model"},
		{"general.name", s.Name},
		{"general.description", "random weights in the shape of " + s.Name + ", written by edgectl synth"},
		{a + "block_count", uint32(s.Layers)},
		{a + "context_length", uint32(s.Context)},
		{a + "embedding_length", uint32(s.Embd)},
		{a + "feed_forward_length", uint32(s.FF)},
		{a + "attention.head_count", uint32(s.Heads)},
		{a + "attention.head_count_kv", uint32(s.KVHeads)},
		{a + "rope.freq_base", s.RopeTheta},
		{a + "attention.layer_norm_rms_epsilon", s.RMSEps},
	}
	if s.HeadDim > 0 {
		kv = append(kv, synthKV{a + "attention.key_length", uint32(s.HeadDim)}, synthKV{a + "attention.value_length", uint32(s.HeadDim)})
	}
	kv = append(kv, synthKV{"general.file_type", uint32(ft)})
	if s.Arch == "llama" {
		kv = append(kv, synthKV{a + "vocab_size", uint32(s.Vocab)}, synthKV{a + "rope.dimension_count", uint32(s.headDim())})
	}
	tk := &s.Tokenizer
	kv = append(kv,
		synthKV{keyTokModel, tk.Model},
		synthKV{keyTokPre, tk.Pre},
		synthKV{keyTokTokens, v.tokens},
	)
	if v.scores != nil {
		kv = append(kv, synthKV{keyTokScores, v.scores})
	}
	kv = append(kv, synthKV{keyTokTypes, v.types})
	if v.merges != nil {
		kv = append(kv, synthKV{keyTokMerges, v.merges})
	}
	for _, id := range []struct {
		key string
		id  int32
	}{{"bos", tk.BOS}, {"eos", tk.EOS}, {"unknown", tk.UNK}, {"padding", tk.PAD}} {
		if id.id >= 0 {
			kv = append(kv, synthKV{"tokenizer.ggml." + id.key + "_token_id", uint32(id.id)})
		}
	}
	kv = append(kv,
		synthKV{keyTokAddBOS, tk.AddBOS},
		synthKV{keyTokAddEOS, false},
		synthKV{"general.quantization_version", uint32(2)},
	)
	return kv
}

// tensors lists the shape's tensors in llama-quantize's order: the tensors
// outside the blocks by name, then block by block, by name within a block.
func (s *Shape) tensors() []synthTensor {
	embd, ff, vocab := int64(s.Embd), int64(s.FF), int64(s.Vocab)
	qDim, kvDim := int64(s.Heads*s.headDim()), int64(s.KVHeads*s.headDim())
	var out []synthTensor
	add := func(layer int, role, suffix string, init synthInit, dims ...int64) {
		name := role + "." + suffix
		if layer >= 0 {
			name = fmt.Sprintf("blk.%d.%s", layer, name)
		}
		out = append(out, synthTensor{info: TensorInfo{Name: name, Dims: dims}, layer: layer, role: role, init: init})
	}
	add(-1, "token_embd", "weight", synthInitWeight, embd, vocab)
	add(-1, "output_norm", "weight", synthInitOnes, embd)
	if !s.Tied {
		add(-1, "output", "weight", synthInitWeight, embd, vocab)
	}
	if s.Llama3 != nil {
		add(-1, "rope_freqs", "weight", synthInitRopeFreqs, int64(s.headDim()/2))
	}
	bias := archs[s.Arch].QKVBias
	for l := range s.Layers {
		add(l, "attn_norm", "weight", synthInitOnes, embd)
		add(l, "attn_q", "weight", synthInitWeight, embd, qDim)
		add(l, "attn_k", "weight", synthInitWeight, embd, kvDim)
		add(l, "attn_v", "weight", synthInitWeight, embd, kvDim)
		if bias {
			add(l, "attn_q", "bias", synthInitBias, qDim)
			add(l, "attn_k", "bias", synthInitBias, kvDim)
			add(l, "attn_v", "bias", synthInitBias, kvDim)
		}
		add(l, "attn_output", "weight", synthInitWeight, qDim, embd)
		add(l, "ffn_norm", "weight", synthInitOnes, embd)
		add(l, "ffn_gate", "weight", synthInitWeight, embd, ff)
		add(l, "ffn_up", "weight", synthInitWeight, embd, ff)
		add(l, "ffn_down", "weight", synthInitWeight, ff, embd)
	}
	slices.SortStableFunc(out, func(a, b synthTensor) int {
		if a.layer != b.layer {
			return a.layer - b.layer
		}
		return strings.Compare(a.info.Name, b.info.Name)
	})
	return out
}

// tensorType is llama-quantize's choice of storage type for t (its
// llama_tensor_get_type without an importance matrix or overrides, for a
// dense model): one-dimensional tensors stay F32; the output projection
// (the token embedding when tied) gets Q6_K, or Q8_0 when the file type is
// Q8_0 or the row length is not a multiple of the file type's block; the
// k-quant mixes raise attn_v, attn_output and ffn_down in some layers; and a
// row length that a k-quant's 256-element blocks do not divide falls back
// to Q5_0, Q5_1 or Q8_0 (for Q4_K, Q5_K, Q6_K), or F16.
func (ft FType) tensorType(s *Shape, t synthTensor) (quant.Type, error) {
	base, _ := ft.base()
	if len(t.info.Dims) < 2 {
		return quant.F32, nil
	}
	if base == quant.F32 || base == quant.F16 || base == quant.BF16 {
		return base, nil
	}
	nx := int(t.info.Dims[0])
	i, n := t.layer, s.Layers
	moreBits := i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
	gqa := s.Heads / s.KVHeads
	typ := base
	switch {
	case t.role == "output" || s.Tied && t.role == "token_embd":
		switch {
		case nx%base.BlockSize() != 0:
			typ = quant.Q8_0
		case base != quant.Q8_0:
			typ = quant.Q6_K
		}
	case t.role == "token_embd":
		// the file type's own type
	case t.role == "attn_v":
		switch {
		case ft == FTypeQ2_K && gqa >= 4:
			typ = quant.Q4_K
		case ft == FTypeQ2_K:
			typ = quant.Q3_K
		case ft == FTypeQ2_KS && gqa >= 4:
			typ = quant.Q4_K
		case ft == FTypeQ3_KM && i < 2:
			typ = quant.Q5_K
		case ft == FTypeQ3_KM:
			typ = quant.Q4_K
		case ft == FTypeQ3_KL:
			typ = quant.Q5_K
		case (ft == FTypeQ4_KM || ft == FTypeQ5_KM) && moreBits:
			typ = quant.Q6_K
		case ft == FTypeQ4_KS && i < 4:
			typ = quant.Q5_K
		}
	case t.role == "ffn_down":
		switch {
		case ft == FTypeQ2_K:
			typ = quant.Q3_K
		case ft == FTypeQ2_KS && i < n/8:
			typ = quant.Q4_K
		case ft == FTypeQ3_KM && i < n/16:
			typ = quant.Q5_K
		case ft == FTypeQ3_KM:
			typ = quant.Q4_K
		case ft == FTypeQ3_KL:
			typ = quant.Q5_K
		case (ft == FTypeQ4_KM || ft == FTypeQ5_KM) && moreBits:
			typ = quant.Q6_K
		case ft == FTypeQ4_KS && i < n/8:
			typ = quant.Q5_K
		}
	case t.role == "attn_output":
		switch ft {
		case FTypeQ2_K:
			typ = quant.Q3_K
		case FTypeQ3_KM:
			typ = quant.Q4_K
		case FTypeQ3_KL:
			typ = quant.Q5_K
		}
	}
	if nx%typ.BlockSize() == 0 {
		return typ, nil
	}
	switch typ {
	case quant.Q4_K:
		typ = quant.Q5_0
	case quant.Q5_K:
		typ = quant.Q5_1
	case quant.Q6_K:
		typ = quant.Q8_0
	default:
		return 0, fmt.Errorf("%w: %s: rows of %d do not fit %s blocks, and llama.cpp's fallback (IQ4_NL for Q2_K and Q3_K) is not a type edged writes",
			ErrSynth, t.info.Name, nx, typ)
	}
	if nx%typ.BlockSize() != 0 {
		typ = quant.F16
	}
	return typ, nil
}

// writer returns a Writer holding the plan's metadata and no tensors.
func (p *SynthPlan) writer() (*Writer, error) {
	w := NewWriter()
	for _, kv := range p.meta {
		if err := w.Set(kv.key, kv.val); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Synthesize writes a model in the given shape and file type to outPath,
// with random weights drawn from seed: the same arguments give the same
// bytes. The file appears atomically.
//
// Memory stays near one chunk of rows per core: the file is first written
// with zero tensor data (from one shared zero buffer the size of the
// largest tensor, whose pages are never written), then the tensors are
// generated, quantized and written in place chunk by chunk, on every core.
func Synthesize(shape Shape, ft FType, seed uint64, outPath string) error {
	return SynthesizeContext(context.Background(), shape, ft, seed, outPath)
}

// SynthesizeContext is Synthesize, stopping early (and writing nothing)
// when ctx is done.
func SynthesizeContext(ctx context.Context, shape Shape, ft FType, seed uint64, outPath string) (err error) {
	p, err := PlanSynth(shape, ft)
	if err != nil {
		return err
	}
	w, err := p.writer()
	if err != nil {
		return err
	}
	var largest int64
	for _, t := range p.Tensors {
		largest = max(largest, t.Size)
	}
	zero := make([]byte, largest)
	for _, t := range p.Tensors {
		if err := w.AddTensor(t.Name, t.Type, t.Dims, zero[:t.Size]); err != nil {
			return err
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(outPath), filepath.Base(outPath)+".*.tmp")
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := w.WriteTo(tmp); err != nil {
		return fmt.Errorf("synth: write %s: %w", tmp.Name(), err)
	}
	w, zero = nil, nil
	offsets, err := synthTensorOffsets(tmp.Name(), p.Tensors)
	if err != nil {
		return err
	}
	if err := p.fill(ctx, tmp, offsets, seed); err != nil {
		return fmt.Errorf("synth: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := os.Rename(tmp.Name(), outPath); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

// synthTensorOffsets reads back the file at path and returns the absolute offset
// of each tensor's data, checking that the directory is the plan's.
func synthTensorOffsets(path string, want []TensorInfo) ([]int64, error) {
	f, err := Open(path)
	if err != nil {
		return nil, fmt.Errorf("synth: read back %s: %w", path, err)
	}
	defer f.Close()
	if len(f.Tensors) != len(want) {
		return nil, fmt.Errorf("synth: %s: %d tensors, want %d", path, len(f.Tensors), len(want))
	}
	offsets := make([]int64, len(want))
	for i, t := range f.Tensors {
		if t.Name != want[i].Name || t.Type != want[i].Type || t.Size != want[i].Size {
			return nil, fmt.Errorf("synth: %s: tensor %d is %s %s (%d bytes), want %s %s (%d bytes)",
				path, i, t.Name, t.Type, t.Size, want[i].Name, want[i].Type, want[i].Size)
		}
		offsets[i] = f.dataOff + t.Offset
	}
	return offsets, nil
}

// synthChunk is the unit of work of fill: rows [row, row+rows) of tensor t.
type synthChunk struct {
	t, row, rows int
}

// synthChunkElems is about how many weights one chunk holds (4 MiB of float32).
const synthChunkElems = 1 << 20

// fill generates, quantizes and writes every tensor at its offset in out.
// Each row's values come from a generator seeded by (seed, tensor name,
// row), so the bytes do not depend on the number of workers.
func (p *SynthPlan) fill(ctx context.Context, out *os.File, offsets []int64, seed uint64) error {
	chunks := make(chan synthChunk)
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := p.newSynthGenerator(seed)
			for c := range chunks {
				if errs[w] == nil {
					errs[w] = g.chunk(out, offsets, c)
				}
			}
		}()
	}
	err := p.sendChunks(ctx, chunks)
	close(chunks)
	wg.Wait()
	return errors.Join(append(errs, err)...)
}

// sendChunks sends every chunk of every tensor, in file order, until ctx is
// done.
func (p *SynthPlan) sendChunks(ctx context.Context, chunks chan<- synthChunk) error {
	for i, t := range p.plan {
		rows := int(t.info.Rows())
		step := max(1, synthChunkElems/int(t.info.Dims[0]))
		for r := 0; r < rows; r += step {
			if err := ctx.Err(); err != nil {
				return err
			}
			select {
			case chunks <- synthChunk{t: i, row: r, rows: min(step, rows-r)}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// synthGenerator is one worker's state.
type synthGenerator struct {
	p      *SynthPlan
	seed   uint64
	pcg    *rand.PCG
	normal []float32 // synthNormalTable
	hashes []uint64  // FNV-1a of each tensor name
	src    []float32
	dst    []byte
}

func (p *SynthPlan) newSynthGenerator(seed uint64) *synthGenerator {
	g := &synthGenerator{p: p, seed: seed, pcg: rand.NewPCG(0, 0), normal: synthNormalTable(), hashes: make([]uint64, len(p.plan))}
	for i, t := range p.plan {
		h := fnv.New64a()
		h.Write([]byte(t.info.Name))
		g.hashes[i] = h.Sum64()
	}
	return g
}

// chunk writes one chunk.
func (g *synthGenerator) chunk(out *os.File, offsets []int64, c synthChunk) error {
	t := &g.p.plan[c.t]
	width := int(t.info.Dims[0])
	rowBytes := int(t.info.Size / t.info.Rows())
	g.src = slices.Grow(g.src[:0], c.rows*width)[:c.rows*width]
	g.dst = slices.Grow(g.dst[:0], c.rows*rowBytes)[:c.rows*rowBytes]
	for r := range c.rows {
		g.row(t, g.hashes[c.t], c.row+r, g.src[r*width:(r+1)*width])
	}
	if err := quant.Quantize(t.info.Type, g.src, g.dst); err != nil {
		return fmt.Errorf("%s: %w", t.info.Name, err)
	}
	_, err := out.WriteAt(g.dst, offsets[c.t]+int64(c.row)*int64(rowBytes))
	return err
}

// row fills x with row r of t.
func (g *synthGenerator) row(t *synthTensor, hash uint64, r int, x []float32) {
	switch t.init {
	case synthInitOnes:
		for i := range x {
			x[i] = 1
		}
		return
	case synthInitRopeFreqs:
		g.p.Shape.Llama3.freqFactors(float64(g.p.Shape.RopeTheta), g.p.Shape.headDim(), x)
		return
	}
	g.pcg.Seed(g.seed, synthMix(hash^synthMix(uint64(r))))
	scale := float32(0.02)
	if t.init == synthInitWeight {
		scale = float32(1 / math.Sqrt(float64(len(x))))
	}
	for i := 0; i < len(x); i += 2 {
		bits := g.pcg.Uint64()
		x[i] = synthRoundF16(synthNormal(g.normal, uint32(bits)) * scale)
		if i+1 < len(x) {
			x[i+1] = synthRoundF16(synthNormal(g.normal, uint32(bits>>32)) * scale)
		}
	}
}

// synthNormalBits sets the number of cells of the inverse-CDF table: 2^12,
// so that the table stays in the L1 cache.
const synthNormalBits = 12

// synthNormalTable holds the inverse of the standard normal CDF at the
// 2^synthNormalBits+1 points i/2^synthNormalBits (infinite at both ends).
var synthNormalTable = sync.OnceValue(func() []float32 {
	t := make([]float32, 1<<synthNormalBits+1)
	for i := range t {
		t[i] = float32(math.Sqrt2 * math.Erfinv(float64(i)/(1<<(synthNormalBits-1))-1))
	}
	return t
})

// synthNormal maps 32 uniform random bits to a standard normal value by
// inverting the CDF: linear interpolation in the table, whose cells are
// narrow enough that the error is below 1e-4 (F16 keeps 11 bits), except in
// the 32 outermost cells at each end (beyond 2.4 standard deviations),
// where the curve bends and the inverse is computed exactly. It is several
// times faster than rand.NormFloat64.
func synthNormal(table []float32, bits uint32) float32 {
	const shift, edge = 32 - synthNormalBits, 32
	i, frac := bits>>shift, float32(bits&(1<<shift-1))*(1.0/(1<<shift))
	if i < edge || i >= 1<<synthNormalBits-edge {
		u := (float64(bits) + 0.5) / (1 << 32)
		return float32(math.Sqrt2 * math.Erfinv(2*u-1))
	}
	lo, hi := table[i], table[i+1]
	return lo + float32((hi-lo)*frac) // float32() keeps the product from fusing into an FMA
}

// synthRoundF16 rounds v to the nearest F16 value, ties to even, as
// quant.F16ToF32(quant.F32ToF16(v)) does, by clearing the 13 low mantissa
// bits; values outside F16's normal range take that slower path.
func synthRoundF16(v float32) float32 {
	b := math.Float32bits(v)
	if exp := b >> 23 & 0xFF; exp < 127-14 || exp >= 127+15 {
		return quant.F16ToF32(quant.F32ToF16(v))
	}
	b += 0xFFF + b>>13&1
	return math.Float32frombits(b &^ 0x1FFF)
}

// synthMix is SplitMix64's output function: it spreads nearby inputs
// (consecutive rows) over unrelated generator states.
func synthMix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ x>>30) * 0xBF58476D1CE4E5B9
	x = (x ^ x>>27) * 0x94D049BB133111EB
	return x ^ x>>31
}

// freqFactors writes llama 3's divisor of each rotary frequency into
// out[0:headDim/2]: 1 for wavelengths shorter than OrigContext /
// HighFreqFactor, Factor for those longer than OrigContext / LowFreqFactor,
// and a smooth blend between.
func (r *RopeLlama3) freqFactors(theta float64, headDim int, out []float32) {
	orig := float64(r.OrigContext)
	lowWavelen, highWavelen := orig/r.LowFreqFactor, orig/r.HighFreqFactor
	for i := range out {
		freq := 1 / math.Pow(theta, float64(2*i)/float64(headDim))
		wavelen := 2 * math.Pi / freq
		switch {
		case wavelen < highWavelen:
			out[i] = 1
		case wavelen > lowWavelen:
			out[i] = float32(r.Factor)
		default:
			smooth := (orig/wavelen - r.LowFreqFactor) / (r.HighFreqFactor - r.LowFreqFactor)
			out[i] = float32(1 / ((1-smooth)/r.Factor + smooth))
		}
	}
}
