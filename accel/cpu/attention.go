package cpu

import (
	"math"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// Attention implements accel.Backend.
func (b *Backend) Attention(out, q, k, v accel.Buffer, seqs []accel.AttnSeq, s accel.AttnShape) {
	kvDim := s.NHeadKV * s.HeadDim
	qDim := s.NHead * s.HeadDim
	ks, vs := k.(*buffer).f, v.(*buffer).f
	row := 0
	for _, sq := range seqs {
		b.Write(sq.K, sq.Past*kvDim, ks[row*kvDim:(row+sq.Rows)*kvDim])
		b.Write(sq.V, sq.Past*kvDim, vs[row*kvDim:(row+sq.Rows)*kvDim])
		row += sq.Rows
	}
	qs, o := q.(*buffer).f, out.(*buffer).f
	group := s.NHead / s.NHeadKV
	row = 0
	for _, sq := range seqs {
		kc, vc := sq.K.(*buffer), sq.V.(*buffer)
		base := row
		// One task per (row, head) of this sequence.
		b.parallel(sq.Rows*s.NHead, func(t, lo, hi int) {
			scores := b.scratchFor(t, sq.Past+sq.Rows+s.HeadDim)
			for task := lo; task < hi; task++ {
				i, h := task/s.NHead, task%s.NHead
				n := sq.Past + i + 1
				kvOff := (h / group) * s.HeadDim
				qh := qs[(base+i)*qDim+h*s.HeadDim:][:s.HeadDim]
				sc := scores[:n]
				for j := range sc {
					sc[j] = s.Scale * cacheDot(qh, kc, j*kvDim+kvOff, scores[n:n+s.HeadDim])
				}
				softmax(sc)
				if sq.Probs != nil {
					p := sq.Probs[(h*sq.Rows+i)*(sq.Past+sq.Rows):][:sq.Past+sq.Rows]
					copy(p, sc)
					clear(p[n:])
				}
				oh := o[(base+i)*qDim+h*s.HeadDim:][:s.HeadDim]
				clear(oh)
				for j, p := range sc {
					cacheAxpy(oh, p, vc, j*kvDim+kvOff)
				}
			}
		})
		row += sq.Rows
	}
}

// cacheDot is q · cache[off : off+len(q)], converting f16 entries through
// tmp.
func cacheDot(q []float32, c *buffer, off int, tmp []float32) float32 {
	if c.f != nil {
		return dot(q, c.f[off:off+len(q)])
	}
	for i, h := range c.h[off : off+len(q)] {
		tmp[i] = quant.F16ToF32(h)
	}
	return dot(q, tmp)
}

// cacheAxpy adds p·cache[off : off+len(out)] to out.
func cacheAxpy(out []float32, p float32, c *buffer, off int) {
	if c.f != nil {
		for i, v := range c.f[off : off+len(out)] {
			out[i] += p * v
		}
		return
	}
	for i, h := range c.h[off : off+len(out)] {
		out[i] += p * quant.F16ToF32(h)
	}
}

// softmax normalises x in place.
func softmax(x []float32) {
	m := float32(math.Inf(-1))
	for _, v := range x {
		m = max(m, v)
	}
	var sum float64
	for i, v := range x {
		e := float32(math.Exp(float64(v - m)))
		x[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
}
