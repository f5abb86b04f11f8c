// Package quant holds the storage types of GGUF tensors: their block
// layouts, dequantization to float32, quantization from float32, and the dot
// kernels that multiply quantized rows by activations.
//
// Block layouts follow ggml (llama.cpp) byte for byte, so tensors written by
// either side read the same on the other.
package quant

import (
	"fmt"
	"strings"
)

// Type is a ggml tensor storage type. The numbers are ggml's enum ggml_type
// values, as stored in GGUF tensor directories.
type Type uint32

// The storage types edged reads. Numbers from ggml.h.
const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q4_1 Type = 3
	Q5_0 Type = 6
	Q5_1 Type = 7
	Q8_0 Type = 8
	Q8_1 Type = 9
	Q2_K Type = 10
	Q3_K Type = 11
	Q4_K Type = 12
	Q5_K Type = 13
	Q6_K Type = 14
	Q8_K Type = 15
	BF16 Type = 30
)

// QK_K is the number of weights in a k-quant super-block.
const QK_K = 256

type layout struct {
	name      string
	blockSize int // elements per block
	typeSize  int // bytes per block
}

var layouts = map[Type]layout{
	F32:  {"f32", 1, 4},
	F16:  {"f16", 1, 2},
	BF16: {"bf16", 1, 2},
	Q4_0: {"q4_0", 32, 2 + 16},
	Q4_1: {"q4_1", 32, 2 + 2 + 16},
	Q5_0: {"q5_0", 32, 2 + 4 + 16},
	Q5_1: {"q5_1", 32, 2 + 2 + 4 + 16},
	Q8_0: {"q8_0", 32, 2 + 32},
	Q8_1: {"q8_1", 32, 2 + 2 + 32},
	Q2_K: {"q2_k", QK_K, QK_K/16 + QK_K/4 + 2 + 2},
	Q3_K: {"q3_k", QK_K, QK_K/8 + QK_K/4 + 12 + 2},
	Q4_K: {"q4_k", QK_K, 2 + 2 + 12 + QK_K/2},
	Q5_K: {"q5_k", QK_K, 2 + 2 + 12 + QK_K/8 + QK_K/2},
	Q6_K: {"q6_k", QK_K, QK_K/2 + QK_K/4 + QK_K/16 + 2},
	Q8_K: {"q8_k", QK_K, 4 + QK_K + QK_K/16*2},
}

// Known reports whether edged knows the block layout of t.
func (t Type) Known() bool { _, ok := layouts[t]; return ok }

// BlockSize is the number of elements in one block of t (1 for float types).
// It is 0 for an unknown type.
func (t Type) BlockSize() int { return layouts[t].blockSize }

// TypeSize is the number of bytes in one block of t. It is 0 for an unknown
// type.
func (t Type) TypeSize() int { return layouts[t].typeSize }

// RowSize is the number of bytes taken by n elements of t. n must be a
// non-negative multiple of the block size; RowSize returns an error wrapping
// ErrLength otherwise, and one wrapping ErrUnknownType for an unknown type.
func (t Type) RowSize(n int) (int, error) {
	l, ok := layouts[t]
	if !ok {
		return 0, fmt.Errorf("%w %d", ErrUnknownType, uint32(t))
	}
	if n < 0 || n%l.blockSize != 0 {
		return 0, fmt.Errorf("%w: %d elements is not a multiple of the %s block size %d", ErrLength, n, l.name, l.blockSize)
	}
	return n / l.blockSize * l.typeSize, nil
}

func (t Type) String() string {
	if l, ok := layouts[t]; ok {
		return l.name
	}
	if t == Q8A {
		return "q8a" // an activation type, never a tensor's (see dot.go)
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// ParseType maps a type name such as "q4_0" or "Q4_K" to its Type.
func ParseType(name string) (Type, error) {
	for t, l := range layouts {
		if strings.EqualFold(l.name, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w name %q", ErrUnknownType, name)
}
