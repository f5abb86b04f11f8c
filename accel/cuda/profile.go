package cuda

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// profile times every kernel (EDGED_CUDA_PROFILE=1): each launch is
// followed by a synchronisation, so the times are the GPU's plus a few
// microseconds of overhead, and nothing overlaps. For finding where time
// goes, not for speed figures.
type profile struct {
	last  time.Time
	stats map[string]*kernelTime
}

type kernelTime struct {
	calls int
	total time.Duration
}

func newProfile() *profile { return &profile{last: time.Now(), stats: map[string]*kernelTime{}} }

// time waits for the device and charges the time since the last charge
// to name. A nil profile does nothing.
func (p *profile) time(name string, b *Backend) {
	if p == nil {
		return
	}
	b.fail("cuCtxSynchronize", b.drv.cuCtxSynchronize())
	now := time.Now()
	k := p.stats[name]
	if k == nil {
		k = &kernelTime{}
		p.stats[name] = k
	}
	k.calls++
	k.total += now.Sub(p.last)
	p.last = now
}

// reset starts the next interval now (host work between kernels is not
// charged to the next one).
func (p *profile) reset() {
	if p != nil {
		p.last = time.Now()
	}
}

// write prints the kernels by total time.
func (p *profile) write(w io.Writer) {
	if p == nil {
		return
	}
	names := make([]string, 0, len(p.stats))
	var total time.Duration
	for n, k := range p.stats {
		names = append(names, n)
		total += k.total
	}
	sort.Slice(names, func(i, j int) bool { return p.stats[names[i]].total > p.stats[names[j]].total })
	fmt.Fprintf(w, "cuda profile: %.1f ms in kernels\n%-22s %8s %10s %9s %6s\n", ms(total), "kernel", "calls", "total ms", "avg µs", "share")
	for _, n := range names {
		k := p.stats[n]
		fmt.Fprintf(w, "%-22s %8d %10.2f %9.1f %5.1f%%\n", n, k.calls, ms(k.total), float64(k.total.Microseconds())/float64(k.calls), 100*float64(k.total)/float64(total))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
