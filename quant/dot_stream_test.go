package quant

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkMatVecStream: MatVec as in decoding a model much larger than
// the cache. A 256 MB buffer of weights is cut into matrices of 2048 rows
// of n values, and each iteration multiplies the next one with the vector,
// so that every weight comes from memory, not from a cache. Single thread;
// the throughput is weight bytes read.
func BenchmarkMatVecStream(b *testing.B) {
	const total, rows = 256 << 20, 2048
	for _, typ := range []Type{Q4_0, Q8_0} {
		for _, n := range []int{2048, 5632} {
			b.Run(fmt.Sprintf("%s/%d", typ, n), func(b *testing.B) {
				k, err := KernelFor(typ)
				require.NoError(b, err)
				rs, err := typ.RowSize(n)
				require.NoError(b, err)
				// A few distinct quantized rows, repeated: the kernels'
				// speed does not depend on the values.
				const distinct = 61
				rng := rand.New(rand.NewPCG(5, 6))
				src := make([]byte, distinct*rs)
				for r := range distinct {
					require.NoError(b, Quantize(typ, testRow(rng, n), src[r*rs:(r+1)*rs]))
				}
				mat := rows * rs
				nmat := total / mat
				w := make([]byte, nmat*mat)
				for off := 0; off < len(w); off += len(src) {
					copy(w[off:], src)
				}
				a := make([]byte, k.ActRowSize(n))
				k.Quantize(testRow(rng, n), a)
				out := make([]float32, rows)
				b.SetBytes(int64(mat))
				i := 0
				for b.Loop() {
					k.MatVec(n, w[i*mat:(i+1)*mat], rs, a, out)
					if i++; i == nmat {
						i = 0
					}
				}
				sink += out[0]
			})
		}
	}
}
