package cpu

import (
	"unsafe"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// actTile is the number of activation rows a matmul worker multiplies with
// each weight row before moving to the next: the tile stays in cache while
// the worker's weight rows stream past it, so prefill reads the weights
// rows/actTile times rather than once per token.
const actTile = 64

// MatMul implements accel.Backend: MatMuls with one product.
func (b *Backend) MatMul(dst accel.Buffer, w accel.Weight, x accel.Buffer, rows int) {
	b.MatMuls(x, rows, []accel.Product{{Dst: dst, W: w}})
}

// maxProducts is the most products MatMuls runs as one loop: q, k and v.
const maxProducts = 3

// MatMuls implements accel.MultiMatMuler. The input rows are first
// quantized into the kernels' activation type (8-bit for quantized
// weights, as llama.cpp does), once for all the products, then each worker
// takes a range of the products' weight rows laid end to end. Products
// whose kernels want different activation types run one after another.
func (b *Backend) MatMuls(x accel.Buffer, rows int, ps []accel.Product) {
	if len(ps) == 0 {
		return
	}
	if len(ps) > maxProducts || !sameAct(ps) {
		for _, p := range ps {
			b.MatMuls(x, rows, []accel.Product{p})
		}
		return
	}
	var wa [maxProducts]*weight
	ws := wa[:len(ps)]
	for i, p := range ps {
		ws[i] = p.W.(*weight)
	}
	act := b.activations(ws, x.(*buffer).f[:rows*ws[0].m.Cols], rows)
	b.mm = matmulsTask{n: len(ps)}
	at := 0
	for i, p := range ps {
		b.mm.parts[i] = matmulTask{b: b, w: ws[i], dst: p.Dst.(*buffer).f, rows: rows, act: act}
		b.mm.start[i] = at
		at += (ws[i].m.Rows + 3) &^ 3
	}
	b.pool.runGrain(&b.mm, at, 4)
}

// sameAct reports whether ps's weights take activations of one type.
func sameAct(ps []accel.Product) bool {
	for _, p := range ps[1:] {
		if p.W.(*weight).kernel.Act != ps[0].W.(*weight).kernel.Act {
			return false
		}
	}
	return true
}

// activations returns x's rows in the activation type of ws's kernels.
// Where a kernel has a 4×4 tile, the rows are followed by copies of the
// last one up to a multiple of four, so that every row goes through the
// tile kernel and its results do not depend on where it falls in the
// batch.
func (b *Backend) activations(ws []*weight, xs []float32, rows int) []byte {
	wt := ws[0]
	if wt.kernel.Act == quant.F32 {
		return f32ToBytes(xs)
	}
	al := wt.actRowLen
	padded := rows
	for _, w := range ws {
		if w.kernel.Tile != nil && rows > 1 {
			padded = (rows + 3) &^ 3
		}
	}
	if cap(b.act) < padded*al {
		b.act = make([]byte, padded*al)
	}
	act := b.act[:padded*al]
	b.aq = quantizeTask{w: wt, x: xs, act: act}
	b.pool.run(&b.aq, rows)
	for r := rows; r < padded; r++ {
		copy(act[r*al:(r+1)*al], act[(rows-1)*al:rows*al])
	}
	return act
}

type quantizeTask struct {
	w   *weight
	x   []float32
	act []byte
}

func (q *quantizeTask) run(_, lo, hi int) {
	cols, al := q.w.m.Cols, q.w.actRowLen
	for r := lo; r < hi; r++ {
		q.w.kernel.Quantize(q.x[r*cols:(r+1)*cols], q.act[r*al:(r+1)*al])
	}
}

type matmulTask struct {
	b    *Backend
	w    *weight
	dst  []float32
	act  []byte
	rows int
}

// matmulsTask runs the products of one input as one loop over their
// weight rows laid end to end. Each product's rows start at a multiple of
// four (the loop skips the gaps), so that with ranges cut at multiples of
// four a worker's share of a product starts on a tile boundary, as it
// would in a MatMul of its own, and the results are the same.
type matmulsTask struct {
	parts [maxProducts]matmulTask
	start [maxProducts]int
	n     int
}

func (m *matmulsTask) run(t, lo, hi int) {
	for i := range m.n {
		p := &m.parts[i]
		s := m.start[i]
		if l, h := max(lo, s), min(hi, s+p.w.m.Rows); l < h {
			p.run(t, l-s, h-s)
		}
	}
}

func (m *matmulTask) run(t, lo, hi int) {
	w := m.w
	if m.rows == 1 {
		// Decode: one activation row against a range of weight rows,
		// several weight rows per kernel call.
		w.kernel.MatVec(w.m.Cols, w.m.Data[lo*w.rowLen:hi*w.rowLen], w.rowLen, m.act, m.dst[lo:hi])
		return
	}
	for r0 := 0; r0 < m.rows; r0 += actTile {
		r1 := min(r0+actTile, m.rows)
		i := lo
		if w.kernel.Tile != nil {
			i = m.tiles(t, lo, hi, r0, r1)
		}
		m.dotRows(t, i, hi, r0, r1)
	}
}

// tiles computes weight rows [lo, hi) by activation rows [r0, r1) four
// weight rows at a time (Kernel.Tile), as far as whole groups of four
// weight rows go, and returns the first weight row it did not compute.
// The activation rows are padded to a multiple of four (see activations).
func (m *matmulTask) tiles(t, lo, hi, r0, r1 int) int {
	w, n, al := m.w, m.w.m.Rows, m.w.actRowLen
	rows := (r1 - r0 + 3) &^ 3
	out := m.b.scratchFor(t, 4*rows)
	panel := sized(&m.b.panels[t], quant.TileScratch(w.m.Cols))
	i := lo
	for ; i+4 <= hi; i += 4 {
		w.kernel.Tile(w.m.Cols, w.m.Data[i*w.rowLen:], w.rowLen, m.act[r0*al:], al, out, panel)
		for j := range r1 - r0 {
			copy(m.dst[(r0+j)*n+i:][:4], out[4*j:4*j+4])
		}
	}
	return i
}

// dotRows computes weight rows [lo, hi) by activation rows [r0, r1), one
// weight row by up to twelve activation rows a call: the block kernels
// take them four at a time, the float kernels three.
func (m *matmulTask) dotRows(t, lo, hi, r0, r1 int) {
	const span = 12
	w, n := m.w, m.w.m.Rows
	out := m.b.scratchFor(t, span)
	for i := lo; i < hi; i++ {
		row := w.m.Data[i*w.rowLen : (i+1)*w.rowLen]
		for r := r0; r < r1; r += span {
			k := min(span, r1-r)
			w.kernel.DotRows(w.m.Cols, row, m.act[r*w.actRowLen:], w.actRowLen, out[:k])
			for j, v := range out[:k] {
				m.dst[(r+j)*n+i] = v
			}
		}
	}
}

// f32ToBytes views float32 values as their bytes, for kernels whose
// activations are float32.
func f32ToBytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}
