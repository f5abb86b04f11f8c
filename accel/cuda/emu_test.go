package cuda

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"

	"github.com/edged/edged/accel/accelcheck"
	"github.com/edged/edged/internal/cxxemu"
	"github.com/edged/edged/quant"
)

// The emulator runs the kernels of kernels.cu compiled as C++ for the CPU
// (testdata/driver.cpp), one process per launch, under a Backend whose
// driver and cuBLAS are fakes in Go: device memory is host byte slices at
// made-up device addresses, a launch hands the memory its parameters
// point into to the driver process (which maps it at the same addresses),
// and the GEMM is a plain loop. So the backend's operations, from the Go
// code that sizes and queues the launches to the kernels' arithmetic and
// indexing, can be compared with the CPU backend where there is no GPU.
// It checks what C++ can: not NVRTC, the GPU's memory model or its
// scheduling (a block's threads are coroutines switched where they wait
// at a barrier or for a shuffle partner; blocks run one at a time).

// emu is the emulator, built once per test run; TestMain removes it.
var emu cxxemu.Once

// emuSource is kernels.cu as C++: its two inline PTX conversions become
// calls of the driver's, and its dynamic shared arrays pointers to the
// driver's (the other CUDA keywords are macros in the driver).
func emuSource(src string) (string, error) {
	for _, r := range []struct{ asm, call string }{
		{`asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));`, "f = emu_h2f(h);"},
		{`asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));`, "h = emu_f2h(f);"},
	} {
		if strings.Count(src, r.asm) != 1 {
			return "", fmt.Errorf("kernels.cu: want one %s", r.asm)
		}
		src = strings.Replace(src, r.asm, r.call, 1)
	}
	src = regexp.MustCompile(`extern __shared__ (\w+) (\w+)\[\];`).ReplaceAllString(src, "$1* $2 = ($1*)emu_dyn_shared;")
	if strings.Contains(src, "asm(") || strings.Contains(src, "extern __shared__") {
		return "", fmt.Errorf("kernels.cu: inline assembly or dynamic shared memory the emulator does not know")
	}
	return src, nil
}

// buildEmulator compiles the driver with the kernels. It needs a C++20
// compiler with _Float16 (g++ 12 on x86-64 or arm64).
func buildEmulator() (cxxemu.Program, error) {
	src, err := emuSource(kernelSource)
	if err != nil {
		return cxxemu.Program{}, err
	}
	// No contraction: the GPU fuses some products into FMAs, the CPU
	// backend none; the tolerances cover the difference.
	return cxxemu.Build("cuda-emu", "testdata/driver.cpp", src, emuProbe, "-std=c++20", "-O1", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused", "-Wno-sign-compare")
}

// TestMain removes the emulator built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	emu.Remove()
	os.Exit(code)
}

// emuProbe needs _Float16 and ucontext, so that a system without them
// skips the emulator rather than failing on it.
const emuProbe = "#include <ucontext.h>\n#include <bit>\nint main() { _Float16 h = 1.5f; ucontext_t c; getcontext(&c); return std::bit_cast<unsigned short>(h) == 0x3e00 ? 0 : 1; }\n"

// emuDevice is the fake driver's state: device memory, by base address.
type emuDevice struct {
	t      testing.TB
	b      *Backend
	driver string
	dir    string
	mems   map[uint64][]byte
	next   uint64
	names  map[uintptr]string
	counts map[string]int // launches by kernel
}

// Device addresses: far above the driver process's own mappings, with an
// unmapped gap after each allocation, so that a kernel reading well past
// its buffer faults.
const (
	emuBase = 0x1000_0000_0000
	emuGap  = 1 << 20
)

// region returns the n bytes at device address p.
func (d *emuDevice) region(p, n uint64) ([]byte, uint64, bool) {
	for base, m := range d.mems {
		if p >= base && p+n <= base+uint64(len(m)) {
			return m[p-base : p-base+n], base, true
		}
	}
	return nil, 0, false
}

// emuBackend is a Backend over the emulator, its GEMM in float32 (gemm
// "fp32") or on f16 inputs ("f16").
func emuBackend(t testing.TB, gemm string) (*Backend, *emuDevice) {
	if testing.Short() {
		t.Skip("emulator: not with -short")
	}
	d := &emuDevice{t: t, driver: emu.Path(t, buildEmulator), dir: t.TempDir(), mems: map[uint64][]byte{}, next: emuBase,
		names: map[uintptr]string{}, counts: map[string]int{}}
	b := &Backend{fn: map[string]uintptr{}, freqs: map[*float64]uint64{}, live: map[uint64]struct{}{}, one: 1,
		args: newLaunchArgs(), graphsOff: "emulator", maxShared: 232448} // an H200's opt-in shared memory
	t.Cleanup(b.args.pin.Unpin)
	d.b = b
	b.info.GEMM = gemm
	for i, name := range kernelNames(kernelSource) {
		b.fn[name] = uintptr(i + 1)
		d.names[uintptr(i+1)] = name
	}
	drv := &b.drv
	drv.cuCtxSetCurrent = func(uintptr) int32 { return 0 }
	drv.cuCtxSynchronize = func() int32 { return 0 }
	drv.cuGetErrorString = func(int32, **byte) int32 { return 1 }
	drv.cuMemGetInfo = func(free, total *uint64) int32 { return 0 }
	drv.cuMemAlloc = func(p *uint64, size uint64) int32 {
		*p = d.next
		d.mems[d.next] = make([]byte, size)
		d.next += (size+emuGap-1)/emuGap*emuGap + emuGap
		return 0
	}
	drv.cuMemFree = func(p uint64) int32 {
		if _, ok := d.mems[p]; !ok {
			t.Errorf("cuMemFree of %#x: not allocated", p)
			return 1
		}
		delete(d.mems, p)
		return 0
	}
	mem := func(op string, p, n uint64) []byte {
		m, _, ok := d.region(p, n)
		if !ok {
			t.Errorf("%s: %d bytes at %#x: not allocated", op, n, p)
		}
		return m
	}
	drv.cuMemsetD8 = func(p uint64, v uint8, n uint64) int32 {
		m := mem("cuMemsetD8", p, n)
		for i := range m {
			m[i] = v
		}
		return 0
	}
	drv.cuMemcpyHtoD = func(dst uint64, src unsafe.Pointer, n uint64) int32 {
		copy(mem("cuMemcpyHtoD", dst, n), unsafe.Slice((*byte)(src), n))
		return 0
	}
	drv.cuMemcpyDtoH = func(dst unsafe.Pointer, src uint64, n uint64) int32 {
		copy(unsafe.Slice((*byte)(dst), n), mem("cuMemcpyDtoH", src, n))
		return 0
	}
	drv.cuMemcpyDtoD = func(dst, src uint64, n uint64) int32 {
		copy(mem("cuMemcpyDtoD", dst, n), mem("cuMemcpyDtoD", src, n))
		return 0
	}
	drv.cuLaunchKernel = d.launch
	b.blas.cublasSgemm = func(h uintptr, ta, tb, m, n, k int32, alpha *float32, a uint64, lda int32, bb uint64, ldb int32, beta *float32, c uint64, ldc int32) int32 {
		return d.gemm(ta, tb, m, n, k, *alpha, a, cudaR32F, lda, bb, cudaR32F, ldb, *beta, c, cudaR32F, ldc)
	}
	b.blas.cublasGemmEx = func(h uintptr, ta, tb, m, n, k int32, alpha *float32, a uint64, atype, lda int32, bb uint64, btype, ldb int32, beta *float32, c uint64, ctype, ldc int32, compute, algo int32) int32 {
		if compute != blasCompute32 {
			t.Errorf("cublasGemmEx: compute type %d", compute)
			return 7
		}
		return d.gemm(ta, tb, m, n, k, *alpha, a, atype, lda, bb, btype, ldb, *beta, c, ctype, ldc)
	}
	return b, d
}

// launch runs a kernel in the driver process: the memory its parameters
// point into goes there in files and comes back.
func (d *emuDevice) launch(fn uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params unsafe.Pointer, extra uintptr) int32 {
	name, ok := d.names[fn]
	if !ok {
		d.t.Errorf("cuLaunchKernel: no function %d", fn)
		return 1
	}
	d.counts[name]++
	vals := d.b.args.vals // what params points at
	slots := make([]string, len(vals))
	argv := []string{name}
	for _, v := range []uint32{gx, gy, gz, bx, by, bz, shared} {
		argv = append(argv, strconv.FormatUint(uint64(v), 10))
	}
	files := map[uint64]string{}
	for i, v := range vals {
		slots[i] = strconv.FormatUint(v, 16)
		if v < emuBase {
			continue
		}
		_, base, ok := d.region(v, 0)
		if !ok {
			d.t.Errorf("%s: parameter %d: %#x is not device memory", name, i, v)
			return 1
		}
		if _, ok := files[base]; ok {
			continue
		}
		f := filepath.Join(d.dir, strconv.FormatUint(base, 16))
		if err := os.WriteFile(f, d.mems[base], 0o644); err != nil {
			d.t.Error(err)
			return 1
		}
		files[base] = f
	}
	argv = append(argv, strings.Join(slots, ","))
	for base, f := range files {
		argv = append(argv, strconv.FormatUint(base, 16), strconv.Itoa(len(d.mems[base])), f)
	}
	if out, err := exec.Command(d.driver, argv...).CombinedOutput(); err != nil {
		d.t.Errorf("emulator: %s: %v: %s", strings.Join(argv, " "), err, out)
		return 1
	}
	for base, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			d.t.Error(err)
			return 1
		}
		copy(d.mems[base], data)
	}
	return 0
}

// gemm is cuBLAS's C = αA'B' + βC, column-major, for the one shape the
// backend asks (A transposed, B not), in float64 sums of the inputs
// (float32, or f16 for GemmEx's halves), rounded once.
func (d *emuDevice) gemm(ta, tb, m, n, k int32, alpha float32, a uint64, atype, lda int32, b uint64, btype, ldb int32, beta float32, c uint64, ctype, ldc int32) int32 {
	if ta != blasOpT || tb != blasOpN || ctype != cudaR32F {
		d.t.Errorf("gemm: ops %d %d, C type %d", ta, tb, ctype)
		return 7
	}
	read := func(p uint64, typ, ld, cols int32) []float32 {
		size := 4
		if typ == cudaR16F {
			size = 2
		}
		raw, _, ok := d.region(p, uint64(size*int(ld)*int(cols)))
		if !ok {
			d.t.Errorf("gemm: operand at %#x is not device memory", p)
			return nil
		}
		out := make([]float32, int(ld)*int(cols))
		for i := range out {
			if size == 2 {
				out[i] = quant.F16ToF32(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
			} else {
				out[i] = math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
			}
		}
		return out
	}
	A, B := read(a, atype, lda, m), read(b, btype, ldb, n)
	craw, _, ok := d.region(c, uint64(4*int(ldc)*int(n)))
	if A == nil || B == nil || !ok {
		return 7
	}
	C := unsafe.Slice((*float32)(unsafe.Pointer(&craw[0])), int(ldc)*int(n))
	for j := range int(n) {
		for i := range int(m) {
			var s float64
			for l := range int(k) {
				s += float64(A[l+i*int(lda)]) * float64(B[l+j*int(ldb)])
			}
			v := float32(s) * alpha
			if beta != 0 {
				v += beta * C[i+j*int(ldc)]
			}
			C[i+j*int(ldc)] = v
		}
	}
	return 0
}

// TestEmuOps runs every operation check on a fresh emulated backend, its
// GEMM in float32, and counts its launches.
func TestEmuOps(t *testing.T) {
	counted := 0
	for _, c := range accelcheck.Checks() {
		want, ok := emuLaunches[c.Name]
		if ok {
			counted++
		}
		t.Run(c.Name, func(t *testing.T) {
			b, d := emuBackend(t, "fp32")
			c.Run(t, b, checkOptions(b))
			for k, n := range want {
				assert.Equal(t, n, d.counts[k], "launches of %s", k)
			}
		})
	}
	assert.Equal(t, len(emuLaunches), counted, "emuLaunches names a check that does not exist")
}

// The GEMM on f16 inputs (the mat-vec does not depend on its mode).
func TestEmuGEMMF16(t *testing.T) {
	b, _ := emuBackend(t, "f16")
	o := checkOptions(b)
	o.Batches = []int{40}
	accelcheck.MatMul(t, b, o)
}
