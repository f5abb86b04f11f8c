package cpu

import (
	"math"

	"github.com/edged/edged/accel"
)

// Embed implements accel.Backend.
func (b *Backend) Embed(dst accel.Buffer, table accel.Weight, ids []int32) {
	b.emb = embedTask{dst: dst.(*buffer).f, w: table.(*weight), ids: ids}
	b.pool.run(&b.emb, len(ids))
}

type embedTask struct {
	dst []float32
	w   *weight
	ids []int32
}

func (e *embedTask) run(_, lo, hi int) {
	cols := e.w.m.Cols
	for r := lo; r < hi; r++ {
		e.w.row(int(e.ids[r]), e.dst[r*cols:(r+1)*cols])
	}
}

// dot is the float32 inner product, four partial sums for speed.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// RMSNorm implements accel.Backend.
func (b *Backend) RMSNorm(dst, x, w accel.Buffer, rows int, eps float32) {
	d, xs, ws := dst.(*buffer).f, x.(*buffer).f, w.(*buffer).f
	n := len(ws)
	for r := 0; r < rows; r++ {
		in, out := xs[r*n:(r+1)*n], d[r*n:(r+1)*n]
		var ss float64
		for _, v := range in {
			ss += float64(v) * float64(v)
		}
		scale := float32(1 / math.Sqrt(ss/float64(n)+float64(eps)))
		for i, v := range in {
			out[i] = v * scale * ws[i]
		}
	}
}

// AddRows implements accel.Backend.
func (b *Backend) AddRows(dst, bias accel.Buffer, rows int) {
	d, v := dst.(*buffer).f, bias.(*buffer).f
	n := len(v)
	for r := 0; r < rows; r++ {
		row := d[r*n : (r+1)*n]
		for i := range row {
			row[i] += v[i]
		}
	}
}

// Add implements accel.Backend.
func (b *Backend) Add(dst, x accel.Buffer, n int) {
	d, xs := dst.(*buffer).f[:n], x.(*buffer).f[:n]
	for i := range d {
		d[i] += xs[i]
	}
}

// swigluGrain is the fewest values a SwiGLU worker takes: a decode step's
// few thousand take a microsecond or two, about what the workers' meeting
// would cost, so they run on the caller; a prompt's are split.
const swigluGrain = 4096

// SwiGLU implements accel.Backend.
func (b *Backend) SwiGLU(dst, gate, up accel.Buffer, n int) {
	b.swiglu = swigluTask{dst.(*buffer).f[:n], gate.(*buffer).f[:n], up.(*buffer).f[:n]}
	b.pool.runGrain(&b.swiglu, n, swigluGrain)
}

type swigluTask struct{ dst, gate, up []float32 }

func (s *swigluTask) run(_, lo, hi int) {
	siluMul(s.dst[lo:hi], s.gate[lo:hi], s.up[lo:hi])
}

// RoPE implements accel.Backend. Angles are computed in float64: pos·θ_i
// grows with the context and float32 would lose its low bits. Each row's
// cosines and sines are computed once and serve all its heads.
func (b *Backend) RoPE(x accel.Buffer, width int, pos []int32, r accel.RoPE) {
	b.rope = ropeTask{b: b, x: x.(*buffer).f, width: width, pos: pos, r: r}
	b.pool.run(&b.rope, len(pos))
}

type ropeTask struct {
	b     *Backend
	x     []float32
	width int
	pos   []int32
	r     accel.RoPE
}

func (t *ropeTask) run(w, lo, hi int) {
	r, half := &t.r, t.r.Dims/2
	cs := sized(&t.b.angles[w], 2*half)
	for row := lo; row < hi; row++ {
		for i := range half {
			cs[2*i+1], cs[2*i] = math.Sincos(float64(t.pos[row]) * r.Freqs[i])
		}
		for h := 0; h+r.HeadDim <= t.width; h += r.HeadDim {
			r.Rotate(t.x[row*t.width+h:row*t.width+h+r.HeadDim], cs, false)
		}
	}
}

// Gather implements accel.Backend.
func (b *Backend) Gather(dst, src accel.Buffer, width int, idx []int32) {
	d, s := dst.(*buffer).f, src.(*buffer).f
	for i, j := range idx {
		copy(d[i*width:(i+1)*width], s[int(j)*width:(int(j)+1)*width])
	}
}
