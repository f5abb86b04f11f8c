package cpu

import "sync"

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
// Workers sleep on their channels between loops. A version that polled
// instead was much faster in decode (waking a thread costs tens of
// microseconds, and a decode step runs a few hundred loops) but hung under
// load; see BENCHMARKS.md before trying again.
type pool struct {
	n      int
	work   []chan chunk // one per worker 1..n-1
	done   sync.WaitGroup
	closed sync.Once
}

type chunk struct {
	t      task
	w      int
	lo, hi int
}

func newPool(n int) *pool {
	p := &pool{n: n, work: make([]chan chunk, n)}
	for w := 1; w < n; w++ {
		p.work[w] = make(chan chunk, 1)
		go p.worker(p.work[w])
	}
	return p
}

func (p *pool) worker(c chan chunk) {
	for ch := range c {
		ch.t.run(ch.w, ch.lo, ch.hi)
		p.done.Done()
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
	p.done.Add(workers - 1)
	for w := 1; w < workers; w++ {
		p.work[w] <- chunk{t, w, min(w*per, n), min((w+1)*per, n)}
	}
	t.run(0, 0, min(per, n))
	p.done.Wait()
}

// close stops the workers; it may be called more than once.
func (p *pool) close() {
	p.closed.Do(func() {
		for _, c := range p.work[1:] {
			close(c)
		}
	})
}
