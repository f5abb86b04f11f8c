//go:build !purego && (amd64 || arm64)

package quant

import "math/bits"

// asmBlock describes the assembly kernels of one block type: x1 multiplies
// nb blocks of one weight row with one activation row, x4 with four
// activation rows stride bytes apart, w4 four weight rows wstride bytes
// apart with one activation row (nil for the k-quants; for the types with
// a Tile, the kernel of the tile's arithmetic); the tiles write out[0:4].
type asmBlock struct {
	bs, wsize, asize int // elements per block, weight and activation bytes per block
	x1               func(nb int, w, a *byte) float32
	x4               func(nb int, w, a *byte, stride int, out *float32)
	w4               func(nb int, w *byte, wstride int, a *byte, out *float32)
}

// asmBlocks are a tier's block kernels by weight type. Its lookups return
// a type's kernel of each kind, or nil where the tier has none, as the
// tier's fields want them.
type asmBlocks map[Type]asmBlock

func (bs asmBlocks) dot(t Type) func(n int, w, a []byte) float32 {
	if b, ok := bs[t]; ok {
		return b.dot()
	}
	return nil
}

func (bs asmBlocks) dotRows(t Type) func(n int, w, a []byte, aStride int, out []float32) {
	if b, ok := bs[t]; ok {
		return b.dotRows
	}
	return nil
}

func (bs asmBlocks) matVec(t Type) func(n int, w []byte, wStride int, a []byte, out []float32) {
	if b, ok := bs[t]; ok {
		return b.matVec
	}
	return nil
}

// dot returns the Dot function: it checks the lengths (the assembly
// trusts them) and runs x1. Short rows make the call overhead count, so
// the closure divides by shifting and calls x1 without further
// indirection.
func (b asmBlock) dot() func(n int, w, a []byte) float32 {
	shift := uint(bits.TrailingZeros(uint(b.bs))) // block sizes are powers of 2
	wsize, asize, x1 := b.wsize, b.asize, b.x1
	return func(n int, w, a []byte) float32 {
		nb := n >> shift
		if nb <= 0 {
			return 0
		}
		_, _ = w[nb*wsize-1], a[nb*asize-1]
		return x1(nb, &w[0], &a[0])
	}
}

// dotRows runs x4 on tiles of four rows and x1 on the rest.
func (b asmBlock) dotRows(n int, w, a []byte, aStride int, out []float32) {
	nb := n / b.bs
	if nb == 0 || len(out) == 0 {
		clear(out)
		return
	}
	_ = w[nb*b.wsize-1]
	_ = a[(len(out)-1)*aStride+nb*b.asize-1]
	r := 0
	if aStride >= 0 { // the check above bounds every row then
		for ; r+4 <= len(out); r += 4 {
			b.x4(nb, &w[0], &a[r*aStride], aStride, &out[r])
		}
	}
	for ; r < len(out); r++ {
		out[r] = b.x1(nb, &w[0], &a[r*aStride])
	}
}

// matVec runs w4 (if the type has it) on tiles of four weight rows and x1
// on the rest.
func (b asmBlock) matVec(n int, w []byte, wStride int, a []byte, out []float32) {
	nb := n / b.bs
	if nb == 0 || len(out) == 0 {
		clear(out)
		return
	}
	_ = a[nb*b.asize-1]
	_ = w[(len(out)-1)*wStride+nb*b.wsize-1]
	r := 0
	if b.w4 != nil && wStride >= 0 { // the check above bounds every row then
		for ; r+4 <= len(out); r += 4 {
			b.w4(nb, &w[r*wStride], wStride, &a[0], &out[r])
		}
	}
	for ; r < len(out); r++ {
		out[r] = b.x1(nb, &w[r*wStride], &a[0])
	}
}

// floatDot runs an assembly float kernel over the largest multiple of
// chunk values and the portable one over the rest; wsize is the size of a
// weight.
func floatDot(kernel func(n int, w, a *byte) float32, wsize, chunk int, tail func(n int, w, a []byte) float32) func(n int, w, a []byte) float32 {
	return func(n int, w, a []byte) float32 {
		_, _ = w[:n*wsize], a[:4*n]
		m := n - n%chunk
		var s float32
		if m > 0 {
			s = kernel(m, &w[0], &a[0])
		}
		if m < n {
			s += tail(n-m, w[m*wsize:], a[4*m:])
		}
		return s
	}
}

// floatDotRows runs an assembly float kernel for three activation rows
// (x3) over the largest multiple of chunk values, the portable tail over
// the rest, and dot on the rows left over. x3 runs dot's kernel's
// instructions for each row, so every out[r] is what dot returns.
func floatDotRows(x3 func(n int, w, a *byte, astride int, out *float32), wsize, chunk int, dot, tail func(n int, w, a []byte) float32) func(n int, w, a []byte, aStride int, out []float32) {
	return func(n int, w, a []byte, aStride int, out []float32) {
		m, r := n-n%chunk, 0
		if m > 0 && aStride >= 0 && len(out) >= 3 {
			_, _ = w[:n*wsize], a[:(len(out)-1)*aStride+4*n]
			for ; r+3 <= len(out); r += 3 {
				x3(m, &w[0], &a[r*aStride], aStride, &out[r])
				if m == n {
					continue
				}
				for j := r; j < r+3; j++ {
					out[j] += tail(n-m, w[m*wsize:], a[j*aStride+4*m:])
				}
			}
		}
		for ; r < len(out); r++ {
			out[r] = dot(n, w, a[r*aStride:])
		}
	}
}

// floatMatVec runs an assembly four-row float kernel (w4 for one
// activation row, w4x2 for two) on tiles of four weight rows over the
// largest multiple of 8 values, the portable tail over the rest of those
// rows' values, and dot on the rows left over. An activation row's results
// are the same whether it comes alone or with another.
func floatMatVec(w4 func(n int, w *byte, wstride int, a *byte, out *float32), w4x2 func(n int, w *byte, wstride int, a0, a1 *byte, out0, out1 *float32), wsize int, dot, tail func(n int, w, a []byte) float32) FloatRows {
	return func(n int, w []byte, wStride int, a0, a1 []byte, out0, out1 []float32) {
		two := a1 != nil
		m, r := n-n%8, 0
		if m > 0 && wStride >= 0 && len(out0) >= 4 {
			_, _ = a0[:4*n], w[:(len(out0)-1)*wStride+n*wsize]
			if two {
				_, _ = a1[:4*n], out1[:len(out0)]
			}
			for ; r+4 <= len(out0); r += 4 {
				if two {
					w4x2(m, &w[r*wStride], wStride, &a0[0], &a1[0], &out0[r], &out1[r])
				} else {
					w4(m, &w[r*wStride], wStride, &a0[0], &out0[r])
				}
				if m == n {
					continue
				}
				for j := r; j < r+4; j++ {
					out0[j] += tail(n-m, w[j*wStride+m*wsize:], a0[4*m:])
					if two {
						out1[j] += tail(n-m, w[j*wStride+m*wsize:], a1[4*m:])
					}
				}
			}
		}
		for ; r < len(out0); r++ {
			out0[r] = dot(n, w[r*wStride:], a0)
			if two {
				out1[r] = dot(n, w[r*wStride:], a1)
			}
		}
	}
}
