package quant

import (
	"encoding/binary"
	"math"
)

// The portable kernels: plain Go, always compiled, the reference the
// assembly is tested against and the fallback for every type. Products
// within a block are summed exactly in integers; only the per-block (or
// per-super-block) scaling is floating point.

func portableDot(t Type) func(n int, w, a []byte) float32 {
	switch t {
	case F32:
		return dotF32
	case F16:
		return dotF16
	case BF16:
		return dotBF16
	case Q4_0:
		return dotQ4_0
	case Q4_1:
		return dotQ4_1
	case Q5_0:
		return dotQ5_0
	case Q5_1:
		return dotQ5_1
	case Q8_0:
		return dotQ8_0
	case Q2_K:
		return dotQ2_K
	case Q3_K:
		return dotQ3_K
	case Q4_K:
		return dotQ4_K
	case Q5_K:
		return dotQ5_K
	case Q6_K:
		return dotQ6_K
	}
	return nil
}

func portableQuantize(act Type) func(x []float32, dst []byte) {
	switch act {
	case F32:
		return func(x []float32, dst []byte) { quantF32(x, dst[:4*len(x)]) }
	case Q8A:
		return quantQ8A
	case Q8_K:
		return func(x []float32, dst []byte) { quantQ8_K(x, dst[:len(x)/QK_K*292]) }
	}
	return nil
}

// f32At reads the float32 at b[0:4].
func f32At(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) }

// quantQ8A quantizes x into Q8A blocks: d = amax/127, q = nearest(x·127/amax)
// (ties to even), s = d·Σq. The assembly quantizers compute exactly the same
// operations, so their bytes are identical.
func quantQ8A(x []float32, dst []byte) {
	nb := len(x) / 32
	dst = dst[:nb*q8aBlock]
	for i := range nb {
		xb := (*[32]float32)(x[32*i:])
		b := (*[q8aBlock]byte)(dst[q8aBlock*i:])
		var amax float32
		for _, v := range xb {
			amax = max(amax, abs32(v))
		}
		d := amax / 127
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		sum := 0
		for j, v := range xb {
			q := nearestInt(v * id)
			b[8+j] = byte(int8(q))
			sum += q
		}
		binary.LittleEndian.PutUint32(b[0:], math.Float32bits(d))
		binary.LittleEndian.PutUint32(b[4:], math.Float32bits(d*float32(sum)))
	}
}

func dotF32(n int, w, a []byte) float32 {
	w, a = w[:4*n], a[:4*n]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += f32At(w[4*i:]) * f32At(a[4*i:])
		s1 += f32At(w[4*i+4:]) * f32At(a[4*i+4:])
		s2 += f32At(w[4*i+8:]) * f32At(a[4*i+8:])
		s3 += f32At(w[4*i+12:]) * f32At(a[4*i+12:])
	}
	for ; i < n; i++ {
		s0 += f32At(w[4*i:]) * f32At(a[4*i:])
	}
	return s0 + s1 + s2 + s3
}

func dotF16(n int, w, a []byte) float32 {
	w, a = w[:2*n], a[:4*n]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += f16At(w[2*i:]) * f32At(a[4*i:])
		s1 += f16At(w[2*i+2:]) * f32At(a[4*i+4:])
		s2 += f16At(w[2*i+4:]) * f32At(a[4*i+8:])
		s3 += f16At(w[2*i+6:]) * f32At(a[4*i+12:])
	}
	for ; i < n; i++ {
		s0 += f16At(w[2*i:]) * f32At(a[4*i:])
	}
	return s0 + s1 + s2 + s3
}

func dotBF16(n int, w, a []byte) float32 {
	w, a = w[:2*n], a[:4*n]
	var s0, s1 float32
	i := 0
	for ; i+2 <= n; i += 2 {
		s0 += BF16ToF32(binary.LittleEndian.Uint16(w[2*i:])) * f32At(a[4*i:])
		s1 += BF16ToF32(binary.LittleEndian.Uint16(w[2*i+2:])) * f32At(a[4*i+4:])
	}
	for ; i < n; i++ {
		s0 += BF16ToF32(binary.LittleEndian.Uint16(w[2*i:])) * f32At(a[4*i:])
	}
	return s0 + s1
}

// q8aAt returns Q8A block i of a: its scale, sum and quants.
func q8aAt(a []byte, i int) (d, s float32, q *[32]byte) {
	b := (*[q8aBlock]byte)(a[q8aBlock*i:])
	return f32At(b[0:]), f32At(b[4:]), (*[32]byte)(b[8:])
}

func dotQ4_0(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / 32 {
		b := (*[18]byte)(w[18*i:])
		da, _, q := q8aAt(a, i)
		var isum int32
		for j, v := range b[2:18] {
			isum += (int32(v&0xf)-8)*int32(int8(q[j])) + (int32(v>>4)-8)*int32(int8(q[j+16]))
		}
		sum += f16At(b[0:]) * da * float32(isum)
	}
	return sum
}

func dotQ4_1(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / 32 {
		b := (*[20]byte)(w[20*i:])
		da, sa, q := q8aAt(a, i)
		var isum int32
		for j, v := range b[4:20] {
			isum += int32(v&0xf)*int32(int8(q[j])) + int32(v>>4)*int32(int8(q[j+16]))
		}
		sum += f16At(b[0:])*da*float32(isum) + f16At(b[2:])*sa
	}
	return sum
}

func dotQ5_0(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / 32 {
		b := (*[22]byte)(w[22*i:])
		da, _, q := q8aAt(a, i)
		qh := binary.LittleEndian.Uint32(b[2:])
		var isum int32
		for j, v := range b[6:22] {
			lo := int32(v&0xf) | int32(qh>>j&1)<<4
			hi := int32(v>>4) | int32(qh>>(j+16)&1)<<4
			isum += (lo-16)*int32(int8(q[j])) + (hi-16)*int32(int8(q[j+16]))
		}
		sum += f16At(b[0:]) * da * float32(isum)
	}
	return sum
}

func dotQ5_1(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / 32 {
		b := (*[24]byte)(w[24*i:])
		da, sa, q := q8aAt(a, i)
		qh := binary.LittleEndian.Uint32(b[4:])
		var isum int32
		for j, v := range b[8:24] {
			lo := int32(v&0xf) | int32(qh>>j&1)<<4
			hi := int32(v>>4) | int32(qh>>(j+16)&1)<<4
			isum += lo*int32(int8(q[j])) + hi*int32(int8(q[j+16]))
		}
		sum += f16At(b[0:])*da*float32(isum) + f16At(b[2:])*sa
	}
	return sum
}

func dotQ8_0(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / 32 {
		b := (*[34]byte)(w[34*i:])
		da, _, q := q8aAt(a, i)
		var isum int32
		for j, v := range b[2:34] {
			isum += int32(int8(v)) * int32(int8(q[j]))
		}
		sum += f16At(b[0:]) * da * float32(isum)
	}
	return sum
}

// q8KAt returns Q8_K block i of a: its scale, quants and sums of 16.
func q8KAt(a []byte, i int) (d float32, q *[QK_K]byte, bsums *[32]byte) {
	b := (*[292]byte)(a[292*i:])
	return f32At(b[0:]), (*[QK_K]byte)(b[4:]), (*[32]byte)(b[4+QK_K:])
}

// bsum is the sum of the j-th 16 quants of a Q8_K block.
func bsum(bsums *[32]byte, j int) int32 {
	return int32(int16(binary.LittleEndian.Uint16(bsums[2*j:])))
}

// dotQ2_K: x = d·sc·q - dmin·m per sub-block of 16; the minimum multiplies
// the activation sums that Q8_K carries.
func dotQ2_K(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / QK_K {
		b := (*[84]byte)(w[84*i:])
		da, q8, bs := q8KAt(a, i)
		scales, qs := b[0:16], b[16:80]
		var isum, msum int32
		for s := range 16 {
			half, k, l0 := s/8, s%8/2, s%2*16
			q := qs[32*half+l0 : 32*half+l0+16]
			y := q8[16*s : 16*s+16]
			var dot int32
			for l, v := range q {
				dot += int32(v>>(2*k)&3) * int32(int8(y[l]))
			}
			isum += int32(scales[s]&0xf) * dot
			msum += int32(scales[s]>>4) * bsum(bs, s)
		}
		sum += f16At(b[80:])*da*float32(isum) - f16At(b[82:])*da*float32(msum)
	}
	return sum
}

func dotQ3_K(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / QK_K {
		b := (*[110]byte)(w[110*i:])
		da, q8, _ := q8KAt(a, i)
		hmask, qs := b[0:32], b[32:96]
		var sc [16]int
		q3KScales(b[96:108], &sc)
		var isum int32
		for s := range 16 {
			half, k, l0 := s/8, s%8/2, s%2*16
			q := qs[32*half+l0 : 32*half+l0+16]
			h := hmask[l0 : l0+16]
			bit := byte(1) << (4*half + k)
			y := q8[16*s : 16*s+16]
			var dot int32
			for l, v := range q {
				x := int32(v >> (2 * k) & 3)
				if h[l]&bit == 0 {
					x -= 4
				}
				dot += x * int32(int8(y[l]))
			}
			isum += int32(sc[s]) * dot
		}
		sum += f16At(b[108:]) * da * float32(isum)
	}
	return sum
}

func dotQ4_K(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / QK_K {
		b := (*[144]byte)(w[144*i:])
		da, q8, bs := q8KAt(a, i)
		scales, qs := b[4:16], b[16:144]
		var isum, msum int32
		for s := range 8 {
			sc, m := scaleMinK4(s, scales)
			q := qs[32*(s/2) : 32*(s/2)+32]
			shift := 4 * (s % 2)
			y := q8[32*s : 32*s+32]
			var dot int32
			for l, v := range q {
				dot += int32(v>>shift&0xf) * int32(int8(y[l]))
			}
			isum += int32(sc) * dot
			msum += int32(m) * (bsum(bs, 2*s) + bsum(bs, 2*s+1))
		}
		sum += f16At(b[0:])*da*float32(isum) - f16At(b[2:])*da*float32(msum)
	}
	return sum
}

func dotQ5_K(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / QK_K {
		b := (*[176]byte)(w[176*i:])
		da, q8, bs := q8KAt(a, i)
		scales, qh, qs := b[4:16], b[16:48], b[48:176]
		var isum, msum int32
		for s := range 8 {
			sc, m := scaleMinK4(s, scales)
			q := qs[32*(s/2) : 32*(s/2)+32]
			shift := 4 * (s % 2)
			y := q8[32*s : 32*s+32]
			var dot int32
			for l, v := range q {
				x := v>>shift&0xf | (qh[l]>>s&1)<<4
				dot += int32(x) * int32(int8(y[l]))
			}
			isum += int32(sc) * dot
			msum += int32(m) * (bsum(bs, 2*s) + bsum(bs, 2*s+1))
		}
		sum += f16At(b[0:])*da*float32(isum) - f16At(b[2:])*da*float32(msum)
	}
	return sum
}

func dotQ6_K(n int, w, a []byte) float32 {
	var sum float32
	for i := range n / QK_K {
		b := (*[210]byte)(w[210*i:])
		da, q8, _ := q8KAt(a, i)
		ql, qh, scales := b[0:128], b[128:192], b[192:208]
		var isum int32
		for s := range 16 {
			h, k, l0 := s/8, s%8/2, s%2*16
			lo := ql[64*h+32*(k%2)+l0 : 64*h+32*(k%2)+l0+16]
			hi := qh[32*h+l0 : 32*h+l0+16]
			y := q8[16*s : 16*s+16]
			var dot int32
			for l := range lo {
				q := int32(lo[l]>>(4*(k/2))&0xf|(hi[l]>>(2*k)&3)<<4) - 32
				dot += q * int32(int8(y[l]))
			}
			isum += int32(int8(scales[s])) * dot
		}
		sum += f16At(b[208:]) * da * float32(isum)
	}
	return sum
}
