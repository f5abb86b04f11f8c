package quant

import (
	"encoding/binary"
	"math"
)

// The k-quant quantizers: ports of llama.cpp's quantize_row_{q2..q6,q8}_K_ref
// and of the helpers they use (nearest_int, make_qx_quants with rmse_type 1,
// make_q3_quants, make_qkx2_quants), kept in the same float32 operation
// order. Sums run in index order, as in the C loops. See quantize.go for why
// products that feed additions are wrapped in float32().

// groupMaxEps is ggml's GROUP_MAX_EPS: a group whose largest magnitude is
// below it is treated as all zeros.
const groupMaxEps = 1e-15

// nearestInt is ggml's nearest_int: round to nearest, ties to even, by adding
// 1.5·2²³ so that the integer lands in the low mantissa bits. It is meant for
// |f| ≤ 2²²; outside that (or for NaN) it returns a meaningless value, as the
// C does, but never fails. The conversion of f matters: once inlined, a
// caller's product would otherwise fuse with the addition.
func nearestInt(f float32) int {
	v := float32(f) + 12582912
	return int(math.Float32bits(v)&0x7fffff) - 0x400000
}

func clamp(v, lo, hi int) int { return max(lo, min(hi, v)) }

func sqrt32(v float32) float32 {
	// Correctly rounded: a float64 square root of a float32 rounds once more
	// to the same float32 as a direct float32 square root would.
	return float32(math.Sqrt(float64(v)))
}

// makeQXQuants is make_qx_quants with rmse_type 1 and no importance weights
// (the variant q6_K's reference uses): symmetric quantization of x to
// -nmax..nmax-1, stored in L offset by nmax, with the scale chosen among 19
// candidates to minimise the x²-weighted squared error. It returns the scale.
func makeQXQuants(x []float32, nmax int, L []uint8) float32 {
	m := absMax(x)
	if abs32(m) < groupMaxEps {
		clear(L)
		return 0
	}
	fmax := float32(nmax)
	// sums accumulates Σw·x·l and Σw·l² with w = x² for the scale iscale,
	// writing the levels into L when store is set.
	sums := func(iscale float32, store bool) (sumlx, suml2 float32) {
		for i, v := range x {
			l := clamp(nearestInt(iscale*v), -nmax, nmax-1)
			if store {
				L[i] = uint8(l + nmax)
			}
			w := v * v
			fl := float32(l)
			sumlx += float32(w * v * fl)
			suml2 += float32(w * fl * fl)
		}
		return sumlx, suml2
	}
	sumlx, suml2 := sums(-fmax/m, true)
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale := -(fmax + float32(0.1*float32(is))) / m
		sumlx, suml2 = sums(iscale, false)
		if suml2 > 0 && sumlx*sumlx > best*suml2 {
			sums(iscale, true)
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}

// makeQ3Quants is make_q3_quants with do_rmse set (q3_K's reference): like
// makeQXQuants, then up to five passes that move single elements to another
// level when that lowers the x²-weighted error of the least-squares scale.
// L receives the levels offset by nmax; it returns the scale.
func makeQ3Quants(x []float32, nmax int, L []int8) float32 {
	m := absMax(x)
	if abs32(m) < groupMaxEps {
		clear(L)
		return 0
	}
	iscale := -float32(nmax) / m
	var sumlx, suml2 float32
	for i, v := range x {
		l := clamp(nearestInt(iscale*v), -nmax, nmax-1)
		L[i] = int8(l)
		w := v * v
		sumlx += float32(w * v * float32(l))
		suml2 += float32(w * float32(l) * float32(l))
	}
	for range 5 {
		changed := false
		for i, v := range x {
			w := v * v
			li := float32(L[i])
			slx := sumlx - float32(w*v*li)
			if !(slx > 0) { // negated as in the C, so that NaN skips too
				continue
			}
			sl2 := suml2 - float32(w*li*li)
			newL := clamp(nearestInt(v*sl2/slx), -nmax, nmax-1)
			if newL == int(L[i]) {
				continue
			}
			fl := float32(newL)
			slx += float32(w * v * fl)
			sl2 += float32(w * fl * fl)
			if sl2 > 0 && slx*slx*suml2 > sumlx*sumlx*sl2 {
				L[i], sumlx, suml2 = int8(newL), slx, sl2
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	for i := range L {
		L[i] += int8(nmax)
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

// makeQKX2Quants is make_qkx2_quants: asymmetric quantization x ≈ scale·l -
// theMin with l in 0..nmax (theMin ≥ 0), searching nstep+1 candidate scales
// around nmax/(max-min) and refitting scale and min by weighted least squares
// for each; the fit with the lowest weighted error (absolute if useMad, else
// squared) wins. Laux is scratch space of len(x).
func makeQKX2Quants(x, weights []float32, nmax int, L, Laux []uint8, rmin, rdelta float32, nstep int, useMad bool) (scale, theMin float32) {
	lo, hi := x[0], x[0]
	sumW := weights[0]
	sumX := sumW * x[0]
	for i := 1; i < len(x); i++ {
		if x[i] < lo {
			lo = x[i]
		}
		if x[i] > hi {
			hi = x[i]
		}
		sumW += weights[i]
		sumX += float32(weights[i] * x[i])
	}
	if lo > 0 {
		lo = 0
	}
	if hi == lo {
		clear(L)
		return 0, -lo
	}
	// errOf is the weighted error of levels q with scale s and offset o.
	errOf := func(q []uint8, s, o float32) float32 {
		var e float32
		for i, v := range x {
			diff := float32(s*float32(q[i])) + o - v
			if useMad {
				diff = abs32(diff)
			} else {
				diff *= diff
			}
			e += float32(weights[i] * diff)
		}
		return e
	}
	fmax := float32(nmax)
	iscale := fmax / (hi - lo)
	scale = 1 / iscale
	for i, v := range x {
		L[i] = uint8(clamp(nearestInt(iscale*(v-lo)), 0, nmax))
	}
	bestErr := errOf(L, scale, lo)
	for is := 0; is <= nstep; is++ {
		// lo moves to the best fit so far, as in the C.
		iscale = (rmin + float32(rdelta*float32(is)) + fmax) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := clamp(nearestInt(iscale*(v-lo)), 0, nmax)
			Laux[i] = uint8(l)
			w, fl := weights[i], float32(l)
			sumL += float32(w * fl)
			sumL2 += float32(w * fl * fl)
			sumXL += float32(w * fl * v)
		}
		det := float32(sumW*sumL2) - float32(sumL*sumL)
		if !(det > 0) { // negated as in the C, so that NaN skips too
			continue
		}
		thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / det
		thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / det
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		if e := errOf(Laux, thisScale, thisMin); e < bestErr {
			copy(L, Laux)
			bestErr, scale, lo = e, thisScale, thisMin
		}
	}
	return scale, -lo
}

// packQ2 stores 2-bit levels in the qs layout shared by q2_K and q3_K: per
// half of 128 elements, element 32k+l goes to bits 2k..2k+1 of byte l.
func packQ2(L []uint8, qs []byte) {
	for h := range 2 {
		for l := range 32 {
			e := L[128*h+l:]
			qs[32*h+l] = e[0] | e[32]<<2 | e[64]<<4 | e[96]<<6
		}
	}
}

// quantQ2_K (quantize_row_q2_K_ref): per 16-element sub-block an
// asymmetric 2-bit fit (make_qkx2_quants, weighted by |x|, absolute error),
// then the 16 scales and 16 mins each quantized to 4 bits against the
// block's largest, then the levels recomputed with the stored scales.
func quantQ2_K(src []float32, dst []byte) {
	const q4scale = 15
	var (
		L            [QK_K]uint8
		Laux         [16]uint8
		weights      [16]float32
		scales, mins [16]float32
	)
	for i := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[QK_K*i:])
		b := (*[84]byte)(dst[84*i:])
		var maxScale, maxMin float32
		for j := range 16 {
			xs := x[16*j : 16*j+16]
			for l, v := range xs {
				weights[l] = abs32(v)
			}
			scales[j], mins[j] = makeQKX2Quants(xs, weights[:], 3, L[16*j:16*j+16], Laux[:], -0.5, 0.1, 15, true)
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mins[j] > maxMin {
				maxMin = mins[j]
			}
		}
		sc := b[0:16]
		if maxScale > 0 {
			iscale := q4scale / maxScale
			for j := range sc {
				sc[j] = uint8(nearestInt(iscale * scales[j]))
			}
			putF16(b[80:], maxScale/q4scale)
		} else {
			clear(sc)
			putF16(b[80:], 0)
		}
		if maxMin > 0 {
			iscale := q4scale / maxMin
			for j := range sc {
				sc[j] |= uint8(nearestInt(iscale*mins[j]) << 4)
			}
			putF16(b[82:], maxMin/q4scale)
		} else {
			putF16(b[82:], 0)
		}
		d, dmin := f16At(b[80:]), f16At(b[82:])
		for j := range 16 {
			dl := d * float32(sc[j]&0xf)
			if dl == 0 {
				continue
			}
			ml := dmin * float32(sc[j]>>4)
			for l, v := range x[16*j : 16*j+16] {
				L[16*j+l] = uint8(clamp(nearestInt((v+ml)/dl), 0, 3))
			}
		}
		packQ2(L[:], b[16:80])
	}
}

// quantQ3_K (quantize_row_q3_K_ref): per 16-element sub-block a symmetric
// 3-bit fit (make_q3_quants), the 16 scales quantized to 6 bits against the
// one of largest magnitude, the levels recomputed with the stored scales, and
// the third bit of each level moved to hmask.
func quantQ3_K(src []float32, dst []byte) {
	var (
		L      [QK_K]int8
		scales [16]float32
		stored [16]int
	)
	for i := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[QK_K*i:])
		b := (*[110]byte)(dst[110*i:])
		var maxScale, amax float32
		for j := range 16 {
			scales[j] = makeQ3Quants(x[16*j:16*j+16], 4, L[16*j:16*j+16])
			if a := abs32(scales[j]); a > amax {
				amax, maxScale = a, scales[j]
			}
		}
		sc := b[96:108]
		clear(sc)
		if maxScale != 0 {
			iscale := -32 / maxScale
			for j := range 16 {
				// The C stores nearest_int's result in an int8_t first.
				l := clamp(int(int8(nearestInt(iscale*scales[j]))), -32, 31) + 32
				sc[j%8] |= byte(l&0xf) << (4 * (j / 8))
				sc[8+j%4] |= byte(l>>4) << (2 * (j / 4))
			}
			putF16(b[108:], 1/iscale)
		} else {
			putF16(b[108:], 0)
		}
		d := f16At(b[108:])
		q3KScales(sc, &stored)
		for j := range 16 {
			dl := d * float32(stored[j])
			if dl == 0 {
				continue
			}
			for l, v := range x[16*j : 16*j+16] {
				L[16*j+l] = int8(clamp(nearestInt(v/dl), -4, 3) + 4)
			}
		}
		// Element e keeps its third bit in bit e/32 of hmask[e%32].
		hmask := b[0:32]
		clear(hmask)
		var low [QK_K]uint8
		for e, l := range L {
			if l > 3 {
				hmask[e%32] |= 1 << (e / 32)
				l -= 4
			}
			low[e] = uint8(l)
		}
		packQ2(low[:], b[32:96])
	}
}

// packScaleMinK4 stores eight 6-bit scales and mins in the 12-byte layout
// that scaleMinK4 reads.
func packScaleMinK4(ls, lm *[8]uint8, s []byte) {
	for j := range 4 {
		s[j] = ls[j] | ls[j+4]>>4<<6
		s[j+4] = lm[j] | lm[j+4]>>4<<6
		s[j+8] = ls[j+4]&0xf | lm[j+4]&0xf<<4
	}
}

// quantQKX2Sub32 is the part shared by q4_K and q5_K: per 32-element
// sub-block an asymmetric fit (make_qkx2_quants weighted by rms(x)+|x|),
// the eight scales and mins quantized to 6 bits into b[0:16] (d, dmin,
// scales), and the levels recomputed with the stored values into L.
func quantQKX2Sub32(x *[QK_K]float32, b []byte, nmax int, rmin, rdelta float32, nstep int, L *[QK_K]uint8) {
	var (
		Laux         [32]uint8
		weights      [32]float32
		scales, mins [8]float32
		ls, lm       [8]uint8
	)
	var maxScale, maxMin float32
	for j := range 8 {
		xs := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range xs {
			sumX2 += float32(v * v)
		}
		avX := sqrt32(sumX2 / 32)
		for l, v := range xs {
			weights[l] = avX + abs32(v)
		}
		scales[j], mins[j] = makeQKX2Quants(xs, weights[:], nmax, L[32*j:32*j+32], Laux[:], rmin, rdelta, nstep, false)
		if scales[j] > maxScale {
			maxScale = scales[j]
		}
		if mins[j] > maxMin {
			maxMin = mins[j]
		}
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	for j := range 8 {
		// The C stores nearest_int's result in a uint8_t before the clamp.
		ls[j] = min(63, uint8(nearestInt(invScale*scales[j])))
		lm[j] = min(63, uint8(nearestInt(invMin*mins[j])))
	}
	packScaleMinK4(&ls, &lm, b[4:16])
	putF16(b[0:], maxScale/63)
	putF16(b[2:], maxMin/63)
	d, dmin := f16At(b[0:]), f16At(b[2:])
	for j := range 8 {
		sc, m := scaleMinK4(j, b[4:16])
		dl := d * float32(sc)
		if dl == 0 {
			continue
		}
		ml := dmin * float32(m)
		for l, v := range x[32*j : 32*j+32] {
			L[32*j+l] = uint8(clamp(nearestInt((v+ml)/dl), 0, nmax))
		}
	}
}

// quantQ4_K (quantize_row_q4_K_ref): 4-bit levels, two sub-blocks per 32
// bytes of qs (low nibbles, then high nibbles).
func quantQ4_K(src []float32, dst []byte) {
	var L [QK_K]uint8
	for i := range len(src) / QK_K {
		b := (*[144]byte)(dst[144*i:])
		quantQKX2Sub32((*[QK_K]float32)(src[QK_K*i:]), b[:], 15, -1, 0.1, 20, &L)
		qs := b[16:144]
		for h := range 4 {
			for l := range 32 {
				qs[32*h+l] = L[64*h+l] | L[64*h+l+32]<<4
			}
		}
	}
}

// quantQ5_K (quantize_row_q5_K_ref): 5-bit levels, the low 4 bits packed as
// q4_K and the fifth bit of sub-block s, element l at bit s of qh[l].
func quantQ5_K(src []float32, dst []byte) {
	var L [QK_K]uint8
	for i := range len(src) / QK_K {
		b := (*[176]byte)(dst[176*i:])
		quantQKX2Sub32((*[QK_K]float32)(src[QK_K*i:]), b[:], 31, -0.5, 0.1, 15, &L)
		qh, qs := b[16:48], b[48:176]
		clear(qh)
		for s := range 8 {
			for l := range 32 {
				qh[l] |= L[32*s+l] >> 4 << s
			}
		}
		for h := range 4 {
			for l := range 32 {
				qs[32*h+l] = L[64*h+l]&0xf | L[64*h+l+32]&0xf<<4
			}
		}
	}
}

// quantQ6_K (quantize_row_q6_K_ref): per 16-element sub-block a symmetric
// 6-bit fit (make_qx_quants), the 16 scales quantized to int8 against the one
// of largest magnitude, and the levels recomputed with the stored scales.
func quantQ6_K(src []float32, dst []byte) {
	var (
		L      [QK_K]uint8
		scales [16]float32
	)
	for i := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[QK_K*i:])
		b := (*[210]byte)(dst[210*i:])
		var maxScale, maxAbs float32
		for j := range 16 {
			scales[j] = makeQXQuants(x[16*j:16*j+16], 32, L[16*j:16*j+16])
			if a := abs32(scales[j]); a > maxAbs {
				maxAbs, maxScale = a, scales[j]
			}
		}
		if maxAbs < groupMaxEps {
			clear(b[:]) // all levels, scales and d zero
			continue
		}
		iscale := -128 / maxScale
		putF16(b[208:], 1/iscale)
		sc := b[192:208]
		for j := range sc {
			sc[j] = byte(int8(min(127, nearestInt(iscale*scales[j]))))
		}
		d := f16At(b[208:])
		for j := range 16 {
			dl := d * float32(int8(sc[j]))
			if dl == 0 {
				continue
			}
			for l, v := range x[16*j : 16*j+16] {
				L[16*j+l] = uint8(clamp(nearestInt(v/dl), -32, 31) + 32)
			}
		}
		ql, qh := b[0:128], b[128:192]
		for h := range 2 {
			e := L[128*h:]
			for l := range 32 {
				ql[64*h+l] = e[l]&0xf | e[l+64]<<4
				ql[64*h+l+32] = e[l+32]&0xf | e[l+96]<<4
				qh[32*h+l] = e[l]>>4 | e[l+32]>>4<<2 | e[l+64]>>4<<4 | e[l+96]>>4<<6
			}
		}
	}
}

// quantQ8_K (quantize_row_q8_K_ref): the activation format of the k-quant dot
// products. q = nearest_int(-127/max · x) capped at 127, d = max/-127 (d takes
// the sign that maps the largest-magnitude element to -127), plus the sums of
// each 16 quants. For an all-zero block ggml leaves bsums unwritten; here they
// are written as zero, their true value.
func quantQ8_K(src []float32, dst []byte) {
	for i := range len(src) / QK_K {
		x := (*[QK_K]float32)(src[QK_K*i:])
		b := (*[292]byte)(dst[292*i:])
		m := absMax(x[:])
		if m == 0 {
			clear(b[:])
			continue
		}
		iscale := -127 / m
		qs := b[4 : 4+QK_K]
		for j, v := range x {
			qs[j] = byte(int8(min(127, nearestInt(iscale*v))))
		}
		for j := range 16 {
			sum := 0
			for _, q := range qs[16*j : 16*j+16] {
				sum += int(int8(q))
			}
			binary.LittleEndian.PutUint16(b[4+QK_K+2*j:], uint16(int16(sum)))
		}
		binary.LittleEndian.PutUint32(b[0:], math.Float32bits(1/iscale))
	}
}
