package daemon

import (
	"context"
	"time"
)

// yieldPoll is how often a job waiting for queued requests looks again.
const yieldPoll = 2 * time.Millisecond

// pacer makes a job yield to serving before each of its forward passes:
// it waits while requests are queued for a model, and while requests are
// being served it keeps the job computing share of the time (after
// computing for t, it waits t·(1−share)/share). With nothing served it
// does not slow the job: an idle machine is better used.
type pacer struct {
	ctx   context.Context
	share float64
	load  func() (waiting, running bool)
	mark  time.Time // when the job last went back to computing
}

func newPacer(ctx context.Context, share float64, load func() (bool, bool)) *pacer {
	return &pacer{ctx: ctx, share: share, load: load, mark: time.Now()}
}

// pace returns when the job may run its next forward pass, or at once
// once the job must stop (the pass is then the last of its step).
func (p *pacer) pace() {
	ran := time.Since(p.mark)
	for p.ctx.Err() == nil {
		waiting, running := p.load()
		var d time.Duration
		switch {
		case waiting:
			d = yieldPoll
		case running && p.share < 1 && ran > 0:
			d, ran = time.Duration(float64(ran)*(1-p.share)/p.share), 0
		default:
			p.mark = time.Now()
			return
		}
		sleepCtx(p.ctx, d)
	}
	p.mark = time.Now()
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
