package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/internal/fixture"
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

var (
	emuOnce   sync.Once
	emuDir    string // removed by TestMain
	emuDriver string
	emuErr    error
)

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

// buildEmulator compiles the driver with the kernels once per test run.
// It needs a C++20 compiler with _Float16 (g++ 12 on x86-64 or arm64).
func buildEmulator() (string, error) {
	emuOnce.Do(func() {
		cxx := os.Getenv("CXX")
		if cxx == "" {
			cxx = "g++"
		}
		dir, err := os.MkdirTemp("", "cuda-emu")
		if err != nil {
			emuErr = err
			return
		}
		emuDir = dir
		if err := emuProbe(cxx, dir); err != nil {
			emuErr = fmt.Errorf("no C++ compiler: %w", err)
			return
		}
		driver, err := filepath.Abs("testdata/driver.cpp")
		if err != nil {
			emuErr = err
			return
		}
		src, err := emuSource(kernelSource)
		if err != nil {
			emuErr = err
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "kernels.cpp"), []byte(src), 0o644); err != nil {
			emuErr = err
			return
		}
		emuDriver = filepath.Join(dir, "driver")
		// No contraction: the GPU fuses some products into FMAs, the CPU
		// backend none; the tolerances cover the difference.
		cmd := exec.Command(cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-fno-strict-aliasing",
			"-Wall", "-Wno-unknown-pragmas", "-Wno-unused", "-Wno-sign-compare", "-I", dir, "-o", emuDriver, driver)
		if out, err := cmd.CombinedOutput(); err != nil {
			emuErr = fmt.Errorf("compile the emulator: %v\n%s", err, out)
		}
	})
	return emuDriver, emuErr
}

// TestMain removes the emulator built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if emuDir != "" {
		os.RemoveAll(emuDir)
	}
	os.Exit(code)
}

// emuProbe checks that cxx compiles C++20 with _Float16, so that a system
// without one skips the emulator rather than failing on it.
func emuProbe(cxx, dir string) error {
	src := filepath.Join(dir, "probe.cpp")
	prog := "#include <ucontext.h>\n#include <bit>\nint main() { _Float16 h = 1.5f; ucontext_t c; getcontext(&c); return std::bit_cast<unsigned short>(h) == 0x3e00 ? 0 : 1; }\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		return err
	}
	out, err := exec.Command(cxx, "-std=c++20", "-o", filepath.Join(dir, "probe"), src).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", cxx, err, out)
	}
	return nil
}

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
	driver, err := buildEmulator()
	if err != nil {
		if strings.HasPrefix(err.Error(), "no C++ compiler") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	d := &emuDevice{t: t, driver: driver, dir: t.TempDir(), mems: map[uint64][]byte{}, next: emuBase,
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

// emuPair holds the same buffer on the emulated backend and the CPU's.
type emuPair struct {
	g, c accel.Buffer
}

type emuBoth struct {
	t   *testing.T
	gpu *Backend
	dev *emuDevice
	cpu *cpu.Backend
}

func newEmuBoth(t *testing.T, gemm string) *emuBoth {
	g, d := emuBackend(t, gemm)
	c := cpu.New(1)
	t.Cleanup(func() { c.Close() })
	return &emuBoth{t: t, gpu: g, dev: d, cpu: c}
}

func (b *emuBoth) buf(vals []float32) emuPair {
	g, err := b.gpu.Alloc(len(vals))
	require.NoError(b.t, err)
	c, err := b.cpu.Alloc(len(vals))
	require.NoError(b.t, err)
	b.gpu.Write(g, 0, vals)
	b.cpu.Write(c, 0, vals)
	return emuPair{g, c}
}

func (b *emuBoth) close(p emuPair, tol float64, what string) {
	g, c := make([]float32, p.g.Len()), make([]float32, p.c.Len())
	b.gpu.Read(g, p.g, 0)
	b.cpu.Read(c, p.c, 0)
	require.NoError(b.t, b.gpu.Err())
	l2 := fixture.RelL2(g, c)
	b.t.Logf("%s: rel L2 %.2e", what, l2)
	assert.LessOrEqual(b.t, l2, tol, what)
}

func (b *emuBoth) cache(rng *rand.Rand, capacity, kvDim, past int, typ quant.Type) (kc, vc emuPair) {
	var err error
	for _, p := range []*emuPair{&kc, &vc} {
		p.g, err = b.gpu.AllocCache(capacity*kvDim, typ)
		require.NoError(b.t, err)
		p.c, err = b.cpu.AllocCache(capacity*kvDim, typ)
		require.NoError(b.t, err)
	}
	pk, pv := emuRand(rng, past*kvDim, 1), emuRand(rng, past*kvDim, 1)
	b.gpu.WriteCache(kc.g, vc.g, kvDim, 0, pk, pv)
	b.cpu.WriteCache(kc.c, vc.c, kvDim, 0, pk, pv)
	return kc, vc
}

func emuRand(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64()) * scale
	}
	return v
}

// Every weight type: MatMul at decode and small-batch sizes (the mat-vec
// kernels, with the activations rounded by actq8a or actq8k), at a GEMM
// size in float32 and on f16 inputs (the dequant and tohalf kernels before
// the fake cuBLAS), and Embed, against the CPU.
func TestEmuMatMul(t *testing.T) {
	for _, gemm := range []string{"fp32", "f16"} {
		t.Run(gemm, func(t *testing.T) {
			b := newEmuBoth(t, gemm)
			rng := rand.New(rand.NewPCG(1, 2))
			const rows, cols = 77, 512
			types := []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.Q4_K, quant.Q5_K, quant.Q6_K}
			for _, typ := range types {
				t.Run(typ.String(), func(t *testing.T) {
					b.t = t
					size, err := typ.RowSize(cols)
					require.NoError(t, err)
					data := make([]byte, rows*size)
					require.NoError(t, quant.Quantize(typ, emuRand(rng, rows*cols, 0.5), data))
					m := accel.Matrix{Name: "w", Type: typ, Rows: rows, Cols: cols, Data: data}
					wg, err := b.gpu.Load(m)
					require.NoError(t, err)
					wc, err := b.cpu.Load(m)
					require.NoError(t, err)
					ns := []int{1, 3, 8, 13, 40}
					if gemm == "f16" {
						ns = []int{40} // the mat-vec does not depend on the GEMM's mode
					}
					for _, n := range ns {
						x := b.buf(emuRand(rng, n*cols, 1))
						out := b.buf(make([]float32, n*rows))
						b.gpu.MatMul(out.g, wg, x.g, n)
						b.cpu.MatMul(out.c, wc, x.c, n)
						tol := 1e-5
						if n > gemmRows && gemm == "f16" {
							tol = 2e-3 // f16 inputs: 11 significant bits
						}
						b.close(out, tol, fmt.Sprintf("%s matmul of %d rows", typ, n))
					}
					if gemm == "fp32" {
						ids := []int32{3, 0, rows - 1, 3, 40}
						emb := b.buf(make([]float32, len(ids)*cols))
						b.gpu.Embed(emb.g, wg, ids)
						b.cpu.Embed(emb.c, wc, ids)
						b.close(emb, 1e-7, typ.String()+" embed")
					}
				})
			}
			t.Logf("launches: %v", b.dev.counts)
		})
	}
}

func TestEmuElementwise(t *testing.T) {
	b := newEmuBoth(t, "fp32")
	rng := rand.New(rand.NewPCG(3, 4))
	const rows, n = 5, 96
	x, y, w := b.buf(emuRand(rng, rows*n, 1)), b.buf(emuRand(rng, rows*n, 1)), b.buf(emuRand(rng, n, 1))

	out := b.buf(make([]float32, rows*n))
	b.gpu.RMSNorm(out.g, x.g, w.g, rows, 1e-5)
	b.cpu.RMSNorm(out.c, x.c, w.c, rows, 1e-5)
	b.close(out, 1e-6, "rmsnorm")

	b.gpu.Add(x.g, y.g, rows*n-7)
	b.cpu.Add(x.c, y.c, rows*n-7)
	b.close(x, 1e-7, "add")

	b.gpu.AddRows(y.g, w.g, rows)
	b.cpu.AddRows(y.c, w.c, rows)
	b.close(y, 1e-7, "addrows")

	b.gpu.SwiGLU(out.g, x.g, y.g, rows*n)
	b.cpu.SwiGLU(out.c, x.c, y.c, rows*n)
	b.close(out, 1e-5, "swiglu")

	idx := []int32{4, 0, 2, 2}
	g := b.buf(make([]float32, len(idx)*n))
	b.gpu.Gather(g.g, x.g, n, idx)
	b.cpu.Gather(g.c, x.c, n, idx)
	b.close(g, 0, "gather")

	for _, neox := range []bool{false, true} {
		r := accel.NewRoPE(16, 16, 10000, neox, nil)
		pos := []int32{0, 1, 7, 300, 4095}
		v := b.buf(emuRand(rng, len(pos)*n, 1))
		b.gpu.RoPE(v.g, n, pos, r)
		b.cpu.RoPE(v.c, n, pos, r)
		b.close(v, 1e-6, fmt.Sprintf("rope (neox %v)", neox))
	}
}

// Attention with probabilities and scores handed back: the one-pass
// kernel, two sequences, grouped heads, both cache types.
func TestEmuAttention(t *testing.T) {
	b := newEmuBoth(t, "fp32")
	rng := rand.New(rand.NewPCG(5, 6))
	s := accel.AttnShape{NHead: 6, NHeadKV: 2, HeadDim: 32, Scale: 1 / float32(math.Sqrt(32))}
	kvDim, qDim := s.NHeadKV*s.HeadDim, s.NHead*s.HeadDim
	for _, typ := range []quant.Type{quant.F32, quant.F16} {
		const capacity = 64
		past := []int{5, 0}
		rows := []int{1, 9}
		total := rows[0] + rows[1]
		q, k, v := b.buf(emuRand(rng, total*qDim, 1)), b.buf(emuRand(rng, total*kvDim, 1)), b.buf(emuRand(rng, total*kvDim, 1))
		out := b.buf(make([]float32, total*qDim))
		var gs, cs []accel.AttnSeq
		var probs, scores [][]float32
		for i := range past {
			kc, vc := b.cache(rng, capacity, kvDim, past[i], typ)
			n := s.NHead * rows[i] * (past[i] + rows[i])
			gp, gsc, cp, csc := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
			probs = append(probs, gp, cp)
			scores = append(scores, gsc, csc)
			gs = append(gs, accel.AttnSeq{K: kc.g, V: vc.g, Past: past[i], Rows: rows[i], Probs: gp, Scores: gsc})
			cs = append(cs, accel.AttnSeq{K: kc.c, V: vc.c, Past: past[i], Rows: rows[i], Probs: cp, Scores: csc})
		}
		b.gpu.Attention(out.g, q.g, k.g, v.g, gs, s)
		b.cpu.Attention(out.c, q.c, k.c, v.c, cs, s)
		b.close(out, 1e-5, "attention "+typ.String())
		for i := 0; i < len(probs); i += 2 {
			assert.LessOrEqual(t, fixture.RelL2(probs[i], probs[i+1]), 1e-5, "probs")
			assert.LessOrEqual(t, fixture.RelL2(scores[i], scores[i+1]), 1e-5, "scores")
		}
	}
	assert.Equal(t, 4, b.dev.counts["attention"])
	assert.Zero(t, b.dev.counts["attn_split"]+b.dev.counts["attn_tiled"])
}

// Without observers, decode rows over a long cache take the chunked
// kernels (attn_split, attn_combine), where a short context in a long
// cache leaves most chunks empty, and many rows the tiled kernel (a
// partial last tile of rows, keys past a row's end masked).
func TestEmuAttentionNoObserver(t *testing.T) {
	b := newEmuBoth(t, "fp32")
	rng := rand.New(rand.NewPCG(9, 10))
	s := accel.AttnShape{NHead: 8, NHeadKV: 2, HeadDim: 64, Scale: 0.125}
	kvDim, qDim := s.NHeadKV*s.HeadDim, s.NHead*s.HeadDim
	const capacity = 1100
	for _, typ := range []quant.Type{quant.F32, quant.F16} {
		past, rows := []int{700, 3, 0, 300}, []int{1, 2, 37, 20}
		total := rows[0] + rows[1] + rows[2] + rows[3]
		q, k, v := b.buf(emuRand(rng, total*qDim, 1)), b.buf(emuRand(rng, total*kvDim, 1)), b.buf(emuRand(rng, total*kvDim, 1))
		out := b.buf(make([]float32, total*qDim))
		var gs, cs []accel.AttnSeq
		for i := range past {
			kc, vc := b.cache(rng, capacity, kvDim, past[i], typ)
			gs = append(gs, accel.AttnSeq{K: kc.g, V: vc.g, Past: past[i], Rows: rows[i]})
			cs = append(cs, accel.AttnSeq{K: kc.c, V: vc.c, Past: past[i], Rows: rows[i]})
		}
		b.gpu.Attention(out.g, q.g, k.g, v.g, gs, s)
		b.cpu.Attention(out.c, q.c, k.c, v.c, cs, s)
		b.close(out, 1e-5, "attention without observers "+typ.String())
	}
	assert.Equal(t, 4, b.dev.counts["attn_split"])
	assert.Equal(t, 4, b.dev.counts["attn_combine"])
	assert.Equal(t, 4, b.dev.counts["attn_tiled"])
	assert.Zero(t, b.dev.counts["attention"])
}
