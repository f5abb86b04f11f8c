package cuda

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
)

//go:embed kernels.cu
var kernelSource string

// kernelNames lists the kernels kernels.cu defines (extern "C" names):
// those written out and the three of each WEIGHT_KERNELS(name, type) line.
func kernelNames(src string) []string {
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^extern "C" __global__ void (\w+)\(`).FindAllStringSubmatch(src, -1) {
		names = append(names, m[1])
	}
	for _, m := range regexp.MustCompile(`(?m)^WEIGHT_KERNELS\((\w+),`).FindAllStringSubmatch(src, -1) {
		names = append(names, "matvec_"+m[1], "dequant_"+m[1], "embed_"+m[1])
	}
	return names
}

// cacheKey names the compiled form of src for one architecture, driver and
// compiler: a change to any of them compiles again.
func cacheKey(src, arch string, driver, nvrtcMajor, nvrtcMinor int) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00driver %d\x00nvrtc %d.%d\x00", arch, compileOptions(arch), driver, nvrtcMajor, nvrtcMinor)
	h.Write([]byte(src))
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// compileOptions are NVRTC's flags: machine code (CUBIN) for the exact
// architecture, so that the driver has nothing left to compile.
func compileOptions(arch string) []string {
	return []string{"--gpu-architecture=" + arch, "--std=c++17", "-default-device"}
}

// cacheDir is where compiled kernels are kept: dir when set, else the
// user's cache directory.
func cacheDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kernel cache: %w", err)
	}
	return filepath.Join(base, "edged", "cuda"), nil
}

// cubin returns the kernels compiled for arch, from the cache when an
// earlier run compiled them, else with NVRTC (and stores the result; a
// cache that cannot be written only costs the next start a compile).
func (b *Backend) cubin(arch, dir string) ([]byte, error) {
	major, minor, err := b.nvrtcVersion()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, cacheKey(kernelSource, arch, b.info.DriverVersion, major, minor)+".cubin")
	if data, err := os.ReadFile(path); err == nil && len(data) > 0 {
		b.info.KernelCache = path + " (hit)"
		return data, nil
	}
	data, err := b.compile(arch)
	if err != nil {
		return nil, err
	}
	b.info.KernelCache = path
	if err := writeAtomic(path, data); err != nil {
		b.info.KernelCache = fmt.Sprintf("not written: %v", err)
	}
	return data, nil
}

func (b *Backend) nvrtcVersion() (major, minor int, err error) {
	var ma, mi int32
	if code := b.nvrtc.nvrtcVersion(&ma, &mi); code != 0 {
		return 0, 0, b.nvrtcError("nvrtcVersion", code)
	}
	return int(ma), int(mi), nil
}

func (b *Backend) nvrtcError(op string, code int32) error {
	return errorOf(op, code, b.nvrtc.nvrtcGetErrorString)
}

// compile runs NVRTC over the embedded source; a failure carries the
// compiler's log.
func (b *Backend) compile(arch string) ([]byte, error) {
	var prog uintptr
	if code := b.nvrtc.nvrtcCreateProgram(&prog, kernelSource, "kernels.cu", 0, 0, 0); code != 0 {
		return nil, b.nvrtcError("nvrtcCreateProgram", code)
	}
	defer b.nvrtc.nvrtcDestroyProgram(&prog)

	opts := compileOptions(arch)
	cstrs := make([][]byte, len(opts))
	ptrs := make([]*byte, len(opts))
	var pin runtime.Pinner
	defer pin.Unpin()
	for i, o := range opts {
		cstrs[i] = append([]byte(o), 0)
		ptrs[i] = &cstrs[i][0]
		pin.Pin(ptrs[i])
	}
	if code := b.nvrtc.nvrtcCompileProgram(prog, int32(len(ptrs)), &ptrs[0]); code != 0 {
		return nil, fmt.Errorf("%w\n%s", b.nvrtcError("nvrtcCompileProgram", code), b.programLog(prog))
	}
	var n uint64
	if code := b.nvrtc.nvrtcGetCUBINSize(prog, &n); code != 0 || n == 0 {
		return nil, b.nvrtcError("nvrtcGetCUBINSize", code)
	}
	out := make([]byte, n)
	if code := b.nvrtc.nvrtcGetCUBIN(prog, &out[0]); code != 0 {
		return nil, b.nvrtcError("nvrtcGetCUBIN", code)
	}
	return out, nil
}

func (b *Backend) programLog(prog uintptr) string {
	var n uint64
	if b.nvrtc.nvrtcGetProgramLogSize(prog, &n) != 0 || n <= 1 {
		return ""
	}
	log := make([]byte, n)
	if b.nvrtc.nvrtcGetProgramLog(prog, &log[0]) != 0 {
		return ""
	}
	return string(log[:n-1])
}

// writeAtomic writes data to path through a temporary file and a rename,
// so that a concurrent start never reads half a file.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".cubin-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}
