package cuda

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/quant"
)

// fakeOpen opens only the paths in ok, with handles in order.
func fakeOpen(ok ...string) (opener, *[]string) {
	var tried []string
	return func(name string) (uintptr, error) {
		tried = append(tried, name)
		for i, o := range ok {
			if o == name {
				return uintptr(i + 1), nil
			}
		}
		return 0, errors.New("not found")
	}, &tried
}

func TestSearchOrder(t *testing.T) {
	names := []string{"libx.so.13", "libx.so.12"}
	tests := []struct {
		name     string
		ok       []string
		dir      string
		want     string
		attempts int
	}{
		{"configured dir first", []string{"/opt/cuda/libx.so.12", "libx.so.13"}, "/opt/cuda", "/opt/cuda/libx.so.12", 2},
		{"loader path before the default dirs", []string{"libx.so.12", "/usr/local/cuda/lib64/libx.so.13"}, "", "libx.so.12", 2},
		{"newest name first", []string{"libx.so.12", "libx.so.13"}, "", "libx.so.13", 1},
		{"default dir last", []string{"/usr/local/cuda/lib64/libx.so.12"}, "/opt/cuda", "/usr/local/cuda/lib64/libx.so.12", 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			open, tried := fakeOpen(tt.ok...)
			f, err := search(open, names, tt.dir, []string{"/usr/local/cuda/lib64"})
			require.NoError(t, err)
			assert.Equal(t, tt.want, f.name)
			assert.NotZero(t, f.handle)
			assert.Len(t, *tried, tt.attempts)
		})
	}
}

// A library found nowhere reports every attempt and its reason.
func TestSearchNotFound(t *testing.T) {
	open, _ := fakeOpen()
	_, err := search(open, []string{"libx.so.1"}, "/opt", []string{"/usr/local/cuda/lib64"})
	require.Error(t, err)
	assert.Equal(t, "/opt/libx.so.1: not found; libx.so.1: not found; /usr/local/cuda/lib64/libx.so.1: not found", err.Error())
}

func TestErrorOf(t *testing.T) {
	assert.NoError(t, errorOf("cuInit", 0, nil))
	describe := func(c int32) string {
		if c == 100 {
			return "no CUDA-capable device is detected"
		}
		return ""
	}
	err := errorOf("cuInit", 100, describe)
	var ce *Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, 100, ce.Code)
	assert.Equal(t, "cuda: cuInit: no CUDA-capable device is detected (100)", err.Error())
	assert.Equal(t, "cuda: cuLaunchKernel: unknown error (999)", errorOf("cuLaunchKernel", 999, describe).Error())
	assert.Equal(t, "cuda: cuMemAlloc: unknown error (2)", errorOf("cuMemAlloc", 2, nil).Error())
	assert.Equal(t, "CUBLAS_STATUS_EXECUTION_FAILED", blasStatus(13))
}

func TestCacheKey(t *testing.T) {
	base := cacheKey("src", "sm_90", 13000, 13, 0)
	assert.Len(t, base, 32)
	assert.Equal(t, base, cacheKey("src", "sm_90", 13000, 13, 0), "deterministic")
	for _, other := range []string{
		cacheKey("src2", "sm_90", 13000, 13, 0),
		cacheKey("src", "sm_89", 13000, 13, 0),
		cacheKey("src", "sm_90", 13010, 13, 0),
		cacheKey("src", "sm_90", 13000, 13, 1),
	} {
		assert.NotEqual(t, base, other)
	}
}

func TestCacheDir(t *testing.T) {
	dir, err := cacheDir("/tmp/k")
	require.NoError(t, err)
	assert.Equal(t, "/tmp/k", dir)
	t.Setenv("XDG_CACHE_HOME", "/tmp/xdg")
	dir, err = cacheDir("")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join("/tmp/xdg", "edged", "cuda"), dir)
}

func TestWriteAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b.cubin")
	require.NoError(t, writeAtomic(path, []byte("cubin")))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "cubin", string(b))
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".cubin-*"))
	assert.Empty(t, left, "no temporary file left")
}

// Every kernel the Go side launches is defined in the source, and every
// weight type has its three kernels.
func TestKernelSource(t *testing.T) {
	names := kernelNames(kernelSource)
	defined := map[string]bool{}
	for _, n := range names {
		assert.False(t, defined[n], "kernel %s defined twice", n)
		defined[n] = true
	}
	for _, suffix := range kernelSuffix {
		for _, k := range []string{"matvec_", "dequant_", "embed_"} {
			assert.True(t, defined[k+suffix], k+suffix)
		}
	}
	// Kernels launched by name in ops.go.
	src, err := os.ReadFile("ops.go")
	require.NoError(t, err)
	launched := regexp.MustCompile(`b\.launch\("(\w+)"`).FindAllStringSubmatch(string(src), -1)
	require.NotEmpty(t, launched)
	var missing []string
	for _, m := range launched {
		if !strings.HasSuffix(m[1], "_") && !defined[m[1]] {
			missing = append(missing, m[1])
		}
	}
	sort.Strings(missing)
	assert.Empty(t, missing)
	for _, act := range []string{"actq8a", "actq8k"} {
		assert.True(t, defined[act], act)
	}
	// matvecRows must equal MAXR in the source.
	assert.Regexp(t, `#define MAXR 8\b`, kernelSource)
	assert.Equal(t, 8, matvecRows)
}

func TestVersion(t *testing.T) {
	assert.Equal(t, "13.0", version(13000))
	assert.Equal(t, "12.4", version(12040))
}

// The repacked layout holds each block's quants and scale where the
// kernels (unit<T_Q4_0R>, unit<T_Q8_0R>) read them: decoding it that way
// gives quant.Dequantize's values.
func TestRepack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	const rows, cols = 3, 96
	for typ, r := range repackedTypes {
		src := make([]float32, rows*cols)
		for i := range src {
			src[i] = float32(rng.NormFloat64())
		}
		size, err := typ.RowSize(cols)
		require.NoError(t, err)
		data := make([]byte, rows*size)
		require.NoError(t, quant.Quantize(typ, src, data))
		packed := r.repack(data, rows, cols)
		nb := cols / 32
		require.Len(t, packed, rows*r.rowBytes(nb))
		assert.Zero(t, r.rowBytes(nb)%16, "rows stay 16-byte aligned")
		for i := range rows {
			want := make([]float32, cols)
			require.NoError(t, quant.Dequantize(typ, data[i*size:(i+1)*size], want))
			row := packed[i*r.rowBytes(nb):]
			for j := range cols {
				b, k := j/32, j%32
				d := quant.F16ToF32(binary.LittleEndian.Uint16(row[nb*r.quants+2*b:]))
				var q float32
				if typ == quant.Q4_0 {
					v := row[b*16+k%16]
					if k >= 16 {
						v >>= 4
					}
					q = float32(int(v&0xf) - 8)
				} else {
					q = float32(int8(row[b*32+k]))
				}
				assert.Equal(t, want[j], q*d, "%s row %d col %d", typ, i, j)
			}
		}
	}
}
