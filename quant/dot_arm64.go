//go:build !purego

package quant

import "golang.org/x/sys/cpu"

// The arm64 tiers. NEON (Advanced SIMD, present on every arm64 CPU) has
// kernels for every type, with tiles of four activation rows (DotRows) and
// of four weight rows (MatVec) for the block types; its
// integer kernels multiply bytes with SMULL/SMLAL. With the dot-product
// extension (ARMv8.2 SDOT: Cortex-A55/A76 and later, Apple M1, Graviton 2;
// not the Raspberry Pi 4's A72) they use SDOT instead. The activation
// quantizers are portable.
func archTiers() []tier {
	ts := []tier{neonTier("neon", neonBlocks)}
	if cpu.ARM64.HasASIMDDP {
		ts = append(ts, neonTier("neon+dot", dotBlocks))
	}
	return ts
}

var neonBlocks = asmBlocks{
	Q4_0: {32, 18, q8aBlock, dotQ4_0NEONx1, dotQ4_0NEONx4, dotQ4_0NEONw4},
	Q4_1: {32, 20, q8aBlock, dotQ4_1NEONx1, dotQ4_1NEONx4, dotQ4_1NEONw4},
	Q5_0: {32, 22, q8aBlock, dotQ5_0NEONx1, dotQ5_0NEONx4, dotQ5_0NEONw4},
	Q5_1: {32, 24, q8aBlock, dotQ5_1NEONx1, dotQ5_1NEONx4, dotQ5_1NEONw4},
	Q8_0: {32, 34, q8aBlock, dotQ8_0NEONx1, dotQ8_0NEONx4, dotQ8_0NEONw4},
	Q4_K: {QK_K, 144, 292, dotQ4_KNEONx1, dotQ4_KNEONx4, nil},
	Q5_K: {QK_K, 176, 292, dotQ5_KNEONx1, dotQ5_KNEONx4, nil},
	Q6_K: {QK_K, 210, 292, dotQ6_KNEONx1, dotQ6_KNEONx4, nil},
	Q2_K: {QK_K, 84, 292, dotQ2_KNEONx1, dotQ2_KNEONx4, nil},
	Q3_K: {QK_K, 110, 292, dotQ3_KNEONx1, dotQ3_KNEONx4, nil},
}

var dotBlocks = asmBlocks{
	Q4_0: {32, 18, q8aBlock, dotQ4_0DOTx1, dotQ4_0DOTx4, dotQ4_0DOTw4},
	Q4_1: {32, 20, q8aBlock, dotQ4_1DOTx1, dotQ4_1DOTx4, dotQ4_1DOTw4},
	Q5_0: {32, 22, q8aBlock, dotQ5_0DOTx1, dotQ5_0DOTx4, dotQ5_0DOTw4},
	Q5_1: {32, 24, q8aBlock, dotQ5_1DOTx1, dotQ5_1DOTx4, dotQ5_1DOTw4},
	Q8_0: {32, 34, q8aBlock, dotQ8_0DOTx1, dotQ8_0DOTx4, dotQ8_0DOTw4},
	Q4_K: {QK_K, 144, 292, dotQ4_KDOTx1, dotQ4_KDOTx4, nil},
	Q5_K: {QK_K, 176, 292, dotQ5_KDOTx1, dotQ5_KDOTx4, nil},
	Q6_K: {QK_K, 210, 292, dotQ6_KDOTx1, dotQ6_KDOTx4, nil},
	Q2_K: {QK_K, 84, 292, dotQ2_KDOTx1, dotQ2_KDOTx4, nil},
	Q3_K: {QK_K, 110, 292, dotQ3_KDOTx1, dotQ3_KDOTx4, nil},
}

func neonTier(name string, blocks asmBlocks) tier {
	return tier{
		name: name,
		dot: func(t Type) func(n int, w, a []byte) float32 {
			switch t {
			case F32:
				return floatDot(dotF32NEON, 4, 4, dotF32)
			case F16:
				return floatDot(dotF16NEON, 2, 4, dotF16)
			case BF16:
				return floatDot(dotBF16NEON, 2, 4, dotBF16)
			}
			return blocks.dot(t)
		},
		dotRows:  blocks.dotRows,
		matVec:   blocks.matVec,
		quantize: func(Type) func(x []float32, dst []byte) { return nil },
	}
}
