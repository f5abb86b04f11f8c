package metal

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/quant"
)

// These tests compare every operation with the CPU backend on random data:
// on the Metal device where there is one, otherwise on the emulator of the
// kernels (emu_test.go).

// pair is the Metal backend and the CPU backend it is compared with.
type pair struct {
	t   *testing.T
	gpu *Backend
	cpu *cpu.Backend
}

func newPair(t *testing.T) *pair {
	g, err := New()
	if err != nil {
		if testing.Short() {
			t.Skipf("%v; the emulator takes seconds, and the run without -short covers it", err)
		}
		t.Logf("%v: testing on the emulator", err)
		if g, err = newBackend(newEmuDevice(t)); err != nil {
			t.Fatal(err)
		}
	}
	c := cpu.New(2)
	t.Cleanup(func() {
		assert.NoError(t, g.Close())
		c.Close()
	})
	return &pair{t: t, gpu: g, cpu: c}
}

// bufs is one buffer on each backend.
type bufs struct{ g, c accel.Buffer }

// alloc makes a buffer on both backends holding v.
func (p *pair) alloc(v []float32) bufs {
	g, err := p.gpu.Alloc(len(v))
	require.NoError(p.t, err)
	c, err := p.cpu.Alloc(len(v))
	require.NoError(p.t, err)
	p.gpu.Write(g, 0, v)
	p.cpu.Write(c, 0, v)
	return bufs{g, c}
}

// cache makes a KV cache of n values of typ on both backends.
func (p *pair) cache(n int, typ quant.Type) bufs {
	g, err := p.gpu.AllocCache(n, typ)
	require.NoError(p.t, err)
	c, err := p.cpu.AllocCache(n, typ)
	require.NoError(p.t, err)
	return bufs{g, c}
}

// weights loads m on both backends.
func (p *pair) weights(m accel.Matrix) (g, c accel.Weight) {
	g, err := p.gpu.Load(m)
	require.NoError(p.t, err)
	c, err = p.cpu.Load(m)
	require.NoError(p.t, err)
	return g, c
}

// same checks that the first n values of b agree within tol, relative to
// the magnitude of the CPU's values.
func (p *pair) same(b bufs, n int, tol float64, what string) {
	g, c := make([]float32, n), make([]float32, n)
	p.gpu.Read(g, b.g, 0)
	p.cpu.Read(c, b.c, 0)
	near(p.t, c, g, tol, what)
	require.NoError(p.t, p.gpu.err, what)
}

func near(t *testing.T, want, got []float32, tol float64, what string) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		if d := math.Abs(float64(want[i] - got[i])); want[i] != got[i] && !(d <= tol*(1+math.Abs(float64(want[i])))) {
			t.Fatalf("%s: value %d: cpu %g, metal %g", what, i, want[i], got[i])
		}
	}
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func TestName(t *testing.T) {
	p := newPair(t)
	assert.True(t, strings.HasPrefix(p.gpu.Name(), "metal (") && strings.HasSuffix(p.gpu.Name(), ")"), p.gpu.Name())
}

func TestLoadRejectsUnsupported(t *testing.T) {
	p := newPair(t)
	for _, typ := range []quant.Type{quant.BF16, quant.Q2_K, quant.Q3_K, quant.Q8_K} {
		size, err := typ.RowSize(256)
		require.NoError(t, err)
		_, err = p.gpu.Load(accel.Matrix{Name: "w", Type: typ, Rows: 1, Cols: 256, Data: make([]byte, size)})
		assert.Error(t, err, "%s", typ)
	}
	_, err := p.gpu.Load(accel.Matrix{Name: "w", Type: quant.Q4_0, Rows: 2, Cols: 32, Data: make([]byte, 18)})
	assert.Error(t, err)
}

// MatMul and Embed of every supported type against the CPU's, for a
// decode row, a batch that is not a multiple of MM_NR, and one that is.
func TestMatMulAndEmbed(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(1, 2))
	for typ := range weightKinds {
		rows, cols := 13, 5*quant.QK_K // 5 k-quant blocks: the lanes of matmul_k get unequal shares
		size, err := typ.RowSize(cols)
		require.NoError(t, err)
		data := make([]byte, rows*size)
		require.NoError(t, quant.Quantize(typ, randVec(r, rows*cols), data))
		wg, wc := p.weights(accel.Matrix{Name: "w", Type: typ, Rows: rows, Cols: cols, Data: data})
		for _, n := range []int{1, 5, 16} {
			x := p.alloc(randVec(r, n*cols))
			dst := p.alloc(make([]float32, n*rows))
			p.gpu.MatMul(dst.g, wg, x.g, n)
			p.cpu.MatMul(dst.c, wc, x.c, n)
			// Float sums in another order: 1280 float32 products differ
			// by up to about 2e-5 relative (quantized weights sum blocks
			// exactly and only their scaled totals differ).
			p.same(dst, n*rows, 2e-4, typ.String()+" matmul")
		}
		ids := []int32{3, 0, 12, 3}
		dst := p.alloc(make([]float32, len(ids)*cols))
		p.gpu.Embed(dst.g, wg, ids)
		p.cpu.Embed(dst.c, wc, ids)
		p.same(dst, len(ids)*cols, 1e-6, typ.String()+" embed")
	}
}

func TestElementwise(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(3, 4))
	const rows, n = 3, 1000
	x, y, z := p.alloc(randVec(r, rows*n)), p.alloc(randVec(r, rows*n)), p.alloc(randVec(r, rows*n))
	w := p.alloc(randVec(r, n))

	p.gpu.RMSNorm(z.g, x.g, w.g, rows, 1e-5)
	p.cpu.RMSNorm(z.c, x.c, w.c, rows, 1e-5)
	p.same(z, rows*n, 1e-5, "rmsnorm")

	p.gpu.AddRows(y.g, w.g, rows)
	p.cpu.AddRows(y.c, w.c, rows)
	p.same(y, rows*n, 1e-6, "addrows")

	p.gpu.Add(y.g, x.g, rows*n-7)
	p.cpu.Add(y.c, x.c, rows*n-7)
	p.same(y, rows*n, 1e-6, "add")

	p.gpu.SwiGLU(z.g, x.g, y.g, rows*n)
	p.cpu.SwiGLU(z.c, x.c, y.c, rows*n)
	p.same(z, rows*n, 1e-5, "swiglu")

	idx := []int32{2, 0, 2}
	g := p.alloc(make([]float32, len(idx)*n))
	p.gpu.Gather(g.g, x.g, n, idx)
	p.cpu.Gather(g.c, x.c, n, idx)
	p.same(g, len(idx)*n, 0, "gather")
}

func TestRoPE(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(5, 6))
	const headDim, heads = 128, 4
	pos := []int32{0, 7, 4096, 70000}
	for _, neox := range []bool{false, true} {
		for _, dims := range []int{headDim, headDim / 2} {
			rp := accel.NewRoPE(headDim, dims, 10000, neox, nil)
			x := p.alloc(randVec(r, len(pos)*heads*headDim))
			p.gpu.RoPE(x.g, heads*headDim, pos, rp)
			p.cpu.RoPE(x.c, heads*headDim, pos, rp)
			p.same(x, len(pos)*heads*headDim, 1e-5, "rope")
		}
	}
}

// Attention over two sequences with past rows already in the caches
// (one past a threadgroup's worth of keys), grouped-query and multi-head,
// both cache types, with and without the observer outputs.
func TestAttention(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(7, 8))
	gqa := accel.AttnShape{NHead: 8, NHeadKV: 2, HeadDim: 64, Scale: 1 / 8.0}
	mha := accel.AttnShape{NHead: 3, NHeadKV: 3, HeadDim: 96, Scale: 0.1}
	p.attention(r, gqa, quant.F32, false)
	p.attention(r, gqa, quant.F16, true)
	p.attention(r, mha, quant.F32, true)
	p.attention(r, mha, quant.F16, false)
}

func (p *pair) attention(r *rand.Rand, s accel.AttnShape, typ quant.Type, observe bool) {
	kvDim, qDim := s.NHeadKV*s.HeadDim, s.NHead*s.HeadDim
	past, rows, capacity := []int{5, 300}, []int{3, 1}, 400
	total := rows[0] + rows[1]
	q, k, v := p.alloc(randVec(r, total*qDim)), p.alloc(randVec(r, total*kvDim)), p.alloc(randVec(r, total*kvDim))
	out := p.alloc(make([]float32, total*qDim))
	var gs, cs []accel.AttnSeq
	for i := range past {
		kc, vc := p.cache(capacity*kvDim, typ), p.cache(capacity*kvDim, typ)
		pk, pv := randVec(r, past[i]*kvDim), randVec(r, past[i]*kvDim)
		p.gpu.WriteCache(kc.g, vc.g, kvDim, 0, pk, pv)
		p.cpu.WriteCache(kc.c, vc.c, kvDim, 0, pk, pv)
		g := accel.AttnSeq{K: kc.g, V: vc.g, Past: past[i], Rows: rows[i]}
		c := accel.AttnSeq{K: kc.c, V: vc.c, Past: past[i], Rows: rows[i]}
		if observe {
			n := s.NHead * rows[i] * (past[i] + rows[i])
			g.Probs, g.Scores = make([]float32, n), make([]float32, n)
			c.Probs, c.Scores = make([]float32, n), make([]float32, n)
		}
		gs, cs = append(gs, g), append(cs, c)
	}
	p.gpu.Attention(out.g, q.g, k.g, v.g, gs, s)
	p.cpu.Attention(out.c, q.c, k.c, v.c, cs, s)
	what := fmt.Sprintf("%s attention %+v", typ, s)
	p.same(out, total*qDim, 1e-4, what)
	for i := range gs {
		near(p.t, cs[i].Probs, gs[i].Probs, 1e-5, what+" probs")
		near(p.t, cs[i].Scores, gs[i].Scores, 1e-4, what+" scores")
	}
}

// Values written to an f16 cache read back rounded as the CPU rounds them.
func TestF16Cache(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(9, 10))
	c := p.cache(64, quant.F16)
	v := randVec(r, 32)
	v[0], v[1] = 70000, 1e-6 // beyond the f16 range; an f16 subnormal
	p.gpu.Write(c.g, 16, v)
	p.cpu.Write(c.c, 16, v)
	p.same(c, 64, 0, "f16 cache")
}

// A row's product does not depend on the rows batched with it, nor on
// whether it is alone (a decode step): each simdgroup sums its own row's
// blocks in the same order whatever its neighbours.
func TestMatMulRowIndependent(t *testing.T) {
	p := newPair(t)
	r := rand.New(rand.NewPCG(11, 12))
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q6_K, quant.F16} {
		rows, cols, n := 9, 1280, 11
		size, err := typ.RowSize(cols)
		require.NoError(t, err)
		data := make([]byte, rows*size)
		require.NoError(t, quant.Quantize(typ, randVec(r, rows*cols), data))
		w, _ := p.weights(accel.Matrix{Name: "w", Type: typ, Rows: rows, Cols: cols, Data: data})
		xs := randVec(r, n*cols)
		product := func(from, to int) []float32 {
			x := p.alloc(xs[from*cols : to*cols])
			dst := p.alloc(make([]float32, (to-from)*rows))
			p.gpu.MatMul(dst.g, w, x.g, to-from)
			out := make([]float32, (to-from)*rows)
			p.gpu.Read(out, dst.g, 0)
			return out
		}
		all := product(0, n)
		for _, span := range [][2]int{{3, 11}, {8, 9}, {0, 1}} {
			assert.Equal(t, all[span[0]*rows:span[1]*rows], product(span[0], span[1]), "%s rows %v", typ, span)
		}
	}
}

// Bad arguments do not panic: the operation is skipped and the failure
// comes back from the next Alloc, Load and Close.
func TestBadArgumentsAreErrors(t *testing.T) {
	cases := map[string]func(b *Backend, x, y accel.Buffer){
		"embed id": func(b *Backend, x, _ accel.Buffer) {
			data := make([]byte, 2*18)
			w, err := b.Load(accel.Matrix{Name: "w", Type: quant.Q4_0, Rows: 2, Cols: 32, Data: data})
			require.NoError(t, err)
			b.Embed(x, w, []int32{2})
		},
		"short dst":   func(b *Backend, x, y accel.Buffer) { b.Add(x, y, 100) },
		"gather self": func(b *Backend, x, _ accel.Buffer) { b.Gather(x, x, 4, []int32{0}) },
		"freed": func(b *Backend, x, y accel.Buffer) {
			b.Free(y)
			b.Add(x, y, 4)
		},
		"rope dims": func(b *Backend, x, _ accel.Buffer) {
			b.RoPE(x, 8, []int32{0}, accel.RoPE{HeadDim: 4, Dims: 8, Freqs: make([]float64, 4)})
		},
		"attention shape": func(b *Backend, x, _ accel.Buffer) {
			b.Attention(x, x, x, x, nil, accel.AttnShape{NHead: 3, NHeadKV: 2, HeadDim: 4})
		},
		"observer size": func(b *Backend, x, y accel.Buffer) {
			kc, err := b.AllocCache(64, quant.F16)
			require.NoError(t, err)
			seq := accel.AttnSeq{K: kc, V: kc, Rows: 1, Probs: make([]float32, 1)}
			b.Attention(x, x, y, y, []accel.AttnSeq{seq}, accel.AttnShape{NHead: 2, NHeadKV: 1, HeadDim: 4, Scale: 0.5})
		},
	}
	for name, op := range cases {
		p := newPair(t)
		x, err := p.gpu.Alloc(32)
		require.NoError(t, err)
		y, err := p.gpu.Alloc(8)
		require.NoError(t, err)
		assert.NotPanics(t, func() { op(p.gpu, x, y) }, name)
		_, err = p.gpu.Alloc(1)
		assert.ErrorIs(t, err, p.gpu.err, name)
		assert.Error(t, err, name)
		p.gpu.err = nil // so that the cleanup's Close passes
	}
}
