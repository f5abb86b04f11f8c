package cuda

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// The libraries the backend needs, newest first. The driver API library
// comes with the driver; NVRTC and cuBLAS with the toolkit (or its
// redistributable packages).
var (
	driverNames = []string{"libcuda.so.1", "libcuda.so"}
	nvrtcNames  = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}
	cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so"}
)

// defaultDirs are searched after the configured directory and the dynamic
// loader's own path.
var defaultDirs = []string{"/usr/local/cuda/lib64"}

// opener opens a shared library by file name or path; purego.Dlopen in
// the backend, a fake in tests.
type opener func(name string) (uintptr, error)

// found is one library that opened: its handle and how it was found.
type found struct {
	handle uintptr
	name   string // the path or file name that opened
}

// search opens the first of names that loads: each in dir (when set),
// then as a bare name through the loader's path, then in each of extra.
// The error lists every attempt, so a user can see why none loaded.
func search(open opener, names []string, dir string, extra []string) (found, error) {
	var tries []string
	try := func(path string) (found, bool) {
		h, err := open(path)
		if err == nil {
			return found{handle: h, name: path}, true
		}
		tries = append(tries, fmt.Sprintf("%s: %v", path, err))
		return found{}, false
	}
	var candidates []string
	if dir != "" {
		for _, n := range names {
			candidates = append(candidates, filepath.Join(dir, n))
		}
	}
	candidates = append(candidates, names...)
	for _, d := range extra {
		for _, n := range names {
			candidates = append(candidates, filepath.Join(d, n))
		}
	}
	for _, c := range candidates {
		if f, ok := try(c); ok {
			return f, nil
		}
	}
	return found{}, errors.New(strings.Join(tries, "; "))
}

// version formats a CUDA version number (major·1000 + minor·10).
func version(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }
