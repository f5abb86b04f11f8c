package daemon

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progressBar draws one line, redrawn in place with a carriage return:
//
//	model.gguf  42% [=========>             ] 113.2/270.0 MiB  11.8 MiB/s  0:13
//
// A nil *progressBar draws nothing, so callers need no checks.
type progressBar struct {
	w     io.Writer
	name  string
	total int64 // 0: unknown
	done  int64
	base  int64 // bytes present when this attempt started (not counted in the rate)
	began time.Time
	drawn time.Time
	width int // characters of the last line, to blank leftovers
}

// barRedraw is the shortest interval between two redraws.
const barRedraw = 100 * time.Millisecond

func newProgressBar(w io.Writer, name string) *progressBar {
	return &progressBar{w: w, name: name}
}

// start begins an attempt with done bytes already present of total.
func (b *progressBar) start(done, total int64) {
	if b == nil {
		return
	}
	b.done, b.base, b.total = done, done, total
	b.began = time.Now()
	b.draw()
}

func (b *progressBar) add(n int) {
	if b == nil {
		return
	}
	b.done += int64(n)
	if time.Since(b.drawn) >= barRedraw {
		b.draw()
	}
}

// finish draws the final state and ends the line.
func (b *progressBar) finish() {
	if b == nil || b.began.IsZero() {
		return
	}
	b.draw()
	fmt.Fprintln(b.w)
}

// abort ends the line, leaving the last state visible.
func (b *progressBar) abort() {
	if b == nil || b.began.IsZero() {
		return
	}
	fmt.Fprintln(b.w)
}

func (b *progressBar) draw() {
	b.drawn = time.Now()
	elapsed := b.drawn.Sub(b.began).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(b.done-b.base) / elapsed
	}
	var line string
	if b.total > 0 {
		frac := min(float64(b.done)/float64(b.total), 1)
		const cells = 24
		fill := int(frac * cells)
		bar := strings.Repeat("=", fill)
		if fill < cells {
			bar += ">" + strings.Repeat(" ", cells-fill-1)
		}
		eta := "-:--"
		if rate > 0 {
			eta = clock(time.Duration(float64(b.total-b.done) / rate * float64(time.Second)))
		}
		line = fmt.Sprintf("%s %3.0f%% [%s] %s/%s  %s/s  %s",
			b.name, frac*100, bar, mib(b.done), mib(b.total)+" MiB", mib(int64(rate))+" MiB", eta)
	} else {
		line = fmt.Sprintf("%s %s MiB  %s MiB/s", b.name, mib(b.done), mib(int64(rate)))
	}
	pad := ""
	if len(line) < b.width {
		pad = strings.Repeat(" ", b.width-len(line))
	}
	b.width = len(line)
	fmt.Fprint(b.w, "\r"+line+pad)
}

func mib(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

// clock formats d as H:MM:SS or M:SS.
func clock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
