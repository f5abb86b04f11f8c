package cuda

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
)

// fakeDriver records what the queue and graph logic asks of the driver.
type fakeDriver struct {
	launches    []launchRec // kernel launches, in order
	graphs      int         // graph launches
	captures    int
	failCapture bool
}

type launchRec struct {
	stream uintptr
	arg    uint64 // the first parameter
}

// queueBackend is a Backend over fakeDriver: enough for launch and flush.
func queueBackend(f *fakeDriver) *Backend {
	b := &Backend{fn: map[string]uintptr{"k": 7}, args: newLaunchArgs(), live: map[uint64]struct{}{}}
	b.drv.cuLaunchKernel = func(fn uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params unsafe.Pointer, extra uintptr) int32 {
		f.launches = append(f.launches, launchRec{stream, b.args.vals[0]})
		return 0
	}
	b.drv.cuStreamCreate = func(s *uintptr, flags uint32) int32 { *s = 99; return 0 }
	b.drv.cuStreamBeginCapture = func(s uintptr, mode int32) int32 {
		f.captures++
		if f.failCapture {
			return 900 // CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
		}
		return 0
	}
	b.drv.cuStreamEndCapture = func(s uintptr, g *uintptr) int32 { *g = 5; return 0 }
	b.drv.cuGraphInstantiateWithFlags = func(exec *uintptr, g uintptr, flags uint64) int32 { *exec = 6; return 0 }
	b.drv.cuGraphLaunch = func(exec, s uintptr) int32 { f.graphs++; return 0 }
	b.drv.cuGraphDestroy = func(g uintptr) int32 { return 0 }
	b.drv.cuGraphExecDestroy = func(exec uintptr) int32 { return 0 }
	b.drv.cuGetErrorString = func(code int32, s **byte) int32 { return 1 }
	return b
}

// queue queues n launches of kernel k whose first parameter is base+i.
func queue(b *Backend, n int, base uint64) {
	for i := range n {
		b.launch("k", [2]int{1, 1}, 32, 0, base+uint64(i))
	}
}

// Launches wait for a flush and run in order; a queue seen before is
// captured once, then replayed with one graph launch; another queue runs
// launch by launch.
func TestQueueGraphs(t *testing.T) {
	f := &fakeDriver{}
	b := queueBackend(f)
	queue(b, graphMin, 100)
	assert.Empty(t, f.launches, "nothing runs before a flush")
	b.flush()
	assert.Len(t, f.launches, graphMin)
	assert.Equal(t, launchRec{0, 100}, f.launches[0])
	assert.Equal(t, launchRec{0, 100 + graphMin - 1}, f.launches[graphMin-1])

	f.launches = nil
	queue(b, graphMin, 100)
	b.flush()
	assert.Equal(t, 1, f.captures, "the repeat is captured")
	assert.Len(t, f.launches, graphMin)
	assert.Equal(t, uintptr(99), f.launches[0].stream, "captured on the private stream")
	assert.Equal(t, 1, f.graphs)

	f.launches = nil
	queue(b, graphMin, 100)
	b.flush()
	assert.Empty(t, f.launches, "replayed")
	assert.Equal(t, 2, f.graphs)
	assert.Equal(t, 2, b.Replays())

	queue(b, graphMin, 200) // other parameters: another queue
	b.flush()
	assert.Len(t, f.launches, graphMin)
	assert.Equal(t, 2, f.graphs)

	f.launches = nil
	queue(b, graphMin-1, 100) // too short for a graph, even when repeated
	b.flush()
	queue(b, graphMin-1, 100)
	b.flush()
	assert.Len(t, f.launches, 2*(graphMin-1))
	assert.Equal(t, 1, f.captures)
}

// A capture the driver refuses turns graphs off; every kernel still runs.
func TestQueueCaptureFails(t *testing.T) {
	f := &fakeDriver{failCapture: true}
	b := queueBackend(f)
	for range 3 {
		queue(b, graphMin, 1)
		b.flush()
	}
	assert.Equal(t, 1, f.captures)
	assert.Contains(t, b.Graphs(), "off: ")
	assert.Zero(t, f.graphs)
	assert.Len(t, f.launches, 3*graphMin)
	assert.NoError(t, b.Err())
}

// At most graphCache graphs are kept, the oldest destroyed first.
func TestQueueGraphCache(t *testing.T) {
	f := &fakeDriver{}
	b := queueBackend(f)
	destroyed := 0
	b.drv.cuGraphExecDestroy = func(uintptr) int32 { destroyed++; return 0 }
	for q := range graphCache + 2 {
		for range 2 {
			queue(b, graphMin, uint64(1000*q))
			b.flush()
		}
	}
	assert.Len(t, b.graphs, graphCache)
	assert.Equal(t, 2, destroyed)
}

// Projections that share an input round it once; any other kernel, which
// may write the input, makes the next projection round again.
func TestRoundOnce(t *testing.T) {
	f := &fakeDriver{}
	b := queueBackend(f)
	next := uint64(0x1000)
	b.drv.cuMemAlloc = func(p *uint64, size uint64) int32 { *p = next; next += size; return 0 }
	b.drv.cuMemsetD8 = func(p uint64, v uint8, n uint64) int32 { return 0 }
	b.drv.cuMemFree = func(p uint64) int32 { return 0 }
	b.drv.cuCtxSynchronize = func() int32 { return 0 }
	b.drv.cuCtxSetCurrent = func(uintptr) int32 { return 0 }
	for _, n := range []string{"actq8a", "matvec_q4_0r", "add"} {
		b.fn[n] = uintptr(len(n))
	}
	x, y := &buffer{ptr: 0x10, n: 64}, &buffer{ptr: 0x20, n: 64}
	w := &weight{rows: 2, cols: 32, matvec: "matvec_q4_0r", act: "actq8a"}
	names := func() (out []string) {
		for _, c := range b.queue {
			out = append(out, c.name)
		}
		return out
	}
	b.MatMul(y, w, x, 1)
	b.MatMul(y, w, x, 1)
	assert.Equal(t, []string{"actq8a", "matvec_q4_0r", "matvec_q4_0r"}, names())
	b.Add(x, y, 64)
	b.MatMul(y, w, x, 1)
	assert.Equal(t, []string{"actq8a", "matvec_q4_0r", "matvec_q4_0r", "add", "actq8a", "matvec_q4_0r"}, names())
	b.MatMul(x, w, x, 1) // writes its own input
	b.MatMul(y, w, x, 1)
	assert.Equal(t, "actq8a", names()[len(names())-2])
}
