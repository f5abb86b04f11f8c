package cuda

// The operation checks of accel/accelcheck, each backend operation against
// accel/cpu on random data, run on a real GPU (gpu_test.go) and under the
// CPU emulator of the kernels (emu_test.go) with these options.

import (
	"github.com/edged/edged/accel/accelcheck"
	"github.com/edged/edged/quant"
)

// checkOptions holds b to relative L2 distances from the CPU: every
// weight type, batches either side of a mat-vec launch's matvecRows and
// of gemmRows, above which the GEMM runs in the backend's mode.
func checkOptions(b *Backend) accelcheck.Options {
	gemm := 1e-5
	if b.info.GEMM != "fp32" {
		gemm = 2e-3 // f16 or TF32 inputs: 11 significant bits
	}
	return accelcheck.Options{
		Metric:   accelcheck.RelL2,
		Weights:  []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.Q4_K, quant.Q5_K, quant.Q6_K},
		Batches:  []int{1, 3, 8, 13, 40},
		GEMMRows: gemmRows,
		Tol: accelcheck.Tolerances{
			MatMul: 1e-5, GEMM: gemm, Embed: 1e-7,
			RMSNorm: 1e-6, Add: 1e-7, SwiGLU: 1e-5, RoPE: 1e-6,
			Attention: 1e-5, Probs: 1e-5, Scores: 1e-5,
		},
	}
}

// emuLaunches are the kernel launches of a check on the emulator, which
// counts them: with observers, only the one-pass kernel, one launch a
// sequence; without, the chunked kernels (attn_split, attn_combine) for
// decode rows over a cache of more than splitChunk rows, the tiled one
// for many rows, never the one-pass kernel.
var emuLaunches = map[string]map[string]int{
	"AttentionObserved":  {"attention": 12, "attn_split": 0, "attn_tiled": 0},
	"Attention":          {"attn_split": 8, "attn_combine": 8, "attn_tiled": 0, "attention": 0},
	"AttentionLongCache": {"attn_split": 4, "attn_combine": 4, "attn_tiled": 4, "attention": 0},
}
