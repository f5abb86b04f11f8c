package metal

import (
	_ "embed"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// What the Go side shares with kernels.metal: the source itself, the
// kernel names looked up in it, the parameter blocks the kernels read, and
// the sizes of dispatches and scratch memory. params_test.go checks them
// against the source.

// source is the Metal Shading Language source of every kernel, compiled
// when the backend starts.
//
//go:embed kernels.metal
var source string

// Dispatch shapes, as kernels.metal assumes them.
const (
	simdWidth    = 32  // threads per simdgroup on Apple GPUs
	mmSG         = 4   // weight rows (simdgroups) per matmul threadgroup: MM_SG
	mmNR         = 8   // activation rows per matmul simdgroup: MM_NR
	groupThreads = 256 // threads per threadgroup of every other kernel
)

// Bits of attnParams.Observe (OBSERVE_SCORES, OBSERVE_PROBS).
const (
	observeScores = 1
	observeProbs  = 2
)

// The parameter blocks of the kernels, passed with setBytes. Each mirrors
// the struct of the same name in kernels.metal field by field; all fields
// are 4 bytes, so Go and Metal lay them out alike.
type (
	embedParams  struct{ Cols, RowBytes, N uint32 }
	matMulParams struct{ Rows, Cols, RowBytes, ActRows uint32 }
	quantParams  struct{ Blocks uint32 }
	normParams   struct {
		N   uint32
		Eps float32
	}
	elemParams  struct{ N, Width uint32 }
	ropeParams  struct{ Rows, Width, HeadDim, HalfDims, NeoX uint32 }
	storeParams struct{ N, SrcOff, DstOff uint32 }
	attnParams  struct {
		NHead, NHeadKV, HeadDim, Past, Rows, QRow0, Observe uint32
		Scale                                               float32
	}
)

// weightKind is what the backend runs for one weight type: the suffix of
// its embed_ and matmul_ kernels and the activation type its products
// quantize to (quant's kernel activation type: Q8A, Q8_K or F32).
type weightKind struct {
	suffix string
	act    quant.Type
}

var weightKinds = map[quant.Type]weightKind{
	quant.F32:  {"f32", quant.F32},
	quant.F16:  {"f16", quant.F32},
	quant.Q4_0: {"q4_0", quant.Q8A},
	quant.Q4_1: {"q4_1", quant.Q8A},
	quant.Q5_0: {"q5_0", quant.Q8A},
	quant.Q5_1: {"q5_1", quant.Q8A},
	quant.Q8_0: {"q8_0", quant.Q8A},
	quant.Q4_K: {"q4_k", quant.Q8_K},
	quant.Q5_K: {"q5_k", quant.Q8_K},
	quant.Q6_K: {"q6_k", quant.Q8_K},
}

// kernelNames lists every kernel the backend makes a pipeline for.
func kernelNames() []string {
	names := []string{
		"quantize_q8a", "quantize_q8k", "rmsnorm", "add_rows", "add", "swiglu",
		"rope", "store_f32", "store_f16", "attention_f32", "attention_f16", "gather",
	}
	for _, k := range weightKinds {
		names = append(names, "embed_"+k.suffix, "matmul_"+k.suffix)
	}
	return names
}

// groupSize is the number of threads per threadgroup kernel is dispatched
// with.
func groupSize(kernel string) int {
	if strings.HasPrefix(kernel, "matmul_") {
		return mmSG * simdWidth
	}
	return groupThreads
}

// quantizer is the kernel that quantizes activations into act, and its
// block size.
func quantizer(act quant.Type) (name string, block int) {
	if act == quant.Q8_K {
		return "quantize_q8k", quant.QK_K
	}
	return "quantize_q8a", 32
}

// groups is the number of groups of size that cover n.
func groups(n, size int) int { return (n + size - 1) / size }

// actLayout places rows×cols quantized activations in the scratch buffer:
// the int8 quants first, then one float32 scale per block from dOff on
// (aligned to 16 bytes).
func actLayout(rows, cols, block int) (dOff, size int) {
	dOff = (rows*cols + 15) &^ 15
	return dOff, dOff + 4*(rows*cols/block)
}

// ropeTable writes into cs the cosine and sine (interleaved) of pos[r]·freq
// for every row and frequency: computed in float64 like the CPU backend,
// since the angles grow with the context, and rounded to float32 for the
// kernel.
func ropeTable(cs []float32, pos []int32, freqs []float64) {
	for r, p := range pos {
		for i, f := range freqs {
			sin, cos := math.Sincos(float64(p) * f)
			cs[2*(r*len(freqs)+i)] = float32(cos)
			cs[2*(r*len(freqs)+i)+1] = float32(sin)
		}
	}
}

// checkShape validates an attention shape: the kernels divide by its
// fields.
func checkShape(s accel.AttnShape) error {
	if s.NHead <= 0 || s.NHeadKV <= 0 || s.HeadDim <= 0 || s.NHead%s.NHeadKV != 0 {
		return fmt.Errorf("attention shape %d heads, %d kv heads, head dim %d", s.NHead, s.NHeadKV, s.HeadDim)
	}
	return nil
}

// errRange reports arguments that would make a kernel read or write out of
// bounds: such an operation is skipped.
var errRange = errors.New("out of range")

// fits32 reports whether every n fits the kernels' uint32 parameters.
func fits32(ns ...int) bool {
	for _, n := range ns {
		if n < 0 || n > math.MaxUint32 {
			return false
		}
	}
	return true
}
