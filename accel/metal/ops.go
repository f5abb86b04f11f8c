package metal

import (
	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// The operations: each checks that its kernels stay within the buffers,
// then queues them.

// flat is the dispatch of n threads in threadgroups of groupThreads.
func flat(n int) (grid, group [3]int) {
	return [3]int{groups(n, groupThreads), 1, 1}, [3]int{groupThreads, 1, 1}
}

// Embed implements accel.Backend.
func (b *Backend) Embed(dst accel.Buffer, table accel.Weight, ids []int32) {
	d, w := b.buf(dst), b.weight(table)
	if d == nil || w == nil || !b.inRange(d, 0, len(ids)*w.cols, "embed") || !b.indices(ids, w.rows, "embed") || !b.fits(len(ids)*w.cols, "embed") {
		return
	}
	idm, ok := upload(b, ids)
	if !ok {
		return
	}
	defer b.dev.free(idm)
	grid := [3]int{groups(w.cols, groupThreads), len(ids), 1}
	p := embedParams{Cols: uint32(w.cols), RowBytes: uint32(w.rowLen), N: uint32(len(ids))}
	run(b, "embed_"+w.kind.suffix, grid, [3]int{groupThreads, 1, 1}, &p, arg{m: w.m}, arg{m: idm}, arg{m: d.m})
}

// indices checks that every index lies in [0, n).
func (b *Backend) indices(idx []int32, n int, op string) bool {
	for _, i := range idx {
		if i < 0 || int(i) >= n {
			b.fail("%s: index %d of %d rows: %w", op, i, n, errRange)
			return false
		}
	}
	return true
}

// MatMul implements accel.Backend. Float weights multiply the activations
// as they are; quantized weights multiply them quantized to the CPU's
// 8-bit activation type, in a scratch buffer.
func (b *Backend) MatMul(dst accel.Buffer, w accel.Weight, x accel.Buffer, rows int) {
	d, wt, xb := b.buf(dst), b.weight(w), b.buf(x)
	if d == nil || wt == nil || xb == nil || !b.inRange(xb, 0, rows*wt.cols, "matmul") || !b.inRange(d, 0, rows*wt.rows, "matmul") ||
		!b.fits(rows*wt.cols, "matmul") || !b.fits(rows*wt.rows, "matmul") {
		return
	}
	kernel := "matmul_" + wt.kind.suffix
	grid := [3]int{groups(wt.rows, mmSG), groups(rows, mmNR), 1}
	group := [3]int{groupSize(kernel), 1, 1}
	p := matMulParams{Rows: uint32(wt.rows), Cols: uint32(wt.cols), RowBytes: uint32(wt.rowLen), ActRows: uint32(rows)}
	if wt.kind.act == quant.F32 {
		run(b, kernel, grid, group, &p, arg{m: wt.m}, arg{m: xb.m}, arg{m: b.dummy.m}, arg{m: d.m})
		return
	}
	name, block := quantizer(wt.kind.act)
	dOff, size := actLayout(rows, wt.cols, block)
	act := b.scratch(size)
	if act == nil {
		return
	}
	blocks := rows * wt.cols / block
	qg, qt := flat(blocks)
	run(b, name, qg, qt, &quantParams{Blocks: uint32(blocks)}, arg{m: xb.m}, arg{m: act.m}, arg{m: act.m, off: dOff})
	run(b, kernel, grid, group, &p, arg{m: wt.m}, arg{m: act.m}, arg{m: act.m, off: dOff}, arg{m: d.m})
}

// scratch returns the activation scratch buffer with at least size bytes,
// replacing it by a larger one if needed (queued work keeps the old one
// alive).
func (b *Backend) scratch(size int) *buffer {
	if 4*b.act.n >= size {
		return b.act
	}
	act, err := b.newBuffer(max((size+3)/4, 2*b.act.n), false)
	if err != nil {
		b.fail("matmul scratch: %w", err)
		return nil
	}
	b.release(b.act)
	b.act = act
	return act
}

// RMSNorm implements accel.Backend: one threadgroup per row.
func (b *Backend) RMSNorm(dst, x, w accel.Buffer, rows int, eps float32) {
	d, xb, wb := b.buf(dst), b.buf(x), b.buf(w)
	if d == nil || xb == nil || wb == nil || !b.inRange(xb, 0, rows*wb.n, "rmsnorm") || !b.inRange(d, 0, rows*wb.n, "rmsnorm") || !b.fits(rows*wb.n, "rmsnorm") {
		return
	}
	p := normParams{N: uint32(wb.n), Eps: eps}
	run(b, "rmsnorm", [3]int{rows, 1, 1}, [3]int{groupThreads, 1, 1}, &p, arg{m: xb.m}, arg{m: wb.m}, arg{m: d.m})
}

// AddRows implements accel.Backend.
func (b *Backend) AddRows(dst, bias accel.Buffer, rows int) {
	d, v := b.buf(dst), b.buf(bias)
	if d == nil || v == nil || !b.inRange(d, 0, rows*v.n, "addrows") || !b.fits(rows*v.n, "addrows") {
		return
	}
	grid, group := flat(rows * v.n)
	run(b, "add_rows", grid, group, &elemParams{N: uint32(rows * v.n), Width: uint32(max(v.n, 1))}, arg{m: d.m}, arg{m: v.m})
}

// Add implements accel.Backend.
func (b *Backend) Add(dst, x accel.Buffer, n int) {
	d, xb := b.buf(dst), b.buf(x)
	if d == nil || xb == nil || !b.inRange(d, 0, n, "add") || !b.inRange(xb, 0, n, "add") || !b.fits(n, "add") {
		return
	}
	grid, group := flat(n)
	run(b, "add", grid, group, &elemParams{N: uint32(n), Width: 1}, arg{m: d.m}, arg{m: xb.m})
}

// SwiGLU implements accel.Backend.
func (b *Backend) SwiGLU(dst, gate, up accel.Buffer, n int) {
	d, g, u := b.buf(dst), b.buf(gate), b.buf(up)
	if d == nil || g == nil || u == nil || !b.inRange(d, 0, n, "swiglu") || !b.inRange(g, 0, n, "swiglu") || !b.inRange(u, 0, n, "swiglu") || !b.fits(n, "swiglu") {
		return
	}
	grid, group := flat(n)
	run(b, "swiglu", grid, group, &elemParams{N: uint32(n), Width: 1}, arg{m: d.m}, arg{m: g.m}, arg{m: u.m})
}

// RoPE implements accel.Backend. The cosines and sines of each row's
// angles are computed here in float64 and uploaded as float32 (see
// ropeTable); the kernel rotates in float32.
func (b *Backend) RoPE(x accel.Buffer, width int, pos []int32, r accel.RoPE) {
	xb := b.buf(x)
	half := r.Dims / 2
	if xb == nil || !b.inRange(xb, 0, len(pos)*width, "rope") || !b.fits(len(pos)*width, "rope") {
		return
	}
	if r.HeadDim <= 0 || half < 0 || 2*half > r.HeadDim || len(r.Freqs) < half {
		b.fail("rope: head dim %d, %d dims, %d frequencies: %w", r.HeadDim, r.Dims, len(r.Freqs), errRange)
		return
	}
	b.rope = sized(b.rope, 2*len(pos)*half)
	ropeTable(b.rope, pos, r.Freqs[:half])
	cs, ok := upload(b, b.rope)
	if !ok {
		return
	}
	defer b.dev.free(cs)
	p := ropeParams{Rows: uint32(len(pos)), Width: uint32(width), HeadDim: uint32(r.HeadDim), HalfDims: uint32(half)}
	if r.NeoX {
		p.NeoX = 1
	}
	grid := [3]int{groups(half, simdWidth), width / r.HeadDim, len(pos)}
	run(b, "rope", grid, [3]int{simdWidth, 1, 1}, &p, arg{m: xb.m}, arg{m: cs})
}

// sized returns buf resized to n, reallocated if it is too small.
func sized(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

// Gather implements accel.Backend.
func (b *Backend) Gather(dst, src accel.Buffer, width int, idx []int32) {
	d, s := b.buf(dst), b.buf(src)
	if d == nil || s == nil || len(idx) == 0 || width == 0 {
		return
	}
	if !b.inRange(d, 0, len(idx)*width, "gather") || !b.indices(idx, s.n/width, "gather") || !b.fits(len(idx)*width, "gather") {
		return
	}
	if d == s {
		b.fail("gather: dst and src are the same buffer")
		return
	}
	im, ok := upload(b, idx)
	if !ok {
		return
	}
	defer b.dev.free(im)
	grid, group := flat(len(idx) * width)
	run(b, "gather", grid, group, &elemParams{N: uint32(len(idx) * width), Width: uint32(width)}, arg{m: d.m}, arg{m: s.m}, arg{m: im})
}
