package backend

import (
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
