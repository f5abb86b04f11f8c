package model

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/quant"
)

// The Q8_0 and Q4_0 quantizers are byte-identical to llama.cpp's: quantize
// the f32 fixture's tensors and compare with llama.cpp's quantized files.
func TestQuantizerMatchesLlamaCpp(t *testing.T) {
	src, err := Open(fixture.Path(t, "gguf", "tiny-llama-tied-f32.gguf"))
	require.NoError(t, err)
	defer src.Close()
	for _, tc := range []struct {
		file string
		typ  quant.Type
	}{{"tiny-llama-tied-q8_0.gguf", quant.Q8_0}, {"tiny-llama-tied-q4_0.gguf", quant.Q4_0}} {
		t.Run(tc.file, func(t *testing.T) {
			ref, err := Open(fixture.Path(t, "gguf", tc.file))
			require.NoError(t, err)
			defer ref.Close()
			compared := 0
			for i := range ref.Tensors {
				want := &ref.Tensors[i]
				if want.Type != tc.typ {
					continue // llama.cpp's mix keeps norms in f32 and may pick other types
				}
				in, ok := src.Tensor(want.Name)
				require.True(t, ok, want.Name)
				require.Equal(t, quant.F32, in.Type)
				values := make([]float32, in.Elements())
				require.NoError(t, quant.Dequantize(quant.F32, src.TensorData(in), values))
				got := make([]byte, want.Size)
				require.NoError(t, quant.Quantize(tc.typ, values, got))
				assert.True(t, bytes.Equal(got, ref.TensorData(want)), "%s differs from llama.cpp", want.Name)
				compared++
			}
			assert.Greater(t, compared, 10, "the file holds %s tensors to compare", tc.typ)
			t.Logf("%d %s tensors byte-identical", compared, tc.typ)
		})
	}
}
