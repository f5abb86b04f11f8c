// Package cpu is the portable compute backend: Go loops over host memory,
// split across a fixed number of worker goroutines.
package cpu

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

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
	m      accel.Matrix
	rowLen int       // bytes per row
	f32    []float32 // the data itself when the type is F32
}

func (w *weight) Dims() (rows, cols int) { return w.m.Rows, w.m.Cols }

// Backend computes on the CPU with a fixed number of threads.
type Backend struct {
	threads int
	scratch [][]float32 // one per worker: a dequantized row, attention scores
}

// New returns a backend using threads workers (0: one per CPU).
func New(threads int) *Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return &Backend{threads: threads, scratch: make([][]float32, threads)}
}

// Name implements accel.Backend.
func (b *Backend) Name() string { return fmt.Sprintf("cpu (%d threads)", b.threads) }

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
	w := &weight{m: m, rowLen: rowLen}
	if m.Type == quant.F32 {
		w.f32 = bytesToF32(m.Data)
	}
	return w, nil
}

// bytesToF32 views little-endian float32 data in place. Tensor data in
// GGUF files is aligned to at least 32 bytes, and every platform edged runs
// on is little-endian; misaligned data (never produced by a valid file) is
// copied instead.
func bytesToF32(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		out := make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
		}
		return out
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
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

// row returns row i of w as float32 values, dequantizing into tmp unless
// the weight is stored as F32.
func (w *weight) row(i int, tmp []float32) []float32 {
	if w.f32 != nil {
		return w.f32[i*w.m.Cols : (i+1)*w.m.Cols]
	}
	tmp = tmp[:w.m.Cols]
	// The length and type were validated by Load, so this cannot fail.
	_ = quant.Dequantize(w.m.Type, w.m.Data[i*w.rowLen:(i+1)*w.rowLen], tmp)
	return tmp
}

// scratchFor returns worker t's scratch slice with at least n values.
func (b *Backend) scratchFor(t, n int) []float32 {
	if cap(b.scratch[t]) < n {
		b.scratch[t] = make([]float32, n)
	}
	return b.scratch[t][:n]
}
