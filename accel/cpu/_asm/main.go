// Command _asm generates accel/cpu's AVX2 vector-math kernels with avo:
// e^x over the attention scores of one row (softmax) and SiLU(gate)·up
// (SwiGLU). They run once per score and per activation, where the scalar
// Go expf costs more than the arithmetic around it.
//
//	go generate ./accel/cpu
package main

import (
	"math"
	"strconv"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	ConstraintExpr("!purego")
	expSub()
	siluMul()
	Generate()
}

var consts = map[float32]Mem{}

// bcast returns a new register with v in every lane.
func bcast(v float32) VecVirtual {
	m, ok := consts[v]
	if !ok {
		m = ConstData("f32_"+strconv.Itoa(len(consts)), U32(math.Float32bits(v)))
		consts[v] = m
	}
	y := YMM()
	VBROADCASTSS(m, y)
	return y
}

// exp emits e^v for the 8 lanes of v, as accel/cpu's expf computes it
// (v = n·ln2 + r, e^r by a degree-6 Taylor polynomial, 2^n in the
// exponent bits; fused multiply-adds here, so within a few ulps of it),
// with v first clamped to [-87.3, 88] so that 2^n stays a normal float32:
// below, e^v < 1.2e-38 stands for 0; above, e^88 for +Inf. NaN stays NaN.
func exp(v VecVirtual) VecVirtual {
	// VMAXPS/VMINPS return their second source when either is NaN: v.
	VMAXPS(v, bcast(-87.3), v)
	VMINPS(v, bcast(88), v)
	magic := bcast(12582912) // 1.5·2^23: adding it rounds to an integer
	t := bcast(1.44269504088896341)
	VFMADD213PS(magic, v, t) // t = v·log2e + magic
	n := YMM()
	VSUBPS(magic, t, n)
	r := YMM()
	VMOVAPS(v, r)
	VFNMADD231PS(bcast(0.693359375), n, r)
	VFNMADD231PS(bcast(-2.12194440e-4), n, r)
	p := bcast(1.0 / 720)
	for _, c := range []float32{1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1, 1} {
		VFMADD213PS(bcast(c), r, p) // p = p·r + c
	}
	// 2^n: t's low bits hold n + 0x400000 (the magic's mantissa).
	VPSUBD(bcast(math.Float32frombits(0x4B400000-127)), t, t)
	VPSLLD(Imm(23), t, t)
	VMULPS(t, p, p)
	return p
}

// expSub sets x[i] = e^(x[i]-m) for n values, n a positive multiple of 8.
func expSub() {
	TEXT("expSubAVX2", NOSPLIT, "func(n int, x *float32, m float32)")
	Pragma("noescape")
	Doc("expSubAVX2 sets x[i] = e^(x[i]-m) for n values, n a positive multiple of 8.")
	n := Load(Param("n"), GP64())
	x := Load(Param("x"), GP64())
	mx := Load(Param("m"), XMM())
	m := YMM()
	VBROADCASTSS(mx, m)
	SHRQ(U8(3), n)
	Label("expsub_loop")
	v := YMM()
	VMOVUPS(Mem{Base: x}, v)
	VSUBPS(m, v, v)
	VMOVUPS(exp(v), Mem{Base: x})
	ADDQ(U32(32), x)
	DECQ(n)
	JNZ(LabelRef("expsub_loop"))
	VZEROUPPER()
	RET()
}

// siluMul sets dst[i] = g/(1+e^-g)·up[i], g = gate[i], for n > 0 values:
// whole steps of 8, then the last n%8 with masked loads and stores, so
// that every value goes through the same instructions wherever it falls
// in the buffer (SwiGLU's buffer holds a batch's rows side by side, and a
// row's results must not depend on its neighbours).
func siluMul() {
	TEXT("siluMulAVX2", NOSPLIT, "func(n int, dst, gate, up *float32)")
	Pragma("noescape")
	Doc("siluMulAVX2 sets dst[i] = g/(1+e^-g)·up[i], g = gate[i], for n > 0 values.")
	mask := GLOBL("tailMask", RODATA|NOPTR)
	for i := range 16 {
		v := uint32(0)
		if i < 8 {
			v = 0xffffffff
		}
		DATA(4*i, U32(v))
	}
	n := Load(Param("n"), GP64())
	dst := Load(Param("dst"), GP64())
	gate := Load(Param("gate"), GP64())
	up := Load(Param("up"), GP64())
	blocks := GP64()
	MOVQ(n, blocks)
	SHRQ(U8(3), blocks)
	JZ(LabelRef("silu_tail"))
	Label("silu_loop")
	g := YMM()
	VMOVUPS(Mem{Base: gate}, g)
	VMOVUPS(silu(g, Mem{Base: up}), Mem{Base: dst})
	ADDQ(U32(32), dst)
	ADDQ(U32(32), gate)
	ADDQ(U32(32), up)
	DECQ(blocks)
	JNZ(LabelRef("silu_loop"))
	Label("silu_tail")
	ANDQ(U32(7), n)
	JZ(LabelRef("silu_done"))
	// The mask of the first n%8 lanes: 8 ones then 8 zeros, read from
	// 8 - n%8 lanes in.
	NEGQ(n)
	p := GP64()
	LEAQ(mask.Offset(32), p)
	m := YMM()
	VMOVDQU(Mem{Base: p, Index: n, Scale: 4}, m)
	tg, tu := YMM(), YMM()
	VMASKMOVPS(Mem{Base: gate}, m, tg)
	VMASKMOVPS(Mem{Base: up}, m, tu)
	VMASKMOVPS(silu(tg, tu), m, Mem{Base: dst})
	Label("silu_done")
	VZEROUPPER()
	RET()
}

// silu returns g/(1+e^-g)·up in a new register, g's register reused.
func silu(g VecVirtual, up Op) VecVirtual {
	v := YMM()
	VXORPS(v, v, v)
	VSUBPS(g, v, v) // -g
	e := exp(v)
	VADDPS(bcast(1), e, e)
	VDIVPS(e, g, g)
	VMULPS(up, g, g)
	return g
}
