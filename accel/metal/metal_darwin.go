//go:build darwin

package metal

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego/objc"
)

// metalDevice is the device over Metal: shared-storage MTLBuffers, one
// pipeline state per kernel, and one command buffer with one serial
// compute encoder at a time, committed and waited for by wait.
type metalDevice struct {
	device, queue, library objc.ID
	deviceName             string
	pipes                  map[string]objc.ID
	// cmd and enc are the open command buffer and its encoder (retained),
	// 0 when none is open.
	cmd, enc objc.ID
}

// New opens the system's default Metal device and compiles the kernels.
func New() (*Backend, error) {
	if err := loadFrameworks(); err != nil {
		return nil, err
	}
	d, err := openDevice()
	if err != nil {
		return nil, err
	}
	return newBackend(d)
}

func openDevice() (*metalDevice, error) {
	defer popPool(pushPool())
	dev := createDevice()
	if dev == 0 {
		return nil, errors.New("metal: not available: no Metal device")
	}
	d := &metalDevice{device: dev, deviceName: goString(dev.Send(selName)), pipes: map[string]objc.ID{}}
	if d.queue = dev.Send(selNewCommandQueue); d.queue == 0 {
		d.close()
		return nil, errors.New("metal: no command queue")
	}
	if err := d.compile(); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// compile builds the library from the embedded source and a pipeline per
// kernel. Fast math is off: it would let the compiler reorder sums and
// approximate exp, and the results are meant to match the CPU's.
func (d *metalDevice) compile() error {
	opts := classCompileOptions.Send(selNew)
	defer opts.Send(selRelease)
	opts.Send(selSetLanguageVersion, uint(languageVersion3_0))
	opts.Send(selSetFastMathEnabled, false)
	var nserr objc.ID
	d.library = d.device.Send(selNewLibrary, nsString(source), opts, unsafe.Pointer(&nserr))
	if d.library == 0 {
		return fmt.Errorf("metal: compile kernels: %w", nsError(nserr))
	}
	for _, name := range kernelNames() {
		fn := d.library.Send(selNewFunctionWithName, nsString(name))
		if fn == 0 {
			return fmt.Errorf("metal: kernel %s is not in the library", name)
		}
		var perr objc.ID
		ps := d.device.Send(selNewPipeline, fn, unsafe.Pointer(&perr))
		fn.Send(selRelease)
		if ps == 0 {
			return fmt.Errorf("metal: pipeline %s: %w", name, nsError(perr))
		}
		d.pipes[name] = ps
		if n := int(ps.Send(selMaxThreads)); n < groupSize(name) {
			return fmt.Errorf("metal: pipeline %s allows %d threads per threadgroup, want %d", name, n, groupSize(name))
		}
		// The kernels' reductions assume simdgroups of 32 threads, as on
		// Apple GPUs (AMD GPUs may run 64).
		if n := int(ps.Send(selThreadExecutionWidth)); n != simdWidth {
			return fmt.Errorf("metal: pipeline %s runs simdgroups of %d threads, want %d", name, n, simdWidth)
		}
	}
	return nil
}

func (d *metalDevice) name() string { return d.deviceName }

func (d *metalDevice) alloc(size int) (mem, error) {
	defer popPool(pushPool())
	id := d.device.Send(selNewBufferWithLength, uint(size), uint(storageModeShared))
	if id == 0 {
		return mem{}, errors.New("out of device memory")
	}
	m := mem{h: uintptr(id), ptr: contents(id)}
	// Zeroed here rather than trusting the allocator to.
	clear(unsafe.Slice((*byte)(m.ptr), size))
	return m, nil
}

// free releases a buffer. Command buffers retain the buffers they use, so
// queued work keeps it alive until it completes.
func (d *metalDevice) free(m mem) {
	if m.h != 0 {
		defer popPool(pushPool())
		objc.ID(m.h).Send(selRelease)
	}
}

func (d *metalDevice) dispatch(kernel string, grid, group [3]int, args []arg, params []byte) error {
	ps, ok := d.pipes[kernel]
	if !ok {
		return fmt.Errorf("no kernel %s", kernel)
	}
	defer popPool(pushPool())
	enc := d.encoder()
	enc.Send(selSetComputePipelineState, ps)
	for i, a := range args {
		enc.Send(selSetBuffer, objc.ID(a.m.h), uint(a.off), uint(i))
	}
	enc.Send(selSetBytes, unsafe.Pointer(&params[0]), uint(len(params)), uint(len(args)))
	enc.Send(selDispatchThreadgroups, toSize(grid), toSize(group))
	return nil
}

func toSize(s [3]int) mtlSize { return mtlSize{uint(s[0]), uint(s[1]), uint(s[2])} }

// encoder returns the open compute encoder, opening a command buffer if
// none is. Both are retained, since they outlive the autorelease pool of
// the dispatch that opened them. The encoder is serial: each dispatch
// sees the writes of the ones before it.
func (d *metalDevice) encoder() objc.ID {
	if d.enc == 0 {
		d.cmd = d.queue.Send(selCommandBuffer).Send(selRetain)
		d.enc = d.cmd.Send(selComputeCommandEncoder).Send(selRetain)
	}
	return d.enc
}

// wait commits the open command buffer and waits for it to complete.
func (d *metalDevice) wait() error {
	if d.cmd == 0 {
		return nil
	}
	defer popPool(pushPool())
	d.enc.Send(selEndEncoding)
	d.cmd.Send(selCommit)
	d.cmd.Send(selWaitUntilCompleted)
	var err error
	if uint(d.cmd.Send(selStatus)) == commandBufferErrored {
		err = fmt.Errorf("command buffer: %w", nsError(d.cmd.Send(selError)))
	}
	d.enc.Send(selRelease)
	d.cmd.Send(selRelease)
	d.cmd, d.enc = 0, 0
	return err
}

func (d *metalDevice) close() {
	defer popPool(pushPool())
	for _, ps := range d.pipes {
		ps.Send(selRelease)
	}
	d.pipes = nil
	for _, id := range []objc.ID{d.library, d.queue, d.device} {
		if id != 0 {
			id.Send(selRelease)
		}
	}
	d.library, d.queue, d.device = 0, 0, 0
}
