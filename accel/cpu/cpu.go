// Package cpu is the portable compute backend: Go loops over host memory,
// split across a fixed number of worker goroutines.
package cpu

import (
	"fmt"
	"runtime"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// buffer is host memory: float32 values, or f16 values for a cache.
type buffer struct {
	f []float32
	h []uint16
}

func (b *buffer) Len() int { return max(len(b.f), len(b.h)) }

// weight is a matrix in its storage type, read in place.
type weight struct {
	m         accel.Matrix
	rowLen    int          // bytes per row
	kernel    quant.Kernel // dot products with this type's rows
	actRowLen int          // bytes of one activation row in kernel.Act
}

func (w *weight) Dims() (rows, cols int) { return w.m.Rows, w.m.Cols }

// Backend computes on the CPU with a fixed pool of worker goroutines. It
// is not safe for concurrent use: one engine drives it.
type Backend struct {
	threads int
	pool    *pool
	scratch [][]float32 // one per worker: a dequantized row, attention scores
	angles  [][]float64 // one per worker: RoPE's cos and sin of one position
	panels  [][]byte    // one per worker: four weight rows packed for Kernel.Tile
	act     []byte      // the activations of the current matmul, quantized
	// rowsF32 and rowsF16 multiply float32 queries and probabilities
	// with f32 and f16 KV cache data.
	rowsF32, rowsF16 quant.FloatRows

	// The tasks of the operations, reused so that no call allocates.
	mm     matmulsTask
	aq     quantizeTask
	emb    embedTask
	attn   attnTask
	swiglu swigluTask
	rope   ropeTask
}

// New returns a backend using threads workers (0: one per CPU). Close
// stops the workers; a backend that is dropped without Close leaves them
// parked.
func New(threads int) *Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	b := &Backend{threads: threads, pool: newPool(threads), scratch: make([][]float32, threads), angles: make([][]float64, threads), panels: make([][]byte, threads)}
	// The float kernels exist on every platform: KernelFor cannot fail.
	b.rowsF32, _ = quant.FloatMatVec(quant.F32)
	b.rowsF16, _ = quant.FloatMatVec(quant.F16)

	return b
}

// Name implements accel.Backend.
func (b *Backend) Name() string { return fmt.Sprintf("cpu (%d threads)", b.threads) }

// Close implements accel.Backend: it stops the worker goroutines.
func (b *Backend) Close() error {
	b.pool.close()
	return nil
}

// Threads is the number of workers.
func (b *Backend) Threads() int { return b.threads }

// Alloc implements accel.Backend.
func (b *Backend) Alloc(n int) (accel.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("cpu: alloc %d values", n)
	}
	return &buffer{f: make([]float32, n)}, nil
}

// AllocCache implements accel.Backend.
func (b *Backend) AllocCache(n int, typ quant.Type) (accel.Buffer, error) {
	switch typ {
	case quant.F32:
		return b.Alloc(n)
	case quant.F16:
		if n < 0 {
			return nil, fmt.Errorf("cpu: alloc %d values", n)
		}
		return &buffer{h: make([]uint16, n)}, nil
	}
	return nil, fmt.Errorf("cpu: KV cache type %s is not supported (f32, f16)", typ)
}

// Free implements accel.Backend; the garbage collector reclaims host
// memory, so it only drops the references.
func (b *Backend) Free(buf accel.Buffer) {
	if x, ok := buf.(*buffer); ok {
		x.f, x.h = nil, nil
	}
}

// Load implements accel.Backend: the matrix is used where it lies.
func (b *Backend) Load(m accel.Matrix) (accel.Weight, error) {
	rowLen, err := m.Type.RowSize(m.Cols)
	if err != nil {
		return nil, fmt.Errorf("cpu: load %s: %w", m.Name, err)
	}
	if len(m.Data) != rowLen*m.Rows {
		return nil, fmt.Errorf("cpu: load %s: %d bytes, want %d", m.Name, len(m.Data), rowLen*m.Rows)
	}
	k, err := quant.KernelFor(m.Type)
	if err != nil {
		return nil, fmt.Errorf("cpu: load %s: %w", m.Name, err)
	}
	return &weight{m: m, rowLen: rowLen, kernel: k, actRowLen: k.ActRowSize(m.Cols)}, nil
}

// Write implements accel.Backend.
func (b *Backend) Write(dst accel.Buffer, off int, src []float32) {
	d := dst.(*buffer)
	if d.h != nil {
		for i, v := range src {
			d.h[off+i] = quant.F32ToF16(v)
		}
		return
	}
	copy(d.f[off:off+len(src)], src)
}

// Read implements accel.Backend.
func (b *Backend) Read(dst []float32, src accel.Buffer, off int) {
	s := src.(*buffer)
	if s.h != nil {
		for i := range dst {
			dst[i] = quant.F16ToF32(s.h[off+i])
		}
		return
	}
	copy(dst, s.f[off:off+len(dst)])
}

// row dequantizes row i of w into out.
func (w *weight) row(i int, out []float32) {
	// The length and type were validated by Load, so this cannot fail.
	_ = quant.Dequantize(w.m.Type, w.m.Data[i*w.rowLen:(i+1)*w.rowLen], out[:w.m.Cols])
}

// sized returns *buf resized to n, reallocated if it is too small.
func sized[T any](buf *[]T, n int) []T {
	if cap(*buf) < n {
		*buf = make([]T, n)
	}
	return (*buf)[:n]
}

// scratchFor returns worker t's scratch slice with at least n values. It
// grows geometrically from a few thousand values, so that attention scores
// over a context that grows by one row per step rarely reallocate.
func (b *Backend) scratchFor(t, n int) []float32 {
	if cap(b.scratch[t]) < n {
		b.scratch[t] = make([]float32, max(n, 2*cap(b.scratch[t]), 4096))
	}
	return b.scratch[t][:n]
}
