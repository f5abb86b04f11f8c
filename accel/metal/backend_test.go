package metal

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/accelcheck"
	"github.com/edged/edged/quant"
)

// These tests run the operation checks of accel/accelcheck, each
// operation against the CPU backend on random data: on the Metal device
// where there is one, otherwise on the emulator of the kernels
// (emu_test.go).

// open returns the Metal backend, or one on the emulator.
func open(t *testing.T) *Backend {
	b, err := New()
	if err != nil {
		if testing.Short() {
			t.Skipf("%v; the emulator takes seconds, and the run without -short covers it", err)
		}
		t.Logf("%v: testing on the emulator", err)
		if b, err = newBackend(newEmuDevice(t)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	return b
}

// checkOptions holds b to each value's distance from the CPU's: the
// products follow the CPU's arithmetic (see the package doc).
func checkOptions(b *Backend) accelcheck.Options {
	return accelcheck.Options{
		Metric:  accelcheck.PerValue,
		Weights: slices.Sorted(maps.Keys(weightKinds)),
		// A decode row, a batch that is not a multiple of MM_NR, and one
		// that is.
		Batches: []int{1, 5, 16},
		Tol: accelcheck.Tolerances{
			// Float sums in another order: 1280 float32 products differ
			// by up to about 2e-5 relative (quantized weights sum blocks
			// exactly and only their scaled totals differ).
			MatMul: 2e-4, Embed: 1e-6,
			RMSNorm: 1e-5, Add: 1e-6, SwiGLU: 1e-5, RoPE: 1e-5,
			Attention: 1e-4, Probs: 1e-5, Scores: 1e-4,
		},
	}
}

// TestOps runs every operation check on a fresh backend.
func TestOps(t *testing.T) {
	for _, c := range accelcheck.Checks() {
		t.Run(c.Name, func(t *testing.T) {
			b := open(t)
			if _, emulated := b.dev.(*emuDevice); emulated && c.Name == "AttentionLongCache" {
				// 480 threadgroups over up to 701 keys, twice: 40 s on the
				// emulator, for one attention kernel whose walk over more
				// keys than a threadgroup's the Attention check covers.
				t.Skip("emulator: too slow")
			}
			c.Run(t, b, checkOptions(b))
		})
	}
}

func TestName(t *testing.T) {
	b := open(t)
	assert.True(t, strings.HasPrefix(b.Name(), "metal (") && strings.HasSuffix(b.Name(), ")"), b.Name())
}

func TestLoadRejectsUnsupported(t *testing.T) {
	b := open(t)
	for _, typ := range []quant.Type{quant.BF16, quant.Q2_K, quant.Q3_K, quant.Q8_K} {
		size, err := typ.RowSize(256)
		require.NoError(t, err)
		_, err = b.Load(accel.Matrix{Name: "w", Type: typ, Rows: 1, Cols: 256, Data: make([]byte, size)})
		assert.Error(t, err, "%s", typ)
	}
	_, err := b.Load(accel.Matrix{Name: "w", Type: quant.Q4_0, Rows: 2, Cols: 32, Data: make([]byte, 18)})
	assert.Error(t, err)
}

// Bad arguments do not panic: the operation is skipped and the failure
// comes back from Err (which the engine checks after a step) and from the
// next Alloc, Load and Close.
func TestBadArgumentsAreErrors(t *testing.T) {
	cases := map[string]func(b *Backend, x, y accel.Buffer){
		"embed id": func(b *Backend, x, _ accel.Buffer) {
			data := make([]byte, 2*18)
			w, err := b.Load(accel.Matrix{Name: "w", Type: quant.Q4_0, Rows: 2, Cols: 32, Data: data})
			require.NoError(t, err)
			b.Embed(x, w, []int32{2})
		},
		"short dst":   func(b *Backend, x, y accel.Buffer) { b.Add(x, y, 100) },
		"gather self": func(b *Backend, x, _ accel.Buffer) { b.Gather(x, x, 4, []int32{0}) },
		"freed": func(b *Backend, x, y accel.Buffer) {
			b.Free(y)
			b.Add(x, y, 4)
		},
		"rope dims": func(b *Backend, x, _ accel.Buffer) {
			b.RoPE(x, 8, []int32{0}, accel.RoPE{HeadDim: 4, Dims: 8, Freqs: make([]float64, 4)})
		},
		"attention shape": func(b *Backend, x, _ accel.Buffer) {
			b.Attention(x, x, x, x, nil, accel.AttnShape{NHead: 3, NHeadKV: 2, HeadDim: 4})
		},
		"observer size": func(b *Backend, x, y accel.Buffer) {
			kc, err := b.AllocCache(64, quant.F16)
			require.NoError(t, err)
			seq := accel.AttnSeq{K: kc, V: kc, Rows: 1, Probs: make([]float32, 1)}
			b.Attention(x, x, y, y, []accel.AttnSeq{seq}, accel.AttnShape{NHead: 2, NHeadKV: 1, HeadDim: 4, Scale: 0.5})
		},
	}
	for name, op := range cases {
		b := open(t)
		x, err := b.Alloc(32)
		require.NoError(t, err)
		y, err := b.Alloc(8)
		require.NoError(t, err)
		assert.NotPanics(t, func() { op(b, x, y) }, name)
		assert.Error(t, b.Err(), name)
		_, err = b.Alloc(1)
		assert.ErrorIs(t, err, b.err, name)
		assert.Error(t, err, name)
		b.err = nil // so that the cleanup's Close passes
	}
}
