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
	"errors"
	"fmt"
	"slices"
	"strings"

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
