package accelcheck

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// Check is one of the package's checks.
type Check struct {
	Name string
	Run  func(t *testing.T, b accel.Backend, o Options)
}

// Checks lists every check, for a backend's tests to run in turn.
func Checks() []Check {
	return []Check{
		{"MatMul", MatMul},
		{"Embed", Embed},
		{"Elementwise", Elementwise},
		{"RoPE", RoPE},
		{"Attention", Attention},
		{"AttentionLongCache", AttentionLongCache},
		{"AttentionObserved", AttentionObserved},
		{"F16Cache", F16Cache},
		{"MatMulRowIndependent", MatMulRowIndependent},
	}
}

// The weights MatMul and Embed load: a row count that is no multiple of
// a kernel's group of rows, and five k-quant blocks a row, so that
// threads sharing a row get unequal shares. Few rows, because an emulator
// that runs a CPU thread per GPU thread pays for each.
const matRows, matCols = 13, 5 * quant.QK_K

// MatMul multiplies a weight of each of o.Weights with each of o.Batches
// rows of activations.
func MatMul(t *testing.T, b accel.Backend, o Options) {
	p := newPair(t, b, o, 1)
	for _, typ := range o.Weights {
		p.run(typ.String(), func(p *pair) {
			wg, wc := p.load(typ, matRows, matCols)
			for _, n := range o.Batches {
				x := p.alloc(p.vals(n*matCols, 1))
				out := p.alloc(make([]float32, n*matRows))
				p.gpu.MatMul(out.gpu, wg, x.gpu, n)
				p.cpu.MatMul(out.cpu, wc, x.cpu, n)
				p.same(out, o.matMulTol(n), fmt.Sprintf("%s matmul of %d rows", typ, n))
			}
		})
	}
}

// Embed gathers rows of a weight of each of o.Weights: the first, the
// last, and one twice.
func Embed(t *testing.T, b accel.Backend, o Options) {
	p := newPair(t, b, o, 2)
	ids := []int32{3, 0, matRows - 1, 3}
	for _, typ := range o.Weights {
		wg, wc := p.load(typ, matRows, matCols)
		out := p.alloc(make([]float32, len(ids)*matCols))
		p.gpu.Embed(out.gpu, wg, ids)
		p.cpu.Embed(out.cpu, wc, ids)
		p.same(out, o.Tol.Embed, typ.String()+" embed")
	}
}

// Elementwise checks RMSNorm, AddRows, Add (of all but the last few
// values), SwiGLU and Gather on rows narrower and wider than a block of
// GPU threads.
func Elementwise(t *testing.T, b accel.Backend, o Options) {
	p := newPair(t, b, o, 3)
	for _, s := range []struct{ rows, n int }{{5, 96}, {3, 1000}} {
		p.elementwise(s.rows, s.n)
	}
}

func (p *pair) elementwise(rows, n int) {
	what := func(op string) string { return fmt.Sprintf("%s of %d×%d", op, rows, n) }
	x, y, w := p.alloc(p.vals(rows*n, 1)), p.alloc(p.vals(rows*n, 1)), p.alloc(p.vals(n, 1))
	out := p.alloc(make([]float32, rows*n))

	p.gpu.RMSNorm(out.gpu, x.gpu, w.gpu, rows, 1e-5)
	p.cpu.RMSNorm(out.cpu, x.cpu, w.cpu, rows, 1e-5)
	p.same(out, p.o.Tol.RMSNorm, what("rmsnorm"))

	p.gpu.AddRows(y.gpu, w.gpu, rows)
	p.cpu.AddRows(y.cpu, w.cpu, rows)
	p.same(y, p.o.Tol.Add, what("addrows"))

	p.gpu.Add(y.gpu, x.gpu, rows*n-7)
	p.cpu.Add(y.cpu, x.cpu, rows*n-7)
	p.same(y, p.o.Tol.Add, what("add"))

	p.gpu.SwiGLU(out.gpu, x.gpu, y.gpu, rows*n)
	p.cpu.SwiGLU(out.cpu, x.cpu, y.cpu, rows*n)
	p.same(out, p.o.Tol.SwiGLU, what("swiglu"))

	idx := []int32{int32(rows - 1), 0, 2, 2}
	g := p.alloc(make([]float32, len(idx)*n))
	p.gpu.Gather(g.gpu, x.gpu, n, idx)
	p.cpu.Gather(g.cpu, x.cpu, n, idx)
	p.exact(g, what("gather"))
}

// RoPE rotates rows of several heads in both pairings, every dimension of
// small heads and all or half of large ones, at positions up to 70000
// (where an angle rounded to float32 is off by thousandths of a radian).
func RoPE(t *testing.T, b accel.Backend, o Options) {
	p := newPair(t, b, o, 4)
	near, far := []int32{0, 1, 7, 300, 4095}, []int32{0, 7, 4096, 70000}
	for _, c := range []struct {
		headDim, dims, heads int
		pos                  []int32
	}{{16, 16, 6, near}, {128, 128, 4, far}, {128, 64, 4, far}} {
		for _, neox := range []bool{false, true} {
			r := accel.NewRoPE(c.headDim, c.dims, 10000, neox, nil)
			width := c.heads * c.headDim
			x := p.alloc(p.vals(len(c.pos)*width, 1))
			p.gpu.RoPE(x.gpu, width, c.pos, r)
			p.cpu.RoPE(x.cpu, width, c.pos, r)
			p.same(x, o.Tol.RoPE, fmt.Sprintf("rope of %d of %d dims (neox %v)", c.dims, c.headDim, neox))
		}
	}
}

// attnCase is one batch of sequences attending over their caches.
type attnCase struct {
	name       string
	shape      accel.AttnShape
	past, rows []int // each sequence's cache rows before the call and rows in it
	capacity   int   // each cache's rows
}

// twoSeqCases are two sequences, one with more past rows than a GPU group
// of threads takes keys at once, in grouped-query and multi-head shapes.
func twoSeqCases() []attnCase {
	past, rows := []int{5, 300}, []int{3, 1}
	return []attnCase{
		{"gqa", accel.AttnShape{NHead: 8, NHeadKV: 2, HeadDim: 64, Scale: 1 / 8.0}, past, rows, 400},
		{"mha", accel.AttnShape{NHead: 3, NHeadKV: 3, HeadDim: 96, Scale: 0.1}, past, rows, 400},
	}
}

// Attention runs batches of sequences without observers, where a backend
// may pick faster kernels than with them.
func Attention(t *testing.T, b accel.Backend, o Options) {
	newPair(t, b, o, 5).attention(twoSeqCases(), false)
}

// AttentionLongCache runs a batch without observers over caches of 1100
// rows: decode rows that their context leaves mostly empty (for a chunked
// kernel, most chunks), and many rows, a partial last tile of them for a
// tiled kernel. It is a check of its own because an emulator of the
// kernels may take tens of seconds for it.
func AttentionLongCache(t *testing.T, b accel.Backend, o Options) {
	long := attnCase{"long cache", accel.AttnShape{NHead: 8, NHeadKV: 2, HeadDim: 64, Scale: 0.125},
		[]int{700, 3, 0, 300}, []int{1, 2, 37, 20}, 1100}
	newPair(t, b, o, 9).attention([]attnCase{long}, false)
}

// AttentionObserved runs batches of sequences with observers: each
// sequence's probabilities and scores come back as well as the output.
func AttentionObserved(t *testing.T, b accel.Backend, o Options) {
	short := attnCase{"short cache", accel.AttnShape{NHead: 6, NHeadKV: 2, HeadDim: 32, Scale: 1 / float32(math.Sqrt(32))},
		[]int{5, 0}, []int{1, 9}, 64}
	newPair(t, b, o, 6).attention(append(twoSeqCases(), short), true)
}

// attention runs each case with caches of both types.
func (p *pair) attention(cases []attnCase, observe bool) {
	for _, c := range cases {
		for _, typ := range []quant.Type{quant.F32, quant.F16} {
			p.attend(c, typ, observe)
		}
	}
}

func (p *pair) attend(c attnCase, typ quant.Type, observe bool) {
	s := c.shape
	kvDim, qDim, total := s.NHeadKV*s.HeadDim, s.NHead*s.HeadDim, 0
	for _, n := range c.rows {
		total += n
	}
	q, k, v := p.alloc(p.vals(total*qDim, 1)), p.alloc(p.vals(total*kvDim, 1)), p.alloc(p.vals(total*kvDim, 1))
	out := p.alloc(make([]float32, total*qDim))
	gs, cs := p.seqs(c, typ, observe)
	p.gpu.Attention(out.gpu, q.gpu, k.gpu, v.gpu, gs, s)
	p.cpu.Attention(out.cpu, q.cpu, k.cpu, v.cpu, cs, s)
	what := fmt.Sprintf("%s attention, %s cache", c.name, typ)
	p.same(out, p.o.Tol.Attention, what)
	if !observe {
		return
	}
	for i := range gs {
		p.near(cs[i].Probs, gs[i].Probs, p.o.Tol.Probs, fmt.Sprintf("%s: sequence %d probs", what, i))
		p.near(cs[i].Scores, gs[i].Scores, p.o.Tol.Scores, fmt.Sprintf("%s: sequence %d scores", what, i))
	}
}

// seqs makes each sequence's caches of typ, with the same random past
// rows on both backends, and, to observe, its probabilities and scores.
func (p *pair) seqs(c attnCase, typ quant.Type, observe bool) (gpu, cpu []accel.AttnSeq) {
	s := c.shape
	kvDim := s.NHeadKV * s.HeadDim
	for i, past := range c.past {
		kc, vc := p.cache(c.capacity*kvDim, typ), p.cache(c.capacity*kvDim, typ)
		pk, pv := p.vals(past*kvDim, 1), p.vals(past*kvDim, 1)
		p.gpu.WriteCache(kc.gpu, vc.gpu, kvDim, 0, pk, pv)
		p.cpu.WriteCache(kc.cpu, vc.cpu, kvDim, 0, pk, pv)
		g := accel.AttnSeq{K: kc.gpu, V: vc.gpu, Past: past, Rows: c.rows[i]}
		h := accel.AttnSeq{K: kc.cpu, V: vc.cpu, Past: past, Rows: c.rows[i]}
		if observe {
			n := s.NHead * c.rows[i] * (past + c.rows[i])
			g.Probs, g.Scores = make([]float32, n), make([]float32, n)
			h.Probs, h.Scores = make([]float32, n), make([]float32, n)
		}
		gpu, cpu = append(gpu, g), append(cpu, h)
	}
	return gpu, cpu
}

// F16Cache writes values to an f16 cache, one beyond the f16 range and
// one that is subnormal in f16, and reads them back rounded as the CPU
// rounds them.
func F16Cache(t *testing.T, b accel.Backend, o Options) {
	p := newPair(t, b, o, 7)
	c := p.cache(64, quant.F16)
	v := p.vals(32, 1)
	v[0], v[1] = 70000, 1e-6
	p.gpu.Write(c.gpu, 16, v)
	p.cpu.Write(c.cpu, 16, v)
	p.exact(c, "f16 cache")
}

// MatMulRowIndependent checks, on the backend under test alone, that a
// row's product does not depend on the rows batched with it, nor on
// whether it is alone (a decode step), so that a sequence's output does
// not depend on the others in its batch.
func MatMulRowIndependent(t *testing.T, b accel.Backend, o Options) {
	p := newPair(t, b, o, 8)
	const rows, cols, n = 9, 1280, 11
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q6_K, quant.F16} {
		w, _ := p.load(typ, rows, cols)
		xs := p.vals(n*cols, 1)
		product := func(from, to int) []float32 {
			x := p.alloc(xs[from*cols : to*cols])
			out := p.alloc(make([]float32, (to-from)*rows))
			p.gpu.MatMul(out.gpu, w, x.gpu, to-from)
			got := make([]float32, out.gpu.Len())
			p.gpu.Read(got, out.gpu, 0)
			require.NoError(p.t, accel.Check(p.gpu), "%s", typ)
			return got
		}
		all := product(0, n)
		for _, span := range [][2]int{{3, 11}, {8, 9}, {0, 1}} {
			assert.Equal(t, all[span[0]*rows:span[1]*rows], product(span[0], span[1]), "%s rows %v", typ, span)
		}
	}
}
