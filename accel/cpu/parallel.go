package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// task is a parallel loop body: run covers [lo, hi) on worker t, whose
// scratch memory it may use. Tasks are preallocated structs owned by the
// backend, so handing one to the workers allocates nothing.
type task interface {
	run(t, lo, hi int)
}

// spinFor is how long a worker polls for the next loop, and the caller for
// the end of one, before sleeping. A decode step runs a few hundred short
// loops back to back; waking a parked thread costs tens of microseconds
// each time, which left a core idle a third of the time, while the gaps
// between the loops of one step are shorter than this. It is a time, not a
// count of polls, so that polling stays short where polls are slow (the
// race detector) or where the thread polled for is not running (more busy
// threads than cores).
const spinFor = 50 * time.Microsecond

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
	// waiting is set while the caller sleeps on finished for the last
	// worker of a loop (after polling pending for a while).
	waiting  atomic.Bool
	finished chan struct{}
	closing  atomic.Bool
	closed   sync.Once
}

type job struct {
	t       task
	n, per  int
	workers int
}

func newPool(n int) *pool {
	p := &pool{n: n, parked: make([]atomic.Bool, n), wake: make([]chan struct{}, n), finished: make(chan struct{}, 1)}
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
		if p.pending.Add(-1) == 0 && p.waiting.CompareAndSwap(true, false) {
			p.finished <- struct{}{}
		}
	}
}

// await returns the generation of the next loop after seen, polling for
// up to spinFor, then parking.
func (p *pool) await(w int, seen uint64) uint64 {
	start := time.Now()
	for i := 1; ; i++ {
		if g := p.gen.Load(); g != seen {
			return g
		}
		if !pollLonger(i, start) {
			break
		}
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
	p.awaitWorkers()
	p.job = job{} // drop the task's references
}

// awaitWorkers returns when every worker has reported back on the current
// loop: it polls for a while, then sleeps until the last worker signals, so
// that an oversubscribed machine (more busy threads than cores) does not
// spend whole time slices polling for a worker that is not running.
func (p *pool) awaitWorkers() {
	start := time.Now()
	for i := 1; ; i++ {
		if p.pending.Load() == 0 {
			return
		}
		if !pollLonger(i, start) {
			break
		}
	}
	p.waiting.Store(true)
	if p.pending.Load() == 0 && p.waiting.CompareAndSwap(true, false) {
		return
	}
	// Sleeping, or the last worker already claimed the signal: take it.
	<-p.finished
}

// pollLonger reports whether a polling loop begun at start, now at poll
// i, should go on. Every so often it lets other goroutines run (the one
// polled for may be waiting for this processor) and looks at the clock.
func pollLonger(i int, start time.Time) bool {
	if i%256 != 0 {
		return true
	}
	runtime.Gosched()
	return time.Since(start) < spinFor
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
