package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Quantization. The functions follow llama.cpp's quantize_row_*_ref, the
// reference quantizers that llama-quantize uses when it has no importance
// matrix, operation for operation in float32. Three details make the results
// bit-identical rather than merely close:
//
//   - C evaluates float expressions in float32 with one rounding per
//     operation. Go does too, except that it may fuse a*b+c into an FMA
//     (it does on arm64, ppc64, s390x, and amd64 with GOAMD64=v3); a
//     product that feeds an addition is therefore wrapped in float32(),
//     which the spec defines as a rounding that stops fusion.
//   - C's float-to-integer conversion truncates toward zero, as Go's does,
//     and roundf rounds half away from zero, as math.Round does.
//   - Comparisons are written as in the C loops (strict, first match wins),
//     not with the min and max builtins, which differ on -0 and NaN.

// Quantize encodes the elements of src as type t into dst. len(src) must be
// a multiple of t's block size and len(dst) exactly the row size of that many
// elements; otherwise it returns an error wrapping ErrLength (or
// ErrUnknownType), and dst is left untouched. It does not allocate.
//
// Every block type gives the same bytes as ggml's quantize_row_<type>_ref as
// llama.cpp builds it (ggml-base without -march flags, so without FMA
// contraction). A ggml build that contracts into FMA (-march=native, or
// clang on arm64) can differ from it, and from this, in the last bit of a
// few blocks. F16 and BF16 round to nearest even.
func Quantize(t Type, src []float32, dst []byte) error {
	size, err := t.RowSize(len(src))
	if err != nil {
		return fmt.Errorf("quant: quantize: %w", err)
	}
	if len(dst) != size {
		return fmt.Errorf("quant: quantize %d %s elements: %w: have %d bytes, want %d", len(src), t, ErrLength, len(dst), size)
	}
	switch t {
	case F32:
		quantF32(src, dst)
	case F16:
		quantF16(src, dst)
	case BF16:
		quantBF16(src, dst)
	case Q4_0:
		quantQ4_0(src, dst)
	case Q4_1:
		quantQ4_1(src, dst)
	case Q5_0:
		quantQ5_0(src, dst)
	case Q5_1:
		quantQ5_1(src, dst)
	case Q8_0:
		quantQ8_0(src, dst)
	case Q8_1:
		quantQ8_1(src, dst)
	case Q2_K:
		quantQ2_K(src, dst)
	case Q3_K:
		quantQ3_K(src, dst)
	case Q4_K:
		quantQ4_K(src, dst)
	case Q5_K:
		quantQ5_K(src, dst)
	case Q6_K:
		quantQ6_K(src, dst)
	case Q8_K:
		quantQ8_K(src, dst)
	default:
		// A type with a layout but no encoder is a bug in this package.
		return fmt.Errorf("quant: quantize: %w %s", ErrUnknownType, t)
	}
	return nil
}

// putF16 stores v as a half at b[0:2].
func putF16(b []byte, v float32) { binary.LittleEndian.PutUint16(b, F32ToF16(v)) }

func quantF32(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func quantF16(src []float32, dst []byte) {
	for i, v := range src {
		putF16(dst[2*i:], v)
	}
}

func quantBF16(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
	}
}

// absMax returns the element of largest magnitude, with its sign; the first
// one wins a tie, as in ggml's loops with a strict comparison.
func absMax(x []float32) float32 {
	var amax, m float32
	for _, v := range x {
		if a := abs32(v); amax < a {
			amax, m = a, v
		}
	}
	return m
}

// minMax returns the smallest and largest element of x. It compares like
// ggml's loop rather than using the min and max builtins, which order -0
// below +0: the minimum is stored, and its sign is a bit of the output.
func minMax(x []float32) (lo, hi float32) {
	lo, hi = math.MaxFloat32, -math.MaxFloat32
	for _, v := range x {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	return lo, hi
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// inverse is ggml's `d ? 1.0f/d : 0.0f`.
func inverse(d float32) float32 {
	if d == 0 {
		return 0
	}
	return 1 / d
}

// quantQ4_0 (quantize_row_q4_0_ref): d = max/-8 where max is the element of
// largest magnitude with its sign, so that element maps exactly to -8 and the
// asymmetric range -8..7 is used to the full on its side.
func quantQ4_0(src []float32, dst []byte) {
	for i := range len(src) / 32 {
		x := (*[32]float32)(src[32*i:])
		b := (*[18]byte)(dst[18*i:])
		d := absMax(x[:]) / -8
		id := inverse(d)
		putF16(b[0:], d)
		for j := range 16 {
			// (x*id + 8.5) truncated is round(x*id) + 8 for the values that
			// occur here; the product is rounded before the addition.
			lo := min(15, int8(float32(x[j]*id)+8.5))
			hi := min(15, int8(float32(x[j+16]*id)+8.5))
			b[2+j] = byte(lo) | byte(hi)<<4
		}
	}
}

// quantQ4_1 (quantize_row_q4_1_ref): x ≈ d·q + m over the block's range.
func quantQ4_1(src []float32, dst []byte) {
	for i := range len(src) / 32 {
		x := (*[32]float32)(src[32*i:])
		b := (*[20]byte)(dst[20*i:])
		lo, hi := minMax(x[:])
		d := (hi - lo) / 15
		id := inverse(d)
		putF16(b[0:], d)
		putF16(b[2:], lo)
		for j := range 16 {
			q0 := min(15, int8(float32((x[j]-lo)*id)+0.5))
			q1 := min(15, int8(float32((x[j+16]-lo)*id)+0.5))
			b[4+j] = byte(q0) | byte(q1)<<4
		}
	}
}

// quantQ5_0 (quantize_row_q5_0_ref): q4_0 with 5 bits, d = max/-16.
func quantQ5_0(src []float32, dst []byte) {
	for i := range len(src) / 32 {
		x := (*[32]float32)(src[32*i:])
		b := (*[22]byte)(dst[22*i:])
		d := absMax(x[:]) / -16
		id := inverse(d)
		putF16(b[0:], d)
		var qh uint32
		for j := range 16 {
			q0 := byte(min(31, int8(float32(x[j]*id)+16.5)))
			q1 := byte(min(31, int8(float32(x[j+16]*id)+16.5)))
			b[6+j] = q0&0xf | q1<<4
			qh |= uint32(q0>>4&1)<<j | uint32(q1>>4&1)<<(j+16)
		}
		binary.LittleEndian.PutUint32(b[2:], qh)
	}
}

// quantQ5_1 (quantize_row_q5_1_ref): q4_1 with 5 bits. Unlike the others, the
// reference does not clamp to 31; (x-min)·id never exceeds 31 by more than a
// rounding error, so the truncation after +0.5 stays in range.
func quantQ5_1(src []float32, dst []byte) {
	for i := range len(src) / 32 {
		x := (*[32]float32)(src[32*i:])
		b := (*[24]byte)(dst[24*i:])
		lo, hi := minMax(x[:])
		d := (hi - lo) / 31
		id := inverse(d)
		putF16(b[0:], d)
		putF16(b[2:], lo)
		var qh uint32
		for j := range 16 {
			q0 := uint8(float32((x[j]-lo)*id) + 0.5)
			q1 := uint8(float32((x[j+16]-lo)*id) + 0.5)
			b[8+j] = q0&0xf | q1<<4
			qh |= uint32(q0>>4&1)<<j | uint32(q1>>4&1)<<(j+16)
		}
		binary.LittleEndian.PutUint32(b[4:], qh)
	}
}

// quantQ8_0 (quantize_row_q8_0_ref): d = amax/127, q = roundf(x/d) with ties
// away from zero.
func quantQ8_0(src []float32, dst []byte) {
	for i := range len(src) / 32 {
		x := (*[32]float32)(src[32*i:])
		b := (*[34]byte)(dst[34*i:])
		d := abs32(absMax(x[:])) / 127
		id := inverse(d)
		putF16(b[0:], d)
		for j, v := range x {
			b[2+j] = byte(int8(round32(v * id)))
		}
	}
}

// quantQ8_1 (quantize_row_q8_1_ref): q8_0 plus s = d·Σq, which the dot
// products with q4_1/q5_1 use to apply the minimum.
func quantQ8_1(src []float32, dst []byte) {
	for i := range len(src) / 32 {
		x := (*[32]float32)(src[32*i:])
		b := (*[36]byte)(dst[36*i:])
		d := abs32(absMax(x[:])) / 127
		id := inverse(d)
		putF16(b[0:], d)
		sum := 0
		for j, v := range x {
			q := int8(round32(v * id))
			b[4+j] = byte(q)
			sum += int(q)
		}
		putF16(b[2:], float32(sum)*d)
	}
}

// round32 is C's roundf: to nearest, halves away from zero. Widening to
// float64 is exact, so rounding there gives the float32 answer.
func round32(v float32) float32 { return float32(math.Round(float64(v))) }
