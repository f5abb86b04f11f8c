//go:build purego || !amd64

package cpu

// expSub sets x[i] = e^(x[i]-m).
func expSub(x []float32, m float32) { expSubGo(x, m) }

// siluMul sets dst[i] = SiLU(gate[i])·up[i]; gate and up are at least as
// long as dst.
func siluMul(dst, gate, up []float32) { siluMulGo(dst, gate, up) }
