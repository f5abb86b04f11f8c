package cpu

import (
	"math"
	"unsafe"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// The KV cache of one layer of one sequence is two buffers of capacity
// rows: keys row-major ([row][kvDim]), so that a query reads each key
// contiguously, and values transposed ([kvDim][capacity]), so that each
// output dimension is one contiguous dot product with the attention
// probabilities. Both are read sequentially by the decode step.

// WriteCache implements accel.Backend.
func (b *Backend) WriteCache(kc, vc accel.Buffer, kvDim, at int, k, v []float32) {
	b.Write(kc, at*kvDim, k)
	capacity := vc.Len() / kvDim
	vb := vc.(*buffer)
	for r := 0; r < len(v)/kvDim; r++ {
		for d, x := range v[r*kvDim : (r+1)*kvDim] {
			i := d*capacity + at + r
			if vb.h != nil {
				vb.h[i] = quant.F32ToF16(x)
			} else {
				vb.f[i] = x
			}
		}
	}
}

// Attention implements accel.Backend.
func (b *Backend) Attention(out, q, k, v accel.Buffer, seqs []accel.AttnSeq, s accel.AttnShape) {
	kvDim := s.NHeadKV * s.HeadDim
	ks, vs := k.(*buffer).f, v.(*buffer).f
	row := 0
	for _, sq := range seqs {
		b.WriteCache(sq.K, sq.V, kvDim, sq.Past, ks[row*kvDim:(row+sq.Rows)*kvDim], vs[row*kvDim:(row+sq.Rows)*kvDim])
		padValues(sq.V, kvDim, sq.Past+sq.Rows)
		row += sq.Rows
	}
	row = 0
	for _, sq := range seqs {
		b.attn = attnTask{b: b, out: out.(*buffer).f, q: q.(*buffer).f, base: row, seq: sq, shape: s}
		// One unit of work per (row, pair of heads that share keys and
		// values) of this sequence.
		b.pool.run(&b.attn, sq.Rows*s.NHeadKV*headPairs(s))
		row += sq.Rows
	}
}

// attnTask computes the attention of one sequence's rows.
type attnTask struct {
	b      *Backend
	out, q []float32
	base   int // the sequence's first row in the batch
	seq    accel.AttnSeq
	shape  accel.AttnShape
}

// headPairs is the number of pairs a group of query heads sharing one
// key/value head is cut into (the last one alone when the group is odd):
// the heads of a pair read each key and value once for both.
func headPairs(s accel.AttnShape) int { return (s.NHead/s.NHeadKV + 1) / 2 }

func (a *attnTask) run(t, lo, hi int) {
	s, sq := &a.shape, &a.seq
	kvDim := s.NHeadKV * s.HeadDim
	group, pairs := s.NHead/s.NHeadKV, headPairs(*s)
	kc, vc := cacheView(sq.K), cacheView(sq.V)
	capacity := sq.V.Len() / kvDim
	matVec := a.b.rowsF32
	if kc.elem == 2 {
		matVec = a.b.rowsF16
	}
	width := sq.Past + sq.Rows + 8
	scratch := a.b.scratchFor(t, 2*width)
	for unit := lo; unit < hi; unit++ {
		i, rest := unit/(s.NHeadKV*pairs), unit%(s.NHeadKV*pairs)
		g, h := rest/pairs, rest/pairs*group+2*(rest%pairs)
		two := h+1 < (g+1)*group
		n := sq.Past + i + 1
		// The value rows are read in whole steps of 8 (see padValues).
		nv := min((n+7)&^7, capacity)
		kvOff := g * s.HeadDim
		sc0, sc1 := scratch[:nv], scratch[width:width+nv]
		q0, q1, s1 := a.query(i, h), []byte(nil), []float32(nil)
		if two {
			q1, s1 = a.query(i, h+1), sc1[:n]
		}
		// Scores: the queries against n key rows of this head, kvDim apart.
		matVec(s.HeadDim, kc.from(kvOff), kvDim*kc.elem, q0, q1, sc0[:n], s1)
		a.probabilities(i, h, n, sc0)
		p1, o1 := []byte(nil), []float32(nil)
		if two {
			a.probabilities(i, h+1, n, sc1)
			p1, o1 = f32ToBytes(sc1), a.output(i, h+1)
		}
		// Output: each dimension is the probabilities against one
		// transposed value row, capacity apart.
		matVec(nv, vc.from(kvOff*capacity), capacity*vc.elem, f32ToBytes(sc0), p1, a.output(i, h), o1)
	}
}

// query is row i's query of head h, as bytes.
func (a *attnTask) query(i, h int) []byte {
	s := &a.shape
	return f32ToBytes(a.q[(a.base+i)*s.NHead*s.HeadDim+h*s.HeadDim:][:s.HeadDim])
}

// output is row i's output of head h.
func (a *attnTask) output(i, h int) []float32 {
	s := &a.shape
	return a.out[(a.base+i)*s.NHead*s.HeadDim+h*s.HeadDim:][:s.HeadDim]
}

// probabilities turns row i's scores of head h, the first n of sc, into
// probabilities (handing scores and probabilities to an observer that asked
// for them) and zeroes the rest of sc.
func (a *attnTask) probabilities(i, h, n int, sc []float32) {
	s, sq := &a.shape, &a.seq
	for j := range sc[:n] {
		sc[j] *= s.Scale
	}
	observe := func(dst []float32) {
		p := dst[(h*sq.Rows+i)*(sq.Past+sq.Rows):][:sq.Past+sq.Rows]
		copy(p, sc[:n])
		clear(p[n:])
	}
	if sq.Scores != nil {
		observe(sq.Scores)
	}
	softmax(sc[:n])
	if sq.Probs != nil {
		observe(sq.Probs)
	}
	clear(sc[n:])
}

// padValues zeroes the transposed value rows of a cache from end, the
// sequence's length, up to the next multiple of 8 (within the capacity).
// Each query row then multiplies its probabilities, padded with zeros, by
// whole 8-value steps of the value rows, instead of finishing every row
// with a scalar tail; the padding must hold zeros, not stale values, since
// a zero probability times a stale Inf would be NaN. Values between a row's
// own length and end are the batch's later rows: finite, like every value
// the row can see.
func padValues(vc accel.Buffer, kvDim, end int) {
	buf := vc.(*buffer)
	capacity := vc.Len() / kvDim
	pad := min((end+7)&^7, capacity)
	if pad <= end {
		return
	}
	for d := range kvDim {
		if buf.h != nil {
			clear(buf.h[d*capacity+end : d*capacity+pad])
		} else {
			clear(buf.f[d*capacity+end : d*capacity+pad])
		}
	}
}

// cache is a cache buffer seen as bytes, elem bytes per value.
type cache struct {
	data []byte
	elem int
}

func cacheView(b accel.Buffer) cache {
	buf := b.(*buffer)
	if buf.h != nil {
		if len(buf.h) == 0 {
			return cache{elem: 2}
		}
		return cache{unsafe.Slice((*byte)(unsafe.Pointer(&buf.h[0])), 2*len(buf.h)), 2}
	}
	return cache{f32ToBytes(buf.f), 4}
}

// from returns the data from value index i on.
func (c cache) from(i int) []byte { return c.data[i*c.elem:] }

// softmax normalises x in place. The loops around the vector e^x keep
// four independent chains (max, float64 sums), so that they run at the
// adders' throughput instead of their latency; the order of the sum is
// fixed by len(x), so a row's result does not depend on its batch.
func softmax(x []float32) {
	m := float32(math.Inf(-1))
	m0, m1, m2, m3 := m, m, m, m
	i := 0
	for ; i+4 <= len(x); i += 4 {
		m0, m1, m2, m3 = max(m0, x[i]), max(m1, x[i+1]), max(m2, x[i+2]), max(m3, x[i+3])
	}
	for ; i < len(x); i++ {
		m = max(m, x[i])
	}
	m = max(m, m0, m1, m2, m3)
	expSub(x, m)
	// The sum in float64: in float32 its rounding moved logits by up to
	// 0.05 (adapt's TestMergeLoRA, through 8-bit activations downstream).
	var s0, s1, s2, s3 float64
	i = 0
	for ; i+4 <= len(x); i += 4 {
		s0, s1, s2, s3 = s0+float64(x[i]), s1+float64(x[i+1]), s2+float64(x[i+2]), s3+float64(x[i+3])
	}
	for ; i < len(x); i++ {
		s0 += float64(x[i])
	}
	inv := float32(1 / ((s0 + s1) + (s2 + s3)))
	for i := range x {
		x[i] *= inv
	}
}
