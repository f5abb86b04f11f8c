package model

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/quant"
)

func fixtureGGUFs(t testing.TB) []string {
	var paths []string
	for _, sub := range []string{"gguf", "vocab", "llama2c"} {
		m, err := filepath.Glob(filepath.Join(fixture.Dir(t, sub), "*.gguf"))
		require.NoError(t, err)
		paths = append(paths, m...)
	}
	require.NotEmpty(t, paths)
	return paths
}

func TestOpenFixtures(t *testing.T) {
	for _, path := range fixtureGGUFs(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Open(path)
			require.NoError(t, err)
			defer f.Close()
			arch, err := f.String("general.architecture")
			require.NoError(t, err)
			assert.NotEmpty(t, arch)
			for i := range f.Tensors {
				ti := &f.Tensors[i]
				assert.Len(t, f.TensorData(ti), int(ti.Size), ti.Name)
			}
		})
	}
}

// Writing what was read gives a file that reads back the same.
func TestWriterRoundTrip(t *testing.T) {
	for _, path := range fixtureGGUFs(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Open(path)
			require.NoError(t, err)
			defer f.Close()
			w := NewWriter()
			for _, k := range f.Keys() {
				v, _ := f.Meta(k)
				require.NoError(t, w.Set(k, v))
			}
			for i := range f.Tensors {
				ti := &f.Tensors[i]
				require.NoError(t, w.AddTensor(ti.Name, ti.Type, ti.Dims, f.TensorData(ti)))
			}
			var buf bytes.Buffer
			_, err = w.WriteTo(&buf)
			require.NoError(t, err)
			g, err := Parse(buf.Bytes())
			require.NoError(t, err)
			assert.Equal(t, f.Keys(), g.Keys())
			for _, k := range f.Keys() {
				a, _ := f.Meta(k)
				b, _ := g.Meta(k)
				assert.Equal(t, a, b, k)
			}
			require.Len(t, g.Tensors, len(f.Tensors))
			for i := range f.Tensors {
				a, b := &f.Tensors[i], &g.Tensors[i]
				assert.Equal(t, a.Name, b.Name)
				assert.Equal(t, a.Dims, b.Dims)
				assert.Equal(t, a.Type, b.Type)
				assert.True(t, bytes.Equal(f.TensorData(a), g.TensorData(b)), a.Name)
			}
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	w := NewWriter()
	require.NoError(t, w.Set("general.architecture", "llama"))
	require.NoError(t, w.Set("general.alignment", uint32(64)))
	require.NoError(t, w.AddTensor("a", quant.F32, []int64{3, 2}, make([]byte, 24)))
	require.NoError(t, w.AddTensor("b", quant.Q8_0, []int64{32}, make([]byte, 34)))
	require.NoError(t, w.WriteFile(path))
	f, err := Open(path)
	require.NoError(t, err)
	defer f.Close()
	assert.EqualValues(t, 64, f.Alignment)
	b, ok := f.Tensor("b")
	require.True(t, ok)
	assert.EqualValues(t, 64, b.Offset)
	entries, _ := os.ReadDir(filepath.Dir(path))
	assert.Len(t, entries, 1, "no temporary file left behind")
}

func TestWriterRejects(t *testing.T) {
	w := NewWriter()
	assert.Error(t, w.Set("k", struct{}{}))
	assert.Error(t, w.Set("general.alignment", uint32(3)))
	assert.Error(t, w.AddTensor("t", quant.Q4_0, []int64{31}, make([]byte, 18)), "row not a block multiple")
	assert.Error(t, w.AddTensor("t", quant.F32, []int64{4}, make([]byte, 15)), "short data")
	assert.Error(t, w.AddTensor("t", quant.F32, []int64{0}, nil), "zero dim")
	require.NoError(t, w.AddTensor("t", quant.F32, []int64{4}, make([]byte, 16)))
	assert.Error(t, w.AddTensor("t", quant.F32, []int64{4}, make([]byte, 16)), "duplicate")
}

// hdr builds the start of a GGUF file by hand for the malformed-input cases.
func hdr(version uint32, nTensors, nKV uint64, rest ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, ggufMagic)
	b = binary.LittleEndian.AppendUint32(b, version)
	b = binary.LittleEndian.AppendUint64(b, nTensors)
	b = binary.LittleEndian.AppendUint64(b, nKV)
	for _, r := range rest {
		b = append(b, r...)
	}
	return b
}

func str(s string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, uint64(len(s))), s...)
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func tensorInfo(name string, dims []uint64, typ uint32, off uint64) []byte {
	b := append(str(name), u32(uint32(len(dims)))...)
	for _, d := range dims {
		b = append(b, u64(d)...)
	}
	return append(append(b, u32(typ)...), u64(off)...)
}

func TestParseMalformed(t *testing.T) {
	good, err := os.ReadFile(fixture.Path(t, "gguf", "tiny-llama-tied-q8_0.gguf"))
	require.NoError(t, err)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "magic"},
		{"wrong magic", append([]byte("GGML"), good[4:]...), "magic"},
		{"version 1", hdr(1, 0, 0), "version"},
		{"truncated header", good[:10], "tensor_count"},
		{"truncated metadata", good[:2000], "metadata entry"},
		{"truncated data", good[:len(good)-100], "past its end"},
		{"absurd kv count", hdr(3, 0, 1<<60), "metadata_kv_count"},
		{"absurd tensor count", hdr(3, 1<<60, 0), "tensor_count"},
		{"string past end", hdr(3, 0, 1, u64(1<<40), make([]byte, 16)), "string length"},
		{"unknown value type", hdr(3, 0, 1, str("k"), u32(99)), "unknown value type"},
		{"array too long", hdr(3, 0, 1, str("k"), u32(uint32(TypeArray)), u32(uint32(TypeUint32)), u64(1<<50)), "array of"},
		{"duplicate key", hdr(3, 0, 2, str("k"), u32(uint32(TypeUint8)), []byte{1}, str("k"), u32(uint32(TypeUint8)), []byte{1}), "duplicate key"},
		{"bad alignment", hdr(3, 0, 1, str("general.alignment"), u32(uint32(TypeUint32)), u32(3)), "alignment"},
		{"too many dims", hdr(3, 1, 0, tensorInfo("t", []uint64{1, 1, 1, 1, 1}, 0, 0)), "n_dims"},
		{"zero dim", hdr(3, 1, 0, tensorInfo("t", []uint64{0}, 0, 0)), "zero"},
		{"overflowing dims", hdr(3, 1, 0, tensorInfo("t", []uint64{1 << 32, 1 << 32, 1 << 32}, 0, 0)), "overflow"},
		{"unknown tensor type", hdr(3, 1, 0, tensorInfo("t", []uint64{4}, 77, 0)), "unknown tensor type"},
		{"row not block multiple", hdr(3, 1, 0, tensorInfo("t", []uint64{33}, uint32(quant.Q4_0), 0)), "block size"},
		{"misaligned offset", hdr(3, 1, 0, tensorInfo("t", []uint64{4}, 0, 3), make([]byte, 64)), "alignment"},
		{"offset past end", hdr(3, 1, 0, tensorInfo("t", []uint64{4}, 0, 1<<40), make([]byte, 64)), "past its end"},
		{"duplicate tensor", hdr(3, 2, 0, tensorInfo("t", []uint64{4}, 0, 0), tensorInfo("t", []uint64{4}, 0, 32), make([]byte, 96)), "duplicate name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestOpenMissingFile(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "nope.gguf"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nope.gguf")
}

// FuzzParse feeds arbitrary bytes to the reader: it must return an error
// or a File whose every tensor view lies inside the input, never panic.
func FuzzParse(f *testing.F) {
	for _, path := range fixtureGGUFs(f) {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		if len(data) > 1<<20 {
			data = data[:1<<20] // keep the corpus small; truncation is a case too
		}
		f.Add(data)
	}
	f.Add(hdr(3, 1, 1, str("general.alignment"), u32(uint32(TypeUint32)), u32(64), tensorInfo("t", []uint64{8}, 0, 0), make([]byte, 64)))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Parse(data)
		if err != nil {
			return
		}
		for i := range g.Tensors {
			_ = g.TensorData(&g.Tensors[i])
		}
		for _, k := range g.Keys() {
			_, _ = g.String(k)
			_, _ = g.Int(k)
			_, _ = g.Float(k)
		}
	})
}
