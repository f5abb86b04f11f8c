package metal

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/edged/edged/internal/cxxemu"
)

// emuDevice runs the kernels of kernels.metal compiled as C++ for the CPU
// (testdata/driver.cpp), one process per dispatch, so that the backend's
// operations can be tested where there is no Metal. It checks the Metal
// source as C++ can: syntax, types, the explicit instances, and every
// kernel's arithmetic and indexing; not Metal's own compiler, its address
// spaces or its scheduling.
type emuDevice struct {
	driver, dir string
	mems        map[uintptr][]byte
	next        uintptr
}

// emu is the emulator, built once per test run; TestMain removes it.
var emu cxxemu.Once

// buildEmulator compiles the driver with the kernels. It needs a C++20
// compiler with _Float16 (g++ 12 on x86-64 or arm64).
func buildEmulator() (cxxemu.Program, error) {
	// C++ has no threadgroup address space: the driver runs one
	// threadgroup at a time, so the threadgroup arrays become statics.
	src := strings.Replace(source, "#include <metal_stdlib>", "", 1)
	src = strings.Replace(src, "using namespace metal;", "", 1)
	src = regexp.MustCompile(`threadgroup (float \w+\[\w+\];)`).ReplaceAllString(src, "static $1")
	return cxxemu.Build("metal-emu", "testdata/driver.cpp", src, emuProbe, "-std=c++20", "-O1", "-pthread", "-Wall", "-Wno-attributes", "-Wno-unused")
}

// TestMain removes the emulator built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	emu.Remove()
	os.Exit(code)
}

// emuProbe needs _Float16 and std::barrier, so that a system without them
// skips the emulator rather than failing on it.
const emuProbe = "#include <barrier>\nint main() { _Float16 h = 1.5f; std::barrier b(1); return h > 1 ? 0 : 1; }\n"

func newEmuDevice(t *testing.T) *emuDevice {
	return &emuDevice{driver: emu.Path(t, buildEmulator), dir: t.TempDir(), mems: map[uintptr][]byte{}}
}

func (d *emuDevice) name() string { return "emulator" }

func (d *emuDevice) alloc(size int) (mem, error) {
	d.next++
	buf := make([]byte, size)
	d.mems[d.next] = buf
	return mem{h: d.next, ptr: unsafe.Pointer(&buf[0])}, nil
}

func (d *emuDevice) free(m mem) { delete(d.mems, m.h) }

// dispatch runs the kernel at once: the driver reads the bound buffers
// from files and writes them back.
func (d *emuDevice) dispatch(kernel string, grid, group [3]int, args []arg, params []byte) error {
	pf := filepath.Join(d.dir, "params")
	if err := os.WriteFile(pf, params, 0o644); err != nil {
		return err
	}
	argv := []string{kernel}
	for _, n := range append(grid[:], group[:]...) {
		argv = append(argv, strconv.Itoa(n))
	}
	argv = append(argv, pf)
	files := map[uintptr]string{}
	for _, a := range args {
		buf, ok := d.mems[a.m.h]
		if !ok {
			return errors.New("dispatch with freed memory")
		}
		f := filepath.Join(d.dir, strconv.Itoa(int(a.m.h)))
		if err := os.WriteFile(f, buf, 0o644); err != nil {
			return err
		}
		files[a.m.h] = f
		argv = append(argv, f, strconv.Itoa(a.off))
	}
	if out, err := exec.Command(d.driver, argv...).CombinedOutput(); err != nil {
		return fmt.Errorf("emulator: %v: %s", err, out)
	}
	for h, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		copy(d.mems[h], data)
	}
	return nil
}

func (d *emuDevice) wait() error { return nil }

func (d *emuDevice) close() {}
