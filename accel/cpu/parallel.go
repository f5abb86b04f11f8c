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
// waking a parked thread costs tens of microseconds, so the workers poll
// for the next loop, and the caller for the end of the current one, for a
// while before they park (polling longer would steal the processor from
// a thread that has work when the machine is busy). The protocol:
//
//   - The caller writes the loop into p.job, sets p.pending to the number
//     of workers, then increments p.gen. Every worker takes part in every
//     loop (its range may be empty), so the caller does not touch p.job
//     again until all of them have read it and reported done; a worker can
//     therefore never see a newer job than the generation it woke for, nor
//     report for a loop it did not run.
//   - The worker that brings p.pending to zero wakes the caller if it
//     parked; the caller wakes the workers that parked when it moves
//     p.gen. Parking and waking follow parker's rules.
type pool struct {
	n       int
	gen     atomic.Uint64
	pending atomic.Int32
	closed  atomic.Bool
	shared  bool // fewer processors than threads: pollers must yield
	job     job
	caller  parker
	workers []parker // 1..n-1; index 0 unused
}

type job struct {
	t       task
	n, per  int
	workers int
}

// parker lets a goroutine block until another wakes it. The sleeper
// announces it is parking (parked = 1), checks its condition once more and
// blocks on wake; whoever moves parked from 1 to 0 decides: the waker, and
// then it sends one token, or the sleeper itself when the condition held
// after all, and then no token is sent. So a token is never lost or left
// behind, but it can be late: a waker descheduled between changing the
// condition and waking can wake the sleeper's next park, so a woken
// sleeper checks its condition and parks again if it does not hold.
//
// It is padded so that two parkers do not share a cache line.
type parker struct {
	parked atomic.Int32
	wake   chan struct{}
	poll   time.Duration // how long the owner polls before it parks
	_      [40]byte
}

func (k *parker) park(ready func() bool) {
	for {
		k.parked.Store(1)
		if ready() {
			if !k.parked.CompareAndSwap(1, 0) {
				<-k.wake // the waker claimed us first: take its token
			}
			return
		}
		<-k.wake
		if ready() {
			return
		}
	}
}

func (k *parker) unpark() {
	if k.parked.CompareAndSwap(1, 0) {
		k.wake <- struct{}{}
	}
}

// A goroutine polls for up to maxPoll before it parks: longer than the
// gaps inside a decode step, far shorter than the gap between requests.
// Polling for a gap that turns out longer than maxPoll is wasted and, on a
// machine busier than the pool's threads, takes the processor from the
// thread being waited for (a spinning thread also loses the scheduler's
// preference for threads that slept); so each goroutine learns from the
// gaps it saw: it halves its polling time after a gap longer than maxPoll,
// and doubles it (plus pollStep, to get off zero) after a shorter one,
// including one it parked through. On a quiet machine the gaps inside a
// step are short and polling stays near maxPoll; on a busy one they are
// long and the pool falls back to parking.
const (
	maxPoll  = 100 * time.Microsecond
	pollStep = 2 * time.Microsecond
)

func newPool(n int) *pool {
	p := &pool{n: n, workers: make([]parker, n), shared: runtime.GOMAXPROCS(0) < n}
	p.caller = parker{wake: make(chan struct{}, 1), poll: maxPoll}
	for w := 1; w < n; w++ {
		p.workers[w] = parker{wake: make(chan struct{}, 1), poll: maxPoll}
		go p.work(w)
	}
	return p
}

// work is worker w's loop.
func (p *pool) work(w int) {
	var seen uint64 // the generation newPool left, not whatever it is when this goroutine starts
	for {
		p.wait(&p.workers[w], func() bool { return p.gen.Load() != seen })
		seen++ // the caller moves p.gen once per loop and waits for us
		if p.closed.Load() {
			return
		}
		j := p.job
		if w < j.workers {
			j.t.run(w, min(w*j.per, j.n), min((w+1)*j.per, j.n))
		}
		if p.pending.Add(-1) == 0 {
			p.caller.unpark()
		}
	}
}

// wait returns when ready does: it polls for up to k.poll, then parks on
// k, and adapts k.poll to the length of the wait.
func (p *pool) wait(k *parker, ready func() bool) {
	start := time.Now()
	for i := 1; !ready(); i++ {
		if i%256 == 0 {
			p.yield()
			if time.Since(start) > k.poll {
				k.park(ready)
				break
			}
		}
	}
	if time.Since(start) > maxPoll {
		k.poll /= 2
	} else {
		k.poll = min(2*k.poll+pollStep, maxPoll)
	}
}

// yield lets another goroutine run while this one polls, when the pool has
// more threads than the Go scheduler has processors; otherwise polling
// keeps the processor, since a trip through the scheduler costs about as
// much as the loops it waits for.
func (p *pool) yield() {
	if p.shared {
		runtime.Gosched()
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
	p.wait(&p.caller, func() bool { return p.pending.Load() == 0 })
}

// publish starts the next generation and wakes the workers that parked.
func (p *pool) publish() {
	p.gen.Add(1)
	for w := 1; w < p.n; w++ {
		p.workers[w].unpark()
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
