package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Dequantization. Each type has one function that walks its blocks and does
// the arithmetic of llama.cpp's dequantize_row_* in the same order, so the
// results are the same float32 values. Products that feed an addition are
// wrapped in float32() to forbid the compiler from fusing them into an FMA
// (which Go allows and does on arm64), since ggml does not fuse them either.
//
// Block layouts, little-endian, f16 meaning an IEEE half (offsets in bytes):
//
//	q4_0  d f16 | qs[16]: element j in the low nibble of qs[j], j+16 in the high
//	q4_1  d f16 | m f16 | qs[16] as q4_0
//	q5_0  d f16 | qh[4] (bit j: 5th bit of element j) | qs[16] as q4_0
//	q5_1  d f16 | m f16 | qh[4] | qs[16]
//	q8_0  d f16 | qs[32] int8
//	q8_1  d f16 | s f16 (d·Σqs) | qs[32] int8
//	q2_k  scales[16] (scale low nibble, min high) | qs[64] | d f16 | dmin f16
//	q3_k  hmask[32] | qs[64] | scales[12] (16 6-bit) | d f16
//	q4_k  d f16 | dmin f16 | scales[12] (8 6-bit scales, 8 6-bit mins) | qs[128]
//	q5_k  d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
//	q6_k  ql[128] | qh[64] | scales[16] int8 | d f16
//	q8_k  d f32 | qs[256] int8 | bsums[16] int16

// Dequantize decodes len(dst) elements of type t from src into dst. len(dst)
// must be a multiple of t's block size and len(src) exactly the row size of
// that many elements; otherwise it returns an error wrapping ErrLength (or
// ErrUnknownType) and leaves dst untouched. It does not allocate.
func Dequantize(t Type, src []byte, dst []float32) error {
	size, err := t.RowSize(len(dst))
	if err != nil {
		return fmt.Errorf("quant: dequantize: %w", err)
	}
	if len(src) != size {
		return fmt.Errorf("quant: dequantize %d %s elements: %w: have %d bytes, want %d", len(dst), t, ErrLength, len(src), size)
	}
	switch t {
	case F32:
		dequantF32(src, dst)
	case F16:
		dequantF16(src, dst)
	case BF16:
		dequantBF16(src, dst)
	case Q4_0:
		dequantQ4_0(src, dst)
	case Q4_1:
		dequantQ4_1(src, dst)
	case Q5_0:
		dequantQ5_0(src, dst)
	case Q5_1:
		dequantQ5_1(src, dst)
	case Q8_0:
		dequantQ8_0(src, dst)
	case Q8_1:
		dequantQ8_1(src, dst)
	case Q2_K:
		dequantQ2_K(src, dst)
	case Q3_K:
		dequantQ3_K(src, dst)
	case Q4_K:
		dequantQ4_K(src, dst)
	case Q5_K:
		dequantQ5_K(src, dst)
	case Q6_K:
		dequantQ6_K(src, dst)
	case Q8_K:
		dequantQ8_K(src, dst)
	default:
		// A type with a layout but no decoder is a bug in this package.
		return fmt.Errorf("quant: dequantize: %w %s", ErrUnknownType, t)
	}
	return nil
}

// f16At reads the half at b[0:2] as float32.
func f16At(b []byte) float32 { return F16ToF32(binary.LittleEndian.Uint16(b)) }

func dequantF32(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func dequantF16(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = f16At(src[2*i:])
	}
}

func dequantBF16(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func dequantQ4_0(src []byte, dst []float32) {
	for i := range len(dst) / 32 {
		b := (*[18]byte)(src[18*i:])
		y := (*[32]float32)(dst[32*i:])
		d := f16At(b[0:])
		for j, q := range b[2:18] {
			y[j] = float32(int(q&0xf)-8) * d
			y[j+16] = float32(int(q>>4)-8) * d
		}
	}
}

func dequantQ4_1(src []byte, dst []float32) {
	for i := range len(dst) / 32 {
		b := (*[20]byte)(src[20*i:])
		y := (*[32]float32)(dst[32*i:])
		d, m := f16At(b[0:]), f16At(b[2:])
		for j, q := range b[4:20] {
			y[j] = float32(float32(q&0xf)*d) + m
			y[j+16] = float32(float32(q>>4)*d) + m
		}
	}
}

func dequantQ5_0(src []byte, dst []float32) {
	for i := range len(dst) / 32 {
		b := (*[22]byte)(src[22*i:])
		y := (*[32]float32)(dst[32*i:])
		d := f16At(b[0:])
		qh := binary.LittleEndian.Uint32(b[2:])
		for j, q := range b[6:22] {
			lo := int(q&0xf) | int(qh>>j&1)<<4
			hi := int(q>>4) | int(qh>>(j+16)&1)<<4
			y[j] = float32(lo-16) * d
			y[j+16] = float32(hi-16) * d
		}
	}
}

func dequantQ5_1(src []byte, dst []float32) {
	for i := range len(dst) / 32 {
		b := (*[24]byte)(src[24*i:])
		y := (*[32]float32)(dst[32*i:])
		d, m := f16At(b[0:]), f16At(b[2:])
		qh := binary.LittleEndian.Uint32(b[4:])
		for j, q := range b[8:24] {
			lo := q&0xf | byte(qh>>j&1)<<4
			hi := q>>4 | byte(qh>>(j+16)&1)<<4
			y[j] = float32(float32(lo)*d) + m
			y[j+16] = float32(float32(hi)*d) + m
		}
	}
}

func dequantQ8_0(src []byte, dst []float32) {
	for i := range len(dst) / 32 {
		b := (*[34]byte)(src[34*i:])
		y := (*[32]float32)(dst[32*i:])
		d := f16At(b[0:])
		for j, q := range b[2:34] {
			y[j] = float32(int8(q)) * d
		}
	}
}

// dequantQ8_1 ignores the stored sum s: it only speeds up dot products.
func dequantQ8_1(src []byte, dst []float32) {
	for i := range len(dst) / 32 {
		b := (*[36]byte)(src[36*i:])
		y := (*[32]float32)(dst[32*i:])
		d := f16At(b[0:])
		for j, q := range b[4:36] {
			y[j] = float32(int8(q)) * d
		}
	}
}

// dequantQ2_K: 16 sub-blocks of 16, each x = d·sc·q - dmin·m with a 2-bit q.
// qs holds two halves of 128 elements; within a half, bits 2k..2k+1 of byte l
// are element 32k+l.
func dequantQ2_K(src []byte, dst []float32) {
	for i := range len(dst) / QK_K {
		b := (*[84]byte)(src[84*i:])
		y := (*[QK_K]float32)(dst[QK_K*i:])
		scales, qs := b[0:16], b[16:80]
		d, dmin := f16At(b[80:]), f16At(b[82:])
		for s := range 16 { // sub-block s covers y[16s : 16s+16]
			half, k, l0 := s/8, s%8/2, s%2*16
			sc := scales[s]
			dl, ml := d*float32(sc&0xf), dmin*float32(sc>>4)
			q := qs[32*half+l0 : 32*half+l0+16]
			out := y[16*s : 16*s+16]
			for l := range out {
				out[l] = float32(dl*float32(q[l]>>(2*k)&3)) - ml
			}
		}
	}
}

// q3KScales unpacks the sixteen 6-bit signed (offset 32) scales of a q3_K
// block: the low 4 bits of scale j are nibble j%8 of bytes 0..7 (low nibble
// for j < 8), the high 2 bits are bits 2(j/4).. of byte 8 + j%4.
func q3KScales(packed []byte, out *[16]int) {
	for j := range out {
		lo := packed[j%8] >> (4 * (j / 8)) & 0xf
		hi := packed[8+j%4] >> (2 * (j / 4)) & 3
		out[j] = int(lo|hi<<4) - 32
	}
}

// dequantQ3_K: 16 sub-blocks of 16, x = d·sc·q with q in -4..3 made of two
// low bits in qs (laid out as q2_K) and a high bit in hmask: bit k of
// hmask[l] belongs to element 32k+l; when it is clear, q is lowered by 4.
func dequantQ3_K(src []byte, dst []float32) {
	for i := range len(dst) / QK_K {
		b := (*[110]byte)(src[110*i:])
		y := (*[QK_K]float32)(dst[QK_K*i:])
		hmask, qs := b[0:32], b[32:96]
		var sc [16]int
		q3KScales(b[96:108], &sc)
		d := f16At(b[108:])
		for s := range 16 {
			half, k, l0 := s/8, s%8/2, s%2*16
			dl := d * float32(sc[s])
			q := qs[32*half+l0 : 32*half+l0+16]
			h := hmask[l0 : l0+16]
			bit := byte(1) << (4*half + k)
			out := y[16*s : 16*s+16]
			for l := range out {
				v := int(q[l] >> (2 * k) & 3)
				if h[l]&bit == 0 {
					v -= 4
				}
				out[l] = dl * float32(v)
			}
		}
	}
}

// scaleMinK4 unpacks the 6-bit scale and min of sub-block j of a q4_K or
// q5_K block (ggml's get_scale_min_k4): sub-blocks 0..3 keep theirs in the
// low 6 bits of bytes j and j+4; sub-blocks 4..7 keep the low 4 bits in the
// nibbles of byte j+4 and the high 2 bits in the top bits of bytes j-4 and j.
func scaleMinK4(j int, s []byte) (sc, m byte) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	return s[j+4]&0xf | s[j-4]>>6<<4, s[j+4]>>4 | s[j]>>6<<4
}

// dequantQ4_K: 8 sub-blocks of 32, x = d·sc·q - dmin·m with a 4-bit q. Each
// 32 bytes of qs hold two sub-blocks: the low nibbles the first, the high
// nibbles the second.
func dequantQ4_K(src []byte, dst []float32) {
	for i := range len(dst) / QK_K {
		b := (*[144]byte)(src[144*i:])
		y := (*[QK_K]float32)(dst[QK_K*i:])
		d, dmin := f16At(b[0:]), f16At(b[2:])
		scales, qs := b[4:16], b[16:144]
		for s := range 8 {
			sc, m := scaleMinK4(s, scales)
			dl, ml := d*float32(sc), dmin*float32(m)
			q := qs[32*(s/2) : 32*(s/2)+32]
			shift := 4 * (s % 2)
			out := y[32*s : 32*s+32]
			for l := range out {
				out[l] = float32(dl*float32(q[l]>>shift&0xf)) - ml
			}
		}
	}
}

// dequantQ5_K is q4_K with a fifth bit: bit s of qh[l] is the high bit of
// element l of sub-block s.
func dequantQ5_K(src []byte, dst []float32) {
	for i := range len(dst) / QK_K {
		b := (*[176]byte)(src[176*i:])
		y := (*[QK_K]float32)(dst[QK_K*i:])
		d, dmin := f16At(b[0:]), f16At(b[2:])
		scales, qh, qs := b[4:16], b[16:48], b[48:176]
		for s := range 8 {
			sc, m := scaleMinK4(s, scales)
			dl, ml := d*float32(sc), dmin*float32(m)
			q := qs[32*(s/2) : 32*(s/2)+32]
			shift := 4 * (s % 2)
			out := y[32*s : 32*s+32]
			for l := range out {
				v := q[l]>>shift&0xf | (qh[l]>>s&1)<<4
				out[l] = float32(dl*float32(v)) - ml
			}
		}
	}
}

// dequantQ6_K: 16 sub-blocks of 16, x = d·sc·(q-32) with a 6-bit q. Per
// half of 128 elements, element 32k+l has its low 4 bits in ql[64h + 32(k%2)
// + l] (low nibble for k < 2) and its high 2 bits at bit 2k of qh[32h + l].
func dequantQ6_K(src []byte, dst []float32) {
	for i := range len(dst) / QK_K {
		b := (*[210]byte)(src[210*i:])
		y := (*[QK_K]float32)(dst[QK_K*i:])
		ql, qh, scales := b[0:128], b[128:192], b[192:208]
		d := f16At(b[208:])
		for s := range 16 {
			h, k, l0 := s/8, s%8/2, s%2*16
			dl := d * float32(int8(scales[s]))
			lo := ql[64*h+32*(k%2)+l0 : 64*h+32*(k%2)+l0+16]
			hi := qh[32*h+l0 : 32*h+l0+16]
			out := y[16*s : 16*s+16]
			for l := range out {
				q := int(lo[l]>>(4*(k/2))&0xf|(hi[l]>>(2*k)&3)<<4) - 32
				out[l] = dl * float32(q)
			}
		}
	}
}

// dequantQ8_K ignores bsums: they only speed up dot products.
func dequantQ8_K(src []byte, dst []float32) {
	for i := range len(dst) / QK_K {
		b := (*[292]byte)(src[292*i:])
		y := (*[QK_K]float32)(dst[QK_K*i:])
		d := math.Float32frombits(binary.LittleEndian.Uint32(b[0:]))
		for j, q := range b[4 : 4+QK_K] {
			y[j] = d * float32(int8(q))
		}
	}
}
