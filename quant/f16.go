package quant

import "math"

// IEEE 754 binary16 ("half") and bfloat16 conversions.
//
// F32ToF16 rounds like x86 F16C vcvtps2ph with rounding mode 0 (what ggml's
// GGML_FP32_TO_FP16 gives on the machines that write GGUF files): round to
// nearest, ties to even, gradual underflow to half subnormals, overflow to
// infinity, NaN kept quiet with the top of its payload. The scales stored in
// quantized blocks go through it, so Quantize is byte-identical to llama.cpp
// only if it is exact.

// f16Table maps every half bit pattern to its float32 value. F16ToF32 sits in
// the innermost loops of dequantization and of the dot kernels; one load from
// a 256 KiB table is cheaper than the bit manipulation. It is built once, at
// package initialisation, and never written again.
var f16Table = buildF16Table()

func buildF16Table() *[1 << 16]float32 {
	var t [1 << 16]float32
	for h := range t {
		t[h] = f16ToF32Bits(uint16(h))
	}
	return &t
}

// F16ToF32 converts a half-precision bit pattern to float32. Every half value
// is exactly representable, so the conversion never rounds. A signalling NaN
// comes back quiet, as from F16C vcvtph2ps.
func F16ToF32(h uint16) float32 { return f16Table[h] }

// f16ToF32Bits is the arithmetic behind f16Table.
func f16ToF32Bits(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // infinity or NaN
		if mant != 0 {
			mant |= 0x200 // quiet
		}
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0: // normal: rebias the exponent from 15 to 127
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal half, mant·2⁻²⁴: normalise so the leading 1 lands in bit 10,
	// which becomes the implicit bit of a normal float32.
	e := uint32(113) // the float32 biased exponent of 2⁻¹⁴
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

// F32ToF16 converts f to the nearest half-precision value, ties to even.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff

	switch {
	case exp == 0xff:
		if mant == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7e00 | uint16(mant>>13)
	case exp >= 127+16: // 2¹⁶ and above: beyond even the rounding range of 65504
		return sign | 0x7c00
	case exp >= 127-14: // a normal half, 2⁻¹⁴ ≤ |f| < 2¹⁶
		// Drop 13 mantissa bits. A carry out of the mantissa correctly bumps
		// the exponent, and from the largest exponent it yields infinity.
		h := uint32(exp-112)<<10 | mant>>13
		return sign | uint16(roundShifted(h, mant&0x1fff, 13))
	case exp < 127-25:
		// Below 2⁻²⁵, half the smallest subnormal: rounds to zero. This also
		// covers float32 zeros and subnormals.
		return sign
	}
	// A half subnormal: the value in units of 2⁻²⁴ is the full significand
	// shifted right by 126-exp (14 to 24) bits.
	full := mant | 0x800000
	shift := uint(126 - exp)
	return sign | uint16(roundShifted(full>>shift, full&(1<<shift-1), shift))
}

// roundShifted rounds q, the result of shifting a value right by shift bits
// that left rem as remainder, to nearest with ties to even.
func roundShifted(q, rem uint32, shift uint) uint32 {
	half := uint32(1) << (shift - 1)
	if rem > half || rem == half && q&1 == 1 {
		q++
	}
	return q
}

// BF16ToF32 converts a bfloat16 bit pattern to float32 (exact: bfloat16 is
// the top half of a float32).
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts f to bfloat16 like ggml_compute_fp32_to_bf16: round to
// nearest, ties to even, and a NaN keeps its top bits with the quiet bit set
// (rounding could otherwise carry a NaN into infinity).
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}
