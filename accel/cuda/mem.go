package cuda

import (
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/quant"
)

// buffer is device memory of float32 values, or f16 values for a cache.
type buffer struct {
	ptr uint64
	n   int
	f16 bool
}

func (b *buffer) Len() int { return b.n }

func (b *buffer) elem() int {
	if b.f16 {
		return 2
	}
	return 4
}

// at is the device address of element i.
func (b *buffer) at(i int) uint64 { return b.ptr + uint64(i*b.elem()) }

// devMem is scratch device memory that grows to the largest size asked.
type devMem struct {
	ptr  uint64
	size int // bytes
}

// upload is a small device array of host int32 values (token ids,
// positions, row indices). The engine passes the same positions to every
// layer's RoPE, so an upload equal to the last one is skipped.
type upload struct {
	mem  devMem
	last []int32
}

func unsafePointer[T any](s []T) unsafe.Pointer { return unsafe.Pointer(&s[0]) }

// alloc returns n zeroed bytes of device memory (0 for n = 0).
func (b *Backend) alloc(n int) (uint64, error) {
	if n == 0 {
		return 0, nil
	}
	var p uint64
	if err := b.check("cuMemAlloc", b.drv.cuMemAlloc(&p, uint64(n))); err != nil {
		var free, total uint64
		b.drv.cuMemGetInfo(&free, &total)
		return 0, fmt.Errorf("%w: %d MiB asked, %d of %d MiB free on the device", err, n>>20, free>>20, total>>20)
	}
	if err := b.check("cuMemsetD8", b.drv.cuMemsetD8(p, 0, uint64(n))); err != nil {
		b.drv.cuMemFree(p)
		return 0, err
	}
	b.live[p] = struct{}{}
	return p, nil
}

// free releases memory from alloc. Close frees what is left, so that a
// backend closed after a failed load (a model too large for the device)
// gives its memory back even while other backends hold the device's
// context.
func (b *Backend) free(p uint64) {
	if p != 0 {
		delete(b.live, p)
		b.drv.cuMemFree(p)
	}
}

// grow makes m at least n bytes, replacing (not copying) its contents.
func (b *Backend) grow(m *devMem, n int) uint64 {
	if m.size >= n {
		return m.ptr
	}
	// Queued kernels may still read the old memory.
	b.flush()
	b.rounded = rounded{}
	b.fail("cuCtxSynchronize", b.drv.cuCtxSynchronize())
	size := max(n, 2*m.size)
	b.release(m)
	p, err := b.alloc(size)
	if err != nil {
		b.failWith(err)
		return 0
	}
	m.ptr, m.size = p, size
	return p
}

func (b *Backend) release(m *devMem) {
	if m.ptr != 0 {
		b.free(m.ptr)
	}
	m.ptr, m.size = 0, 0
}

// send copies v to u's device array unless it holds v already. The copy
// is synchronous from pageable memory but ordered on the stream after the
// kernels queued before it, so it cannot change what they read.
func (b *Backend) send(u *upload, v []int32) uint64 {
	if len(v) == 0 {
		return u.mem.ptr
	}
	if u.mem.ptr != 0 && slices.Equal(u.last, v) {
		return u.mem.ptr
	}
	p := b.grow(&u.mem, 4*len(v))
	if p == 0 {
		return 0
	}
	b.flush() // queued kernels read the old values
	b.fail("cuMemcpyHtoD", b.drv.cuMemcpyHtoD(p, unsafePointer(v), uint64(4*len(v))))
	u.last = append(u.last[:0], v...)
	return p
}

// Alloc implements accel.Backend.
func (b *Backend) Alloc(n int) (accel.Buffer, error) { return b.allocBuffer(n, false) }

// AllocCache implements accel.Backend. The cache is row-major for keys and
// values alike: [row][kvDim].
func (b *Backend) AllocCache(n int, typ quant.Type) (accel.Buffer, error) {
	switch typ {
	case quant.F32:
		return b.allocBuffer(n, false)
	case quant.F16:
		return b.allocBuffer(n, true)
	}
	return nil, fmt.Errorf("cuda: KV cache type %s is not supported (f32, f16)", typ)
}

// allocBuffer returns a zeroed buffer of n float32 (or f16) values.
func (b *Backend) allocBuffer(n int, f16 bool) (accel.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("cuda: alloc %d values", n)
	}
	buf := &buffer{n: n, f16: f16}
	b.enter()
	defer b.leave()
	p, err := b.alloc(n * buf.elem())
	if err != nil {
		return nil, err
	}
	buf.ptr = p
	return buf, nil
}

// Free implements accel.Backend.
func (b *Backend) Free(buf accel.Buffer) {
	x, ok := buf.(*buffer)
	if !ok || x.ptr == 0 {
		return
	}
	b.enter()
	defer b.leave()
	b.flush()
	b.fail("cuCtxSynchronize", b.drv.cuCtxSynchronize())
	b.free(x.ptr)
	x.ptr, x.n = 0, 0
}

// Write implements accel.Backend.
func (b *Backend) Write(dst accel.Buffer, off int, src []float32) {
	if len(src) == 0 {
		return
	}
	d := dst.(*buffer)
	b.enter()
	defer b.leave()
	b.flush()
	b.rounded = rounded{}
	if d.f16 {
		h := make([]uint16, len(src))
		for i, v := range src {
			h[i] = quant.F32ToF16(v)
		}
		b.fail("cuMemcpyHtoD", b.drv.cuMemcpyHtoD(d.at(off), unsafePointer(h), uint64(2*len(h))))
		return
	}
	b.fail("cuMemcpyHtoD", b.drv.cuMemcpyHtoD(d.at(off), unsafePointer(src), uint64(4*len(src))))
}

// Read implements accel.Backend. It waits for every queued operation; after
// a failure it leaves dst as zeros (Err says why).
func (b *Backend) Read(dst []float32, src accel.Buffer, off int) {
	if len(dst) == 0 {
		return
	}
	s := src.(*buffer)
	b.enter()
	defer b.leave()
	b.flush()
	if s.f16 {
		h := make([]uint16, len(dst))
		b.fail("cuMemcpyDtoH", b.drv.cuMemcpyDtoH(unsafePointer(h), s.at(off), uint64(2*len(h))))
		for i, v := range h {
			dst[i] = quant.F16ToF32(v)
		}
	} else {
		b.fail("cuMemcpyDtoH", b.drv.cuMemcpyDtoH(unsafePointer(dst), s.at(off), uint64(4*len(dst))))
	}
	if b.err != nil {
		clear(dst)
	}
}

// weight is a matrix uploaded in its storage type.
type weight struct {
	rows, cols int
	typ        quant.Type
	ptr        uint64
	rowBytes   int
	// The kernels of its type, named once here rather than at every
	// launch; act rounds the activations, "" for float weights.
	matvec, dequant, embed, act string
}

func (w *weight) Dims() (rows, cols int) { return w.rows, w.cols }

// kernelSuffix names each supported weight type's kernels (q4_0 and q8_0:
// of their repacked layout, repack.go).
var kernelSuffix = map[quant.Type]string{
	quant.F32: "f32", quant.F16: "f16", quant.BF16: "bf16",
	quant.Q4_0: "q4_0r", quant.Q4_1: "q4_1", quant.Q5_0: "q5_0", quant.Q5_1: "q5_1", quant.Q8_0: "q8_0r",
	quant.Q4_K: "q4_k", quant.Q5_K: "q5_k", quant.Q6_K: "q6_k",
}

// actKernel is the kernel that rounds activations to the CPU backend's
// activation type for weights of type t ("" when it uses float32).
func actKernel(t quant.Type) string {
	switch t {
	case quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0:
		return "actq8a"
	case quant.Q4_K, quant.Q5_K, quant.Q6_K:
		return "actq8k"
	}
	return ""
}

// Load implements accel.Backend: the matrix is copied to the device in its
// storage type. A model that does not fit fails here with the sizes.
func (b *Backend) Load(m accel.Matrix) (accel.Weight, error) {
	suffix, ok := kernelSuffix[m.Type]
	if !ok {
		return nil, fmt.Errorf("cuda: load %s: type %s is not supported", m.Name, m.Type)
	}
	if m.Cols%4 != 0 {
		// Activation rows are read in aligned groups of four floats.
		return nil, fmt.Errorf("cuda: load %s: %d columns, want a multiple of 4", m.Name, m.Cols)
	}
	rowBytes, err := m.Type.RowSize(m.Cols)
	if err != nil {
		return nil, fmt.Errorf("cuda: load %s: %w", m.Name, err)
	}
	if len(m.Data) != rowBytes*m.Rows {
		return nil, fmt.Errorf("cuda: load %s: %d bytes, want %d", m.Name, len(m.Data), rowBytes*m.Rows)
	}
	data := m.Data
	if r, ok := repackedTypes[m.Type]; ok {
		data, rowBytes = r.repack(m.Data, m.Rows, m.Cols), r.rowBytes(m.Cols/32)
	}
	b.enter()
	defer b.leave()
	p, err := b.alloc(len(data))
	if err != nil {
		return nil, fmt.Errorf("cuda: load %s: %w", m.Name, err)
	}
	if len(data) > 0 {
		if err := b.check("cuMemcpyHtoD", b.drv.cuMemcpyHtoD(p, unsafePointer(data), uint64(len(data)))); err != nil {
			b.free(p)
			return nil, fmt.Errorf("cuda: load %s: %w", m.Name, err)
		}
	}
	return &weight{rows: m.Rows, cols: m.Cols, typ: m.Type, ptr: p, rowBytes: rowBytes,
		matvec: "matvec_" + suffix, dequant: "dequant_" + suffix, embed: "embed_" + suffix, act: actKernel(m.Type)}, nil
}

// CopyBandwidth measures device memory bandwidth with device-to-device
// copies of n bytes: bytes read plus bytes written per second, the figure
// a decode step that reads every weight once is bounded by.
func (b *Backend) CopyBandwidth(n int) (float64, error) {
	b.enter()
	defer b.leave()
	b.flush()
	src, err := b.alloc(n)
	if err != nil {
		return 0, err
	}
	defer b.free(src)
	dst, err := b.alloc(n)
	if err != nil {
		return 0, err
	}
	defer b.free(dst)
	const reps = 20
	var start time.Time
	for i := -1; i < reps; i++ {
		if i == 0 {
			// The first copy warms up; time the rest.
			if err := b.check("cuCtxSynchronize", b.drv.cuCtxSynchronize()); err != nil {
				return 0, err
			}
			start = time.Now()
		}
		if err := b.check("cuMemcpyDtoD", b.drv.cuMemcpyDtoD(dst, src, uint64(n))); err != nil {
			return 0, err
		}
	}
	if err := b.check("cuCtxSynchronize", b.drv.cuCtxSynchronize()); err != nil {
		return 0, err
	}
	return 2 * float64(n) * reps / time.Since(start).Seconds(), nil
}
