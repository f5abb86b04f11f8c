// Package cxxemu builds the C++ programs that the GPU backends' tests use
// to run their kernels on the CPU (accel/cuda and accel/metal emulators):
// the kernel source, rewritten as C++ by the caller, and a driver program
// compiled together once per test run.
package cxxemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// ErrNoCompiler means no C++ compiler with what the emulators need; tests
// skip rather than fail on it.
var ErrNoCompiler = errors.New("no C++ compiler")

// Program is a built emulator.
type Program struct {
	Path string // the executable
	Dir  string // its temporary directory, removed by Remove
}

// Build writes kernels (C++ source) as kernels.cpp into a new temporary
// directory, checks that $CXX (default g++) compiles probe (a whole
// program) with flags, and compiles driver (a .cpp file, which includes
// "kernels.cpp") with flags.
func Build(name, driver, kernels, probe string, flags ...string) (Program, error) {
	cxx := os.Getenv("CXX")
	if cxx == "" {
		cxx = "g++"
	}
	dir, err := os.MkdirTemp("", name)
	if err != nil {
		return Program{}, err
	}
	p := Program{Dir: dir, Path: filepath.Join(dir, name)}
	if err := compile(cxx, dir, "probe", probe, flags); err != nil {
		return p, fmt.Errorf("%w: %v", ErrNoCompiler, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernels.cpp"), []byte(kernels), 0o644); err != nil {
		return p, err
	}
	driver, err = filepath.Abs(driver)
	if err != nil {
		return p, err
	}
	args := append(append([]string{}, flags...), "-I", dir, "-o", p.Path, driver)
	if out, err := exec.Command(cxx, args...).CombinedOutput(); err != nil {
		return p, fmt.Errorf("compile %s: %v\n%s", name, err, out)
	}
	return p, nil
}

// compile builds the program src as dir/name.
func compile(cxx, dir, name, src string, flags []string) error {
	file := filepath.Join(dir, name+".cpp")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		return err
	}
	args := append(append([]string{}, flags...), "-o", filepath.Join(dir, name), file)
	if out, err := exec.Command(cxx, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", cxx, err, out)
	}
	return nil
}

// Remove deletes the program's directory.
func (p Program) Remove() {
	if p.Dir != "" {
		os.RemoveAll(p.Dir)
	}
}

// Once builds a program the first time a test asks for it, for all the
// tests of a run.
type Once struct {
	once sync.Once
	prog Program
	err  error
}

// Path returns the program's path, running build on the first call. The
// test skips when there is no compiler for it and fails on any other error.
func (o *Once) Path(t testing.TB, build func() (Program, error)) string {
	t.Helper()
	o.once.Do(func() { o.prog, o.err = build() })
	if errors.Is(o.err, ErrNoCompiler) {
		t.Skip(o.err)
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.prog.Path
}

// Remove deletes the program built, if any (from TestMain, after the run).
func (o *Once) Remove() { o.prog.Remove() }
