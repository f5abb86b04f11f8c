package cpu

import "sync"

// parallel splits [0, n) into at most b.threads contiguous ranges and runs
// fn on each, the first on the calling goroutine; t is the worker index,
// which selects that worker's scratch memory.
func (b *Backend) parallel(n int, fn func(t, lo, hi int)) {
	workers := min(b.threads, n)
	if workers <= 1 {
		if n > 0 {
			fn(0, 0, n)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for t := 1; t < workers; t++ {
		lo, hi := t*chunk, min((t+1)*chunk, n)
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(t, lo, hi)
		}()
	}
	fn(0, 0, min(chunk, n))
	wg.Wait()
}
