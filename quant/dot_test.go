package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kernelTypes are the weight types that have a kernel.
var kernelTypes = []Type{F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K}

// testSizes are row lengths in weight blocks: awkward sizes that exercise
// every unrolled main loop and its remainder.
var testSizes = []int{1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33}

// testRow returns n values with a random magnitude per 32 values (so blocks
// of very different scales meet in one row), some all-zero blocks, and a few
// outliers.
func testRow(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	var scale float64
	for i := range x {
		if i%32 == 0 {
			scale = math.Exp(rng.NormFloat64())
			if rng.IntN(9) == 0 {
				scale = 0
			}
		}
		x[i] = float32(rng.NormFloat64() * scale)
		if rng.IntN(97) == 0 {
			x[i] *= 6
		}
	}
	return x
}

// actName names an activation type (Type.String does not know Q8A).
func actName(act Type) string {
	if act == Q8A {
		return "q8a"
	}
	return act.String()
}

// dequantAct decodes an activation row of type act (F32, Q8A or Q8_K).
func dequantAct(t *testing.T, act Type, a []byte, n int) []float64 {
	t.Helper()
	out := make([]float64, n)
	switch act {
	case Q8A:
		for i := range n / 32 {
			d, _, q := q8aAt(a, i)
			for j, v := range q {
				out[32*i+j] = float64(d) * float64(int8(v))
			}
		}
	default:
		f := make([]float32, n)
		require.NoError(t, Dequantize(act, a[:actRowSize(act, n)], f))
		for i, v := range f {
			out[i] = float64(v)
		}
	}
	return out
}

// dotCase is one weight row, its activation row, and what a kernel must
// return for them.
type dotCase struct {
	n    int
	w, a []byte
	// exact is Σ ŵ·â in float64 over the decoded weights and activations:
	// what every kernel computes up to float32 rounding.
	exact float64
	// tol bounds that rounding. Each kernel sums integer products exactly
	// within a block and then performs a handful of float32 operations per
	// block (scaling, an offset or minimum term, the accumulation); each
	// rounds by at most 2⁻²⁴ relative to the magnitudes involved, which are
	// bounded by S = Σ |â_i|·(|ŵ_i| + M_i), where M_i is the largest |ŵ| of
	// i's weight block (it bounds the offset and minimum terms that the
	// kernels apply separately). With at most nb + 8 roundings in a chain
	// (nb blocks accumulated), |kernel - exact| ≤ (nb+8)·2⁻²²·S, a factor 4
	// to spare. Float rows count blocks of 1 and accumulate in several
	// lanes, so nb overstates their chains.
	tol float64
	// ref is Σ w·x in float64 over the decoded weights and the original
	// activations, and refTol bounds the activation quantization error:
	// |â_i - x_i| ≤ d_i/2 = amax_i/254 per element of Q8A and Q8_K blocks
	// (zero for float activations), so |exact - ref| ≤ Σ |ŵ_i|·amax_i/254.
	ref, refTol float64
}

func makeDotCase(t *testing.T, rng *rand.Rand, typ Type, blocks int) dotCase {
	t.Helper()
	act, ok := kernelAct(typ)
	require.True(t, ok)
	bs := max(typ.BlockSize(), act.BlockSize())
	if act == Q8A {
		bs = max(bs, 32)
	}
	n := blocks * bs
	if typ == F32 || typ == F16 || typ == BF16 {
		n = blocks*5 + blocks/3 // any length works for floats
	}
	wf := testRow(rng, n)
	size, err := typ.RowSize(n)
	require.NoError(t, err)
	w := make([]byte, size)
	require.NoError(t, Quantize(typ, wf, w))
	wd := make([]float32, n)
	require.NoError(t, Dequantize(typ, w, wd))

	x := testRow(rng, n)
	a := make([]byte, actRowSize(act, n))
	portableQuantize(act)(x, a)
	ad := dequantAct(t, act, a, n)

	c := dotCase{n: n, w: w, a: a}
	wbs := typ.BlockSize()
	var s float64
	for i := range n {
		c.exact += float64(wd[i]) * ad[i]
		c.ref += float64(wd[i]) * float64(x[i])
		var m float64
		for _, v := range wd[i/wbs*wbs : i/wbs*wbs+wbs] {
			m = max(m, math.Abs(float64(v)))
		}
		s += math.Abs(ad[i]) * (math.Abs(float64(wd[i])) + m)
		if act != F32 {
			abs := act.BlockSize()
			if act == Q8A {
				abs = 32
			}
			var amax float64
			for _, v := range x[i/abs*abs : i/abs*abs+abs] {
				amax = max(amax, math.Abs(float64(v)))
			}
			c.refTol += math.Abs(float64(wd[i])) * amax / 254
		}
	}
	nb := n / wbs
	c.tol = float64(nb+8) * 0x1p-22 * s
	c.refTol += c.tol
	return c
}

// tierKernel is the kernel for typ in tier tr.
func tierKernel(tb testing.TB, tr tier, typ Type) Kernel {
	tb.Helper()
	k, err := kernelFor(tr, typ)
	require.NoError(tb, err)
	return k
}

func TestKernelFor(t *testing.T) {
	for _, typ := range kernelTypes {
		k, err := KernelFor(typ)
		require.NoError(t, err, typ)
		assert.Equal(t, typ, k.Weight)
		assert.NotNil(t, k.Dot)
		assert.NotNil(t, k.DotRows)
	}
	for _, typ := range []Type{Q8_1, Q8_K, Q8A, Type(99)} {
		_, err := KernelFor(typ)
		assert.ErrorIs(t, err, ErrUnknownType, typ)
	}
	if os.Getenv("EDGED_NOASM") == "1" {
		assert.Equal(t, "portable", KernelTier())
	}
	// Set where the CPU is known (tests/avx512/check.sh's emulated one), so
	// that a tier's absence fails instead of going untested.
	if want := os.Getenv("EDGED_WANT_CPU_KERNELS"); want != "" {
		assert.Equal(t, want, KernelTier(), "available: %v", tierNames())
	}
	t.Logf("kernel tier: %s (available: %v)", KernelTier(), tierNames())
}

// TestPickTier checks the environment's choice of tier (EDGED_CPU_KERNELS and
// EDGED_NOASM): a tier this CPU runs, by name, or the best.
func TestPickTier(t *testing.T) {
	ts := availableTiers()
	best := ts[len(ts)-1].name
	for _, c := range []struct {
		name  string
		noAsm bool
		want  string
	}{
		{"", false, best},
		{"no-such-tier", false, best},
		{best, true, "portable"},
	} {
		assert.Equal(t, c.want, pickTier(c.name, c.noAsm).name, "EDGED_CPU_KERNELS=%q noAsm=%v", c.name, c.noAsm)
	}
	for _, tr := range ts {
		assert.Equal(t, tr.name, pickTier(tr.name, false).name)
	}
}

func tierNames() []string {
	var names []string
	for _, tr := range availableTiers() {
		names = append(names, tr.name)
	}
	return names
}

// TestDot checks every kernel of every tier this CPU runs against the
// float64 products of the decoded rows, and the portable and assembly
// kernels against each other.
func TestDot(t *testing.T) {
	for _, typ := range kernelTypes {
		t.Run(typ.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(typ), 1))
			for _, blocks := range testSizes {
				c := makeDotCase(t, rng, typ, blocks)
				want := tierKernel(t, portableTier, typ).Dot(c.n, c.w, c.a)
				for _, tr := range availableTiers() {
					k := tierKernel(t, tr, typ)
					got := k.Dot(c.n, c.w, c.a)
					assert.InDelta(t, c.exact, got, c.tol, "%s n=%d tier %s (%s)", typ, c.n, tr.name, k.Tier)
					assert.InDelta(t, c.ref, got, c.refTol, "%s n=%d tier %s vs unquantized activations", typ, c.n, tr.name)
					assert.InDelta(t, want, got, 2*c.tol, "%s n=%d tier %s vs portable", typ, c.n, tr.name)
				}
			}
		})
	}
}

// TestDotRows checks DotRows against Dot on every tier: the same results,
// bit for bit (the assembly tiles run the same operations in the same
// order as the one-row kernels), for tile remainders of every size.
func TestDotRows(t *testing.T) {
	for _, typ := range kernelTypes {
		t.Run(typ.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(typ), 2))
			// 34 blocks: float rows of 181 values, through every loop of
			// their kernels and a tail.
			for _, blocks := range []int{1, 3, 9, 34} {
				c := makeDotCase(t, rng, typ, blocks)
				for _, tr := range availableTiers() {
					k := tierKernel(t, tr, typ)
					for _, rows := range []int{1, 2, 3, 4, 5, 7, 8, 9} {
						stride := len(c.a) + 8*rows // rows need not be contiguous
						a := make([]byte, stride*rows)
						xs := make([][]byte, rows)
						for r := range rows {
							x := testRow(rng, c.n)
							xs[r] = a[r*stride : r*stride+len(c.a)]
							k.Quantize(x, xs[r])
						}
						out := make([]float32, rows)
						k.DotRows(c.n, c.w, a, stride, out)
						for r := range rows {
							assert.Equal(t, k.Dot(c.n, c.w, xs[r]), out[r], "%s tier %s rows=%d r=%d", typ, tr.name, rows, r)
						}
					}
				}
			}
		})
	}
}

// TestMatVec checks MatVec against Dot on every tier: the same results, bit
// for bit (a tile of weight rows runs each row's one-row instructions),
// except for the types with a Tile, whose whole tiles of four rows must
// give exactly Tile's results (and Dot's within rounding); for tile
// remainders of every size and weight rows that are not adjacent; and the
// tiers' FloatMatVec within rounding.
func TestMatVec(t *testing.T) {
	for _, typ := range kernelTypes {
		t.Run(typ.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(typ), 4))
			for _, blocks := range []int{1, 3, 4, 9} {
				c := makeDotCase(t, rng, typ, blocks)
				for _, tr := range availableTiers() {
					k := tierKernel(t, tr, typ)
					for _, rows := range []int{1, 2, 3, 4, 5, 7, 8, 9} {
						stride := len(c.w) + 2*rows + 1
						w := make([]byte, stride*rows)
						for r := range rows {
							require.NoError(t, Quantize(typ, testRow(rng, c.n), w[r*stride:r*stride+len(c.w)]))
						}
						out := make([]float32, rows)
						k.MatVec(c.n, w, stride, c.a, out)
						tiled := tileProducts(k, c.n, w, stride, c.a, rows)
						for r := range rows {
							want := k.Dot(c.n, w[r*stride:r*stride+len(c.w)], c.a)
							if r < len(tiled) {
								assert.Equal(t, tiled[r], out[r], "%s tier %s rows=%d r=%d: MatVec against Tile", typ, tr.name, rows, r)
								assert.InDelta(t, want, out[r], 1e-5*(1+math.Abs(float64(want)))*float64(c.n), "%s tier %s rows=%d r=%d", typ, tr.name, rows, r)
								continue
							}
							assert.Equal(t, want, out[r], "%s tier %s rows=%d r=%d", typ, tr.name, rows, r)
							if tr.floatMatVec == nil {
								continue
							}
							if fmv := tr.floatMatVec(typ); fmv != nil {
								// Alone and paired with a second vector (a's values
								// reversed): the same results for a, bit for bit.
								a1 := make([]byte, len(c.a))
								for i := range c.n {
									copy(a1[4*i:4*i+4], c.a[4*(c.n-1-i):])
								}
								got, got2, other := make([]float32, rows), make([]float32, rows), make([]float32, rows)
								fmv(c.n, w, stride, c.a, nil, got, nil)
								fmv(c.n, w, stride, c.a, a1, got2, other)
								// Values of about 1: rounding stays far below this.
								assert.InDelta(t, want, got[r], 1e-5*float64(c.n), "FloatMatVec %s tier %s rows=%d r=%d", typ, tr.name, rows, r)
								assert.Equal(t, got[r], got2[r], "FloatMatVec paired %s rows=%d r=%d", typ, rows, r)
								assert.InDelta(t, k.Dot(c.n, w[r*stride:r*stride+len(c.w)], a1), other[r], 1e-5*float64(c.n), "FloatMatVec second %s rows=%d r=%d", typ, rows, r)
							}
						}
					}
				}
			}
		})
	}
}

// tileProducts returns, where k has a Tile, the products of a with the
// weight rows in whole tiles of four (the rows MatVec runs the tile's
// arithmetic on), through Tile with a repeated four times; nil otherwise.
func tileProducts(k Kernel, n int, w []byte, wStride int, a []byte, rows int) []float32 {
	if k.Tile == nil {
		return nil
	}
	acts := make([]byte, 4*len(a))
	for r := range 4 {
		copy(acts[r*len(a):], a)
	}
	var got []float32
	out := make([]float32, 16)
	for i := 0; i+4 <= rows; i += 4 {
		k.Tile(n, w[i*wStride:], wStride, acts, len(a), out, make([]byte, TileScratch(n)))
		got = append(got, out[:4]...)
	}
	return got
}

// TestTile checks the tile kernels against Dot for every pair of four
// weight rows and two tiles of activation rows, none of them adjacent:
// within float32 rounding.
func TestTile(t *testing.T) {
	tested := 0
	defer func() {
		for _, tr := range archTiers() {
			if tr.name == "avx2" && !t.Failed() {
				assert.Positive(t, tested, "the avx2 tier has no tile kernel")
			}
		}
	}()
	for _, typ := range kernelTypes {
		for _, tr := range availableTiers() {
			k := tierKernel(t, tr, typ)
			if k.Tile == nil {
				continue
			}
			rng := rand.New(rand.NewPCG(uint64(typ), 5))
			for _, blocks := range []int{1, 2, 7} {
				var ws [4]dotCase
				var as [8]dotCase // two tiles of activation rows
				for i := range ws {
					ws[i] = makeDotCase(t, rng, typ, blocks)
				}
				for i := range as {
					as[i] = makeDotCase(t, rng, typ, blocks)
				}
				wStride, aStride := len(ws[0].w)+3, len(as[0].a)+5
				w := make([]byte, len(ws)*wStride)
				a := make([]byte, len(as)*aStride)
				for i := range ws {
					copy(w[i*wStride:], ws[i].w)
				}
				for i := range as {
					copy(a[i*aStride:], as[i].a)
				}
				out := make([]float32, 4*len(as))
				k.Tile(ws[0].n, w, wStride, a, aStride, out, make([]byte, TileScratch(ws[0].n)))
				tested++
				for r := range as {
					for c := range ws {
						want := k.Dot(ws[0].n, ws[c].w, as[r].a)
						assert.InDelta(t, want, out[4*r+c], 1e-5*(1+math.Abs(float64(want)))*float64(ws[0].n),
							"%s tier %s blocks %d r %d c %d", typ, tr.name, blocks, r, c)
					}
				}
			}
		}
	}
}

// TestQuantizeActivations checks every tier's activation quantizers: the
// same bytes as the portable ones (Q8_K: as Quantize, which is llama.cpp's
// reference), and a round trip within half a quantization step.
func TestQuantizeActivations(t *testing.T) {
	for _, act := range []Type{Q8A, Q8_K, F32} {
		t.Run(actName(act), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(act), 3))
			bs := max(1, act.BlockSize())
			if act == Q8A {
				bs = 32
			}
			for _, blocks := range testSizes {
				n := blocks * bs
				x := testRow(rng, n)
				switch {
				case bs == 1:
				case blocks == 2: // an all-zero first block
					clear(x[:bs])
				case blocks == 3: // a sign tie at the maximum, late in the block
					for i := range x[:bs] {
						x[i] *= 1e-3
					}
					x[bs-3], x[bs-1] = -20, 20
				case blocks == 4: // a sign tie, the positive one first
					x[0], x[bs/2] = 30, -30
				}
				want := make([]byte, actRowSize(act, n))
				portableQuantize(act)(x, want)
				if act != Q8A {
					ref := make([]byte, len(want))
					require.NoError(t, Quantize(act, x, ref))
					require.Equal(t, ref, want)
				}
				back := dequantAct(t, act, want, n)
				for i, v := range x {
					amax := 0.0
					for _, u := range x[i/bs*bs : i/bs*bs+bs] {
						amax = max(amax, math.Abs(float64(u)))
					}
					require.InDelta(t, float64(v), back[i], amax/254*(1+1e-6), "element %d", i)
				}
				if act == Q8A {
					for i := range n / 32 {
						d, s, q := q8aAt(want, i)
						sum := 0
						for _, v := range q {
							sum += int(int8(v))
						}
						require.Equal(t, d*float32(sum), s)
					}
				}
				for _, tr := range availableTiers() {
					if f := tr.quantize(act); f != nil {
						got := make([]byte, len(want)+5)
						f(x, got)
						assert.Equal(t, want, got[:len(want)], "tier %s n=%d", tr.name, n)
						assert.Equal(t, make([]byte, 5), got[len(want):], "tier %s wrote past the row", tr.name)
					}
				}
			}
		})
	}
}

// TestDotZeroActivations: an all-zero activation row (d = 0) gives 0.
func TestDotZeroActivations(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, typ := range kernelTypes {
		c := makeDotCase(t, rng, typ, 3)
		for _, tr := range availableTiers() {
			k := tierKernel(t, tr, typ)
			a := make([]byte, len(c.a))
			k.Quantize(make([]float32, c.n), a)
			assert.Zero(t, k.Dot(c.n, c.w, a), "%s %s", typ, tr.name)
		}
	}
}

func TestDotAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 9))
	for _, typ := range kernelTypes {
		c := makeDotCase(t, rng, typ, 4)
		for _, tr := range availableTiers() {
			k := tierKernel(t, tr, typ)
			x := testRow(rng, c.n)
			a := make([]byte, 4*len(c.a))
			out := make([]float32, 4)
			allocs := testing.AllocsPerRun(20, func() {
				k.Quantize(x, a)
				_ = k.Dot(c.n, c.w, a)
				k.DotRows(c.n, c.w, a, len(c.a), out)
				k.MatVec(c.n, c.w, 0, a, out)
			})
			assert.Zero(t, allocs, "%s %s", typ, tr.name)
		}
	}
}

// benchRows makes rows weight rows of n values of typ and one activation
// row quantized for kernel k.
func benchRows(b testing.TB, k Kernel, typ Type, rows, n int) (w, a []byte, rowSize int) {
	rng := rand.New(rand.NewPCG(1, 2))
	rowSize, err := typ.RowSize(n)
	require.NoError(b, err)
	w = make([]byte, rows*rowSize)
	for r := range rows {
		require.NoError(b, Quantize(typ, testRow(rng, n), w[r*rowSize:(r+1)*rowSize]))
	}
	a = make([]byte, 12*k.ActRowSize(n))
	for r := range 12 {
		k.Quantize(testRow(rng, n), a[r*k.ActRowSize(n):])
	}
	return w, a, rowSize
}

var sink float32

// BenchmarkDot: one row of 4096 values; the throughput is weight bytes read.
func BenchmarkDot(b *testing.B) {
	const n = 4096
	for _, typ := range kernelTypes {
		for _, tr := range availableTiers() {
			b.Run(fmt.Sprintf("%s/%s", typ, tr.name), func(b *testing.B) {
				k := tierKernel(b, tr, typ)
				w, a, _ := benchRows(b, k, typ, 1, n)
				b.SetBytes(int64(len(w)))
				for b.Loop() {
					sink += k.Dot(n, w, a)
				}
			})
		}
	}
}

// BenchmarkMatVec: a rows×n matrix times one vector (the decode step), row
// by row with Dot ("dot") and four rows at a time with MatVec ("matvec"),
// and one weight row at a time against 12 vectors with DotRows ("rows12",
// as the CPU backend's prefill calls it); the throughput is weight bytes read per vector. The
// shapes are a 2048×2048 matrix and smollm2's 1536×576 MLP projection.
func BenchmarkMatVec(b *testing.B) {
	for _, shape := range [][2]int{{2048, 2048}, {1536, 576}} {
		rows, n := shape[0], shape[1]
		for _, typ := range kernelTypes {
			if n%max(typ.BlockSize(), 32) != 0 {
				continue
			}
			for _, tr := range availableTiers() {
				k := tierKernel(b, tr, typ)
				w, a, rs := benchRows(b, k, typ, rows, n)
				name := fmt.Sprintf("%dx%d/%s/%s", rows, n, typ, tr.name)
				b.Run(name+"/dot", func(b *testing.B) {
					b.SetBytes(int64(len(w)))
					for b.Loop() {
						for r := range rows {
							sink += k.Dot(n, w[r*rs:], a)
						}
					}
				})
				b.Run(name+"/matvec", func(b *testing.B) {
					out := make([]float32, rows)
					b.SetBytes(int64(len(w)))
					for b.Loop() {
						k.MatVec(n, w, rs, a, out)
					}
				})
				b.Run(name+"/rows12", func(b *testing.B) {
					out := make([]float32, 12)
					b.SetBytes(12 * int64(len(w)))
					for b.Loop() {
						for r := range rows {
							k.DotRows(n, w[r*rs:], a, k.ActRowSize(n), out)
						}
					}
				})
			}
		}
	}
}

// BenchmarkQuantizeActivations: one activation row of 4096 values; the
// throughput is float32 bytes read.
func BenchmarkQuantizeActivations(b *testing.B) {
	const n = 4096
	for _, typ := range []Type{Q4_0, Q4_K, F16} {
		for _, tr := range availableTiers() {
			k := tierKernel(b, tr, typ)
			b.Run(fmt.Sprintf("%s/%s", actName(k.Act), tr.name), func(b *testing.B) {
				x := testRow(rand.New(rand.NewPCG(3, 4)), n)
				a := make([]byte, k.ActRowSize(n))
				b.SetBytes(4 * n)
				for b.Loop() {
					k.Quantize(x, a)
				}
			})
		}
	}
}

// BenchmarkTile: a 64×576 weight block by 64 activation rows (a prefill
// tile), four activation rows per DotRows call ("rows") against 4×4
// tiles ("tile").
func BenchmarkTile(b *testing.B) {
	for _, typ := range []Type{Q4_0, Q8_0} {
		rng := rand.New(rand.NewPCG(1, 2))
		k, _ := KernelFor(typ)
		n, rows, acts := 576, 64, 64
		rs, _ := typ.RowSize(n)
		w := make([]byte, rows*rs)
		if err := Quantize(typ, testRow(rng, rows*n), w); err != nil {
			b.Fatal(err)
		}
		al := k.ActRowSize(n)
		a := make([]byte, acts*al)
		for r := 0; r < acts; r++ {
			k.Quantize(testRow(rng, n), a[r*al:])
		}
		out := make([]float32, 4)
		b.Run(typ.String()+"/rows", func(b *testing.B) {
			for b.Loop() {
				for i := 0; i < rows; i++ {
					for r := 0; r < acts; r += 4 {
						k.DotRows(n, w[i*rs:], a[r*al:], al, out)
					}
				}
			}
		})
		tiles := make([]float32, 4*acts)
		scratch := make([]byte, TileScratch(n))
		b.Run(typ.String()+"/tile", func(b *testing.B) {
			for b.Loop() {
				for i := 0; i < rows; i += 4 {
					k.Tile(n, w[i*rs:], rs, a, al, tiles, scratch)
				}
			}
		})
	}
}
