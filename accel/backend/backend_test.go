package backend

import (
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/accel/cuda"
)

func TestOpen(t *testing.T) {
	c, err := Open("cpu", Options{Threads: 1})
	require.NoError(t, err)
	assert.Equal(t, "cpu (1 threads)", c.Backend.Name())
	assert.Empty(t, c.Skipped)
	require.NoError(t, c.Backend.Close())

	_, err = Open("tpu", Options{})
	assert.ErrorContains(t, err, `backend "tpu": want one of`)
}

// A GPU backend that cannot open is an error when named, and a reason to
// fall back to the CPU under auto. A library directory with nothing in it
// and no CUDA on the loader path (as on CI) makes CUDA fail; where a GPU
// is present auto may pick it, which is fine too.
func TestAutoFallsBack(t *testing.T) {
	o := Options{Threads: 1, CUDA: cuda.Config{LibDir: t.TempDir()}}
	c, err := Open("auto", o)
	require.NoError(t, err)
	defer c.Backend.Close()
	if strings.HasPrefix(c.Backend.Name(), "cpu") {
		require.Len(t, c.Skipped, 1)
		assert.Contains(t, c.Skipped[0], "not available")
		_, err := Open(gpuOrder()[0], o)
		assert.ErrorContains(t, err, "not available")
	}
	if runtime.GOOS != "darwin" {
		_, err := Open("metal", o)
		assert.ErrorContains(t, err, "backend metal: not available: metal: needs macOS")
	}
}

// Placement by gpu layers, with a stand-in for a GPU backend.
func TestPlace(t *testing.T) {
	const nLayer = 10
	for _, tc := range []struct {
		gpuLayers   int
		offload     bool
		onGPU, kept bool // the GPU runs everything / is still open
	}{
		{-1, false, true, true},
		{nLayer, false, true, true},
		{nLayer + 5, false, true, true},
		{0, false, false, false},
		{3, true, false, true},
	} {
		gpu := &fakeGPU{Backend: cpu.New(1)}
		p := Choice{Backend: gpu}.Place(tc.gpuLayers, nLayer, 1)
		assert.Equal(t, tc.onGPU, p.Backend == accel.Backend(gpu), "%d", tc.gpuLayers)
		assert.Equal(t, tc.offload, p.Offload != nil, "%d", tc.gpuLayers)
		assert.Equal(t, !tc.kept, gpu.closed, "%d", tc.gpuLayers)
		if tc.offload {
			assert.Equal(t, tc.gpuLayers, p.OffloadLayers)
			assert.Equal(t, accel.Backend(gpu), p.Offload)
		}
	}
	c, err := Open("cpu", Options{Threads: 1})
	require.NoError(t, err)
	p := c.Place(3, nLayer, 1)
	assert.Equal(t, c.Backend, p.Backend, "a CPU choice runs everything")
	assert.Nil(t, p.Offload)
}

type fakeGPU struct {
	*cpu.Backend
	closed bool
}

func (f *fakeGPU) Close() error {
	f.closed = true
	return f.Backend.Close()
}
