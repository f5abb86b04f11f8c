// Package accelcheck is for tests of accel backends. Its checks run each
// accel.Backend operation on the backend under test and on the CPU
// backend (accel/cpu) with the same random inputs, read both results
// back and compare them, so that every GPU backend is held to one set of
// checks written once. A backend's tests say, in Options, which weight
// types and batch sizes it takes and how close it must come:
//
//	for _, c := range accelcheck.Checks() {
//		t.Run(c.Name, func(t *testing.T) {
//			b := open(t)
//			c.Run(t, b, options(b))
//		})
//	}
package accelcheck

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/quant"
)

// Metric is how a result's distance from the CPU backend's is measured.
type Metric int

const (
	// RelL2 is the relative L2 distance of the whole result,
	// ‖got−want‖/‖want‖: rounding spread over all values (a GEMM on
	// lower-precision inputs) is judged as a whole.
	RelL2 Metric = iota
	// PerValue is the largest distance of one value,
	// |got−want|/(1+|want|): for kernels that follow the CPU's
	// arithmetic value by value.
	PerValue
)

func (m Metric) String() string {
	if m == PerValue {
		return "per value"
	}
	return "rel L2" // the GPU device check greps its logs for this
}

// distance measures got against want.
func (m Metric) distance(want, got []float32) float64 {
	if m == RelL2 {
		return fixture.RelL2(got, want)
	}
	var d float64
	for i := range want {
		d = max(d, valueDistance(want[i], got[i]))
	}
	return d
}

// valueDistance is |got−want|/(1+|want|): 0 for equal values (infinities
// included), +Inf where it is NaN, so that max keeps it.
func valueDistance(want, got float32) float64 {
	if want == got {
		return 0
	}
	d := math.Abs(float64(got)-float64(want)) / (1 + math.Abs(float64(want)))
	if math.IsNaN(d) {
		return math.Inf(1)
	}
	return d
}

// worst is the index of the value farthest from want, for a failure's
// message.
func worst(want, got []float32) int {
	at := 0
	for i := range want {
		if valueDistance(want[i], got[i]) > valueDistance(want[at], got[at]) {
			at = i
		}
	}
	return at
}

// Tolerances bound each operation's distance from the CPU backend's
// result, in the Options' Metric. Gather, the f16 cache and MatMul's row
// independence are held to equal values, whatever the backend.
type Tolerances struct {
	MatMul    float64 // batches of up to Options.GEMMRows rows
	GEMM      float64 // batches of more rows, where GEMMRows is set
	Embed     float64
	RMSNorm   float64
	Add       float64 // Add and AddRows
	SwiGLU    float64
	RoPE      float64
	Attention float64 // the output rows
	Probs     float64 // an observer's probabilities
	Scores    float64 // an observer's scores
}

// Options describe the backend under test to the checks.
type Options struct {
	Metric  Metric
	Tol     Tolerances
	Weights []quant.Type // the weight types MatMul and Embed load
	Batches []int        // the row counts MatMul multiplies
	// GEMMRows, when not 0, is the most rows MatMul multiplies at full
	// precision: larger batches are held to Tol.GEMM.
	GEMMRows int
}

func (o Options) matMulTol(rows int) float64 {
	if o.GEMMRows > 0 && rows > o.GEMMRows {
		return o.Tol.GEMM
	}
	return o.Tol.MatMul
}

// pair is the backend under test beside the CPU backend, with the random
// source of one check.
type pair struct {
	t   *testing.T
	gpu accel.Backend
	cpu *cpu.Backend
	o   Options
	rng *rand.Rand
}

// newPair starts a check of b; the seed gives each check its own inputs,
// the same in every run.
func newPair(t *testing.T, b accel.Backend, o Options, seed uint64) *pair {
	_, ok := b.(accel.Checker)
	require.True(t, ok, "%s is no accel.Checker: the checks could not see its failures", b.Name())
	c := cpu.New(2)
	t.Cleanup(func() { c.Close() })
	return &pair{t: t, gpu: b, cpu: c, o: o, rng: rand.New(rand.NewPCG(seed, seed+1))}
}

// run runs f as the subtest name on the same backends.
func (p *pair) run(name string, f func(p *pair)) {
	p.t.Run(name, func(t *testing.T) {
		sub := *p
		sub.t = t
		f(&sub)
	})
}

// vals returns n normally distributed values times scale.
func (p *pair) vals(n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(p.rng.NormFloat64()) * scale
	}
	return v
}

// bufs is one buffer on each backend.
type bufs struct{ gpu, cpu accel.Buffer }

// alloc makes a buffer holding v on both backends.
func (p *pair) alloc(v []float32) bufs {
	g, err := p.gpu.Alloc(len(v))
	require.NoError(p.t, err)
	c, err := p.cpu.Alloc(len(v))
	require.NoError(p.t, err)
	p.gpu.Write(g, 0, v)
	p.cpu.Write(c, 0, v)
	return bufs{g, c}
}

// cache makes a zeroed cache buffer of n values of typ on both backends.
func (p *pair) cache(n int, typ quant.Type) bufs {
	g, err := p.gpu.AllocCache(n, typ)
	require.NoError(p.t, err)
	c, err := p.cpu.AllocCache(n, typ)
	require.NoError(p.t, err)
	return bufs{g, c}
}

// load quantizes a random rows×cols matrix to typ and loads it on both
// backends.
func (p *pair) load(typ quant.Type, rows, cols int) (gpu, cpu accel.Weight) {
	size, err := typ.RowSize(cols)
	require.NoError(p.t, err)
	data := make([]byte, rows*size)
	require.NoError(p.t, quant.Quantize(typ, p.vals(rows*cols, 0.5), data))
	m := accel.Matrix{Name: "w", Type: typ, Rows: rows, Cols: cols, Data: data}
	gpu, err = p.gpu.Load(m)
	require.NoError(p.t, err, "%s", typ)
	cpu, err = p.cpu.Load(m)
	require.NoError(p.t, err, "%s", typ)
	return gpu, cpu
}

// read returns b's values on both backends, after checking that the
// backend under test has not failed.
func (p *pair) read(b bufs, what string) (want, got []float32) {
	p.t.Helper()
	want, got = make([]float32, b.cpu.Len()), make([]float32, b.gpu.Len())
	p.cpu.Read(want, b.cpu, 0)
	p.gpu.Read(got, b.gpu, 0)
	require.NoError(p.t, accel.Check(p.gpu), what)
	return want, got
}

// same asserts that both backends hold b within tol.
func (p *pair) same(b bufs, tol float64, what string) {
	p.t.Helper()
	want, got := p.read(b, what)
	p.near(want, got, tol, what)
}

// near asserts that got is within tol of want by the Options' Metric.
func (p *pair) near(want, got []float32, tol float64, what string) {
	p.t.Helper()
	require.Len(p.t, got, len(want), what)
	d := p.o.Metric.distance(want, got)
	p.t.Logf("%s: %s %.2e", what, p.o.Metric, d)
	i := worst(want, got)
	assert.LessOrEqual(p.t, d, tol, "%s: worst at value %d: cpu %g, backend %g", what, i, want[i], got[i])
}

// exact asserts that both backends hold b's values exactly.
func (p *pair) exact(b bufs, what string) {
	p.t.Helper()
	want, got := p.read(b, what)
	for i := range want {
		if !assert.Equal(p.t, want[i], got[i], "%s: value %d", what, i) {
			return
		}
	}
}
