package cpu

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestExpf(t *testing.T) {
	for x := float32(-87); x < 88.7; x += 0.0137 {
		want := math.Exp(float64(x))
		got := float64(expf(x))
		assert.InEpsilon(t, want, got, 1e-6, "exp(%g)", x)
	}
	// Subnormal results keep their absolute accuracy.
	for x := float32(-103); x < -87; x += 0.1 {
		assert.InDelta(t, math.Exp(float64(x)), float64(expf(x)), 1e-44, "exp(%g)", x)
	}
	assert.Equal(t, float32(1), expf(0))
	assert.True(t, math.IsInf(float64(expf(100)), 1))
	assert.Zero(t, expf(-200))
	assert.True(t, math.IsNaN(float64(expf(float32(math.NaN())))))
}

func BenchmarkExpf(b *testing.B) {
	x := float32(0)
	for b.Loop() {
		x += expf(x*1e-9 - 1)
	}
}
