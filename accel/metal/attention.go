package metal

import (
	"github.com/edged/edged/accel"
)

// observed is an attention observer's output: device memory the kernel
// fills, copied into the caller's slice once the work completes.
type observed struct {
	buf *buffer
	dst []float32
}

// Attention implements accel.Backend. For each sequence it stores the k
// and v rows in the caches after Past, then runs one threadgroup per
// (row, head). When a sequence asks for scores or probabilities, the
// kernel writes them to device memory, and Attention waits for the work
// to copy them out.
func (b *Backend) Attention(out, q, k, v accel.Buffer, seqs []accel.AttnSeq, s accel.AttnShape) {
	if err := checkShape(s); err != nil {
		b.fail("%w", err)
		return
	}
	o, qb, kb, vb := b.buf(out), b.buf(q), b.buf(k), b.buf(v)
	kvDim, qDim, rows := s.NHeadKV*s.HeadDim, s.NHead*s.HeadDim, 0
	for _, sq := range seqs {
		rows += sq.Rows
	}
	if o == nil || qb == nil || kb == nil || vb == nil || !b.inRange(qb, 0, rows*qDim, "attention") || !b.inRange(o, 0, rows*qDim, "attention") ||
		!b.inRange(kb, 0, rows*kvDim, "attention") || !b.inRange(vb, 0, rows*kvDim, "attention") || !b.fits(rows*qDim, "attention") {
		return
	}
	var obs []observed
	row := 0
	for _, sq := range seqs {
		if !b.attendSeq(o, qb, kb, vb, sq, s, row, &obs) {
			break
		}
		row += sq.Rows
	}
	if len(obs) == 0 {
		return
	}
	b.wait()
	for _, ob := range obs {
		copy(ob.dst, ob.buf.floats())
		b.release(ob.buf)
	}
}

// attendSeq queues one sequence's cache stores and attention, its rows
// starting at row row of the batch, and adds its observer outputs to obs.
func (b *Backend) attendSeq(o, q, k, v *buffer, sq accel.AttnSeq, s accel.AttnShape, row int, obs *[]observed) bool {
	kc, vc := b.buf(sq.K), b.buf(sq.V)
	if kc == nil || vc == nil {
		return false
	}
	if kc.f16 != vc.f16 {
		b.fail("attention: key and value caches of different types")
		return false
	}
	kvDim, width := s.NHeadKV*s.HeadDim, sq.Past+sq.Rows
	if sq.Past < 0 || sq.Rows < 0 || !b.inRange(kc, 0, width*kvDim, "attention cache") || !b.inRange(vc, 0, width*kvDim, "attention cache") ||
		!b.fits(s.NHead*sq.Rows*width, "attention") {
		return false
	}
	if sq.Rows == 0 {
		return true
	}
	suffix := "f32"
	if kc.f16 {
		suffix = "f16"
	}
	grid, group := flat(sq.Rows * kvDim)
	sp := storeParams{N: uint32(sq.Rows * kvDim), SrcOff: uint32(row * kvDim), DstOff: uint32(sq.Past * kvDim)}
	run(b, "store_"+suffix, grid, group, &sp, arg{m: k.m}, arg{m: kc.m})
	run(b, "store_"+suffix, grid, group, &sp, arg{m: v.m}, arg{m: vc.m})

	p := attnParams{NHead: uint32(s.NHead), NHeadKV: uint32(s.NHeadKV), HeadDim: uint32(s.HeadDim), Past: uint32(sq.Past), Rows: uint32(sq.Rows), QRow0: uint32(row), Scale: s.Scale}
	scores, probs := b.dummy, b.dummy
	var ok bool
	if sq.Scores != nil {
		if scores, ok = b.observer(sq.Scores, s.NHead*sq.Rows*width, obs); !ok {
			return false
		}
		p.Observe |= observeScores
	}
	if sq.Probs != nil {
		if probs, ok = b.observer(sq.Probs, s.NHead*sq.Rows*width, obs); !ok {
			return false
		}
		p.Observe |= observeProbs
	}
	run(b, "attention_"+suffix, [3]int{sq.Rows, s.NHead, 1}, [3]int{groupThreads, 1, 1}, &p,
		arg{m: q.m}, arg{m: kc.m}, arg{m: vc.m}, arg{m: o.m}, arg{m: scores.m}, arg{m: probs.m})
	return true
}

// observer allocates the device memory of an observer output of n values
// bound for dst.
func (b *Backend) observer(dst []float32, n int, obs *[]observed) (*buffer, bool) {
	if len(dst) < n {
		b.fail("attention: observer slice of %d values, want %d: %w", len(dst), n, errRange)
		return nil, false
	}
	buf, err := b.newBuffer(n, false)
	if err != nil {
		b.fail("attention observer: %w", err)
		return nil, false
	}
	*obs = append(*obs, observed{buf: buf, dst: dst[:n]})
	return buf, true
}
