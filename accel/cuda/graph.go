package cuda

import (
	"slices"
	"unsafe"
)

// Launching a kernel costs the host microseconds, and a decode step is
// hundreds of small kernels: launched one by one, the GPU waits on the
// host. So operations only queue their kernels; a flush (any host
// synchronisation: Read, Write, an upload, a free) launches them. When a
// flush's queue is the same as the previous one (the same kernels with
// the same parameters, as in every decode step once its per-token inputs
// live in device memory), it is captured once as a CUDA graph and replayed
// with one launch from then on.

// call is one queued kernel launch.
type call struct {
	name       string
	fn         uintptr
	gx, gy, gz uint32
	threads    uint32
	shared     uint32
	args       [16]uint64
}

// graph is an instantiated capture of a queue.
type graph struct {
	calls []call
	exec  uintptr
}

const (
	// graphMin is the shortest queue worth a graph.
	graphMin = 16
	// graphCache is how many graphs are kept (decode splits a step into a
	// few queues; batches of different compositions add more).
	graphCache = 8
)

// flush launches the queued kernels, as a graph when the queue repeats.
func (b *Backend) flush() {
	q := b.queue
	if len(q) == 0 {
		return
	}
	b.queue = b.queue[:0]
	if g := b.graphFor(q); g != nil {
		b.fail("cuGraphLaunch", b.drv.cuGraphLaunch(g.exec, 0))
		b.replays++
		return
	}
	b.profile.reset()
	for i := range q {
		b.fail("cuLaunchKernel "+q[i].name, b.launchNow(&q[i], 0))
		b.profile.time(q[i].name, b)
	}
}

// launchNow launches c on stream.
func (b *Backend) launchNow(c *call, stream uintptr) int32 {
	b.args.vals = c.args
	return b.drv.cuLaunchKernel(c.fn, c.gx, c.gy, c.gz, c.threads, 1, 1, c.shared, stream, unsafe.Pointer(&b.args.ptrs[0]), 0)
}

// graphFor returns the graph of queue q: a cached one, or a new capture
// when q repeats the previous queue; nil when q should run launch by
// launch.
func (b *Backend) graphFor(q []call) *graph {
	if b.graphsOff != "" || b.profile != nil || len(q) < graphMin {
		return nil
	}
	for _, g := range b.graphs {
		if slices.Equal(g.calls, q) {
			return g
		}
	}
	if !b.seenBefore(q) {
		return nil
	}
	exec, err := b.capture(q)
	if err != nil {
		// Graphs are a speed-up: without them every kernel still runs.
		b.graphsOff = err.Error()
		return nil
	}
	g := &graph{calls: slices.Clone(q), exec: exec}
	if len(b.graphs) == graphCache {
		b.drv.cuGraphExecDestroy(b.graphs[0].exec)
		b.graphs = b.graphs[1:]
	}
	b.graphs = append(b.graphs, g)
	return g
}

// seenBefore reports whether q is one of the last few queues flushed (a
// step flushes several), and remembers it if not.
func (b *Backend) seenBefore(q []call) bool {
	for _, r := range b.recent {
		if slices.Equal(r, q) {
			return true
		}
	}
	if len(b.recent) < graphCache {
		b.recent = append(b.recent, slices.Clone(q))
	} else {
		b.recent[b.nextRecent] = append(b.recent[b.nextRecent][:0], q...)
		b.nextRecent = (b.nextRecent + 1) % graphCache
	}
	return false
}

// Stream capture settings: a stream that does not synchronise with the
// legacy default stream, captured in relaxed mode (the capture never runs
// anything, so other threads' work does not matter).
const (
	streamNonBlocking  = 1
	captureModeRelaxed = 2
)

// capture records q's launches on a private stream into a graph and
// instantiates it.
func (b *Backend) capture(q []call) (uintptr, error) {
	if b.stream == 0 {
		if err := b.check("cuStreamCreate", b.drv.cuStreamCreate(&b.stream, streamNonBlocking)); err != nil {
			return 0, err
		}
	}
	if err := b.check("cuStreamBeginCapture", b.drv.cuStreamBeginCapture(b.stream, captureModeRelaxed)); err != nil {
		return 0, err
	}
	var launchErr error
	for i := range q {
		if err := b.check("cuLaunchKernel "+q[i].name, b.launchNow(&q[i], b.stream)); err != nil && launchErr == nil {
			launchErr = err
		}
	}
	var g uintptr
	if err := b.check("cuStreamEndCapture", b.drv.cuStreamEndCapture(b.stream, &g)); err != nil {
		return 0, err
	}
	defer b.drv.cuGraphDestroy(g)
	if launchErr != nil {
		return 0, launchErr
	}
	var exec uintptr
	if err := b.check("cuGraphInstantiateWithFlags", b.drv.cuGraphInstantiateWithFlags(&exec, g, 0)); err != nil {
		return 0, err
	}
	return exec, nil
}

// Replays is the number of queues that ran as a graph.
func (b *Backend) Replays() int { return b.replays }

// releaseGraphs destroys the cached graphs and the capture stream.
func (b *Backend) releaseGraphs() {
	for _, g := range b.graphs {
		b.drv.cuGraphExecDestroy(g.exec)
	}
	b.graphs = nil
	if b.stream != 0 && b.drv.cuStreamDestroy != nil {
		b.drv.cuStreamDestroy(b.stream)
		b.stream = 0
	}
}
