package adapt

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// Parse reads the bytes of an adapter file of either kind as Load reads
// the file, keeps nothing of the bytes, and refuses what Load refuses.
func TestParse(t *testing.T) {
	m := loadModel(t, tinyLlama(t))
	dir := t.TempDir()
	lo, err := NewLoRA(m, LoRAOptions{Rank: 2, Seed: 3})
	require.NoError(t, err)
	randomize(lo, 4, 0.1)
	loraPath := filepath.Join(dir, "lora.gguf")
	require.NoError(t, SaveLoRA(loraPath, lo, quant.F16))
	p, err := NewPrefix(m, testBackend(t), []int32{1, 5})
	require.NoError(t, err)
	prefixPath := filepath.Join(dir, "prefix.gguf")
	require.NoError(t, SavePrefix(prefixPath, p, quant.F32))

	for _, path := range []string{loraPath, prefixPath} {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		got, err := Parse(data, m)
		require.NoError(t, err, path)
		want, err := Load(path, m)
		require.NoError(t, err, path)
		clear(data) // the adapter holds copies
		assert.Equal(t, want, got, path)
	}

	base, err := os.ReadFile(tinyLlama(t))
	require.NoError(t, err)
	_, err = Parse(base, m)
	assert.ErrorIs(t, err, ErrNotAdapter)
	_, err = Parse([]byte("GGUF\x03"), m)
	assert.ErrorIs(t, err, model.ErrMalformed)
}
