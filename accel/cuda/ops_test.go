package cuda

// The operation tests: each backend operation against accel/cpu on random
// data. They run on a real GPU (gpu_test.go) and under the CPU emulator of
// the kernels (emu_test.go), from the same code.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/quant"
)

// both holds the backend under test and the CPU backend.
type both struct {
	t   *testing.T
	gpu *Backend
	cpu *cpu.Backend
	// launched counts a kernel's launches where the device can (the
	// emulator); nil on a GPU.
	launched func(kernel string) int
}

func newBoth(t *testing.T, gpu *Backend, launched func(string) int) *both {
	c := cpu.New(1)
	t.Cleanup(func() { c.Close() })
	return &both{t: t, gpu: gpu, cpu: c, launched: launched}
}

// pair holds the same buffer on both backends.
type pair struct {
	g, c accel.Buffer
}

func (b *both) buf(vals []float32) pair {
	g, err := b.gpu.Alloc(len(vals))
	require.NoError(b.t, err)
	c, err := b.cpu.Alloc(len(vals))
	require.NoError(b.t, err)
	b.gpu.Write(g, 0, vals)
	b.cpu.Write(c, 0, vals)
	return pair{g, c}
}

// close asserts that both backends hold p within tol (relative L2).
func (b *both) close(p pair, tol float64, what string) {
	g, c := make([]float32, p.g.Len()), make([]float32, p.c.Len())
	b.gpu.Read(g, p.g, 0)
	b.cpu.Read(c, p.c, 0)
	require.NoError(b.t, b.gpu.Err())
	l2 := fixture.RelL2(g, c)
	b.t.Logf("%s: rel L2 %.2e", what, l2)
	assert.LessOrEqual(b.t, l2, tol, what)
}

// cache returns key and value caches of capacity rows on both backends,
// their first past rows random and the same on both.
func (b *both) cache(rng *rand.Rand, capacity, kvDim, past int, typ quant.Type) (kc, vc pair) {
	var err error
	for _, p := range []*pair{&kc, &vc} {
		p.g, err = b.gpu.AllocCache(capacity*kvDim, typ)
		require.NoError(b.t, err)
		p.c, err = b.cpu.AllocCache(capacity*kvDim, typ)
		require.NoError(b.t, err)
	}
	pk, pv := randVals(rng, past*kvDim, 1), randVals(rng, past*kvDim, 1)
	b.gpu.WriteCache(kc.g, vc.g, kvDim, 0, pk, pv)
	b.cpu.WriteCache(kc.c, vc.c, kvDim, 0, pk, pv)
	return kc, vc
}

// expectLaunches asserts the launch counts where the device keeps them.
func (b *both) expectLaunches(want map[string]int) {
	if b.launched == nil {
		return
	}
	for k, n := range want {
		assert.Equal(b.t, n, b.launched(k), "launches of %s", k)
	}
}

func randVals(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64()) * scale
	}
	return v
}

// checkMatMul multiplies a weight of every type with ns rows of
// activations (up to gemmRows the mat-vec kernels, with the activations
// rounded by actq8a or actq8k; above, the GEMM in the backend's mode) and,
// with embed, gathers embeddings from it.
func checkMatMul(b *both, ns []int, embed bool) {
	rng := rand.New(rand.NewPCG(1, 2))
	const rows, cols = 77, 512
	types := []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.Q4_K, quant.Q5_K, quant.Q6_K}
	t := b.t
	for _, typ := range types {
		t.Run(typ.String(), func(t *testing.T) {
			b.t = t
			size, err := typ.RowSize(cols)
			require.NoError(t, err)
			data := make([]byte, rows*size)
			require.NoError(t, quant.Quantize(typ, randVals(rng, rows*cols, 0.5), data))
			m := accel.Matrix{Name: "w", Type: typ, Rows: rows, Cols: cols, Data: data}
			wg, err := b.gpu.Load(m)
			require.NoError(t, err)
			wc, err := b.cpu.Load(m)
			require.NoError(t, err)
			for _, n := range ns {
				x := b.buf(randVals(rng, n*cols, 1))
				out := b.buf(make([]float32, n*rows))
				b.gpu.MatMul(out.g, wg, x.g, n)
				b.cpu.MatMul(out.c, wc, x.c, n)
				tol := 1e-5
				if n > gemmRows && b.gpu.info.GEMM != "fp32" {
					tol = 2e-3 // f16 or TF32 inputs: 11 significant bits
				}
				b.close(out, tol, fmt.Sprintf("%s matmul of %d rows", typ, n))
			}
			if embed {
				ids := []int32{3, 0, rows - 1, 3, 40}
				emb := b.buf(make([]float32, len(ids)*cols))
				b.gpu.Embed(emb.g, wg, ids)
				b.cpu.Embed(emb.c, wc, ids)
				b.close(emb, 1e-7, typ.String()+" embed")
			}
		})
	}
	b.t = t
}

func checkElementwise(b *both) {
	rng := rand.New(rand.NewPCG(3, 4))
	const rows, n = 5, 96
	x, y, w := b.buf(randVals(rng, rows*n, 1)), b.buf(randVals(rng, rows*n, 1)), b.buf(randVals(rng, n, 1))

	out := b.buf(make([]float32, rows*n))
	b.gpu.RMSNorm(out.g, x.g, w.g, rows, 1e-5)
	b.cpu.RMSNorm(out.c, x.c, w.c, rows, 1e-5)
	b.close(out, 1e-6, "rmsnorm")

	b.gpu.Add(x.g, y.g, rows*n-7)
	b.cpu.Add(x.c, y.c, rows*n-7)
	b.close(x, 1e-7, "add")

	b.gpu.AddRows(y.g, w.g, rows)
	b.cpu.AddRows(y.c, w.c, rows)
	b.close(y, 1e-7, "addrows")

	b.gpu.SwiGLU(out.g, x.g, y.g, rows*n)
	b.cpu.SwiGLU(out.c, x.c, y.c, rows*n)
	b.close(out, 1e-5, "swiglu")

	idx := []int32{4, 0, 2, 2}
	g := b.buf(make([]float32, len(idx)*n))
	b.gpu.Gather(g.g, x.g, n, idx)
	b.cpu.Gather(g.c, x.c, n, idx)
	b.close(g, 0, "gather")

	for _, neox := range []bool{false, true} {
		r := accel.NewRoPE(16, 16, 10000, neox, nil)
		pos := []int32{0, 1, 7, 300, 4095}
		v := b.buf(randVals(rng, len(pos)*n, 1))
		b.gpu.RoPE(v.g, n, pos, r)
		b.cpu.RoPE(v.c, n, pos, r)
		b.close(v, 1e-6, fmt.Sprintf("rope (neox %v)", neox))
	}
}

// checkAttention: attention of two sequences with earlier rows in their
// caches, grouped heads, both cache types, with probabilities and scores
// handed back (the one-pass kernel).
func checkAttention(b *both) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := accel.AttnShape{NHead: 6, NHeadKV: 2, HeadDim: 32, Scale: 1 / float32(math.Sqrt(32))}
	kvDim, qDim := s.NHeadKV*s.HeadDim, s.NHead*s.HeadDim
	for _, typ := range []quant.Type{quant.F32, quant.F16} {
		const capacity = 64
		past := []int{5, 0}
		rows := []int{1, 9}
		total := rows[0] + rows[1]
		q, k, v := b.buf(randVals(rng, total*qDim, 1)), b.buf(randVals(rng, total*kvDim, 1)), b.buf(randVals(rng, total*kvDim, 1))
		out := b.buf(make([]float32, total*qDim))
		var gs, cs []accel.AttnSeq
		var probs, scores [][]float32
		for i := range past {
			kc, vc := b.cache(rng, capacity, kvDim, past[i], typ)
			n := s.NHead * rows[i] * (past[i] + rows[i])
			gp, gsc, cp, csc := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
			probs = append(probs, gp, cp)
			scores = append(scores, gsc, csc)
			gs = append(gs, accel.AttnSeq{K: kc.g, V: vc.g, Past: past[i], Rows: rows[i], Probs: gp, Scores: gsc})
			cs = append(cs, accel.AttnSeq{K: kc.c, V: vc.c, Past: past[i], Rows: rows[i], Probs: cp, Scores: csc})
		}
		b.gpu.Attention(out.g, q.g, k.g, v.g, gs, s)
		b.cpu.Attention(out.c, q.c, k.c, v.c, cs, s)
		b.close(out, 1e-5, "attention "+typ.String())
		for i := 0; i < len(probs); i += 2 {
			assert.LessOrEqual(b.t, fixture.RelL2(probs[i], probs[i+1]), 1e-5, "probs")
			assert.LessOrEqual(b.t, fixture.RelL2(scores[i], scores[i+1]), 1e-5, "scores")
		}
	}
	b.expectLaunches(map[string]int{"attention": 4, "attn_split": 0, "attn_tiled": 0})
}

// checkAttentionNoObserver: without observers, decode rows over a long
// cache take the chunked kernels (attn_split, attn_combine), where a
// short context in a long cache leaves most chunks empty, and many rows
// the tiled kernel (a partial last tile of rows, keys past a row's end
// masked).
func checkAttentionNoObserver(b *both) {
	rng := rand.New(rand.NewPCG(9, 10))
	s := accel.AttnShape{NHead: 8, NHeadKV: 2, HeadDim: 64, Scale: 0.125}
	kvDim, qDim := s.NHeadKV*s.HeadDim, s.NHead*s.HeadDim
	const capacity = 1100
	for _, typ := range []quant.Type{quant.F32, quant.F16} {
		past, rows := []int{700, 3, 0, 300}, []int{1, 2, 37, 20}
		total := rows[0] + rows[1] + rows[2] + rows[3]
		q, k, v := b.buf(randVals(rng, total*qDim, 1)), b.buf(randVals(rng, total*kvDim, 1)), b.buf(randVals(rng, total*kvDim, 1))
		out := b.buf(make([]float32, total*qDim))
		var gs, cs []accel.AttnSeq
		for i := range past {
			kc, vc := b.cache(rng, capacity, kvDim, past[i], typ)
			gs = append(gs, accel.AttnSeq{K: kc.g, V: vc.g, Past: past[i], Rows: rows[i]})
			cs = append(cs, accel.AttnSeq{K: kc.c, V: vc.c, Past: past[i], Rows: rows[i]})
		}
		b.gpu.Attention(out.g, q.g, k.g, v.g, gs, s)
		b.cpu.Attention(out.c, q.c, k.c, v.c, cs, s)
		b.close(out, 1e-5, "attention without observers "+typ.String())
	}
	b.expectLaunches(map[string]int{"attn_split": 4, "attn_combine": 4, "attn_tiled": 4, "attention": 0})
}
