package cpu

import (
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// countTask counts how often each index is visited and checks that a
// worker index is used by one range at a time.
type countTask struct {
	hits []atomic.Int32
	busy []atomic.Int32
	bad  atomic.Int32
}

func (c *countTask) run(t, lo, hi int) {
	if c.busy[t].Add(1) != 1 {
		c.bad.Add(1)
	}
	for i := lo; i < hi; i++ {
		c.hits[i].Add(1)
	}
	c.busy[t].Add(-1)
}

// TestPoolRunsEveryIndexOnce runs many loops of random sizes and grains,
// with pauses long enough for the workers to park between some of them,
// and checks that every index of every loop ran exactly once.
func TestPoolRunsEveryIndexOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 8} {
		p := newPool(threads)
		rng := rand.New(rand.NewPCG(1, uint64(threads)))
		loops := 3000
		if testing.Short() {
			loops = 500
		}
		for l := 0; l < loops; l++ {
			n := rng.IntN(100)
			grain := 1 + rng.IntN(8)
			c := &countTask{hits: make([]atomic.Int32, n), busy: make([]atomic.Int32, threads)}
			p.runGrain(c, n, grain)
			for i := range c.hits {
				require.EqualValues(t, 1, c.hits[i].Load(), "threads %d loop %d index %d of %d", threads, l, i, n)
			}
			require.Zero(t, c.bad.Load())
			require.Zero(t, p.pending.Load(), "a worker reported twice or not at all")
			if rng.IntN(50) == 0 {
				time.Sleep(maxPoll + maxPoll/2) // let the workers park
			}
		}
		p.close()
		p.close()
	}
}

// TestPoolOversubscribed runs a pool with more workers than processors,
// where a polling worker must yield for the others to make progress and
// the caller is often descheduled between moving the generation and
// waking a worker (a late wake-up once made a worker run a loop twice).
func TestPoolOversubscribed(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	p := newPool(4)
	defer p.close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for l := 0; l < 2000; l++ {
			c := &countTask{hits: make([]atomic.Int32, 37), busy: make([]atomic.Int32, 4)}
			p.run(c, 37)
			for i := range c.hits {
				if c.hits[i].Load() != 1 || p.pending.Load() != 0 {
					t.Errorf("loop %d: index %d ran %d times, pending %d", l, i, c.hits[i].Load(), p.pending.Load())
					return
				}
			}
			if l%100 == 0 {
				time.Sleep(maxPoll + maxPoll/2)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("pool made no progress with GOMAXPROCS=1")
	}
}

// TestPoolCloseStopsWorkers checks that close ends the worker goroutines,
// whether they are polling or parked.
func TestPoolCloseStopsWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, park := range []bool{false, true} {
		p := newPool(4)
		p.run(&countTask{hits: make([]atomic.Int32, 8), busy: make([]atomic.Int32, 4)}, 8)
		if park {
			time.Sleep(2 * maxPoll)
		}
		p.close()
	}
	// Poll here rather than with require.Eventually, whose own goroutines
	// would be counted.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; {
		require.True(t, time.Now().Before(deadline), "%d goroutines, %d before", runtime.NumGoroutine(), before)
		time.Sleep(time.Millisecond)
	}
}
