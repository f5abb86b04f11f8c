package metal

import (
	"math"
	"math/rand/v2"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/quant"
)

// These tests run everywhere: they check the Go side against the Metal
// source it compiles and against the CPU backend, without a GPU.

// sourceKernels lists the kernels kernels.metal defines for the host: the
// plain kernel functions and the named template instances.
func sourceKernels(t *testing.T) []string {
	var names []string
	plain := regexp.MustCompile(`(?m)^(template <typename T>\n)?kernel void (\w+)\(`)
	for _, m := range plain.FindAllStringSubmatch(source, -1) {
		if m[1] == "" {
			names = append(names, m[2])
		}
	}
	for _, m := range regexp.MustCompile(`host_name\("(\w+)"\)`).FindAllStringSubmatch(source, -1) {
		names = append(names, m[1])
	}
	require.NotEmpty(t, names)
	return names
}

// Every kernel the backend makes a pipeline for is in the source, and
// every kernel in the source is used.
func TestKernelNames(t *testing.T) {
	want := kernelNames()
	have := sourceKernels(t)
	slices.Sort(want)
	slices.Sort(have)
	assert.Equal(t, want, have)
	assert.Equal(t, len(want), len(slices.Compact(slices.Clone(want))), "duplicate kernel names")
}

// The Go parameter blocks have the fields of the Metal structs of the same
// names, in order, with the same types.
func TestParamsMatchSource(t *testing.T) {
	goTypes := map[string]reflect.Type{
		"EmbedParams":  reflect.TypeFor[embedParams](),
		"MatMulParams": reflect.TypeFor[matMulParams](),
		"QuantParams":  reflect.TypeFor[quantParams](),
		"NormParams":   reflect.TypeFor[normParams](),
		"ElemParams":   reflect.TypeFor[elemParams](),
		"RopeParams":   reflect.TypeFor[ropeParams](),
		"StoreParams":  reflect.TypeFor[storeParams](),
		"AttnParams":   reflect.TypeFor[attnParams](),
	}
	structs := regexp.MustCompile(`struct (\w+Params) \{([^}]*)\};`).FindAllStringSubmatch(source, -1)
	require.Len(t, structs, len(goTypes))
	metalTypes := map[string]reflect.Type{"uint": reflect.TypeFor[uint32](), "float": reflect.TypeFor[float32]()}
	for _, s := range structs {
		gt, ok := goTypes[s[1]]
		require.True(t, ok, "no Go type for %s", s[1])
		var fields []string
		for f := range strings.SplitSeq(s[2], ";") {
			if f = strings.TrimSpace(f); f != "" {
				fields = append(fields, f)
			}
		}
		require.Equal(t, gt.NumField(), len(fields), s[1])
		for i, f := range fields {
			typ, name, _ := strings.Cut(f, " ")
			assert.Equal(t, metalTypes[typ], gt.Field(i).Type, "%s.%s", s[1], name)
			assert.Equal(t, strings.ReplaceAll(name, "_", ""), strings.ToLower(gt.Field(i).Name), s[1])
		}
		assert.Equal(t, uintptr(4*len(fields)), gt.Size(), s[1])
	}
}

// The dispatch constants agree with the source's #defines.
func TestDispatchConstants(t *testing.T) {
	for name, want := range map[string]int{"MM_SG": mmSG, "MM_NR": mmNR, "TG_THREADS": groupThreads} {
		m := regexp.MustCompile(`#define ` + name + ` (\d+)`).FindStringSubmatch(source)
		require.NotNil(t, m, name)
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		assert.Equal(t, want, n, name)
	}
	for name, want := range map[string]int{"OBSERVE_SCORES": observeScores, "OBSERVE_PROBS": observeProbs} {
		assert.Contains(t, source, "#define "+name+" "+strconv.Itoa(want)+"u")
	}
	// The reductions take whole simdgroups, at most 32 of them.
	assert.Zero(t, groupThreads%simdWidth)
	assert.LessOrEqual(t, groupThreads/simdWidth, 32)
}

// Each weight type's products use the activation type of quant's kernel
// for it, as the CPU backend does.
func TestWeightKindsMatchQuant(t *testing.T) {
	for typ, kind := range weightKinds {
		k, err := quant.KernelFor(typ)
		require.NoError(t, err, typ)
		assert.Equal(t, k.Act, kind.act, "%s", typ)
		assert.True(t, strings.HasPrefix(typ.String(), strings.TrimSuffix(kind.suffix, "_k")), "%s: %s", typ, kind.suffix)
		name, block := quantizer(kind.act)
		if kind.act != quant.F32 {
			assert.Equal(t, quant.Type(typ).BlockSize(), block, typ)
			assert.Contains(t, kernelNames(), name)
		}
	}
}

func TestGroupsAndLayout(t *testing.T) {
	assert.Equal(t, 0, groups(0, 4))
	assert.Equal(t, 1, groups(1, 4))
	assert.Equal(t, 1, groups(4, 4))
	assert.Equal(t, 2, groups(5, 4))
	for _, c := range []struct{ rows, cols, block int }{{1, 32, 32}, {3, 96, 32}, {5, 512, 256}, {7, 256, 256}} {
		dOff, size := actLayout(c.rows, c.cols, c.block)
		assert.Zero(t, dOff%16)
		assert.GreaterOrEqual(t, dOff, c.rows*c.cols)
		assert.Equal(t, dOff+4*c.rows*c.cols/c.block, size)
	}
	assert.Equal(t, mmSG*simdWidth, groupSize("matmul_q4_k"))
	assert.Equal(t, groupThreads, groupSize("attention_f16"))
	assert.True(t, fits32(0, math.MaxUint32))
	assert.False(t, fits32(-1))
	assert.False(t, fits32(math.MaxUint32+1))
}

func TestCheckShape(t *testing.T) {
	assert.NoError(t, checkShape(accel.AttnShape{NHead: 8, NHeadKV: 2, HeadDim: 64}))
	assert.Error(t, checkShape(accel.AttnShape{NHead: 8, NHeadKV: 3, HeadDim: 64}))
	assert.Error(t, checkShape(accel.AttnShape{NHead: 8, NHeadKV: 0, HeadDim: 64}))
	assert.Error(t, checkShape(accel.AttnShape{NHead: 8, NHeadKV: 8}))
}

// Rotating with ropeTable's values the way the rope kernel does (float32
// arithmetic, interleaved cos/sin per row and pair) gives the CPU
// backend's RoPE, for both layouts, at positions far into a long context.
func TestRopeTableMatchesCPU(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const headDim, heads = 64, 3
	width := headDim * heads
	pos := []int32{0, 1, 17, 4095, 100000}
	for _, neox := range []bool{false, true} {
		for _, dims := range []int{headDim, headDim / 2} {
			rp := accel.NewRoPE(headDim, dims, 500000, neox, nil)
			x := make([]float32, len(pos)*width)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			want := ropeCPU(t, x, width, pos, rp)
			half := dims / 2
			cs := make([]float32, 2*len(pos)*half)
			ropeTable(cs, pos, rp.Freqs)
			got := slices.Clone(x)
			for row := range pos {
				for h := range heads {
					head := got[row*width+h*headDim:]
					for i := range half {
						c, s := cs[2*(row*half+i)], cs[2*(row*half+i)+1]
						a, b := 2*i, 2*i+1
						if neox {
							a, b = i, i+half
						}
						x0, x1 := head[a], head[b]
						head[a], head[b] = x0*c-x1*s, x0*s+x1*c
					}
				}
			}
			for i := range want {
				assert.InDelta(t, want[i], got[i], 1e-6*(1+math.Abs(float64(want[i]))), "neox %v dims %d value %d", neox, dims, i)
			}
		}
	}
}

func ropeCPU(t *testing.T, x []float32, width int, pos []int32, rp accel.RoPE) []float32 {
	b := cpu.New(1)
	defer b.Close()
	buf, err := b.Alloc(len(x))
	require.NoError(t, err)
	b.Write(buf, 0, x)
	b.RoPE(buf, width, pos, rp)
	out := make([]float32, len(x))
	b.Read(out, buf, 0)
	return out
}
