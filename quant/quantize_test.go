package quant_test

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/quant"
)

// quantizedTypes are the block types, every one of which Quantize encodes.
var quantizedTypes = []quant.Type{
	quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.Q8_1,
	quant.Q2_K, quant.Q3_K, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.Q8_K,
}

// quantize is Quantize into a fresh buffer of the right size.
func quantize(t *testing.T, typ quant.Type, x []float32) []byte {
	t.Helper()
	size, err := typ.RowSize(len(x))
	require.NoError(t, err)
	b := make([]byte, size)
	require.NoError(t, quant.Quantize(typ, x, b))
	return b
}

// refInput is the input of testdata/ref_quant.txt: 256 values exactly
// representable in float32 (so that no conversion can differ), with varied
// per-block magnitudes, a few outliers, and an all-zero 16-element group.
func refInput() []float32 {
	x := make([]float32, 256)
	for i := range x {
		if i/16 == 6 {
			continue
		}
		v := float32(int32((i*7919)%2001) - 1000)
		x[i] = v / 512 * float32(1+i/32)
		if i%53 == 0 {
			x[i] *= 8
		}
	}
	return x
}

// TestQuantizeMatchesLlamaCpp compares every quantizer with the bytes that
// llama.cpp's reference quantizers produce for the same input.
func TestQuantizeMatchesLlamaCpp(t *testing.T) {
	f, err := os.Open("testdata/ref_quant.txt")
	require.NoError(t, err)
	defer f.Close()
	want := map[quant.Type][]byte{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hexBytes, ok := strings.Cut(line, " ")
		require.True(t, ok, line)
		typ, err := quant.ParseType(name)
		require.NoError(t, err)
		want[typ], err = hex.DecodeString(hexBytes)
		require.NoError(t, err)
	}
	require.NoError(t, sc.Err())

	x := refInput()
	for _, typ := range quantizedTypes {
		t.Run(typ.String(), func(t *testing.T) {
			require.Contains(t, want, typ)
			assert.Equal(t, hex.EncodeToString(want[typ]), hex.EncodeToString(quantize(t, typ, x)))
		})
	}
}

// TestQuantizeLegacyBlocks pins the rounding rules of q8_0 and q4_0 with
// blocks worked out by hand.
func TestQuantizeLegacyBlocks(t *testing.T) {
	blockOf := func(vals map[int]float32) []float32 {
		x := make([]float32, 32)
		for i, v := range vals {
			x[i] = v
		}
		return x
	}
	tests := []struct {
		name string
		typ  quant.Type
		x    []float32
		want string // hex
	}{
		{
			// amax 127 gives d=1 (f16 0x3c00). roundf takes halves away from
			// zero: -63.5 → -64, 0.5 → 1, -0.5 → -1, 2.5 → 3.
			"q8_0 ties away from zero", quant.Q8_0,
			blockOf(map[int]float32{0: 127, 1: -63.5, 2: 0.5, 3: -0.5, 4: 1.5, 5: 2.5}),
			"003c" + "7fc001ff0203" + strings.Repeat("00", 26),
		},
		{
			// amax 1 gives d=1/127, stored as the nearest half 0x2008.
			"q8_0 scale rounding", quant.Q8_0,
			blockOf(map[int]float32{0: 1, 31: -0.25}),
			"0820" + "7f" + strings.Repeat("00", 30) + "e0",
		},
		{
			"q8_0 zeros", quant.Q8_0, make([]float32, 32), strings.Repeat("00", 34),
		},
		{
			// The element of largest magnitude, -8, sets d = -8/-8 = 1 and
			// maps to level 0. q = (int8)(x/d + 8.5) truncates, so halves
			// round up: 3.5 → 12 (+4), -3.5 → 5 (-3); 0.49 → 8 (0).
			// Element j is in the low nibble of byte j, j+16 in the high one.
			"q4_0 negative max", quant.Q4_0,
			blockOf(map[int]float32{0: -8, 1: 7, 2: 3.5, 3: -3.5, 4: 0.49, 16: 1, 17: -1}),
			"003c" + "907f8c8588" + strings.Repeat("88", 11),
		},
		{
			// The first of equal magnitudes wins: max=8, d=-1 (0xbc00), so
			// 8 → level 0 and -8 → 16.5, clamped to 15 (decodes to -7).
			"q4_0 positive max clamps", quant.Q4_0,
			blockOf(map[int]float32{0: 8, 1: -8, 2: -7.9}),
			"00bc" + "808f8f" + strings.Repeat("88", 13),
		},
		{
			// d = 0/-8 is -0, which keeps its sign in the half (0x8000).
			"q4_0 zeros", quant.Q4_0, make([]float32, 32), "0080" + strings.Repeat("88", 16),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, hex.EncodeToString(quantize(t, tt.typ, tt.x)))
		})
	}
}

// TestRoundTrip quantizes random data and decodes it again. The bounds on
// the relative RMS error ‖x-y‖/‖x‖ follow from each format's step size on
// Gaussian data, where a block of 32 has a largest magnitude of about 2.5σ
// (about 3.5σ for 256) and a uniform rounding error has an RMS of step/√12:
//
//	f32      exact
//	f16      11-bit significand: error ≤ 2⁻¹¹ relative, RMS ≈ 2.8e-4 → 5e-4
//	bf16     8-bit significand: ≤ 2⁻⁸, RMS ≈ 2.3e-3 → 4e-3
//	q8_0/1   step amax/127 ≈ 0.02σ → 0.6% → 1%
//	q8_k     step amax/127 over 256 ≈ 0.028σ → 0.8% → 1.5%
//	q5_0     step amax/16 ≈ 0.16σ → 4.5% → 8%
//	q5_1     step range/31 ≈ 0.15σ → 4.3% → 8%
//	q4_0     step amax/8 ≈ 0.31σ → 9% → 15%
//	q4_1     step range/15 ≈ 0.3σ → 8.7% → 15%
//	q6_k     64 levels per 16 elements, step ≈ amax/32 → 1.8% → 3%
//	q5_k     32 levels per 32 with a fitted min → 4% → 6%
//	q4_k     16 levels per 32 with a fitted min → 8% → 12%
//	q3_k     8 levels per 16, step ≈ amax/4 → 15% → 22%
//	q2_k     4 levels per 16 with a fitted min → 30% → 40%
//
// The margin covers the unluckiest blocks of the fixed seeds (single-block
// inputs vary most); the k-quants' searches keep them below the estimates.
func TestRoundTrip(t *testing.T) {
	bounds := map[quant.Type]float64{
		quant.F32: 0, quant.F16: 5e-4, quant.BF16: 4e-3,
		quant.Q8_0: 0.01, quant.Q8_1: 0.01, quant.Q8_K: 0.015,
		quant.Q5_0: 0.08, quant.Q5_1: 0.08, quant.Q4_0: 0.15, quant.Q4_1: 0.15,
		quant.Q6_K: 0.03, quant.Q5_K: 0.06, quant.Q4_K: 0.12, quant.Q3_K: 0.22, quant.Q2_K: 0.40,
	}
	dists := []struct {
		name string
		gen  func(r *rand.Rand) float32
	}{
		{"normal", func(r *rand.Rand) float32 { return float32(r.NormFloat64()) }},
		{"weights", func(r *rand.Rand) float32 { return float32(r.NormFloat64() * 0.02) }},
		{"uniform", func(r *rand.Rand) float32 { return float32(r.Float64()*2 - 1) }},
	}
	for _, typ := range allTypes {
		t.Run(typ.String(), func(t *testing.T) {
			bound, ok := bounds[typ]
			require.True(t, ok, "no bound for %v", typ)
			for di, d := range dists {
				for _, blocks := range []int{1, 3, 16} {
					for seed := range uint64(20) {
						r := rand.New(rand.NewPCG(seed, uint64(di)))
						n := blocks * max(typ.BlockSize(), 32)
						x := make([]float32, n)
						for i := range x {
							x[i] = d.gen(r)
						}
						y := make([]float32, n)
						require.NoError(t, quant.Dequantize(typ, quantize(t, typ, x), y))
						var se, sx float64
						for i := range x {
							e := float64(x[i]) - float64(y[i])
							se += e * e
							sx += float64(x[i]) * float64(x[i])
						}
						rel := math.Sqrt(se / sx)
						if rel > bound {
							t.Fatalf("%s, %d blocks, seed %d: relative RMS error %.4g > %.4g", d.name, blocks, seed, rel, bound)
						}
					}
				}
			}
		})
	}
}

// TestQuantizeZeros: an all-zero input encodes to blocks that decode to
// zeros (several quantizers take a special path for it).
func TestQuantizeZeros(t *testing.T) {
	for _, typ := range allTypes {
		n := 2 * max(typ.BlockSize(), 32)
		y := make([]float32, n)
		for i := range y {
			y[i] = 1
		}
		require.NoError(t, quant.Dequantize(typ, quantize(t, typ, make([]float32, n)), y), typ)
		assert.Equal(t, make([]float32, n), y, typ)
	}
}

// TestQuantizeWritesEveryByte: the output does not depend on what dst held,
// for ordinary data and for the all-zero special cases.
func TestQuantizeWritesEveryByte(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	random := make([]float32, 2*quant.QK_K)
	for i := range random {
		random[i] = float32(r.NormFloat64())
	}
	for _, typ := range allTypes {
		for _, x := range [][]float32{random, make([]float32, 2*quant.QK_K)} {
			clean := quantize(t, typ, x)
			dirty := make([]byte, len(clean))
			for i := range dirty {
				dirty[i] = 0xff
			}
			require.NoError(t, quant.Quantize(typ, x, dirty))
			assert.Equal(t, clean, dirty, typ)
		}
	}
}

// TestQuantizeQ8_K checks the activation format's extra fields: d maps the
// element of largest magnitude to -127 (so d has the opposite sign), and
// bsums[j] is the sum of quants 16j..16j+15.
func TestQuantizeQ8_K(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	x := make([]float32, quant.QK_K)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	x[100] = 10 // the largest magnitude, positive
	b := quantize(t, quant.Q8_K, x)
	d := math.Float32frombits(binary.LittleEndian.Uint32(b))
	assert.InDelta(t, -10.0/127, d, 1e-6)
	assert.Equal(t, int8(-127), int8(b[4+100]))
	for j := range 16 {
		sum := 0
		for _, q := range b[4+16*j : 4+16*j+16] {
			sum += int(int8(q))
		}
		assert.Equal(t, int16(sum), int16(binary.LittleEndian.Uint16(b[4+quant.QK_K+2*j:])), "bsums[%d]", j)
	}
}

func TestQuantizeErrors(t *testing.T) {
	tests := []struct {
		name    string
		typ     quant.Type
		src     int // elements
		dst     int // bytes
		wantErr error
	}{
		{"unknown type", quant.Type(99), 32, 18, quant.ErrUnknownType},
		{"partial block", quant.Q8_0, 33, 34, quant.ErrLength},
		{"destination short", quant.Q8_0, 32, 33, quant.ErrLength},
		{"destination long", quant.Q4_0, 32, 19, quant.ErrLength},
		{"partial super-block", quant.Q2_K, 128, 42, quant.ErrLength},
		{"k-quant destination short", quant.Q5_K, 256, 175, quant.ErrLength},
		{"f16 destination short", quant.F16, 4, 7, quant.ErrLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]byte, tt.dst)
			err := quant.Quantize(tt.typ, make([]float32, tt.src), dst)
			require.ErrorIs(t, err, tt.wantErr)
			assert.Equal(t, make([]byte, tt.dst), dst, "dst written on error")
		})
	}
}

// FuzzQuantize quantizes arbitrary float32 bit patterns (NaN, infinities,
// subnormals, huge values) to every type: garbage in may give garbage out,
// but never a panic, and the result must still decode.
func FuzzQuantize(f *testing.F) {
	f.Add([]byte{0, 0, 0xc0, 0x7f, 0, 0, 0x80, 0x7f, 1, 0, 0, 0, 0xff, 0xff, 0x7f, 0x7f})
	f.Fuzz(func(t *testing.T, raw []byte) {
		x := make([]float32, quant.QK_K)
		for i := range x {
			if len(raw) >= 4 {
				x[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(i%(len(raw)/4)):]))
			}
		}
		y := make([]float32, len(x))
		for _, typ := range allTypes {
			size, err := typ.RowSize(len(x))
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, size)
			if err := quant.Quantize(typ, x, b); err != nil {
				t.Fatalf("%v: %v", typ, err)
			}
			if err := quant.Dequantize(typ, b, y); err != nil {
				t.Fatalf("%v: %v", typ, err)
			}
		}
	})
}

// TestQuantizeDoesNotAllocate: activations are quantized (q8_0, q8_K) on
// every forward pass, so no type may allocate.
func TestQuantizeDoesNotAllocate(t *testing.T) {
	x := refInput()
	for _, typ := range allTypes {
		size, err := typ.RowSize(len(x))
		require.NoError(t, err)
		dst := make([]byte, size)
		allocs := testing.AllocsPerRun(10, func() {
			if err := quant.Quantize(typ, x, dst); err != nil {
				panic(err)
			}
		})
		assert.Zero(t, allocs, typ)
	}
}
