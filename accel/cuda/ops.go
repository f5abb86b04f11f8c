package cuda

import (
	"math"
	"runtime"
	"unsafe"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// launchArgs holds a kernel's parameter values and the array of pointers
// to them that cuLaunchKernel reads. It is pinned for the backend's life,
// so the pointers stay valid; the driver copies the values at launch, so
// one block serves every launch.
type launchArgs struct {
	vals [16]uint64
	ptrs [16]uintptr
	pin  runtime.Pinner
}

func newLaunchArgs() *launchArgs {
	a := new(launchArgs)
	a.pin.Pin(a)
	for i := range a.vals {
		a.ptrs[i] = uintptr(unsafe.Pointer(&a.vals[i]))
	}
	return a
}

// Parameter encodings: the kernel reads as many bytes of its slot as the
// parameter's C type has, little-endian.
func i32(v int) uint64     { return uint64(uint32(int32(v))) }
func f32(v float32) uint64 { return uint64(math.Float32bits(v)) }

// flag passes a bool as the C int 0 or 1.
func flag(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// rounded names the activations in the act scratch: rows × cols values of
// buffer x rounded by kernel. The projections that share an input (q, k
// and v; gate and up) round it once. Any kernel that MatMul does not
// launch itself may write x, and so forgets it (as do Write, a grown
// scratch and a MatMul into x).
type rounded struct {
	x          uint64
	rows, cols int
	kernel     string
}

// launch queues kernel name on a grid of blocks of threads each. Queued
// kernels run at the next flush, in order.
func (b *Backend) launch(name string, grid [2]int, threads, shared int, args ...uint64) {
	b.launch3(name, [3]int{grid[0], grid[1], 1}, threads, shared, args...)
}

// launch3 is launch on a three-dimensional grid.
func (b *Backend) launch3(name string, grid [3]int, threads, shared int, args ...uint64) {
	if !b.inMatMul {
		b.rounded = rounded{}
	}
	c := call{name: name, fn: b.fn[name], gx: uint32(max(grid[0], 1)), gy: uint32(max(grid[1], 1)), gz: uint32(max(grid[2], 1)),
		threads: uint32(threads), shared: uint32(shared)}
	copy(c.args[:], args)
	b.queue = append(b.queue, c)
}

// blocks is the grid of a grid-stride loop over n elements.
func blocks(n, threads int) [2]int { return [2]int{min((n+threads-1)/threads, 65536), 1} }

// Embed implements accel.Backend.
func (b *Backend) Embed(dst accel.Buffer, table accel.Weight, ids []int32) {
	if len(ids) == 0 {
		return
	}
	w := table.(*weight)
	b.enter()
	defer b.leave()
	p := b.send(&b.ids, ids)
	b.launch(w.embed, [2]int{len(ids), 1}, 128, 0, dst.(*buffer).ptr, w.ptr, p, i32(w.cols), uint64(w.rowBytes))
}

// matvecRows is the most activation rows one mat-vec launch multiplies
// (MAXR in kernels.cu); larger batches up to gemmRows run in chunks of
// it, and above that the weight is dequantized for a GEMM.
const (
	matvecRows = 8
	gemmRows   = 32
)

// MatMul implements accel.Backend.
func (b *Backend) MatMul(dst accel.Buffer, wt accel.Weight, x accel.Buffer, rows int) {
	if rows == 0 {
		return
	}
	w := wt.(*weight)
	b.enter()
	defer b.leave()
	b.inMatMul = true
	defer func() { b.inMatMul = false }()
	act := x.(*buffer).ptr
	if w.act != "" {
		// Round the activations to the CPU backend's 8-bit grid, so that
		// both backends multiply the same values.
		act = b.grow(&b.act, 4*rows*w.cols)
		key := rounded{x: x.(*buffer).ptr, rows: rows, cols: w.cols, kernel: w.act}
		if key != b.rounded {
			block := 32
			if w.act == "actq8k" {
				block = 256
			}
			nb := rows * w.cols / block
			b.launch(w.act, [2]int{(nb + 7) / 8, 1}, 256, 0, act, x.(*buffer).ptr, i32(nb))
			b.rounded = key
		}
	}
	d := dst.(*buffer).ptr
	if d == b.rounded.x {
		b.rounded = rounded{}
	}
	if rows > gemmRows {
		b.gemm(d, w, act, rows)
		return
	}
	wpr := warpsPerRow(w.rows)
	for r := 0; r < rows; r += matvecRows {
		n := min(matvecRows, rows-r)
		b.launch(w.matvec, [2]int{(w.rows*wpr + 7) / 8, 1}, 256, 0,
			d+uint64(4*r*w.rows), w.ptr, act+uint64(4*r*w.cols), i32(w.rows), i32(w.cols), uint64(w.rowBytes), i32(n), i32(wpr))
	}
}

// warpsPerRow is how many warps share a weight row in a mat-vec: enough
// for about 4096 warps in all (32 per multiprocessor of a large GPU), at
// most the 8 of one block.
func warpsPerRow(rows int) int {
	wpr := 1
	for wpr < 8 && rows*wpr < 4096 {
		wpr *= 2
	}
	return wpr
}

// cuBLAS operation codes.
const (
	blasOpN = 0
	blasOpT = 1
)

// cuBLAS data and compute types, and its default algorithm choice.
const (
	cudaR32F      = 0
	cudaR16F      = 2
	blasCompute32 = 68
	blasGemmAuto  = -1
)

// gemm computes dst = x·Wᵀ with cuBLAS on the weight dequantized to float32
// (or f16 with the activations, see gemmMode). In cuBLAS's column-major
// terms the row-major dst (rows × R) is Wᵀᵀ·xᵀ: A is the dequantized W seen
// as a cols × R matrix, transposed.
func (b *Backend) gemm(dst uint64, w *weight, act uint64, rows int) {
	half := b.info.GEMM == "f16"
	a := w.ptr
	if w.typ != quant.F32 || half {
		size := 4
		if half {
			size = 2
		}
		a = b.grow(&b.deq, size*w.rows*w.cols)
		units := w.rows * w.cols / 16
		b.launch(w.dequant, blocks(units, 256), 256, 0, a, flag(half), w.ptr, i32(w.rows), i32(w.cols), uint64(w.rowBytes))
	}
	if half {
		x := b.grow(&b.acth, 2*rows*w.cols)
		b.launch("tohalf", blocks(rows*w.cols, 256), 256, 0, x, act, uint64(rows*w.cols))
		act = x
	}
	if a == 0 || act == 0 || b.err != nil {
		return
	}
	// cuBLAS queues on the stream now: the kernels queued here (rounding,
	// dequantizing) must go first.
	b.flush()
	defer b.profile.time("cublas", b)
	var code int32
	if half {
		code = b.blas.cublasGemmEx(b.handle, blasOpT, blasOpN, int32(w.rows), int32(rows), int32(w.cols),
			&b.one, a, cudaR16F, int32(w.cols), act, cudaR16F, int32(w.cols), &b.zero, dst, cudaR32F, int32(w.rows), blasCompute32, blasGemmAuto)
	} else {
		code = b.blas.cublasSgemm(b.handle, blasOpT, blasOpN, int32(w.rows), int32(rows), int32(w.cols),
			&b.one, a, int32(w.cols), act, int32(w.cols), &b.zero, dst, int32(w.rows))
	}
	if code != 0 {
		b.failWith(&Error{Op: "cuBLAS GEMM", Code: int(code), Msg: blasStatus(code)})
	}
}

// RMSNorm implements accel.Backend.
func (b *Backend) RMSNorm(dst, x, w accel.Buffer, rows int, eps float32) {
	if rows == 0 {
		return
	}
	b.enter()
	defer b.leave()
	b.launch("rmsnorm", [2]int{rows, 1}, 256, 0, dst.(*buffer).ptr, x.(*buffer).ptr, w.(*buffer).ptr, i32(w.Len()), f32(eps))
}

// AddRows implements accel.Backend.
func (b *Backend) AddRows(dst, bias accel.Buffer, rows int) {
	n := bias.Len()
	if rows*n == 0 {
		return
	}
	b.enter()
	defer b.leave()
	b.launch("addrows", blocks(rows*n, 256), 256, 0, dst.(*buffer).ptr, bias.(*buffer).ptr, i32(n), uint64(rows*n))
}

// Add implements accel.Backend.
func (b *Backend) Add(dst, x accel.Buffer, n int) {
	if n == 0 {
		return
	}
	b.enter()
	defer b.leave()
	b.launch("add", blocks(n, 256), 256, 0, dst.(*buffer).ptr, x.(*buffer).ptr, uint64(n))
}

// SwiGLU implements accel.Backend.
func (b *Backend) SwiGLU(dst, gate, up accel.Buffer, n int) {
	if n == 0 {
		return
	}
	b.enter()
	defer b.leave()
	b.launch("swiglu", blocks(n, 256), 256, 0, dst.(*buffer).ptr, gate.(*buffer).ptr, up.(*buffer).ptr, uint64(n))
}

// RoPE implements accel.Backend. The frequency table goes to the device
// once per RoPE configuration; the angles are computed there in float64.
func (b *Backend) RoPE(x accel.Buffer, width int, pos []int32, r accel.RoPE) {
	if len(pos) == 0 || r.Dims == 0 {
		return
	}
	b.enter()
	defer b.leave()
	freqs, ok := b.freqs[&r.Freqs[0]]
	if !ok {
		p, err := b.alloc(8 * len(r.Freqs))
		if err != nil {
			b.failWith(err)
			return
		}
		b.fail("cuMemcpyHtoD", b.drv.cuMemcpyHtoD(p, unsafePointer(r.Freqs), uint64(8*len(r.Freqs))))
		b.freqs[&r.Freqs[0]], freqs = p, p
	}
	p := b.send(&b.pos, pos)
	n := len(pos) * (width / r.HeadDim) * (r.Dims / 2)
	b.launch("rope", blocks(n, 256), 256, 0, x.(*buffer).ptr, i32(width), p, freqs, i32(r.HeadDim), i32(r.Dims), flag(r.NeoX), i32(len(pos)))
}

// WriteCache implements accel.Backend: keys and values are both stored
// row-major, so this is two writes.
func (b *Backend) WriteCache(kc, vc accel.Buffer, kvDim, at int, k, v []float32) {
	b.Write(kc, at*kvDim, k)
	b.Write(vc, at*kvDim, v)
}

// Attention implements accel.Backend: per sequence, the new key and value
// rows go into its cache, then the first kernel that applies attends over
// it: chunked for a few rows over a long cache (attnSplit), tiled for many
// rows (attnTiled), else one block per head and row (attnOnePass, the only
// one that hands probabilities to observers). The sequences' past lengths
// go to the device once per step (every layer has the same) and launches
// are sized by the cache's capacity, so that the launches of a decode step
// are the same at every token.
func (b *Backend) Attention(out, q, k, v accel.Buffer, seqs []accel.AttnSeq, s accel.AttnShape) {
	b.enter()
	defer b.leave()
	kvDim := s.NHeadKV * s.HeadDim
	threads := 256
	if s.HeadDim > threads {
		threads = (s.HeadDim + 31) &^ 31
	}
	b.pastHost = b.pastHost[:0]
	for _, sq := range seqs {
		b.pastHost = append(b.pastHost, int32(sq.Past))
	}
	pasts := b.send(&b.past, b.pastHost)
	row := 0
	for si, sq := range seqs {
		kb, vb := sq.K.(*buffer), sq.V.(*buffer)
		f16 := flag(kb.f16)
		n := sq.Rows * kvDim
		b.launch("store", blocks(n, 256), 256, 0, kb.ptr, vb.ptr, f16, pasts, i32(si), i32(kvDim),
			k.(*buffer).at(row*kvDim), v.(*buffer).at(row*kvDim), uint64(n))

		if !b.attnSplit(out, q, kb, vb, f16, pasts, si, row, sq, s, threads) &&
			!b.attnTiled(out, q, kb, vb, f16, pasts, si, row, sq, s) &&
			!b.attnOnePass(out, q, kb, vb, f16, pasts, si, row, sq, s, threads) {
			return
		}
		row += sq.Rows
	}
}

// attnOnePass queues the one-pass attention kernel of sequence si: one
// block per head and row, the whole row's scores in shared memory, and
// the probabilities or scores an observer asked for copied back. It
// reports false (and the failure) when the context does not fit.
func (b *Backend) attnOnePass(out, q accel.Buffer, kb, vb *buffer, f16, pasts uint64, si, row int, sq accel.AttnSeq, s accel.AttnShape, threads int) bool {
	kvDim, qDim := s.NHeadKV*s.HeadDim, s.NHead*s.HeadDim
	shared, ok := b.attnShared(s.HeadDim, threads, kb.n/kvDim, sq.Past+sq.Rows)
	if !ok {
		b.failWith(&Error{Op: "attention", Code: -1, Msg: "context too long for one block's shared memory"})
		return false
	}
	obs := s.NHead * sq.Rows * (sq.Past + sq.Rows)
	var probs, scores uint64
	if sq.Probs != nil || sq.Scores != nil {
		base := b.grow(&b.obs, 8*obs)
		b.fail("cuMemsetD8", b.drv.cuMemsetD8(base, 0, uint64(8*obs)))
		if sq.Probs != nil {
			probs = base
		}
		if sq.Scores != nil {
			scores = base + uint64(4*obs)
		}
	}
	b.launch("attention", [2]int{s.NHead, sq.Rows}, threads, shared,
		out.(*buffer).at(row*qDim), q.(*buffer).at(row*qDim), kb.ptr, vb.ptr, f16, pasts, i32(si), i32(sq.Rows),
		i32(s.NHead), i32(s.NHeadKV), i32(s.HeadDim), f32(s.Scale), probs, scores)
	if probs != 0 || scores != 0 {
		b.flush()
	}
	if probs != 0 {
		b.fail("cuMemcpyDtoH", b.drv.cuMemcpyDtoH(unsafePointer(sq.Probs), probs, uint64(4*obs)))
	}
	if scores != 0 {
		b.fail("cuMemcpyDtoH", b.drv.cuMemcpyDtoH(unsafePointer(sq.Scores), scores, uint64(4*obs)))
	}
	return true
}

// Flash-decoding: a few rows over a cache longer than splitChunk rows
// attend in chunks of splitChunk, one block each, and a second kernel
// merges the chunks; one block per head and row would leave most of a
// large GPU idle while it walks the whole context.
const (
	splitChunk = 256
	splitRows  = 4
)

// attnSplit queues the chunked attention of sequence si when it applies
// (no observer wants probabilities or scores, which only the one-pass
// kernel writes) and reports whether it did.
func (b *Backend) attnSplit(out, q accel.Buffer, kb, vb *buffer, f16, pasts uint64, si, row int, sq accel.AttnSeq, s accel.AttnShape, threads int) bool {
	kvDim, qDim := s.NHeadKV*s.HeadDim, s.NHead*s.HeadDim
	capacity := kb.n / kvDim
	if sq.Probs != nil || sq.Scores != nil || sq.Rows > splitRows || capacity <= splitChunk {
		return false
	}
	chunks := (capacity + splitChunk - 1) / splitChunk
	part := b.grow(&b.split, 4*s.NHead*sq.Rows*chunks*(s.HeadDim+2))
	b.launch3("attn_split", [3]int{s.NHead, sq.Rows, chunks}, threads, 4*(s.HeadDim+splitChunk+threads),
		part, q.(*buffer).at(row*qDim), kb.ptr, vb.ptr, f16, pasts, i32(si), i32(sq.Rows),
		i32(s.NHead), i32(s.NHeadKV), i32(s.HeadDim), f32(s.Scale), i32(splitChunk))
	b.launch("attn_combine", [2]int{s.NHead, sq.Rows}, 128, 0,
		out.(*buffer).at(row*qDim), part, i32(sq.Rows), i32(s.NHead), i32(s.HeadDim), i32(chunks))
	return true
}

// attnTiled queues the tiled attention (attn_tiled) of sequence si when it
// applies: no observer, and heads of 32, 64, 96 or 128 dimensions.
func (b *Backend) attnTiled(out, q accel.Buffer, kb, vb *buffer, f16, pasts uint64, si, row int, sq accel.AttnSeq, s accel.AttnShape) bool {
	hd := s.HeadDim
	if sq.Probs != nil || sq.Scores != nil || hd%32 != 0 || hd > 128 {
		return false
	}
	const qt, kt = 16, 32 // QT and KT in kernels.cu
	qDim := s.NHead * hd
	b.launch("attn_tiled", [2]int{s.NHead, (sq.Rows + qt - 1) / qt}, 256, 4*(qt*hd+kt*(hd+1)+kt*hd),
		out.(*buffer).at(row*qDim), q.(*buffer).at(row*qDim), kb.ptr, vb.ptr, f16, pasts, i32(si), i32(sq.Rows),
		i32(s.NHead), i32(s.NHeadKV), i32(hd), f32(s.Scale))
	return true
}

// attnShared is the attention kernel's shared memory for a cache of
// capacity rows (the same at every step), or for the ctx rows in use when
// a full cache would not fit.
func (b *Backend) attnShared(headDim, threads, capacity, ctx int) (int, bool) {
	limit := b.sharedLimit()
	for _, rows := range []int{capacity, ctx} {
		if n := 4 * (headDim + rows + threads); n <= limit {
			return n, true
		}
	}
	return 0, false
}

// Gather implements accel.Backend.
func (b *Backend) Gather(dst, src accel.Buffer, width int, idx []int32) {
	if len(idx) == 0 {
		return
	}
	b.enter()
	defer b.leave()
	p := b.send(&b.idx, idx)
	b.launch("gather", [2]int{len(idx), 1}, 256, 0, dst.(*buffer).ptr, src.(*buffer).ptr, p, i32(width))
}
