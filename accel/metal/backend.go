package metal

import (
	"fmt"
	"unsafe"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// device is what the backend needs from the GPU: memory shared with the
// host, and kernels queued in order and run to completion on demand. The
// darwin build implements it over Metal (metal_darwin.go); the tests also
// implement it with the kernels compiled for the CPU (emu_test.go), so
// that the backend's Go code and the kernels' arithmetic run on Linux too.
type device interface {
	name() string
	// alloc returns size bytes (size ≥ 1) of zeroed memory that the host
	// reads and writes at mem.ptr.
	alloc(size int) (mem, error)
	// free releases memory; work already queued that uses it keeps it
	// alive until it completes.
	free(m mem)
	// dispatch queues kernel on grid threadgroups of group threads, each
	// serial after the ones before it: args are bound at indices 0, 1, …
	// and the parameter block after them.
	dispatch(kernel string, grid, group [3]int, args []arg, params []byte) error
	// wait runs the queued work to completion.
	wait() error
	close()
}

// mem is device memory: a handle for the device and the host address.
type mem struct {
	h   uintptr
	ptr unsafe.Pointer
}

// arg is a kernel's buffer argument, from byte off of m on.
type arg struct {
	m   mem
	off int
}

var _ accel.Backend = (*Backend)(nil)

// buffer holds n float32 values, or n f16 values for a KV cache. Both
// caches are row-major ([row][kvDim]).
type buffer struct {
	m   mem
	n   int
	f16 bool
}

func (b *buffer) Len() int { return b.n }

func (b *buffer) floats() []float32 { return unsafe.Slice((*float32)(b.m.ptr), b.n) }

func (b *buffer) halves() []uint16 { return unsafe.Slice((*uint16)(b.m.ptr), b.n) }

// weight is a matrix copied to device memory.
type weight struct {
	m          mem
	rows, cols int
	rowLen     int // bytes per row
	kind       weightKind
}

func (w *weight) Dims() (rows, cols int) { return w.rows, w.cols }

// Backend computes on a Metal device. It is not safe for concurrent use:
// one engine drives it.
type Backend struct {
	dev device
	// act holds MatMul's quantized activations, grown on demand; dummy is
	// bound where a kernel's optional output is unused.
	act, dummy *buffer
	buffers    map[*buffer]struct{} // live, released by Close
	weights    []*weight
	rope       []float32 // RoPE's cos/sin table, reused
	err        error     // the first failure of an operation (see the package doc)
}

// newBackend wraps a device.
func newBackend(dev device) (*Backend, error) {
	b := &Backend{dev: dev, buffers: map[*buffer]struct{}{}}
	var err error
	if b.act, err = b.newBuffer(0, false); err == nil {
		b.dummy, err = b.newBuffer(0, false)
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Name implements accel.Backend.
func (b *Backend) Name() string { return "metal (" + b.dev.name() + ")" }

// Close implements accel.Backend: it waits for pending work and releases
// every buffer, weight and the device. It returns the first failure of an
// operation, if any.
func (b *Backend) Close() error {
	b.wait()
	for buf := range b.buffers {
		b.release(buf)
	}
	for _, w := range b.weights {
		b.dev.free(w.m)
	}
	b.weights = nil
	b.dev.close()
	return b.err
}

// Err implements accel.Checker: the first failure of an operation.
func (b *Backend) Err() error { return b.err }

// fail records the first failure of an operation.
func (b *Backend) fail(format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf("metal: "+format, args...)
	}
}

// wait runs the queued work, recording a failure.
func (b *Backend) wait() {
	if err := b.dev.wait(); err != nil {
		b.fail("%w", err)
	}
}

// newBuffer allocates a zeroed buffer of n values (f16 or float32).
func (b *Backend) newBuffer(n int, f16 bool) (*buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("metal: alloc %d values", n)
	}
	size := 4 * n
	if f16 {
		size = 2 * n
	}
	m, err := b.dev.alloc(max(size, 16))
	if err != nil {
		return nil, fmt.Errorf("metal: alloc %d bytes: %w", size, err)
	}
	buf := &buffer{m: m, n: n, f16: f16}
	b.buffers[buf] = struct{}{}
	return buf, nil
}

// release frees a buffer.
func (b *Backend) release(buf *buffer) {
	b.dev.free(buf.m)
	delete(b.buffers, buf)
	*buf = buffer{}
}

// Alloc implements accel.Backend.
func (b *Backend) Alloc(n int) (accel.Buffer, error) {
	if b.err != nil {
		return nil, b.err
	}
	return b.newBuffer(n, false)
}

// AllocCache implements accel.Backend.
func (b *Backend) AllocCache(n int, typ quant.Type) (accel.Buffer, error) {
	if b.err != nil {
		return nil, b.err
	}
	if typ != quant.F32 && typ != quant.F16 {
		return nil, fmt.Errorf("metal: KV cache type %s is not supported (f32, f16)", typ)
	}
	return b.newBuffer(n, typ == quant.F16)
}

// Free implements accel.Backend.
func (b *Backend) Free(x accel.Buffer) {
	if buf, ok := x.(*buffer); ok && buf.m.ptr != nil {
		b.release(buf)
	}
}

// Load implements accel.Backend: the matrix is copied to device memory.
func (b *Backend) Load(m accel.Matrix) (accel.Weight, error) {
	if b.err != nil {
		return nil, b.err
	}
	kind, ok := weightKinds[m.Type]
	if !ok {
		return nil, fmt.Errorf("metal: load %s: weight type %s is not supported", m.Name, m.Type)
	}
	rowLen, err := m.Type.RowSize(m.Cols)
	if err != nil {
		return nil, fmt.Errorf("metal: load %s: %w", m.Name, err)
	}
	if m.Rows < 0 || len(m.Data) != rowLen*m.Rows {
		return nil, fmt.Errorf("metal: load %s: %d bytes, want %d rows of %d", m.Name, len(m.Data), m.Rows, rowLen)
	}
	if !fits32(m.Rows, m.Cols, rowLen) {
		return nil, fmt.Errorf("metal: load %s: %d×%d is too large", m.Name, m.Rows, m.Cols)
	}
	dm, err := b.dev.alloc(max(len(m.Data), 16))
	if err != nil {
		return nil, fmt.Errorf("metal: load %s: %d bytes: %w", m.Name, len(m.Data), err)
	}
	copy(unsafe.Slice((*byte)(dm.ptr), len(m.Data)), m.Data)
	w := &weight{m: dm, rows: m.Rows, cols: m.Cols, rowLen: rowLen, kind: kind}
	b.weights = append(b.weights, w)
	return w, nil
}

// Write implements accel.Backend. It waits for pending work first: the
// work may still read the values being replaced.
func (b *Backend) Write(dst accel.Buffer, off int, src []float32) {
	d := b.buf(dst)
	if d == nil || !b.inRange(d, off, len(src), "write") {
		return
	}
	b.wait()
	if d.f16 {
		h := d.halves()[off:]
		for i, v := range src {
			h[i] = quant.F32ToF16(v)
		}
		return
	}
	copy(d.floats()[off:], src)
}

// Read implements accel.Backend; it waits for the pending work.
func (b *Backend) Read(dst []float32, src accel.Buffer, off int) {
	s := b.buf(src)
	if s == nil || !b.inRange(s, off, len(dst), "read") {
		return
	}
	b.wait()
	if s.f16 {
		for i, h := range s.halves()[off : off+len(dst)] {
			dst[i] = quant.F16ToF32(h)
		}
		return
	}
	copy(dst, s.floats()[off:])
}

// WriteCache implements accel.Backend. Both caches are row-major, so keys
// and values are plain writes at row at.
func (b *Backend) WriteCache(kc, vc accel.Buffer, kvDim, at int, k, v []float32) {
	b.Write(kc, at*kvDim, k)
	b.Write(vc, at*kvDim, v)
}

// buf is x as this backend's buffer, or nil (the failure recorded) when
// it is another backend's or freed.
func (b *Backend) buf(x accel.Buffer) *buffer {
	buf, ok := x.(*buffer)
	if !ok || buf.m.ptr == nil {
		b.fail("%T is not a live metal buffer", x)
		return nil
	}
	return buf
}

// weight is w as this backend's weight, or nil (the failure recorded).
func (b *Backend) weight(w accel.Weight) *weight {
	wt, ok := w.(*weight)
	if !ok {
		b.fail("%T is not a metal weight", w)
	}
	return wt
}

// inRange checks that values [off, off+n) lie within buf.
func (b *Backend) inRange(buf *buffer, off, n int, op string) bool {
	if off < 0 || n < 0 || off+n > buf.n {
		b.fail("%s: values [%d, %d) of a buffer of %d: %w", op, off, off+n, buf.n, errRange)
		return false
	}
	return true
}

// fits checks that element counts fit the kernels' uint32 parameters.
func (b *Backend) fits(n int, op string) bool {
	if !fits32(n) {
		b.fail("%s: %d values: %w", op, n, errRange)
		return false
	}
	return true
}

// run queues one dispatch of kernel with its parameter block. Empty grids
// are skipped: Metal rejects them.
func run[P any](b *Backend, kernel string, grid, group [3]int, params *P, args ...arg) {
	if grid[0] == 0 || grid[1] == 0 || grid[2] == 0 {
		return
	}
	p := unsafe.Slice((*byte)(unsafe.Pointer(params)), unsafe.Sizeof(*params))
	if err := b.dev.dispatch(kernel, grid, group, args, p); err != nil {
		b.fail("%s: %w", kernel, err)
	}
}

// upload copies host values into new device memory for one operation;
// the caller frees it once the dispatch is queued.
func upload[T any](b *Backend, v []T) (mem, bool) {
	size := len(v) * int(unsafe.Sizeof(*new(T)))
	m, err := b.dev.alloc(max(size, 16))
	if err != nil {
		b.fail("upload %d bytes: %w", size, err)
		return mem{}, false
	}
	copy(unsafe.Slice((*T)(m.ptr), len(v)), v)
	return m, true
}
