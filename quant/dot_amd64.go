//go:build !purego

package quant

import (
	"maps"

	"golang.org/x/sys/cpu"
)

// The amd64 tiers. AVX2 (with FMA and F16C, as on every AVX2 CPU since
// Haswell and Zen) has kernels for every type, with tiles of four
// activation rows (DotRows) and of four weight rows (MatVec) for the block
// types, four-row float products for F32 and F16 (FloatMatVec: attention
// runs them over its keys and values), and both activation quantizers.
//
// The VNNI tier (AVX-512 VNNI with AVX512VL: Ice Lake, Sapphire Rapids,
// Zen 4 and later) is AVX2's with the byte products of the 32-element
// block types (q4_0, q4_1, q5_0, q5_1, q8_0) in VPDPBUSD, one instruction
// where AVX2 spends two, on 256-bit registers (no lower clock than AVX2's
// multiplies on Intel CPUs). Its results equal AVX2's bit for bit
// (TestVNNIMatchesAVX2). The machines this was written on have no AVX-512:
// tests/avx512/check.sh runs the kernel tests on an emulated one. It has
// not yet run on a real one (tests/avx512/device.sh checks and times it
// there); EDGED_CPU_KERNELS=avx2 sets it aside.
func archTiers() []tier {
	if !cpu.X86.HasAVX2 || !cpu.X86.HasFMA || !cpu.X86.HasF16C {
		return nil
	}
	if cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VNNI {
		return []tier{avx2Tier, vnniTier}
	}
	return []tier{avx2Tier}
}

var avx2Blocks = asmBlocks{
	Q4_0: {32, 18, q8aBlock, dotQ4_0AVX2x1, dotQ4_0AVX2x4, dotQ4_0AVX2m4},
	Q4_1: {32, 20, q8aBlock, dotQ4_1AVX2x1, dotQ4_1AVX2x4, dotQ4_1AVX2w4},
	Q5_0: {32, 22, q8aBlock, dotQ5_0AVX2x1, dotQ5_0AVX2x4, dotQ5_0AVX2w4},
	Q5_1: {32, 24, q8aBlock, dotQ5_1AVX2x1, dotQ5_1AVX2x4, dotQ5_1AVX2w4},
	Q8_0: {32, 34, q8aBlock, dotQ8_0AVX2x1, dotQ8_0AVX2x4, dotQ8_0AVX2m4},
	Q4_K: {QK_K, 144, 292, dotQ4_KAVX2x1, dotQ4_KAVX2x4, nil},
	Q5_K: {QK_K, 176, 292, dotQ5_KAVX2x1, dotQ5_KAVX2x4, nil},
	Q6_K: {QK_K, 210, 292, dotQ6_KAVX2x1, dotQ6_KAVX2x4, nil},
	Q2_K: {QK_K, 84, 292, dotQ2_KAVX2x1, dotQ2_KAVX2x4, nil},
	Q3_K: {QK_K, 110, 292, dotQ3_KAVX2x1, dotQ3_KAVX2x4, nil},
}

// vnniBlocks are the kernels in which the VNNI tier differs from AVX2's.
var vnniBlocks = asmBlocks{
	Q4_0: {32, 18, q8aBlock, dotQ4_0VNNIx1, dotQ4_0VNNIx4, dotQ4_0VNNIm4},
	Q4_1: {32, 20, q8aBlock, dotQ4_1VNNIx1, dotQ4_1VNNIx4, dotQ4_1VNNIw4},
	Q5_0: {32, 22, q8aBlock, dotQ5_0VNNIx1, dotQ5_0VNNIx4, dotQ5_0VNNIw4},
	Q5_1: {32, 24, q8aBlock, dotQ5_1VNNIx1, dotQ5_1VNNIx4, dotQ5_1VNNIw4},
	Q8_0: {32, 34, q8aBlock, dotQ8_0VNNIx1, dotQ8_0VNNIx4, dotQ8_0VNNIm4},
}

var (
	avx2Tier = x86Tier("avx2", avx2Blocks, dotQ4_0AVX2p4, dotQ8_0AVX2p4)
	vnniTier = func() tier {
		blocks := maps.Clone(avx2Blocks)
		maps.Copy(blocks, vnniBlocks)
		return x86Tier("avx512vnni", blocks, dotQ4_0VNNIp4, dotQ8_0VNNIp4)
	}()
)

// tileKernel is a 4×4 tile kernel over a panel (see tile32).
type tileKernel = func(nb int, panel, a *byte, astride int, out *float32)

// x86Tier is an amd64 tier with the block kernels of blocks and the tile
// kernels q4_0 and q8_0; the float kernels and quantizers are AVX2's in
// every tier.
func x86Tier(name string, blocks asmBlocks, q4_0, q8_0 tileKernel) tier {
	return tier{
		name: name,
		dot: func(t Type) func(n int, w, a []byte) float32 {
			switch t {
			case F32:
				return floatDot(dotF32AVX2, 4, 8, dotF32)
			case F16:
				return floatDot(dotF16AVX2, 2, 8, dotF16)
			case BF16:
				return floatDot(dotBF16AVX2, 2, 8, dotBF16)
			}
			return blocks.dot(t)
		},
		dotRows: func(t Type) func(n int, w, a []byte, aStride int, out []float32) {
			switch t {
			case F32:
				return floatDotRows(dotF32AVX2x3, 4, 8, floatDot(dotF32AVX2, 4, 8, dotF32), dotF32)
			case F16:
				return floatDotRows(dotF16AVX2x3, 2, 8, floatDot(dotF16AVX2, 2, 8, dotF16), dotF16)
			case BF16:
				return floatDotRows(dotBF16AVX2x3, 2, 8, floatDot(dotBF16AVX2, 2, 8, dotBF16), dotBF16)
			}
			return blocks.dotRows(t)
		},
		matVec: blocks.matVec,
		floatMatVec: func(t Type) FloatRows {
			switch t {
			case F32:
				return floatMatVec(dotF32AVX2w4, dotF32AVX2w4x2, 4, floatDot(dotF32AVX2, 4, 8, dotF32), dotF32)
			case F16:
				return floatMatVec(dotF16AVX2w4, dotF16AVX2w4x2, 2, floatDot(dotF16AVX2, 2, 8, dotF16), dotF16)
			}
			return nil
		},
		tile: func(t Type) func(n int, w []byte, wStride int, a []byte, aStride int, out []float32, scratch []byte) {
			switch t {
			case Q4_0:
				return tile32(packQ4_0AVX2, q4_0, 18)
			case Q8_0:
				return tile32(packQ8_0AVX2, q8_0, 34)
			}
			return nil
		},
		quantize: func(act Type) func(x []float32, dst []byte) {
			switch act {
			case Q8A:
				return quantQ8AAsm
			case Q8_K:
				return quantQ8KAsm
			}
			return nil
		},
	}
}

func quantQ8AAsm(x []float32, dst []byte) {
	nb := len(x) / 32
	if nb == 0 {
		return
	}
	_ = dst[nb*q8aBlock-1]
	quantQ8AAVX2(nb, &x[0], &dst[0])
}

func quantQ8KAsm(x []float32, dst []byte) {
	nb := len(x) / QK_K
	if nb == 0 {
		return
	}
	_ = dst[nb*292-1]
	quantQ8KAVX2(nb, &x[0], &dst[0])
}

// tile32 wraps the pack and 4×4 tile kernels of a 32-element block type
// of wsize bytes per block: it checks the lengths, which the assembly
// trusts, packs the weight rows once and runs the tile over the
// activation rows.
func tile32(pack func(nb int, w *byte, wstride int, dst *byte), t4 tileKernel, wsize int) func(n int, w []byte, wStride int, a []byte, aStride int, out []float32, scratch []byte) {
	return func(n int, w []byte, wStride int, a []byte, aStride int, out []float32, scratch []byte) {
		nb, rows := n/32, len(out)/4
		if wStride < 0 || aStride < 0 || len(out)%16 != 0 {
			panic("quant: Tile: a negative stride or activation rows not a multiple of 4")
		}
		if nb <= 0 || rows == 0 {
			clear(out)
			return
		}
		_, _, _ = w[3*wStride+nb*wsize-1], a[(rows-1)*aStride+nb*q8aBlock-1], scratch[nb*tilePanelBlock-1]
		pack(nb, &w[0], wStride, &scratch[0])
		for r := 0; r < rows; r += 4 {
			t4(nb, &scratch[0], &a[r*aStride], aStride, &out[4*r])
		}
	}
}
