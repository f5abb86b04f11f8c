// Package cuda is the NVIDIA GPU backend: the CUDA driver API, NVRTC and
// cuBLAS opened at run time with purego (no cgo), kernels compiled from
// embedded CUDA C for the device's architecture on first use and cached on
// disk.
//
// Every operation is queued on the legacy default stream, so the device
// runs them in order while the host goes on; Read is the synchronisation
// point, and only what it reads (the logits) comes back. CUDA binds a
// context to an OS thread, so each method locks its goroutine to its thread
// and makes the device's primary context current for the length of the
// call: cheaper than handing every call to one locked goroutine, and just
// as safe for the single engine that drives a backend.
package cuda

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/ebitengine/purego"

	"github.com/edged/edged/accel"
)

// Config says where to look for the libraries and kernels.
type Config struct {
	LibDir   string // searched first for libcuda, libnvrtc and libcublas
	CacheDir string // compiled kernels; "" is the user's cache directory
	Device   int    // device ordinal
}

// Info describes the device and libraries a backend runs on.
type Info struct {
	Device        string // the GPU's name
	Arch          string // sm_XY
	Memory        uint64 // bytes of device memory
	DriverVersion int    // CUDA version of the driver (major·1000 + minor·10)
	Driver        string // the library files that opened
	NVRTC         string
	CUBLAS        string
	KernelCache   string // the compiled kernels' file, or why it was not written
	GEMM          string // prefill's GEMM precision: f16, tf32 or fp32
}

// Graphs says whether repeated launch sequences replay as CUDA graphs.
func (b *Backend) Graphs() string {
	if b.graphsOff != "" {
		return "off: " + b.graphsOff
	}
	return "on"
}

func (i Info) String() string {
	return fmt.Sprintf("%s (%s, %d MiB), driver CUDA %s: %s, %s, %s (%s GEMM)", i.Device, i.Arch, i.Memory>>20, version(i.DriverVersion), i.Driver, i.NVRTC, i.CUBLAS, i.GEMM)
}

// Backend runs the forward pass on one NVIDIA GPU. Like the CPU backend it
// is driven by one engine at a time.
type Backend struct {
	drv   driverAPI
	nvrtc nvrtcAPI
	blas  blasAPI
	info  Info

	dev       int32
	ctx       uintptr
	mod       uintptr
	handle    uintptr // cuBLAS
	fn        map[string]uintptr
	maxShared int // bytes of dynamic shared memory a block may opt into

	args *launchArgs
	err  error // the first failure of an operation, reported by Err

	// Queued launches and the graphs of repeated queues (graph.go).
	queue      []call
	recent     [][]call // the last queues flushed, to spot a repeat
	nextRecent int
	graphs     []*graph
	stream     uintptr // the capture stream
	graphsOff  string  // why graphs are not used; "" when they are
	replays    int
	profile    *profile // per-kernel times, with EDGED_CUDA_PROFILE=1

	// Scratch memory, grown on demand: activations rounded to the 8-bit
	// grid (and in f16 for the GEMM), a dequantized weight for prefill's
	// GEMM, attention probabilities and scores handed to observers,
	// flash-decoding's per-chunk results.
	act, acth, deq, obs, split devMem
	ids, pos, idx, past        upload
	pastHost                   []int32
	rounded                    rounded             // what act holds
	inMatMul                   bool                // MatMul's own launches keep rounded
	freqs                      map[*float64]uint64 // RoPE frequency tables on the device
	live                       map[uint64]struct{} // every allocation not yet freed

	one, zero float32 // cuBLAS's alpha and beta, in host memory
}

var _ accel.Backend = (*Backend)(nil)

// Open loads the libraries, initialises the device and compiles (or loads
// from the cache) the kernels. The error says which step failed and why,
// so that a caller can report "not available: …" and use the CPU.
func Open(cfg Config) (*Backend, error) {
	b := &Backend{fn: map[string]uintptr{}, freqs: map[*float64]uint64{}, live: map[uint64]struct{}{}, one: 1}
	if err := b.loadLibraries(cfg.LibDir); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := b.initDevice(cfg.Device); err != nil {
		return nil, err
	}
	if err := b.initKernels(cfg.CacheDir); err != nil {
		b.drv.cuDevicePrimaryCtxRelease(b.dev)
		return nil, err
	}
	if err := b.initBLAS(); err != nil {
		b.drv.cuModuleUnload(b.mod)
		b.drv.cuDevicePrimaryCtxRelease(b.dev)
		return nil, err
	}
	b.args = newLaunchArgs()
	if os.Getenv("EDGED_CUDA_GRAPHS") == "0" && b.graphsOff == "" {
		b.graphsOff = "EDGED_CUDA_GRAPHS=0"
	}
	if os.Getenv("EDGED_CUDA_PROFILE") == "1" {
		b.profile = newProfile()
	}
	return b, nil
}

func (b *Backend) loadLibraries(dir string) error {
	open := func(name string) (uintptr, error) { return purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL) }
	libs := []struct {
		what  string
		names []string
		out   *string
		bs    []binding
	}{
		{"driver (libcuda)", driverNames, &b.info.Driver, b.drv.symbols()},
		{"NVRTC", nvrtcNames, &b.info.NVRTC, b.nvrtc.symbols()},
		{"cuBLAS", cublasNames, &b.info.CUBLAS, b.blas.symbols()},
	}
	for _, l := range libs {
		f, err := search(open, l.names, dir, defaultDirs)
		if err != nil {
			return fmt.Errorf("no CUDA %s library: %w", l.what, err)
		}
		if err := bind(f.handle, f.name, l.bs); err != nil {
			return fmt.Errorf("CUDA %s: %w", l.what, err)
		}
		*l.out = f.name
		if l.out == &b.info.Driver {
			if err := bind(f.handle, f.name, b.drv.graphSymbols()); err != nil {
				b.graphsOff = err.Error()
			}
		}
	}
	return nil
}

// check turns a CUresult into an error described by the driver.
func (b *Backend) check(op string, code int32) error {
	return errorOf(op, code, func(c int32) string {
		var s *byte
		if b.drv.cuGetErrorString(c, &s) != 0 {
			return ""
		}
		return cString(s)
	})
}

// Device attributes (CUdevice_attribute).
const (
	attrComputeMajor       = 75
	attrComputeMinor       = 76
	attrMaxSharedOptin     = 97
	funcAttrMaxDynamicSMem = 8
)

func (b *Backend) initDevice(ordinal int) error {
	if err := b.check("cuInit", b.drv.cuInit(0)); err != nil {
		return err
	}
	var v, n int32
	if err := b.check("cuDriverGetVersion", b.drv.cuDriverGetVersion(&v)); err != nil {
		return err
	}
	b.info.DriverVersion = int(v)
	if err := b.check("cuDeviceGetCount", b.drv.cuDeviceGetCount(&n)); err != nil {
		return err
	}
	if ordinal < 0 || ordinal >= int(n) {
		return fmt.Errorf("cuda: device %d: %d devices present", ordinal, n)
	}
	if err := b.check("cuDeviceGet", b.drv.cuDeviceGet(&b.dev, int32(ordinal))); err != nil {
		return err
	}
	name := make([]byte, 256)
	if err := b.check("cuDeviceGetName", b.drv.cuDeviceGetName(&name[0], int32(len(name)), b.dev)); err != nil {
		return err
	}
	b.info.Device = cString(&name[0])
	var major, minor, shared int32
	for _, a := range []struct {
		attr int32
		v    *int32
	}{{attrComputeMajor, &major}, {attrComputeMinor, &minor}, {attrMaxSharedOptin, &shared}} {
		if err := b.check("cuDeviceGetAttribute", b.drv.cuDeviceGetAttribute(a.v, a.attr, b.dev)); err != nil {
			return err
		}
	}
	b.info.Arch = fmt.Sprintf("sm_%d%d", major, minor)
	b.maxShared = int(shared)
	if err := b.check("cuDevicePrimaryCtxRetain", b.drv.cuDevicePrimaryCtxRetain(&b.ctx, b.dev)); err != nil {
		return err
	}
	if err := b.check("cuCtxSetCurrent", b.drv.cuCtxSetCurrent(b.ctx)); err != nil {
		b.drv.cuDevicePrimaryCtxRelease(b.dev)
		return err
	}
	var free uint64
	if err := b.check("cuMemGetInfo", b.drv.cuMemGetInfo(&free, &b.info.Memory)); err != nil {
		b.drv.cuDevicePrimaryCtxRelease(b.dev)
		return err
	}
	return nil
}

func (b *Backend) initKernels(cacheDirCfg string) error {
	dir, err := cacheDir(cacheDirCfg)
	if err != nil {
		return err
	}
	image, err := b.cubin(b.info.Arch, dir)
	if err != nil {
		return fmt.Errorf("cuda: compile kernels for %s: %w", b.info.Arch, err)
	}
	if err := b.check("cuModuleLoadData", b.drv.cuModuleLoadData(&b.mod, unsafePointer(image))); err != nil {
		return err
	}
	for _, name := range kernelNames(kernelSource) {
		var f uintptr
		if err := b.check("cuModuleGetFunction "+name, b.drv.cuModuleGetFunction(&f, b.mod, name)); err != nil {
			b.drv.cuModuleUnload(b.mod)
			return err
		}
		b.fn[name] = f
	}
	// Attention keeps a row's scores in shared memory: allow the most the
	// device offers, so that long contexts fit.
	if err := b.check("cuFuncSetAttribute", b.drv.cuFuncSetAttribute(b.fn["attention"], funcAttrMaxDynamicSMem, int32(b.sharedLimit()))); err != nil {
		b.drv.cuModuleUnload(b.mod)
		return err
	}
	return nil
}

// cuBLAS math modes: plain float32, or TF32 tensor cores (10-bit
// mantissas) in single-precision GEMMs.
const (
	blasDefaultMath      = 0
	blasTF32TensorOpMath = 3
)

// gemmMode is prefill's GEMM precision, EDGED_CUDA_GEMM: "f16" (weights
// and activations in f16 on tensor cores, float32 sums), "tf32" (float32
// inputs rounded to TF32 on tensor cores) or "fp32" (exact float32
// products). The default is f16: on an H200 it ran pp512 of a 1.1B model
// 1.4× as fast as tf32 and 2.4× as fast as fp32, with tf32's agreement
// with the CPU (both round to 11 significant bits); see BENCHMARKS.md.
func gemmMode() (string, error) {
	switch m := os.Getenv("EDGED_CUDA_GEMM"); m {
	case "":
		return "f16", nil
	case "f16", "tf32", "fp32":
		return m, nil
	default:
		return "", fmt.Errorf("cuda: EDGED_CUDA_GEMM=%q: want f16, tf32 or fp32", m)
	}
}

func (b *Backend) initBLAS() error {
	if code := b.blas.cublasCreate(&b.handle); code != 0 {
		return &Error{Op: "cublasCreate", Code: int(code), Msg: blasStatus(code)}
	}
	var v int32
	if code := b.blas.cublasGetVersion(b.handle, &v); code == 0 {
		b.info.CUBLAS += fmt.Sprintf(" %d.%d.%d", v/10000, v%10000/100, v%100)
	}
	name, err := gemmMode()
	if err != nil {
		b.blas.cublasDestroy(b.handle)
		return err
	}
	b.info.GEMM = name
	mode := int32(blasTF32TensorOpMath)
	if name == "fp32" {
		mode = blasDefaultMath
	}
	if code := b.blas.cublasSetMathMode(b.handle, mode); code != 0 {
		b.blas.cublasDestroy(b.handle)
		return &Error{Op: "cublasSetMathMode", Code: int(code), Msg: blasStatus(code)}
	}
	return nil
}

// Info describes the device and libraries.
func (b *Backend) Info() Info { return b.info }

// Name implements accel.Backend.
func (b *Backend) Name() string { return fmt.Sprintf("cuda (%s, %s)", b.info.Device, b.info.Arch) }

// Err returns the first failure of an operation since Open: operations
// have no error result (accel.Backend), so a device fault surfaces here
// and at the next Read.
func (b *Backend) Err() error { return b.err }

// Close implements accel.Backend.
func (b *Backend) Close() error {
	b.enter()
	defer b.leave()
	b.flush()
	b.profile.write(os.Stderr)
	var errs []error
	errs = append(errs, b.check("cuCtxSynchronize", b.drv.cuCtxSynchronize()))
	b.releaseGraphs()
	for _, m := range []*devMem{&b.act, &b.acth, &b.deq, &b.obs, &b.split, &b.ids.mem, &b.pos.mem, &b.idx.mem, &b.past.mem} {
		b.release(m)
	}
	for p := range b.live {
		b.free(p) // weights, buffers, RoPE tables
	}
	if code := b.blas.cublasDestroy(b.handle); code != 0 {
		errs = append(errs, &Error{Op: "cublasDestroy", Code: int(code), Msg: blasStatus(code)})
	}
	errs = append(errs, b.check("cuModuleUnload", b.drv.cuModuleUnload(b.mod)))
	errs = append(errs, b.check("cuDevicePrimaryCtxRelease", b.drv.cuDevicePrimaryCtxRelease(b.dev)))
	b.args.pin.Unpin()
	return errors.Join(errs...)
}

// enter makes the device's context current on this goroutine's thread for
// the length of one method; leave ends that.
func (b *Backend) enter() {
	runtime.LockOSThread()
	b.fail("cuCtxSetCurrent", b.drv.cuCtxSetCurrent(b.ctx))
}

func (b *Backend) leave() { runtime.UnlockOSThread() }

// fail records the first failed operation.
func (b *Backend) fail(op string, code int32) {
	if code != 0 {
		b.failWith(b.check(op, code))
	}
}

// failWith records err unless an earlier failure is recorded.
func (b *Backend) failWith(err error) {
	if b.err == nil {
		b.err = err
	}
}

// sharedLimit is the dynamic shared memory a kernel may ask for: the
// device's opt-in maximum less room for the kernels' static arrays.
func (b *Backend) sharedLimit() int { return b.maxShared - 1024 }
