//go:build !purego

package quant

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVNNIMatchesAVX2 checks that the VNNI tier's kernels give the AVX2
// tier's results bit for bit, through every entry point, on rows of
// awkward lengths. Only a CPU with AVX-512 VNNI runs it (tests/avx512/
// check.sh runs it on an emulated one).
func TestVNNIMatchesAVX2(t *testing.T) {
	if !slices.Contains(tierNames(), vnniTier.name) {
		t.Skip("this CPU has no AVX-512 VNNI")
	}
	for typ := range vnniBlocks {
		t.Run(typ.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(typ), 11))
			kv, ka := tierKernel(t, vnniTier, typ), tierKernel(t, avx2Tier, typ)
			assert.Equal(t, vnniTier.name, kv.Tier)
			for _, blocks := range testSizes {
				n := 32 * blocks
				const rows = 9 // two tiles of four and one row left
				wSize, err := typ.RowSize(n)
				require.NoError(t, err)
				aSize := q8aBlock * blocks
				wStride, aStride := wSize+5, aSize+3
				w := make([]byte, rows*wStride)
				a := make([]byte, rows*aStride)
				for r := range rows {
					require.NoError(t, Quantize(typ, testRow(rng, n), w[r*wStride:r*wStride+wSize]))
					kv.Quantize(testRow(rng, n), a[r*aStride:r*aStride+aSize])
				}
				for r := range rows {
					wr := w[r*wStride:]
					assert.Equal(t, ka.Dot(n, wr, a), kv.Dot(n, wr, a), "Dot blocks=%d r=%d", blocks, r)
				}
				for _, f := range []func(Kernel, []float32){
					func(k Kernel, out []float32) { k.DotRows(n, w, a, aStride, out) },
					func(k Kernel, out []float32) { k.MatVec(n, w, wStride, a, out) },
				} {
					want, got := make([]float32, rows), make([]float32, rows)
					f(ka, want)
					f(kv, got)
					assert.Equal(t, want, got, "blocks=%d", blocks)
				}
				if ka.Tile != nil {
					want, got := make([]float32, 4*8), make([]float32, 4*8)
					scratch := make([]byte, TileScratch(n))
					ka.Tile(n, w, wStride, a, aStride, want, scratch)
					kv.Tile(n, w, wStride, a, aStride, got, scratch)
					assert.Equal(t, want, got, "Tile blocks=%d", blocks)
				}
			}
		})
	}
}
