// Package backend chooses the compute backend: the one a user names, or
// the best that opens on this machine, falling back to the CPU with the
// reason the others gave.
package backend

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/accel/cuda"
	"github.com/edged/edged/accel/metal"
)

// Names lists the accepted backend names.
var Names = []string{"auto", "cpu", "cuda", "metal"}

// Options configure every backend; each takes the fields it knows.
type Options struct {
	Threads int         // CPU worker threads (0: one per core)
	CUDA    cuda.Config // library directory, kernel cache, device
}

// Choice is an opened backend and why the ones tried before it were not
// used.
type Choice struct {
	Backend accel.Backend
	Skipped []string // "cuda: not available: <reason>", in the order tried
}

// Open opens the backend called name. "auto" tries the GPU backends of
// this system and takes the CPU when none opens; a named GPU backend that
// does not open is an error.
func Open(name string, o Options) (Choice, error) {
	switch name {
	case "cpu":
		return Choice{Backend: cpu.New(o.Threads)}, nil
	case "cuda", "metal":
		be, err := gpu(name, o)
		if err != nil {
			return Choice{}, fmt.Errorf("backend %s: not available: %w", name, err)
		}
		return Choice{Backend: be}, nil
	case "auto", "":
		var c Choice
		for _, n := range gpuOrder() {
			be, err := gpu(n, o)
			if err == nil {
				c.Backend = be
				return c, nil
			}
			c.Skipped = append(c.Skipped, fmt.Sprintf("%s: not available: %v", n, err))
		}
		c.Backend = cpu.New(o.Threads)
		return c, nil
	}
	return Choice{}, fmt.Errorf("backend %q: want one of %v", name, Names)
}

// gpuOrder is the GPU backends worth trying on this system.
func gpuOrder() []string {
	if runtime.GOOS == "darwin" {
		return []string{"metal"}
	}
	return []string{"cuda"}
}

func gpu(name string, o Options) (accel.Backend, error) {
	// A failed open returns a nil pointer, which must not become a
	// non-nil interface.
	if name == "metal" {
		b, err := metal.New()
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := cuda.Open(o.CUDA)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Placement is where a model's layers run: all on Backend, or, with
// Offload set, the last OffloadLayers layers and the output on Offload (a
// GPU) and the rest on Backend (the CPU), as engine.Options takes them.
type Placement struct {
	Backend       accel.Backend
	Offload       accel.Backend
	OffloadLayers int
}

// Place spreads a model of nLayer layers over the chosen backend and the
// CPU by gpuLayers, llama.cpp's -ngl: negative (or nLayer and more) puts
// every layer on the chosen backend, 0 none (the GPU is closed and the CPU
// runs the model), and n in between the last n layers and the output. A
// CPU choice runs everything whatever gpuLayers says.
func (c Choice) Place(gpuLayers, nLayer, threads int) Placement {
	if _, isCPU := c.Backend.(*cpu.Backend); isCPU || gpuLayers < 0 || gpuLayers >= nLayer {
		return Placement{Backend: c.Backend}
	}
	if gpuLayers == 0 {
		c.Backend.Close()
		return Placement{Backend: cpu.New(threads)}
	}
	return Placement{Backend: cpu.New(threads), Offload: c.Backend, OffloadLayers: gpuLayers}
}

// Close closes the placement's backends (after an engine failed to use
// them; an engine's own Close does it otherwise).
func (p Placement) Close() error {
	var errs []error
	errs = append(errs, p.Backend.Close())
	if p.Offload != nil {
		errs = append(errs, p.Offload.Close())
	}
	return errors.Join(errs...)
}

// Name describes the placement: the backend's name, and the offloaded
// layers' backend when there is one.
func (p Placement) Name() string {
	if p.Offload == nil {
		return p.Backend.Name()
	}
	return fmt.Sprintf("%s + %s for the last %d layers", p.Backend.Name(), p.Offload.Name(), p.OffloadLayers)
}
