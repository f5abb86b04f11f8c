package cuda

import (
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Device pointers are CUdeviceptr (64-bit integers), handles (contexts,
// modules, functions, programs) are opaque C pointers: neither is ever
// turned into a Go pointer.

// driverAPI is the part of libcuda the backend calls. Results are CUresult
// codes; check turns them into errors.
type driverAPI struct {
	cuInit                      func(flags uint32) int32
	cuDriverGetVersion          func(v *int32) int32
	cuDeviceGetCount            func(n *int32) int32
	cuDeviceGet                 func(dev *int32, ordinal int32) int32
	cuDeviceGetName             func(name *byte, n int32, dev int32) int32
	cuDeviceGetAttribute        func(v *int32, attr int32, dev int32) int32
	cuDevicePrimaryCtxRetain    func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease   func(dev int32) int32
	cuCtxSetCurrent             func(ctx uintptr) int32
	cuCtxSynchronize            func() int32
	cuMemAlloc                  func(p *uint64, size uint64) int32
	cuMemFree                   func(p uint64) int32
	cuMemGetInfo                func(free, total *uint64) int32
	cuMemcpyHtoD                func(dst uint64, src unsafe.Pointer, n uint64) int32
	cuMemcpyDtoH                func(dst unsafe.Pointer, src uint64, n uint64) int32
	cuMemcpyDtoD                func(dst, src uint64, n uint64) int32
	cuMemsetD8                  func(p uint64, v uint8, n uint64) int32
	cuModuleLoadData            func(mod *uintptr, image unsafe.Pointer) int32
	cuModuleUnload              func(mod uintptr) int32
	cuModuleGetFunction         func(f *uintptr, mod uintptr, name string) int32
	cuFuncSetAttribute          func(f uintptr, attr int32, v int32) int32
	cuLaunchKernel              func(f uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params unsafe.Pointer, extra uintptr) int32
	cuGetErrorString            func(code int32, s **byte) int32
	cuStreamCreate              func(s *uintptr, flags uint32) int32
	cuStreamDestroy             func(s uintptr) int32
	cuStreamBeginCapture        func(s uintptr, mode int32) int32
	cuStreamEndCapture          func(s uintptr, g *uintptr) int32
	cuGraphInstantiateWithFlags func(exec *uintptr, g uintptr, flags uint64) int32
	cuGraphLaunch               func(exec uintptr, s uintptr) int32
	cuGraphExecDestroy          func(exec uintptr) int32
	cuGraphDestroy              func(g uintptr) int32
}

// symbols names the C function behind each field: the _v2 entry points are
// the current ones of the functions that have them.
func (d *driverAPI) symbols() []binding {
	return []binding{
		{&d.cuInit, "cuInit"},
		{&d.cuDriverGetVersion, "cuDriverGetVersion"},
		{&d.cuDeviceGetCount, "cuDeviceGetCount"},
		{&d.cuDeviceGet, "cuDeviceGet"},
		{&d.cuDeviceGetName, "cuDeviceGetName"},
		{&d.cuDeviceGetAttribute, "cuDeviceGetAttribute"},
		{&d.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"},
		{&d.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"},
		{&d.cuCtxSetCurrent, "cuCtxSetCurrent"},
		{&d.cuCtxSynchronize, "cuCtxSynchronize"},
		{&d.cuMemAlloc, "cuMemAlloc_v2"},
		{&d.cuMemFree, "cuMemFree_v2"},
		{&d.cuMemGetInfo, "cuMemGetInfo_v2"},
		{&d.cuMemcpyHtoD, "cuMemcpyHtoD_v2"},
		{&d.cuMemcpyDtoH, "cuMemcpyDtoH_v2"},
		{&d.cuMemcpyDtoD, "cuMemcpyDtoD_v2"},
		{&d.cuMemsetD8, "cuMemsetD8_v2"},
		{&d.cuModuleLoadData, "cuModuleLoadData"},
		{&d.cuModuleUnload, "cuModuleUnload"},
		{&d.cuModuleGetFunction, "cuModuleGetFunction"},
		{&d.cuFuncSetAttribute, "cuFuncSetAttribute"},
		{&d.cuLaunchKernel, "cuLaunchKernel"},
		{&d.cuGetErrorString, "cuGetErrorString"},
	}
}

// graphSymbols are the driver functions of CUDA graphs: optional, since
// every kernel also runs without them.
func (d *driverAPI) graphSymbols() []binding {
	return []binding{
		{&d.cuStreamCreate, "cuStreamCreate"},
		{&d.cuStreamDestroy, "cuStreamDestroy_v2"},
		{&d.cuStreamBeginCapture, "cuStreamBeginCapture_v2"},
		{&d.cuStreamEndCapture, "cuStreamEndCapture"},
		{&d.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags"},
		{&d.cuGraphLaunch, "cuGraphLaunch"},
		{&d.cuGraphExecDestroy, "cuGraphExecDestroy"},
		{&d.cuGraphDestroy, "cuGraphDestroy"},
	}
}

// nvrtcAPI compiles the kernels. Results are nvrtcResult codes.
type nvrtcAPI struct {
	nvrtcVersion           func(major, minor *int32) int32
	nvrtcGetErrorString    func(code int32) string
	nvrtcCreateProgram     func(prog *uintptr, src, name string, nHeaders int32, headers, includeNames uintptr) int32
	nvrtcCompileProgram    func(prog uintptr, nOpts int32, opts **byte) int32
	nvrtcGetCUBINSize      func(prog uintptr, n *uint64) int32
	nvrtcGetCUBIN          func(prog uintptr, out *byte) int32
	nvrtcGetProgramLogSize func(prog uintptr, n *uint64) int32
	nvrtcGetProgramLog     func(prog uintptr, out *byte) int32
	nvrtcDestroyProgram    func(prog *uintptr) int32
}

func (n *nvrtcAPI) symbols() []binding {
	return []binding{
		{&n.nvrtcVersion, "nvrtcVersion"},
		{&n.nvrtcGetErrorString, "nvrtcGetErrorString"},
		{&n.nvrtcCreateProgram, "nvrtcCreateProgram"},
		{&n.nvrtcCompileProgram, "nvrtcCompileProgram"},
		{&n.nvrtcGetCUBINSize, "nvrtcGetCUBINSize"},
		{&n.nvrtcGetCUBIN, "nvrtcGetCUBIN"},
		{&n.nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize"},
		{&n.nvrtcGetProgramLog, "nvrtcGetProgramLog"},
		{&n.nvrtcDestroyProgram, "nvrtcDestroyProgram"},
	}
}

// blasAPI is the part of cuBLAS prefill uses. Results are cublasStatus_t.
type blasAPI struct {
	cublasCreate      func(h *uintptr) int32
	cublasDestroy     func(h uintptr) int32
	cublasGetVersion  func(h uintptr, v *int32) int32
	cublasSetMathMode func(h uintptr, mode int32) int32
	cublasSgemm       func(h uintptr, ta, tb, m, n, k int32, alpha *float32, a uint64, lda int32, b uint64, ldb int32, beta *float32, c uint64, ldc int32) int32
	cublasGemmEx      func(h uintptr, ta, tb, m, n, k int32, alpha *float32, a uint64, atype, lda int32, b uint64, btype, ldb int32, beta *float32, c uint64, ctype, ldc int32, compute, algo int32) int32
}

func (b *blasAPI) symbols() []binding {
	return []binding{
		{&b.cublasCreate, "cublasCreate_v2"},
		{&b.cublasDestroy, "cublasDestroy_v2"},
		{&b.cublasGetVersion, "cublasGetVersion_v2"},
		{&b.cublasSetMathMode, "cublasSetMathMode"},
		{&b.cublasSgemm, "cublasSgemm_v2"},
		{&b.cublasGemmEx, "cublasGemmEx"},
	}
}

// binding ties a function field to its C symbol.
type binding struct {
	fn   any // pointer to a func field
	name string
}

// bind resolves every symbol in lib before registering any, so that a
// library missing one fails with its name rather than a panic.
func bind(lib uintptr, libName string, bs []binding) error {
	syms := make([]uintptr, len(bs))
	for i, b := range bs {
		sym, err := purego.Dlsym(lib, b.name)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", libName, b.name, err)
		}
		syms[i] = sym
	}
	for i, b := range bs {
		purego.RegisterFunc(b.fn, syms[i])
	}
	return nil
}

// cString reads the NUL-terminated C string at p (at most 1 KiB).
func cString(p *byte) string {
	if p == nil {
		return ""
	}
	s := unsafe.Slice(p, 1024)
	for i, c := range s {
		if c == 0 {
			return string(s[:i])
		}
	}
	return string(s)
}

// Error is a failed call into a CUDA library.
type Error struct {
	Op   string // the function or operation that failed
	Code int    // the library's status code
	Msg  string // the library's description of the code
}

func (e *Error) Error() string { return fmt.Sprintf("cuda: %s: %s (%d)", e.Op, e.Msg, e.Code) }

// errorOf maps a CUresult to nil or an *Error described by describe
// (cuGetErrorString when the driver is loaded).
func errorOf(op string, code int32, describe func(int32) string) error {
	if code == 0 {
		return nil
	}
	msg := "unknown error"
	if describe != nil {
		if s := describe(code); s != "" {
			msg = s
		}
	}
	return &Error{Op: op, Code: int(code), Msg: msg}
}

// blasStatus names cuBLAS's status codes (cuBLAS has no string function
// in every version).
func blasStatus(code int32) string {
	switch code {
	case 1:
		return "CUBLAS_STATUS_NOT_INITIALIZED"
	case 3:
		return "CUBLAS_STATUS_ALLOC_FAILED"
	case 7:
		return "CUBLAS_STATUS_INVALID_VALUE"
	case 8:
		return "CUBLAS_STATUS_ARCH_MISMATCH"
	case 11:
		return "CUBLAS_STATUS_MAPPING_ERROR"
	case 13:
		return "CUBLAS_STATUS_EXECUTION_FAILED"
	case 14:
		return "CUBLAS_STATUS_INTERNAL_ERROR"
	case 15:
		return "CUBLAS_STATUS_NOT_SUPPORTED"
	case 16:
		return "CUBLAS_STATUS_LICENSE_ERROR"
	}
	return "unknown cuBLAS status"
}
