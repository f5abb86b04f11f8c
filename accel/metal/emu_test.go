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
	"sync"
	"testing"
	"unsafe"
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

var (
	emuOnce   sync.Once
	emuDir    string // removed by TestMain
	emuDriver string
	emuErr    error
)

// buildEmulator compiles the driver with the kernels once per test run.
// It needs a C++20 compiler with _Float16 (g++ 12 on x86-64 or arm64).
func buildEmulator() (string, error) {
	emuOnce.Do(func() {
		cxx := os.Getenv("CXX")
		if cxx == "" {
			cxx = "g++"
		}
		dir, err := os.MkdirTemp("", "metal-emu")
		if err != nil {
			emuErr = err
			return
		}
		emuDir = dir
		if err := probeCompiler(cxx, dir); err != nil {
			emuErr = fmt.Errorf("no C++ compiler: %w", err)
			return
		}
		driver, err := filepath.Abs("testdata/driver.cpp")
		if err != nil {
			emuErr = err
			return
		}
		// C++ has no threadgroup address space: the driver runs one
		// threadgroup at a time, so the threadgroup arrays become statics.
		src := strings.Replace(source, "#include <metal_stdlib>", "", 1)
		src = strings.Replace(src, "using namespace metal;", "", 1)
		src = regexp.MustCompile(`threadgroup (float \w+\[\w+\];)`).ReplaceAllString(src, "static $1")
		if err := os.WriteFile(filepath.Join(dir, "kernels.cpp"), []byte(src), 0o644); err != nil {
			emuErr = err
			return
		}
		emuDriver = filepath.Join(dir, "driver")
		cmd := exec.Command(cxx, "-std=c++20", "-O1", "-pthread", "-Wall", "-Wno-attributes", "-Wno-unused", "-I", dir, "-o", emuDriver, driver)
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

// probeCompiler checks that cxx compiles C++20 with _Float16, so that a
// system without one skips the emulator rather than failing on it.
func probeCompiler(cxx, dir string) error {
	src := filepath.Join(dir, "probe.cpp")
	prog := "#include <barrier>\nint main() { _Float16 h = 1.5f; std::barrier b(1); return h > 1 ? 0 : 1; }\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		return err
	}
	out, err := exec.Command(cxx, "-std=c++20", "-pthread", "-o", filepath.Join(dir, "probe"), src).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", cxx, err, out)
	}
	return nil
}

func newEmuDevice(t *testing.T) *emuDevice {
	driver, err := buildEmulator()
	if err != nil {
		if strings.HasPrefix(err.Error(), "no C++ compiler") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	return &emuDevice{driver: driver, dir: t.TempDir(), mems: map[uintptr][]byte{}}
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
