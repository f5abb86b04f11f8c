package adapt

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The perturbation generator is standard normal, independent across
// tensors and seeds, and a pure function of (seed, tensor, element).
func TestGaussian(t *testing.T) {
	const n = 1 << 17
	var sum, sq, cross float64
	k1, k2 := stream(1, 0), stream(1, 1)
	for i := range n {
		z, w := float64(gaussian(k1, i)), float64(gaussian(k2, i))
		sum += z
		sq += z * z
		cross += z * w
	}
	assert.InDelta(t, 0, sum/n, 0.01)
	assert.InDelta(t, 1, sq/n, 0.02)
	assert.InDelta(t, 0, cross/n, 0.01, "tensors 0 and 1 are uncorrelated")
	assert.Equal(t, gaussian(k1, 12345), gaussian(stream(1, 0), 12345))
	assert.NotEqual(t, gaussian(stream(1, 0), 7), gaussian(stream(2, 0), 7))
	assert.False(t, math.IsInf(float64(gaussian(k1, 0)), 0))
}
