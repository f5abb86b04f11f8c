package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExpSub checks expSub (assembly where it runs) against math.Exp on
// lengths around the vector width, with scores down to where e^x is 0.
func TestExpSub(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1, 7, 8, 9, 16, 31, 100, 1000} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 30)
		}
		x[rng.IntN(n)] = -200 // far below the others: e^x is (about) 0
		m := float32(math.Inf(-1))
		for _, v := range x {
			m = max(m, v)
		}
		want := make([]float64, n)
		for i, v := range x {
			want[i] = math.Exp(float64(v - m))
		}
		got := append([]float32(nil), x...)
		expSub(got, m)
		for i := range got {
			assert.InDelta(t, want[i], float64(got[i]), 1e-6*want[i]+1e-37, "n %d i %d x %g", n, i, x[i]-m)
		}
	}
	nan := []float32{0, 1, 2, 3, 4, 5, 6, float32(math.NaN()), 8}
	expSub(nan, 8)
	assert.True(t, math.IsNaN(float64(nan[7])), "NaN stays NaN")
}

// TestSiLUMul checks siluMul against its definition in float64, including
// gates large enough that e^-g overflows.
func TestSiLUMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{1, 8, 13, 64, 129} {
		gate, up, dst := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range gate {
			gate[i] = float32(rng.NormFloat64() * 8)
			up[i] = float32(rng.NormFloat64())
		}
		gate[0] = -150
		if n > 1 {
			gate[1] = 150
		}
		siluMul(dst, gate, up)
		for i, g := range gate {
			want := float64(g) / (1 + math.Exp(-float64(g))) * float64(up[i])
			require.InDelta(t, want, float64(dst[i]), 1e-6*(1+math.Abs(want)), "n %d i %d g %g", n, i, g)
		}
	}
}
