package cpu

import (
	"runtime"
	"sync/atomic"
	"time"
)

// task is a parallel loop body: run covers [lo, hi) on worker t, whose
// scratch memory it may use. Tasks are preallocated structs owned by the
// backend, so handing one to the workers allocates nothing.
type task interface {
	run(t, lo, hi int)
}

// pool is a fixed set of worker goroutines that split loops with the
// calling goroutine, which acts as worker 0. One loop runs at a time (the
// Backend is not used concurrently).
//
// A decode step runs a few hundred loops of a few microseconds each, and
// waking a parked thread costs tens of microseconds, so workers poll for
// the next loop for a while before they park. The protocol:
//
//   - The caller writes the loop into p.job, sets p.pending to the number
//     of workers, then increments p.gen. Every worker takes part in every
//     loop (its range may be empty), so the caller does not touch p.job
//     again until all of them have read it and reported done; a worker can
//     therefore never see a newer job than the generation it woke for, nor
//     report for a loop it did not run.
//   - A worker that has polled long enough announces it is parking
//     (parked[w] = 1), checks p.gen once more, and blocks on its wake
//     channel. Whoever moves parked[w] from 1 to 0 decides: the caller, and
//     then it sends one token, or the worker itself when the generation
//     moved after all, and then no token is sent. A token is never left
//     behind, but it can be late: the caller may be descheduled between
//     moving the generation and claiming the worker, which meanwhile ran
//     the loop and parked again; so a woken worker checks the generation
//     and parks again if it has not moved.
type pool struct {
	n       int
	gen     atomic.Uint64
	pending atomic.Int32
	closed  atomic.Bool
	job     job
	workers []worker // 1..n-1; index 0 unused
}

type job struct {
	t       task
	n, per  int
	workers int
}

// worker is padded so that one worker's flag does not share a cache line
// with another's.
type worker struct {
	parked atomic.Int32
	wake   chan struct{}
	_      [48]byte
}

// pollFor is how long a worker polls for the next loop before it parks:
// longer than the gaps inside a decode step, far shorter than the gap
// between requests.
const pollFor = 200 * time.Microsecond

func newPool(n int) *pool {
	p := &pool{n: n, workers: make([]worker, n)}
	for w := 1; w < n; w++ {
		p.workers[w].wake = make(chan struct{}, 1)
		go p.work(w)
	}
	return p
}

// work is worker w's loop.
func (p *pool) work(w int) {
	var seen uint64 // the generation newPool left, not whatever it is when this goroutine starts
	for {
		seen = p.next(w, seen)
		if p.closed.Load() {
			return
		}
		j := p.job
		if w < j.workers {
			j.t.run(w, min(w*j.per, j.n), min((w+1)*j.per, j.n))
		}
		p.pending.Add(-1)
	}
}

// next waits until the generation moves past seen and returns it: polling
// first, yielding the processor between looks, then parked.
func (p *pool) next(w int, seen uint64) uint64 {
	start := time.Now()
	for i := 0; ; i++ {
		if g := p.gen.Load(); g != seen {
			return g
		}
		if i < 64 {
			continue
		}
		runtime.Gosched()
		if i%64 == 0 && time.Since(start) > pollFor {
			break
		}
	}
	me := &p.workers[w]
	for {
		me.parked.Store(1)
		if g := p.gen.Load(); g != seen {
			if !me.parked.CompareAndSwap(1, 0) {
				<-me.wake // the caller claimed us first and sent a token
			}
			return g
		}
		<-me.wake
		// The token may be late: a caller that was descheduled between
		// moving the generation and waking us can wake us after we ran
		// that generation's loop and parked again.
		if g := p.gen.Load(); g != seen {
			return g
		}
	}
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
	p.publish()
	t.run(0, 0, min(per, n))
	for i := 0; p.pending.Load() != 0; i++ {
		if i >= 64 {
			runtime.Gosched()
		}
	}
}

// publish starts the next generation and wakes the workers that parked.
func (p *pool) publish() {
	p.gen.Add(1)
	for w := 1; w < p.n; w++ {
		if p.workers[w].parked.CompareAndSwap(1, 0) {
			p.workers[w].wake <- struct{}{}
		}
	}
}

// close stops the workers; it may be called more than once, but not while
// a loop runs.
func (p *pool) close() {
	if p.closed.Swap(true) {
		return
	}
	p.publish()
}
