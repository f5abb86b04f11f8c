package cpu

import "math"

// expf is e^x in float32 arithmetic, within a few ulps of math.Exp and
// several times faster: SwiGLU and softmax call it once per activation.
// x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two parts so r is exact),
// e^r by a degree-6 Taylor polynomial (error < 2e-8 on that interval), and
// 2^n put into the exponent bits. n is rounded by adding 1.5·2^23, whose
// last bit then holds the integer; math.Floor is a call on amd64's
// baseline.
func expf(x float32) float32 {
	if !(x > -87.3 && x < 88) { // 2^n would not be a normal float32; NaN
		return expfEdge(x)
	}
	const magic = 12582912 // 1.5·2^23
	t := x*log2e + magic
	n := t - magic
	k := int32(math.Float32bits(t)) - 0x4B400000 // n as an integer
	return expPoly(x-n*ln2Hi-n*ln2Lo) * math.Float32frombits(uint32(127+k)<<23)
}

const (
	log2e = 1.44269504088896341
	ln2Hi = 0.693359375
	ln2Lo = -2.12194440e-4
)

// expPoly is e^r for |r| ≤ ln2/2.
func expPoly(r float32) float32 {
	return 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
}

// expfEdge is expf where 2^n overflows, is subnormal, or x is NaN.
func expfEdge(x float32) float32 {
	switch {
	case x > 88.72283:
		return float32(math.Inf(1))
	case x < -103.97208: // below the smallest subnormal
		return 0
	case x != x: // NaN
		return x
	}
	n := float32(math.Floor(float64(x*log2e + 0.5)))
	// 2^n may be subnormal or overflow float32's exponent on its own while
	// the product is finite, so scale in two halves.
	k := int32(n)
	h := k / 2
	return expPoly(x-n*ln2Hi-n*ln2Lo) * math.Float32frombits(uint32(127+h)<<23) * math.Float32frombits(uint32(127+k-h)<<23)
}
