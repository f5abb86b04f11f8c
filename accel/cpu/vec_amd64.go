//go:build !purego

package cpu

import (
	"golang.org/x/sys/cpu"

	"github.com/edged/edged/quant"
)

// vecAsm is whether the AVX2 vector math runs: where the CPU has it and
// quant's kernels run in assembly too (EDGED_NOASM=1 turns both off).
var vecAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA && quant.Assembly()

// expSub sets x[i] = e^(x[i]-m).
func expSub(x []float32, m float32) {
	n8 := len(x) &^ 7
	if !vecAsm || n8 == 0 {
		expSubGo(x, m)
		return
	}
	expSubAVX2(n8, &x[0], m)
	expSubGo(x[n8:], m)
}

// siluMul sets dst[i] = SiLU(gate[i])·up[i]; gate and up are at least as
// long as dst. The assembly takes every value, the last n%8 too, so that a
// value's result does not depend on where in the buffer it falls.
func siluMul(dst, gate, up []float32) {
	if !vecAsm || len(dst) == 0 {
		siluMulGo(dst, gate, up)
		return
	}
	_, _ = gate[len(dst)-1], up[len(dst)-1]
	siluMulAVX2(len(dst), &dst[0], &gate[0], &up[0])
}
