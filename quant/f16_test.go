package quant_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/quant"
)

func TestF16ToF32Values(t *testing.T) {
	tests := []struct {
		name string
		h    uint16
		want float32
	}{
		{"zero", 0x0000, 0},
		{"one", 0x3c00, 1},
		{"minus two", 0xc000, -2},
		{"one third", 0x3555, 0.333251953125},
		{"max", 0x7bff, 65504},
		{"min normal", 0x0400, 0x1p-14},
		{"min subnormal", 0x0001, 0x1p-24},
		{"max subnormal", 0x03ff, 1023 * 0x1p-24},
		{"negative subnormal", 0x8200, -0x1p-15},
		{"inf", 0x7c00, float32(math.Inf(1))},
		{"-inf", 0xfc00, float32(math.Inf(-1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, quant.F16ToF32(tt.h))
		})
	}
	assert.Equal(t, uint32(0x80000000), math.Float32bits(quant.F16ToF32(0x8000)), "negative zero keeps its sign")
}

func TestF16ToF32NaN(t *testing.T) {
	tests := []struct {
		h    uint16
		want uint32
	}{
		{0x7e00, 0x7fc00000}, // quiet NaN
		{0xfe00, 0xffc00000}, // negative quiet NaN
		{0x7c01, 0x7fc02000}, // signalling NaN comes back quiet, payload kept
		{0x7d55, 0x7feaa000},
	}
	for _, tt := range tests {
		assert.Equalf(t, tt.want, math.Float32bits(quant.F16ToF32(tt.h)), "%#04x", tt.h)
	}
}

func TestF32ToF16Values(t *testing.T) {
	tests := []struct {
		name string
		f    float32
		want uint16
	}{
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"one third", 1.0 / 3, 0x3555},
		{"tie to even down", 1 + 0x1p-11, 0x3c00},
		{"tie to even up", 1 + 3*0x1p-11, 0x3c02},
		{"above tie", 1 + 0x1p-11 + 0x1p-23, 0x3c01},
		{"max", 65504, 0x7bff},
		{"below overflow tie", 65519.996, 0x7bff},
		{"overflow tie", 65520, 0x7c00},
		{"large", 1e10, 0x7c00},
		{"min normal", 0x1p-14, 0x0400},
		{"min subnormal", 0x1p-24, 0x0001},
		{"half min subnormal ties to zero", 0x1p-25, 0x0000},
		{"above half min subnormal", 0x1p-25 + 0x1p-40, 0x0001},
		{"subnormal tie to even", 3 * 0x1p-25, 0x0002},
		{"subnormal rounds into normal", 1023.5 * 0x1p-24, 0x0400},
		{"tiny", 1e-10, 0x0000},
		{"negative tiny", -1e-10, 0x8000},
		{"float32 subnormal", 0x1p-140, 0x0000},
		{"negative", -1.5, 0xbe00},
		{"inf", float32(math.Inf(1)), 0x7c00},
		{"-inf", float32(math.Inf(-1)), 0xfc00},
		{"quiet NaN", math.Float32frombits(0x7fc00000), 0x7e00},
		{"negative NaN", math.Float32frombits(0xffc00000), 0xfe00},
		{"signalling NaN becomes quiet", math.Float32frombits(0x7f800001), 0x7e00},
		{"NaN payload top bits kept", math.Float32frombits(0x7fa00000), 0x7f00},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equalf(t, tt.want, quant.F32ToF16(tt.f), "got %#04x", quant.F32ToF16(tt.f))
		})
	}
}

// TestF16RoundTripExhaustive converts every half to float32 and back.
func TestF16RoundTripExhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		got := quant.F32ToF16(quant.F16ToF32(h))
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			require.Equalf(t, h|0x200, got, "NaN %#04x", h) // made quiet
			continue
		}
		require.Equalf(t, h, got, "%#04x", h)
	}
}

// TestF32ToF16Boundaries checks the rounding at every boundary between two
// adjacent finite halves: the exact midpoint goes to the even one, the
// float32 values just beside it to the nearer one.
func TestF32ToF16Boundaries(t *testing.T) {
	for h := uint16(0); h < 0x7c00; h++ {
		lo := float64(quant.F16ToF32(h))
		hi := 65536.0 // where the next exponent would start: the overflow bound
		if h < 0x7bff {
			hi = float64(quant.F16ToF32(h + 1))
		}
		mid := float32((lo + hi) / 2) // exact: 12 significant bits
		even := h
		if h&1 == 1 {
			even = h + 1
		}
		for _, sign := range []float32{1, -1} {
			s := uint16(0)
			if sign < 0 {
				s = 0x8000
			}
			m := sign * mid
			require.Equalf(t, s|even, quant.F32ToF16(m), "midpoint above %#04x", h)
			require.Equalf(t, s|h, quant.F32ToF16(math.Nextafter32(m, 0)), "just below midpoint above %#04x", h)
			require.Equalf(t, s|(h+1), quant.F32ToF16(math.Nextafter32(m, sign*float32(math.Inf(1)))), "just above midpoint above %#04x", h)
		}
	}
}

// TestF32ToF16Random compares with rounding done in float64 arithmetic on
// random bit patterns spread over the whole float32 range.
func TestF32ToF16Random(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 1 << 20 {
		f := math.Float32frombits(r.Uint32())
		if f != f {
			continue
		}
		// Plain comparisons: a million testify calls take seconds.
		got := quant.F16ToF32(quant.F32ToF16(f))
		if want := refRound(f, 11, -14, 65520); got != want || math.Signbit(float64(got)) != math.Signbit(float64(f)) {
			t.Fatalf("%g (%#08x): got %g, want %g", f, math.Float32bits(f), got, want)
		}
	}
}

// refRound rounds f to a binary format with a precision-bit significand whose
// smallest normal exponent is emin, ties to even, in float64 arithmetic
// (exact for these magnitudes); values of magnitude overflow or more round to
// infinity.
func refRound(f float32, precision, emin int, overflow float64) float32 {
	v := float64(f)
	if math.IsInf(v, 0) || math.Abs(v) >= overflow {
		return float32(math.Copysign(math.Inf(1), v))
	}
	_, e := math.Frexp(v) // v = m·2^e, 0.5 ≤ |m| < 1
	ulp := math.Ldexp(1, max(e-1, emin)-(precision-1))
	return float32(math.Copysign(math.RoundToEven(v/ulp)*ulp, v))
}

func TestBF16(t *testing.T) {
	tests := []struct {
		name string
		f    float32
		want uint16
	}{
		{"one", 1, 0x3f80},
		{"negative", -2, 0xc000},
		{"tie to even down", math.Float32frombits(0x3f808000), 0x3f80},
		{"tie to even up", math.Float32frombits(0x3f818000), 0x3f82},
		{"above tie", math.Float32frombits(0x3f808001), 0x3f81},
		{"max float32 rounds to inf", math.MaxFloat32, 0x7f80},
		{"subnormal", math.Float32frombits(0x00012345), 0x0001},
		{"inf", float32(math.Inf(-1)), 0xff80},
		{"NaN made quiet", math.Float32frombits(0x7f800001), 0x7fc0},
		{"NaN never rounds to inf", math.Float32frombits(0x7f80ffff), 0x7fc0},
		{"negative NaN", math.Float32frombits(0xffc00000), 0xffc0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equalf(t, tt.want, quant.F32ToBF16(tt.f), "got %#04x", quant.F32ToBF16(tt.f))
		})
	}
	assert.Equal(t, float32(1), quant.BF16ToF32(0x3f80))
	assert.Equal(t, float32(-0x1p-133), quant.BF16ToF32(0x8001))
}

func TestBF16RoundTripExhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		got := quant.F32ToBF16(quant.BF16ToF32(h))
		if h&0x7f80 == 0x7f80 && h&0x7f != 0 {
			require.Equalf(t, h|0x40, got, "NaN %#04x", h)
			continue
		}
		require.Equalf(t, h, got, "%#04x", h)
	}
}

func TestF32ToBF16Random(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	// bfloat16 has float32's exponent range: 8 significant bits, smallest
	// normal 2⁻¹²⁶, and overflow at the midpoint above its largest value.
	overflow := float64(quant.BF16ToF32(0x7f7f)) + math.Ldexp(1, 127-8)
	for range 1 << 20 {
		f := math.Float32frombits(r.Uint32())
		if f != f {
			continue
		}
		got := quant.BF16ToF32(quant.F32ToBF16(f))
		if want := refRound(f, 8, -126, overflow); got != want || math.Signbit(float64(got)) != math.Signbit(float64(f)) {
			t.Fatalf("%g (%#08x): got %g, want %g", f, math.Float32bits(f), got, want)
		}
	}
}
