package adapt

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/quant"
)

// InitFromInputs picks the directions in which the keys stand out from
// the reference rows: here the keys live on axes 0 and 1, which the
// reference rows barely visit, so A's two rows span those axes, each
// scaled to a mean square response of 1 on the keys; B is cleared and A
// is frozen for MeZO.
func TestInitFromInputs(t *testing.T) {
	const n = 6
	pair := &LoRAPair{Rank: 2, In: n, Out: 3, A: make([]float32, 2*n), B: []float32{1, 2, 3, 4, 5, 6}}
	lo := &LoRA{Pairs: []*LoRAPair{pair}}
	key := stream(9, 0)
	var keys, ref [][]float32
	for i := range 200 {
		r := make([]float32, n)
		for j := range r {
			r[j] = gaussian(key, i*n+j)
		}
		r[0], r[1] = 0.01*r[0], 0.01*r[1]
		ref = append(ref, r)
	}
	for i := range 50 {
		k := make([]float32, n)
		k[0], k[1] = gaussian(key, 10000+2*i), gaussian(key, 10001+2*i)
		keys = append(keys, k)
	}
	require.NoError(t, lo.InitFromInputs(pair, keys, ref, 1e-3))
	for r := range 2 {
		row := pair.A[r*n : (r+1)*n]
		var onAxes, off float64
		for j, v := range row {
			if j < 2 {
				onAxes += float64(v * v)
			} else {
				off += float64(v * v)
			}
		}
		assert.Less(t, off, 1e-4*onAxes, "row %d lies on the keys' axes", r)
		var ms float64
		for _, k := range keys {
			d := float64(quant.DotF32(row, k))
			ms += d * d / float64(len(keys))
		}
		assert.InDelta(t, 1, ms, 1e-3, "row %d: mean square response on the keys", r)
	}
	assert.Equal(t, make([]float32, 6), pair.B)
	ps := lo.Params()
	assert.True(t, ps[0].Frozen)
	assert.False(t, ps[1].Frozen)

	for _, tc := range []struct {
		name      string
		keys, ref [][]float32
		rank      int
	}{
		{"no keys", nil, ref, 2},
		{"no reference", keys, nil, 2},
		{"short row", [][]float32{make([]float32, n-1)}, ref, 2},
		{"rank above the input", keys, ref, n + 1},
		{"zero reference", keys, [][]float32{make([]float32, n)}, 2},
	} {
		p := &LoRAPair{Rank: tc.rank, In: n, Out: 3, A: make([]float32, tc.rank*n), B: make([]float32, 3*tc.rank)}
		assert.Error(t, (&LoRA{}).InitFromInputs(p, tc.keys, tc.ref, 1e-3), tc.name)
	}
}

// MeZO leaves frozen tensors alone and trains the others.
func TestMeZOFrozen(t *testing.T) {
	m := aidreams(t)
	lo, err := NewLoRA(m, LoRAOptions{Rank: 2, Projs: []engine.Proj{engine.ProjDown}, Layers: []int{3}, Seed: 1})
	require.NoError(t, err)
	lo.frozenA = true
	a := append([]float32(nil), lo.Pairs[0].A...)
	mz, err := NewMeZO(newEngine(t, m, NewSet()), lo, trainPairs, trainOpts())
	require.NoError(t, err)
	defer mz.Close()
	for range 3 {
		_, err := mz.Step()
		require.NoError(t, err)
	}
	assert.Equal(t, a, lo.Pairs[0].A)
	var moved float64
	for _, v := range lo.Pairs[0].B {
		moved += math.Abs(float64(v))
	}
	assert.Greater(t, moved, 0.0)
}
