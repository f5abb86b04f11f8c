package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func buf(t *testing.T, b *Backend, v []float32) accel.Buffer {
	x, err := b.Alloc(len(v))
	require.NoError(t, err)
	b.Write(x, 0, v)
	return x
}

func read(b *Backend, x accel.Buffer) []float32 {
	out := make([]float32, x.Len())
	b.Read(out, x, 0)
	return out
}

// MatMul over every storage type equals the kernel's own dot products
// (same arithmetic, any batch size and thread count), and stays within the
// activation quantization's error of the float64 product of the
// dequantized weights.
func TestMatMul(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	types := []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.Q2_K, quant.Q3_K, quant.Q4_K, quant.Q5_K, quant.Q6_K}
	for _, typ := range types {
		for _, threads := range []int{1, 2, 3} {
			rows, cols, n := 7, 2*quant.QK_K, 5
			w := randVec(r, rows*cols)
			rowLen := mustRowSize(t, typ, cols)
			data := make([]byte, rows*rowLen)
			require.NoError(t, quant.Quantize(typ, w, data))
			deq := make([]float32, rows*cols)
			require.NoError(t, quant.Dequantize(typ, data, deq))
			k, err := quant.KernelFor(typ)
			require.NoError(t, err)

			b := New(threads)
			wt, err := b.Load(accel.Matrix{Name: "w", Type: typ, Rows: rows, Cols: cols, Data: data})
			require.NoError(t, err)
			xs := randVec(r, n*cols)
			dst, _ := b.Alloc(n * rows)
			b.MatMul(dst, wt, buf(t, b, xs), n)
			got := read(b, dst)
			var errSq, refSq float64
			for i := 0; i < n; i++ {
				act := make([]byte, k.ActRowSize(cols))
				x := xs[i*cols : (i+1)*cols]
				if k.Act == quant.F32 {
					require.NoError(t, quant.Quantize(quant.F32, x, act))
				} else {
					k.Quantize(x, act)
				}
				for j := 0; j < rows; j++ {
					exact := k.Dot(cols, data[j*rowLen:(j+1)*rowLen], act)
					assert.InDelta(t, exact, got[i*rows+j], 1e-4*(1+math.Abs(float64(exact))), "%s threads %d", typ, threads)
					var want float64
					for c := 0; c < cols; c++ {
						want += float64(deq[j*cols+c]) * float64(x[c])
					}
					errSq += (float64(got[i*rows+j]) - want) * (float64(got[i*rows+j]) - want)
					refSq += want * want
				}
			}
			// 8-bit activations cost about 1% (llama.cpp's own error).
			assert.Less(t, math.Sqrt(errSq/refSq), 2e-2, "%s", typ)
			b.Close()
		}
	}
}

// TestMatMulRowIndependent checks that a row's product does not depend on
// the rows batched with it, nor on whether it is alone (a decode step):
// prefill pads the batch so that every row runs the same kernel, and the
// decode mat-vec runs the tile's arithmetic. A sequence's results are so
// the same whatever else the scheduler batches it with.
func TestMatMulRowIndependent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0, quant.Q4_K} {
		rows, cols := 12, 256
		data := make([]byte, rows*mustRowSize(t, typ, cols))
		require.NoError(t, quant.Quantize(typ, randVec(r, rows*cols), data))
		b := New(2)
		wt, err := b.Load(accel.Matrix{Name: "w", Type: typ, Rows: rows, Cols: cols, Data: data})
		require.NoError(t, err)
		xs := randVec(r, 7*cols)
		product := func(from, to int) []float32 {
			dst, _ := b.Alloc((to - from) * rows)
			b.MatMul(dst, wt, buf(t, b, xs[from*cols:to*cols]), to-from)
			return read(b, dst)
		}
		all := product(0, 7)
		for _, span := range [][2]int{{5, 7}, {2, 5}, {0, 3}, {6, 7}} { // {6, 7}: one row, as a decode step
			part := product(span[0], span[1])
			require.Equal(t, all[span[0]*rows:span[1]*rows], part, "%s rows %v", typ, span)
		}
		b.Close()
	}
}

// MatMuls gives each product exactly what a MatMul of its own gives, for
// products that share an activation type (run as one loop, row counts
// that are no multiple of four included) and for those that do not (run
// one after another), whatever the batch and thread count.
func TestMatMuls(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const cols = 256
	for _, tc := range []struct {
		name  string
		types []quant.Type
		rows  []int
	}{
		{"q4_0 q/k/v", []quant.Type{quant.Q4_0, quant.Q4_0, quant.Q4_0}, []int{16, 8, 8}},
		{"q8_0 odd rows", []quant.Type{quant.Q8_0, quant.Q8_0, quant.Q8_0}, []int{7, 5, 1}},
		{"q4_k and q6_k", []quant.Type{quant.Q4_K, quant.Q6_K}, []int{9, 6}},
		{"q8_0 and q4_k", []quant.Type{quant.Q8_0, quant.Q4_K, quant.Q8_0}, []int{6, 3, 5}},
		{"f16 and f32", []quant.Type{quant.F16, quant.F32}, []int{3, 4}},
		{"one", []quant.Type{quant.Q5_0}, []int{13}},
	} {
		for _, threads := range []int{1, 2, 3} {
			for _, n := range []int{1, 2, 5} {
				b := New(threads)
				xs := buf(t, b, randVec(r, n*cols))
				var ps []accel.Product
				var want [][]float32
				for i, typ := range tc.types {
					data := make([]byte, tc.rows[i]*mustRowSize(t, typ, cols))
					require.NoError(t, quant.Quantize(typ, randVec(r, tc.rows[i]*cols), data))
					wt, err := b.Load(accel.Matrix{Name: "w", Type: typ, Rows: tc.rows[i], Cols: cols, Data: data})
					require.NoError(t, err)
					dst, _ := b.Alloc(n * tc.rows[i])
					b.MatMul(dst, wt, xs, n)
					want = append(want, read(b, dst))
					dst, _ = b.Alloc(n * tc.rows[i])
					ps = append(ps, accel.Product{Dst: dst, W: wt})
				}
				accel.MatMuls(b, xs, n, ps)
				for i, p := range ps {
					require.Equal(t, want[i], read(b, p.Dst), "%s threads %d rows %d product %d", tc.name, threads, n, i)
				}
				b.Close()
			}
		}
	}
}

func mustRowSize(t *testing.T, typ quant.Type, n int) int {
	s, err := typ.RowSize(n)
	require.NoError(t, err)
	return s
}

func TestLoadRejectsBadSizes(t *testing.T) {
	b := New(1)
	_, err := b.Load(accel.Matrix{Name: "w", Type: quant.Q4_0, Rows: 2, Cols: 32, Data: make([]byte, 35)})
	assert.ErrorContains(t, err, "bytes")
	_, err = b.Load(accel.Matrix{Name: "w", Type: quant.Q4_0, Rows: 2, Cols: 31, Data: nil})
	assert.Error(t, err)
	_, err = b.AllocCache(4, quant.Q8_0)
	assert.Error(t, err)
}

// RoPE at position 0 is the identity, keeps norms, and rotates the right
// pairs in each layout.
func TestRoPE(t *testing.T) {
	b := New(1)
	for _, neox := range []bool{false, true} {
		r := accel.NewRoPE(8, 8, 10000, neox, nil)
		v := []float32{1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8}
		x := buf(t, b, v)
		b.RoPE(x, 16, []int32{0}, r)
		assert.Equal(t, v[:16], read(b, x)[:16], "position 0")

		x = buf(t, b, []float32{1, 0, 0, 0, 0, 0, 0, 0})
		b.RoPE(x, 8, []int32{1}, r)
		got := read(b, x)
		// Pair 0 has frequency 1: (1, 0) turns by one radian into
		// (cos 1, sin 1), found at index 1 (adjacent) or 4 (NeoX).
		partner := 1
		if neox {
			partner = 4
		}
		assert.InDelta(t, math.Cos(1), got[0], 1e-6)
		assert.InDelta(t, math.Sin(1), got[partner], 1e-6)
	}
	// Frequency factors divide the frequency.
	x := buf(t, b, []float32{1, 0})
	b.RoPE(x, 2, []int32{2}, accel.NewRoPE(2, 2, 10000, false, []float32{2}))
	got := read(b, x)
	assert.InDelta(t, math.Cos(1), got[0], 1e-6)
}

// Attention equals a naive float64 computation, with grouped heads, two
// sequences and a cache that already holds rows.
func TestAttention(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	shape := accel.AttnShape{NHead: 4, NHeadKV: 2, HeadDim: 8, Scale: 1 / float32(math.Sqrt(8))}
	kvDim, qDim := 16, 32
	for _, cacheType := range []quant.Type{quant.F32, quant.F16} {
		b := New(2)
		past := []int{3, 0}
		rowsOf := []int{2, 3}
		var seqs []accel.AttnSeq
		var caches [][2][]float32
		for s := range past {
			kc, _ := b.AllocCache(8*kvDim, cacheType)
			vc, _ := b.AllocCache(8*kvDim, cacheType)
			pk, pv := randVec(r, past[s]*kvDim), randVec(r, past[s]*kvDim)
			b.WriteCache(kc, vc, kvDim, 0, pk, pv)
			seqs = append(seqs, accel.AttnSeq{K: kc, V: vc, Past: past[s], Rows: rowsOf[s], Probs: make([]float32, shape.NHead*rowsOf[s]*(past[s]+rowsOf[s]))})
			caches = append(caches, [2][]float32{pk, pv})
		}
		q, k, v := randVec(r, 5*qDim), randVec(r, 5*kvDim), randVec(r, 5*kvDim)
		out, _ := b.Alloc(5 * qDim)
		b.Attention(out, buf(t, b, q), buf(t, b, k), buf(t, b, v), seqs, shape)
		got := read(b, out)

		tol := 1e-5
		if cacheType == quant.F16 {
			tol = 5e-3
		}
		row := 0
		for s, sq := range seqs {
			keys := append(append([]float32{}, caches[s][0]...), k[row*kvDim:(row+sq.Rows)*kvDim]...)
			vals := append(append([]float32{}, caches[s][1]...), v[row*kvDim:(row+sq.Rows)*kvDim]...)
			for i := 0; i < sq.Rows; i++ {
				for h := 0; h < shape.NHead; h++ {
					kvh := h / 2
					n := sq.Past + i + 1
					scores := make([]float64, n)
					var m, sum float64 = math.Inf(-1), 0
					for j := range scores {
						for d := 0; d < 8; d++ {
							scores[j] += float64(q[(row+i)*qDim+h*8+d]) * float64(keys[j*kvDim+kvh*8+d])
						}
						scores[j] *= float64(shape.Scale)
						m = math.Max(m, scores[j])
					}
					for j := range scores {
						scores[j] = math.Exp(scores[j] - m)
						sum += scores[j]
					}
					for d := 0; d < 8; d++ {
						var want float64
						for j := range scores {
							want += scores[j] / sum * float64(vals[j*kvDim+kvh*8+d])
						}
						assert.InDelta(t, want, got[(row+i)*qDim+h*8+d], tol)
					}
					p := sq.Probs[(h*sq.Rows+i)*(sq.Past+sq.Rows):][:sq.Past+sq.Rows]
					for j := range p {
						if j < n {
							assert.InDelta(t, scores[j]/sum, p[j], tol)
						} else {
							assert.Zero(t, p[j], "no probability past the causal edge")
						}
					}
				}
			}
			row += sq.Rows
		}
	}
}

func TestElementwise(t *testing.T) {
	b := New(2)
	x := buf(t, b, []float32{1, 2, 3, 4, 5, 6})
	b.AddRows(x, buf(t, b, []float32{10, 20, 30}), 2)
	assert.Equal(t, []float32{11, 22, 33, 14, 25, 36}, read(b, x))
	b.Add(x, buf(t, b, []float32{1, 1, 1, 1, 1, 1}), 4)
	assert.Equal(t, []float32{12, 23, 34, 15, 25, 36}, read(b, x))

	g, u, d := buf(t, b, []float32{0, 1, -1}), buf(t, b, []float32{2, 2, 2}), buf(t, b, make([]float32, 3))
	b.SwiGLU(d, g, u, 3)
	silu := func(v float64) float64 { return v / (1 + math.Exp(-v)) }
	assert.InDeltaSlice(t, []float64{0, 2 * silu(1), 2 * silu(-1)}, toF64(read(b, d)), 1e-6)

	n := buf(t, b, []float32{3, 4, 0, 0})
	b.RMSNorm(n, n, buf(t, b, []float32{1, 2}), 2, 1e-6)
	got := read(b, n)
	rms := math.Sqrt(12.5 + 1e-6)
	assert.InDeltaSlice(t, []float64{3 / rms, 8 / rms}, toF64(got[:2]), 1e-6)
	assert.Equal(t, []float32{0, 0}, got[2:], "eps keeps a zero row finite")

	src := buf(t, b, []float32{1, 2, 3, 4, 5, 6})
	dst, _ := b.Alloc(4)
	b.Gather(dst, src, 2, []int32{2, 0})
	assert.Equal(t, []float32{5, 6, 1, 2}, read(b, dst))

	data := make([]byte, 24)
	require.NoError(t, quant.Quantize(quant.F32, []float32{1, 2, 3, 4, 5, 6}, data))
	table, err := b.Load(accel.Matrix{Name: "e", Type: quant.F32, Rows: 3, Cols: 2, Data: data})
	require.NoError(t, err)
	b.Embed(dst, table, []int32{1, 1})
	assert.Equal(t, []float32{3, 4, 3, 4}, read(b, dst))
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
