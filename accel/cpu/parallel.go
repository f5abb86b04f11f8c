package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// task is a parallel loop body: run covers [lo, hi) on worker t, whose
// scratch memory it may use. Tasks are preallocated structs owned by the
// backend, so handing one to the workers allocates nothing.
type task interface {
	run(t, lo, hi int)
}

// spinChecks is how many times an idle worker polls for the next loop
// before it parks. A decode step runs a few hundred short loops back to
// back; waking a parked thread costs tens of microseconds each time, which
// left a core idle a third of the time, while this much polling lasts about
// as long as the gaps between the loops of one step.
const spinChecks = 1 << 14

// pool is a fixed set of worker goroutines that split loops with the
// calling goroutine, which acts as worker 0. One loop runs at a time: the
// Backend is not used concurrently.
//
// A loop is published by writing job and then incrementing gen; workers
// poll gen for a while after each loop, then park on their wake channel.
type pool struct {
	n       int
	gen     atomic.Uint64
	job     job // written only between loops, read by workers after gen changes
	pending atomic.Int32
	parked  []atomic.Bool
	wake    []chan struct{}
	closing atomic.Bool
	closed  sync.Once
}

type job struct {
	t       task
	n, per  int
	workers int
}

func newPool(n int) *pool {
	p := &pool{n: n, parked: make([]atomic.Bool, n), wake: make([]chan struct{}, n)}
	for w := 1; w < n; w++ {
		p.wake[w] = make(chan struct{}, 1)
		go p.worker(w)
	}
	return p
}

func (p *pool) worker(w int) {
	var seen uint64
	for {
		g := p.await(w, seen)
		if p.closing.Load() {
			return
		}
		seen = g
		// Every worker reports back, also one with no share of this loop,
		// so that no worker still reads the job when the next one is
		// written.
		if j := p.job; w < j.workers {
			j.t.run(w, min(w*j.per, j.n), min((w+1)*j.per, j.n))
		}
		p.pending.Add(-1)
	}
}

// await returns the generation of the next loop after seen, polling first
// and parking after spinChecks polls.
func (p *pool) await(w int, seen uint64) uint64 {
	for i := 1; i <= spinChecks; i++ {
		if g := p.gen.Load(); g != seen {
			return g
		}
		yieldSometimes(i)
	}
	p.parked[w].Store(true)
	if g := p.gen.Load(); g != seen && p.parked[w].CompareAndSwap(true, false) {
		return g
	}
	// Parked, or a publisher already claimed the wake-up: take its token.
	<-p.wake[w]
	return p.gen.Load()
}

// run splits [0, n) into at most p.n contiguous ranges, runs them in
// parallel and returns when all are done.
func (p *pool) run(t task, n int) {
	p.runGrain(t, n, 1)
}

// runGrain is run with range boundaries at multiples of grain (so that,
// for example, a worker's rows start on a tile boundary).
func (p *pool) runGrain(t task, n, grain int) {
	units := (n + grain - 1) / grain
	workers := min(p.n, units)
	if workers <= 1 {
		if n > 0 {
			t.run(0, 0, n)
		}
		return
	}
	per := (units + workers - 1) / workers * grain
	p.job = job{t: t, n: n, per: per, workers: workers}
	p.pending.Store(int32(p.n - 1))
	p.gen.Add(1)
	p.wakeParked()
	t.run(0, 0, min(per, n))
	for i := 1; p.pending.Load() != 0; i++ {
		yieldSometimes(i)
	}
	p.job = job{} // drop the task's references
}

// yieldSometimes lets other goroutines run every so often in a polling
// loop: the goroutine polled for may be waiting for this processor.
func yieldSometimes(i int) {
	if i%256 == 0 {
		runtime.Gosched()
	}
}

func (p *pool) wakeParked() {
	for w := 1; w < p.n; w++ {
		if p.parked[w].CompareAndSwap(true, false) {
			p.wake[w] <- struct{}{}
		}
	}
}

// close stops the workers; it may be called more than once.
func (p *pool) close() {
	p.closed.Do(func() {
		p.closing.Store(true)
		p.gen.Add(1)
		p.wakeParked()
	})
}
