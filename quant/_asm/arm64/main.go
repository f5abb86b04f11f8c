// Command arm64 generates quant/dot_arm64.s, the NEON dot kernels.
//
//	cd quant/_asm && go run ./arm64 -out ../dot_arm64.s -stubs ../dot_decl_arm64.go
//
// Go's arm64 assembler knows few NEON instructions, so most are emitted as
// WORD directives with the GNU spelling in a comment; encodings come from
// the small functions below (Arm ARM, section C7). With -check, every
// encoded instruction is also assembled by aarch64-linux-gnu-as and the two
// encodings compared (a development aid: the build never needs binutils).
//
// Each integer kernel comes in two tiers: "neon" multiplies bytes with
// SMULL/SMLAL into 16-bit lanes and widens with SADDLP; "dot" uses SDOT
// (the ARMv8.2 dot-product extension). And each comes for one activation
// row (x1) and for a tile of four (x4), running the same instructions on
// each row, so a row's result does not depend on the tile.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Activation layouts (see quant/dot.go).
const (
	q8aSize  = 40
	q8kSize  = 292
	q8kBsums = 260
)

type gen struct {
	b     bytes.Buffer
	stubs bytes.Buffer
	words []word
}

type word struct {
	enc uint32
	gnu string
}

func (g *gen) f(format string, args ...any) { fmt.Fprintf(&g.b, "\t"+format+"\n", args...) }

func (g *gen) label(name string) { fmt.Fprintf(&g.b, "%s:\n", name) }

func (g *gen) word(enc uint32, format string, args ...any) {
	gnu := fmt.Sprintf(format, args...)
	g.words = append(g.words, word{enc, gnu})
	fmt.Fprintf(&g.b, "\tWORD $0x%08x // %s\n", enc, gnu)
}

func rrr(base uint32, d, n, m int) uint32 { return base | uint32(m)<<16 | uint32(n)<<5 | uint32(d) }

// Vector instructions, 128-bit unless the arrangement says otherwise.
func (g *gen) sdot(d, n, m int) {
	g.word(rrr(0x4e809400, d, n, m), "sdot v%d.4s, v%d.16b, v%d.16b", d, n, m)
}
func (g *gen) smull8(d, n, m int) {
	g.word(rrr(0x0e20c000, d, n, m), "smull v%d.8h, v%d.8b, v%d.8b", d, n, m)
}
func (g *gen) smull28(d, n, m int) {
	g.word(rrr(0x4e20c000, d, n, m), "smull2 v%d.8h, v%d.16b, v%d.16b", d, n, m)
}
func (g *gen) smlal8(d, n, m int) {
	g.word(rrr(0x0e208000, d, n, m), "smlal v%d.8h, v%d.8b, v%d.8b", d, n, m)
}
func (g *gen) smlal28(d, n, m int) {
	g.word(rrr(0x4e208000, d, n, m), "smlal2 v%d.8h, v%d.16b, v%d.16b", d, n, m)
}
func (g *gen) smull16(d, n, m int) {
	g.word(rrr(0x0e60c000, d, n, m), "smull v%d.4s, v%d.4h, v%d.4h", d, n, m)
}
func (g *gen) smlal16(d, n, m int) {
	g.word(rrr(0x0e608000, d, n, m), "smlal v%d.4s, v%d.4h, v%d.4h", d, n, m)
}
func (g *gen) smlal216(d, n, m int) {
	g.word(rrr(0x4e608000, d, n, m), "smlal2 v%d.4s, v%d.8h, v%d.8h", d, n, m)
}
func (g *gen) saddlp(d, n int) { g.word(rrr(0x4e602800, d, n, 0), "saddlp v%d.4s, v%d.8h", d, n) }
func (g *gen) sadalp(d, n int) { g.word(rrr(0x4e606800, d, n, 0), "sadalp v%d.4s, v%d.8h", d, n) }
func (g *gen) scvtf(d, n int)  { g.word(rrr(0x4e21d800, d, n, 0), "scvtf v%d.4s, v%d.4s", d, n) }
func (g *gen) fmla(d, n, m int) {
	g.word(rrr(0x4e20cc00, d, n, m), "fmla v%d.4s, v%d.4s, v%d.4s", d, n, m)
}
func (g *gen) fadd(d, n, m int) {
	g.word(rrr(0x4e20d400, d, n, m), "fadd v%d.4s, v%d.4s, v%d.4s", d, n, m)
}
func (g *gen) faddp(d, n, m int) {
	g.word(rrr(0x6e20d400, d, n, m), "faddp v%d.4s, v%d.4s, v%d.4s", d, n, m)
}
func (g *gen) faddpS(d, n int) { g.word(rrr(0x7e30d800, d, n, 0), "faddp s%d, v%d.2s", d, n) }

// fmlaElem: d.4s += n.4s · m.s[lane].
func (g *gen) fmlaElem(d, n, m, lane int) {
	enc := rrr(0x4f801000, d, n, m) | uint32(lane&1)<<21 | uint32(lane>>1)<<11
	g.word(enc, "fmla v%d.4s, v%d.4s, v%d.s[%d]", d, n, m, lane)
}

// fmlsElem: d.4s -= n.4s · m.s[lane].
func (g *gen) fmlsElem(d, n, m, lane int) {
	enc := rrr(0x4f805000, d, n, m) | uint32(lane&1)<<21 | uint32(lane>>1)<<11
	g.word(enc, "fmls v%d.4s, v%d.4s, v%d.s[%d]", d, n, m, lane)
}

// mlaElem: d.4s += n.4s · m.s[lane] (integer).
func (g *gen) mlaElem(d, n, m, lane int) {
	enc := rrr(0x6f800000, d, n, m) | uint32(lane&1)<<21 | uint32(lane>>1)<<11
	g.word(enc, "mla v%d.4s, v%d.4s, v%d.s[%d]", d, n, m, lane)
}
func (g *gen) fcvtl(d, n int)  { g.word(rrr(0x0e217800, d, n, 0), "fcvtl v%d.4s, v%d.4h", d, n) }
func (g *gen) fcvtl2(d, n int) { g.word(rrr(0x4e217800, d, n, 0), "fcvtl2 v%d.4s, v%d.8h", d, n) }
func (g *gen) sxtl8(d, n int)  { g.word(rrr(0x0f08a400, d, n, 0), "sxtl v%d.8h, v%d.8b", d, n) }
func (g *gen) sxtl28(d, n int) { g.word(rrr(0x4f08a400, d, n, 0), "sxtl2 v%d.8h, v%d.16b", d, n) }
func (g *gen) sxtl16(d, n int) { g.word(rrr(0x0f10a400, d, n, 0), "sxtl v%d.4s, v%d.4h", d, n) }
func (g *gen) sxtl216(d, n int) {
	g.word(rrr(0x4f10a400, d, n, 0), "sxtl2 v%d.4s, v%d.8h", d, n)
}
func (g *gen) uxtl8(d, n int)  { g.word(rrr(0x2f08a400, d, n, 0), "uxtl v%d.8h, v%d.8b", d, n) }
func (g *gen) uxtl28(d, n int) { g.word(rrr(0x6f08a400, d, n, 0), "uxtl2 v%d.8h, v%d.16b", d, n) }
func (g *gen) uxtl16(d, n int) { g.word(rrr(0x2f10a400, d, n, 0), "uxtl v%d.4s, v%d.4h", d, n) }
func (g *gen) uxtl216(d, n int) {
	g.word(rrr(0x6f10a400, d, n, 0), "uxtl2 v%d.4s, v%d.8h", d, n)
}
func (g *gen) addp16(d, n, m int) {
	g.word(rrr(0x4e60bc00, d, n, m), "addp v%d.8h, v%d.8h, v%d.8h", d, n, m)
}
func (g *gen) addv(d, n int) { g.word(rrr(0x4eb1b800, d, n, 0), "addv s%d, v%d.4s", d, n) }
func (g *gen) sub8(d, n, m int) {
	g.word(rrr(0x6e208400, d, n, m), "sub v%d.16b, v%d.16b, v%d.16b", d, n, m)
}
func (g *gen) sub32(d, n, m int) {
	g.word(rrr(0x6ea08400, d, n, m), "sub v%d.4s, v%d.4s, v%d.4s", d, n, m)
}

// shl32 shifts the 32-bit lanes of n left by sh (0 < sh < 32).
func (g *gen) shl32(d, n, sh int) {
	g.word(rrr(0x4f005400, d, n, 0)|uint32(32+sh)<<16, "shl v%d.4s, v%d.4s, #%d", d, n, sh)
}

// shl8 and ushr8 shift bytes (0 < sh < 8).
func (g *gen) shl8(d, n, sh int) {
	g.word(rrr(0x4f005400, d, n, 0)|uint32(8+sh)<<16, "shl v%d.16b, v%d.16b, #%d", d, n, sh)
}
func (g *gen) ushr8(d, n, sh int) {
	g.word(rrr(0x6f000400, d, n, 0)|uint32(16-sh)<<16, "ushr v%d.16b, v%d.16b, #%d", d, n, sh)
}
func (g *gen) and(d, n, m int) {
	g.word(rrr(0x4e201c00, d, n, m), "and v%d.16b, v%d.16b, v%d.16b", d, n, m)
}
func (g *gen) orr(d, n, m int) {
	g.word(rrr(0x4ea01c00, d, n, m), "orr v%d.16b, v%d.16b, v%d.16b", d, n, m)
}
func (g *gen) zero(d int) { g.word(rrr(0x6e201c00, d, d, d), "eor v%d.16b, v%d.16b, v%d.16b", d, d, d) }

// movi8 sets every byte of d to v.
func (g *gen) movi8(d int, v uint8) {
	enc := 0x4f00e400 | uint32(v>>5)<<16 | uint32(v&31)<<5 | uint32(d)
	g.word(enc, "movi v%d.16b, #%d", d, v)
}
func (g *gen) tbl(d, n, m int) {
	g.word(rrr(0x4e000000, d, n, m), "tbl v%d.16b, {v%d.16b}, v%d.16b", d, n, m)
}
func (g *gen) cmtst(d, n, m int) {
	g.word(rrr(0x4e208c00, d, n, m), "cmtst v%d.16b, v%d.16b, v%d.16b", d, n, m)
}

// dupW copies general register w<n> into every 32-bit lane of d.
func (g *gen) dupW(d, n int) { g.word(rrr(0x4e040c00, d, n, 0), "dup v%d.4s, w%d", d, n) }

// insD1 sets the high 64 bits of d to x<n> (the rest unchanged).
func (g *gen) insD1(d, n int) { g.word(rrr(0x4e181c00, d, n, 0), "mov v%d.d[1], x%d", d, n) }

// insD sets the low 64 bits of d to x<n> (the rest unchanged).
func (g *gen) insD(d, n int) { g.word(rrr(0x4e081c00, d, n, 0), "mov v%d.d[0], x%d", d, n) }

// Scalar floating point. Writing s<d> clears the rest of v<d>.
func (g *gen) fmovSW(d, n int) { g.word(rrr(0x1e270000, d, n, 0), "fmov s%d, w%d", d, n) }
func (g *gen) fcvtSH(d, n int) { g.word(rrr(0x1ee24000, d, n, 0), "fcvt s%d, h%d", d, n) }
func (g *gen) fmulS(d, n, m int) {
	g.word(rrr(0x1e200800, d, n, m), "fmul s%d, s%d, s%d", d, n, m)
}
func (g *gen) fsubS(d, n, m int) {
	g.word(rrr(0x1e203800, d, n, m), "fsub s%d, s%d, s%d", d, n, m)
}

// fmaddS: d = a + n·m.
func (g *gen) fmaddS(d, n, m, a int) {
	g.word(rrr(0x1f000000, d, n, m)|uint32(a)<<10, "fmadd s%d, s%d, s%d, s%d", d, n, m, a)
}
func (g *gen) scvtfS(d, n int)  { g.word(rrr(0x5e21d800, d, n, 0), "scvtf s%d, s%d", d, n) }
func (g *gen) scvtfSW(d, n int) { g.word(rrr(0x1e220000, d, n, 0), "scvtf s%d, w%d", d, n) }

// half loads the float16 in the low 16 bits of general register w<n> into
// s<d>.
func (g *gen) half(d, n int) {
	g.fmovSW(d, n)
	g.fcvtSH(d, d)
}

// ld1 loads len(regs) consecutive 16-byte registers from (Rp), advancing
// Rp when post is set.
func (g *gen) ld1(p int, post bool, regs ...int) {
	var rs []string
	for _, r := range regs {
		rs = append(rs, fmt.Sprintf("V%d.B16", r))
	}
	if post {
		g.f("VLD1.P %d(R%d), [%s]", 16*len(regs), p, strings.Join(rs, ", "))
	} else {
		g.f("VLD1 (R%d), [%s]", p, strings.Join(rs, ", "))
	}
}

// tier is the instruction set of a kernel: dot uses SDOT.
type tier struct {
	name string
	dot  bool
}

var tiers = []tier{{"NEON", false}, {"DOT", true}}

// dot32 sets the 4 int32 lanes of d to sums of the products of the bytes
// of ws and as (pairs of 16-byte registers; 32 products). small says the
// products are at most 31·127 in magnitude (so four fit a 16-bit lane);
// t1, t2 are scratch.
func (g *gen) dot32(tr tier, d int, ws, as [2]int, small bool, t1, t2 int) {
	if tr.dot {
		g.zero(d)
		g.sdot(d, ws[0], as[0])
		g.sdot(d, ws[1], as[1])
		return
	}
	g.smull8(t1, ws[0], as[0])
	g.smlal28(t1, ws[0], as[0])
	if small {
		g.smlal8(t1, ws[1], as[1])
		g.smlal28(t1, ws[1], as[1])
		g.saddlp(d, t1)
		return
	}
	g.smull8(t2, ws[1], as[1])
	g.smlal28(t2, ws[1], as[1])
	g.saddlp(d, t1)
	g.sadalp(d, t2)
}

// dot16 sets the int32 lanes of d to sums of the products of the bytes of
// w and a (16 products, each at most 63·127 in magnitude).
func (g *gen) dot16(tr tier, d, w, a, t int) {
	if tr.dot {
		g.zero(d)
		g.sdot(d, w, a)
		return
	}
	g.smull8(t, w, a)
	g.smlal28(t, w, a)
	g.saddlp(d, t)
}

// A shape is the tile a kernel computes: one weight row by one activation
// row (x1), one weight row by four activation rows (x4, prefill), or four
// weight rows by one activation row (w4, a matrix-vector product).
type shape struct {
	suffix  string
	rows    int
	weights bool // the rows of the tile are weight rows
}

var shapes = []shape{{"x1", 1, false}, {"x4", 4, false}, {"w4", 4, true}}

// tile emits a kernel of shape sh. Registers: R0 the block count; R1 the
// weight row (and R19..R21 the other weight rows of a w4 tile); R2 the
// activation row (and R3..R5 the others of an x4 tile); R6 a copy of the
// activation pointer for each row of a w4 tile; R7 out; R8 the stride;
// R9..R14 scratch. setup emits the constants, newRow(r) zeroes row r's
// sums. body(wr, ap, rows) emits one block step of the weight row in R<wr>
// with the activation rows in R<ap[i]>, which are rows[i] of the tile; it
// advances every pointer it is given by one block. result(r) leaves row
// r's sum in S0. A w4 tile runs the one-row body once per weight row and an
// x4 tile runs the one-row instructions on each activation row, so every
// shape gives a row the same result bit for bit.
func (g *gen) tile(name, doc string, sh shape, asize int, setup func(), newRow func(r int), body func(wr int, ap, rows []int), result func(r int)) {
	fmt.Fprintf(&g.stubs, "\n// %s\n//\n//go:noescape\n", doc)
	switch {
	case sh.rows == 1:
		fmt.Fprintf(&g.stubs, "func %s(nb int, w, a *byte) float32\n", name)
		fmt.Fprintf(&g.b, "\n// func %s(nb int, w, a *byte) float32\nTEXT ·%s(SB), NOSPLIT, $0-28\n", name, name)
		g.f("MOVD nb+0(FP), R0")
		g.f("MOVD w+8(FP), R1")
		g.f("MOVD a+16(FP), R2")
	case sh.weights:
		fmt.Fprintf(&g.stubs, "func %s(nb int, w *byte, wstride int, a *byte, out *float32)\n", name)
		fmt.Fprintf(&g.b, "\n// func %s(nb int, w *byte, wstride int, a *byte, out *float32)\nTEXT ·%s(SB), NOSPLIT, $0-40\n", name, name)
		g.f("MOVD nb+0(FP), R0")
		g.f("MOVD w+8(FP), R1")
		g.f("MOVD wstride+16(FP), R8")
		g.f("ADD R8, R1, R19")
		g.f("ADD R8, R19, R20")
		g.f("ADD R8, R20, R21")
		g.f("MOVD a+24(FP), R2")
		g.f("MOVD out+32(FP), R7")
	default:
		fmt.Fprintf(&g.stubs, "func %s(nb int, w, a *byte, stride int, out *float32)\n", name)
		fmt.Fprintf(&g.b, "\n// func %s(nb int, w, a *byte, stride int, out *float32)\nTEXT ·%s(SB), NOSPLIT, $0-40\n", name, name)
		g.f("MOVD nb+0(FP), R0")
		g.f("MOVD w+8(FP), R1")
		g.f("MOVD a+16(FP), R2")
		g.f("MOVD stride+24(FP), R8")
		for r := 1; r < sh.rows; r++ {
			g.f("ADD R8, R%d, R%d", 1+r, 2+r)
		}
		g.f("MOVD out+32(FP), R7")
	}
	if setup != nil {
		setup()
	}
	rows := make([]int, sh.rows)
	for r := range rows {
		rows[r] = r
		newRow(r)
	}
	g.label(name + "_loop")
	if sh.weights {
		for r, wr := range []int{1, 19, 20, 21} {
			g.f("MOVD R2, R6")
			body(wr, []int{6}, rows[r:r+1])
		}
		g.f("ADD $%d, R2", asize)
	} else {
		ap := make([]int, sh.rows)
		for r := range ap {
			ap[r] = 2 + r
		}
		body(1, ap, rows)
	}
	g.f("SUBS $1, R0, R0")
	g.f("BNE %s_loop", name)
	for r := range rows {
		result(r)
		if sh.rows == 1 {
			g.f("FMOVS F0, ret+24(FP)")
		} else {
			g.f("FMOVS F0, %d(R7)", 4*r)
		}
	}
	g.f("RET")
}

// hsum adds the 4 lanes of v<n> into s<d>.
func (g *gen) hsum(d, n int) {
	g.faddp(n, n, n)
	g.faddpS(d, n)
}

type block32 struct {
	name   string
	size   int
	qh     bool
	signed bool
	min    bool // q4_1/q5_1: a minimum instead of an offset
	offset int  // q4_0: 8, q5_0: 16
}

var blocks32 = []block32{
	{name: "Q4_0", size: 18, offset: 8},
	{name: "Q4_1", size: 20, min: true},
	{name: "Q5_0", size: 22, qh: true, offset: 16},
	{name: "Q5_1", size: 24, qh: true, min: true},
	{name: "Q8_0", size: 34, signed: true},
}

// Registers of the 32-block kernels: V0,V1 weights; V2,V3 da, sa; V4,V5
// activations; V6..V8 scratch; V9 scale; V10 d; V11 m; V12..V14 fifth bits;
// V16+r accumulators; V20+r offset or minimum sums (lane 0); V26 the
// offset; V27 bit masks; V28, V29 byte selections; V30 0x10; V31 0x0f.
func (g *gen) dot32Kernel(k block32, tr tier, sh shape) {
	name := fmt.Sprintf("dot%s%s%s", k.name, tr.name, sh.suffix)
	setup := func() {
		g.movi8(31, 0x0f)
		if k.qh {
			g.movi8(30, 0x10)
			g.f("MOVD $q5Sel<>(SB), R9")
			g.ld1(9, false, 27, 28, 29)
		}
		if k.offset != 0 {
			g.f("MOVD $-%d, R9", k.offset)
			g.scvtfSW(26, 9)
		}
	}
	newRow := func(r int) {
		g.zero(16 + r)
		g.zero(20 + r)
	}
	body := func(wr int, ap, rows []int) {
		if k.min {
			g.f("MOVWU.P 4(R%d), R9", wr)
			g.half(10, 9)
			g.f("LSR $16, R9, R9")
			g.half(11, 9)
		} else {
			g.f("MOVHU.P 2(R%d), R9", wr)
			g.half(10, 9)
		}
		if k.qh {
			g.f("MOVWU.P 4(R%d), R9", wr)
			g.dupW(12, 9)
			g.tbl(13, 12, 28)
			g.tbl(14, 12, 29)
			g.cmtst(13, 13, 27)
			g.cmtst(14, 14, 27)
			g.and(13, 13, 30)
			g.and(14, 14, 30)
		}
		if k.signed {
			g.ld1(wr, true, 0, 1)
		} else {
			g.ld1(wr, true, 0)
			g.ushr8(1, 0, 4)
			g.and(0, 0, 31)
			if k.qh {
				g.orr(0, 0, 13)
				g.orr(1, 1, 14)
			}
		}
		for i, r := range rows {
			p := ap[i]
			g.f("FMOVS (R%d), F2", p)
			g.f("FMOVS 4(R%d), F3", p)
			g.f("ADD $8, R%d", p)
			g.ld1(p, true, 4, 5)
			g.dot32(tr, 6, [2]int{0, 1}, [2]int{4, 5}, !k.signed, 7, 8)
			g.scvtf(6, 6)
			g.fmulS(9, 10, 2)
			g.fmlaElem(16+r, 6, 9, 0)
			switch {
			case k.min:
				g.fmaddS(20+r, 11, 3, 20+r)
			case k.offset != 0:
				g.fmaddS(20+r, 10, 3, 20+r)
			}
		}
	}
	result := func(r int) {
		g.hsum(0, 16+r)
		switch {
		case k.min:
			g.word(rrr(0x1e202800, 0, 0, 20+r), "fadd s0, s0, s%d", 20+r)
		case k.offset != 0:
			g.fmaddS(0, 20+r, 26, 0)
		}
	}
	g.tile(name, fmt.Sprintf("%s is the %s × Q8A kernel for nb blocks.", name, k.name), sh, q8aSize, setup, newRow, body, result)
}

// q4KKernel is the q4_K (or q5_K) × Q8_K kernel. Per super-block: the
// 6-bit scales and minimums unpacked in general registers; each 32-element
// sub-block's products weighted by its scale (MLA by element) into int32
// lanes, scaled by d·da; then the minimum term dmin·da·Σ m_j·(sum of
// sub-block j's activations), from the Q8_K block sums, subtracted.
// Registers: V0 0x0f; V1 0x10; V2, V3 scales 0..3, 4..7 as int32; V4..V7
// activations (and scratch at the end of a super-block); V8 products; V9
// scratch; V10 d; V11 dmin; V12, V13 high nibbles; V14, V15 low nibbles;
// V16+r accumulators; V20 minimums as int16; V21, V22 scratch; V23 d·da;
// V24+r int32 sums; V30, V31 fifth bits (q5_K).
func (g *gen) q4KKernel(q5 bool, tr tier, sh shape) {
	tname, size := "Q4_K", 144
	if q5 {
		tname, size = "Q5_K", 176
	}
	name := fmt.Sprintf("dot%s%s%s", tname, tr.name, sh.suffix)
	setup := func() {
		g.movi8(0, 0x0f)
		g.movi8(1, 0x10)
	}
	body := func(wr int, ap, rows []int) {
		g.f("MOVD R%d, R15", wr)
		g.f("MOVWU (R15), R9")
		g.half(10, 9)
		g.f("LSR $16, R9, R9")
		g.half(11, 9)
		// The 6-bit scales and minimums, as in the amd64 kernel: R12 gets
		// sc0..7, R13 m0..7.
		g.f("MOVD 4(R15), R9")
		g.f("MOVWU 12(R15), R10")
		g.f("AND $0x3f3f3f3f3f3f3f3f, R9, R11")
		g.f("LSR $2, R9, R9")
		g.f("AND $0x3030303030303030, R9, R9")
		g.f("AND $0x0f0f0f0f, R10, R12")
		g.f("LSR $4, R10, R10")
		g.f("AND $0x0f0f0f0f, R10, R10")
		g.f("ORR R10<<32, R12, R12")
		g.f("ORR R12, R9, R9")
		g.f("AND $0xffffffff, R11, R12")
		g.f("ORR R9<<32, R12, R12")
		g.f("LSR $32, R11, R13")
		g.f("AND $0xffffffff00000000, R9, R14")
		g.f("ORR R14, R13, R13")
		g.insD(2, 12)
		g.uxtl8(2, 2)
		g.uxtl216(3, 2)
		g.uxtl16(2, 2)
		g.insD(20, 13)
		g.uxtl8(20, 20)
		for i, r := range rows {
			g.f("ADD $4, R%d", ap[i])
			g.zero(24 + r)
		}
		if q5 {
			g.f("ADD $16, R15, R9")
			g.ld1(9, false, 30, 31)
			g.f("ADD $48, R15, R9")
		} else {
			g.f("ADD $16, R15, R9")
		}
		for j := range 4 {
			g.ld1(9, true, 12, 13)
			g.and(14, 12, 0)
			g.and(15, 13, 0)
			g.ushr8(12, 12, 4)
			g.ushr8(13, 13, 4)
			if q5 { // bits 2j and 2j+1 of qh to bit 4
				for i, v := range [][2]int{{14, 15}, {12, 13}} {
					sb := 2*j + i
					for h, reg := range v {
						src := 30 + h
						switch {
						case sb < 4:
							g.shl8(8, src, 4-sb)
						case sb > 4:
							g.ushr8(8, src, sb-4)
						default:
							g.and(8, src, src)
						}
						g.and(8, 8, 1)
						g.orr(reg, reg, 8)
					}
				}
			}
			for i, r := range rows {
				p := ap[i]
				g.ld1(p, true, 4, 5, 6, 7)
				g.dot32(tr, 8, [2]int{14, 15}, [2]int{4, 5}, true, 21, 22)
				g.mlaElem(24+r, 8, 2+j/2, (2*j)%4)
				g.dot32(tr, 8, [2]int{12, 13}, [2]int{6, 7}, true, 21, 22)
				g.mlaElem(24+r, 8, 2+j/2, (2*j+1)%4)
			}
		}
		for i, r := range rows {
			p := ap[i]
			// Rp is at the block sums now, 260 bytes into the Q8_K block.
			g.ld1(p, false, 5, 6)
			g.addp16(5, 5, 6) // sums of 32
			g.smull16(6, 5, 20)
			g.smlal216(6, 5, 20)
			g.scvtf(6, 6)
			g.f("SUB $%d, R%d, R9", q8kBsums, p)
			g.f("FMOVS (R9), F7")
			g.fmulS(9, 11, 7)  // dmin·da
			g.fmulS(23, 10, 7) // d·da
			g.scvtf(24+r, 24+r)
			g.fmlaElem(16+r, 24+r, 23, 0)
			g.fmlsElem(16+r, 6, 9, 0)
			g.f("ADD $32, R%d", p)
		}
		g.f("ADD $%d, R%d", size, wr)
	}
	g.tile(name, fmt.Sprintf("%s is the %s × Q8_K kernel for nb super-blocks.", name, tname), sh, q8kSize, setup, func(r int) { g.zero(16 + r) }, body, func(r int) { g.hsum(0, 16+r) })
}

// q6KKernel is the q6_K × Q8_K kernel: the weights unsigned (0..63), the
// offset -32 applied through the block sums. Registers: V0 0x0f; V1 0x30;
// V2..V5 scales as int32; V6..V9 low bits; V10, V11 high bits; V12, V13
// weights; V14, V15 activations; V16+r accumulators; V20+r d·da (lane 0);
// V24+r int32 sums; V28..V31 scratch.
func (g *gen) q6KKernel(tr tier, sh shape) {
	name := fmt.Sprintf("dotQ6_K%s%s", tr.name, sh.suffix)
	setup := func() {
		g.movi8(0, 0x0f)
		g.movi8(1, 0x30)
	}
	body := func(wr int, ap, rows []int) {
		g.f("MOVD R%d, R15", wr)
		g.f("MOVHU 208(R15), R9")
		g.half(30, 9)
		g.f("ADD $192, R15, R9")
		g.ld1(9, false, 2)
		g.sxtl8(3, 2)
		g.sxtl28(5, 2)
		for i, r := range rows {
			p := ap[i]
			g.f("FMOVS (R%d), F%d", p, 20+r)
			g.fmulS(20+r, 30, 20+r)
			g.f("ADD $%d, R%d, R9", q8kBsums, p)
			g.ld1(9, false, 12, 13)
			g.smull16(28, 12, 3)
			g.smlal216(28, 12, 3)
			g.smlal16(28, 13, 5)
			g.smlal216(28, 13, 5)
			g.shl32(28, 28, 5)
			g.zero(24 + r)
			g.sub32(24+r, 24+r, 28) // -32·Σ sc·bsum
			g.f("ADD $4, R%d", p)
		}
		g.sxtl16(2, 3)
		g.sxtl216(3, 3)
		g.sxtl16(4, 5)
		g.sxtl216(5, 5)
		for h := range 2 {
			g.f("ADD $%d, R15, R9", 64*h)
			g.ld1(9, false, 6, 7, 8, 9)
			g.f("ADD $%d, R15, R9", 128+32*h)
			g.ld1(9, false, 10, 11)
			for k := range 4 {
				for i := range 2 {
					q, ql, qh := 12+i, 6+2*(k%2)+i, 10+i
					if k < 2 {
						g.and(q, ql, 0)
					} else {
						g.ushr8(q, ql, 4)
					}
					switch k {
					case 0:
						g.shl8(31, qh, 4)
					case 1:
						g.shl8(31, qh, 2)
					case 2:
						g.and(31, qh, qh)
					case 3:
						g.ushr8(31, qh, 2)
					}
					g.and(31, 31, 1)
					g.orr(q, q, 31)
				}
				for i, r := range rows {
					g.ld1(ap[i], true, 14, 15)
					s := 8*h + 2*k
					g.dot16(tr, 28, 12, 14, 30)
					g.mlaElem(24+r, 28, 2+s/4, s%4)
					g.dot16(tr, 28, 13, 15, 30)
					g.mlaElem(24+r, 28, 2+(s+1)/4, (s+1)%4)
				}
			}
		}
		for i, r := range rows {
			g.scvtf(24+r, 24+r)
			g.fmlaElem(16+r, 24+r, 20+r, 0)
			g.f("ADD $32, R%d", ap[i])
		}
		g.f("ADD $%d, R%d", 210, wr)
	}
	g.tile(name, fmt.Sprintf("%s is the Q6_K × Q8_K kernel for nb super-blocks.", name), sh, q8kSize, setup, func(r int) { g.zero(16 + r) }, body, func(r int) { g.hsum(0, 16+r) })
}

// q2KKernel is the q2_K × Q8_K kernel: x = d·sc·q - dmin·m per sub-block
// of 16, q in 0..3; the minimum term from the Q8_K block sums at the end of
// each super-block. Registers: V0 0x0f; V1 0x03; V2..V5 scales as int32;
// V6, V7 the quants of a half; V8, V9 minimums as int16; V10 d; V11 dmin;
// V12, V13 weights; V14, V15 activations; V16+r accumulators; V24+r int32
// sums; V28..V31 scratch.
func (g *gen) q2KKernel(tr tier, sh shape) {
	name := fmt.Sprintf("dotQ2_K%s%s", tr.name, sh.suffix)
	setup := func() {
		g.movi8(0, 0x0f)
		g.movi8(1, 0x03)
	}
	body := func(wr int, ap, rows []int) {
		g.f("MOVD R%d, R15", wr)
		g.f("MOVWU 80(R15), R9")
		g.half(10, 9)
		g.f("LSR $16, R9, R9")
		g.half(11, 9)
		g.ld1(15, false, 6)
		g.ushr8(7, 6, 4)
		g.and(6, 6, 0)
		g.uxtl8(8, 7)
		g.uxtl28(9, 7)
		g.uxtl8(3, 6)
		g.uxtl28(5, 6)
		g.uxtl16(2, 3)
		g.uxtl216(3, 3)
		g.uxtl16(4, 5)
		g.uxtl216(5, 5)
		for i, r := range rows {
			g.f("ADD $4, R%d", ap[i])
			g.zero(24 + r)
		}
		for h := range 2 {
			g.f("ADD $%d, R15, R9", 16+32*h)
			g.ld1(9, false, 6, 7)
			for k := range 4 {
				for i := range 2 {
					if k == 0 {
						g.and(12+i, 6+i, 1)
					} else {
						g.ushr8(12+i, 6+i, 2*k)
						g.and(12+i, 12+i, 1)
					}
				}
				for i, r := range rows {
					g.ld1(ap[i], true, 14, 15)
					s := 8*h + 2*k
					g.dot16(tr, 28, 12, 14, 29)
					g.mlaElem(24+r, 28, 2+s/4, s%4)
					g.dot16(tr, 28, 13, 15, 29)
					g.mlaElem(24+r, 28, 2+(s+1)/4, (s+1)%4)
				}
			}
		}
		for i, r := range rows {
			p := ap[i]
			// Rp is at the block sums now, 260 bytes into the Q8_K block.
			g.ld1(p, false, 30, 31)
			g.smull16(28, 30, 8)
			g.smlal216(28, 30, 8)
			g.smlal16(28, 31, 9)
			g.smlal216(28, 31, 9)
			g.scvtf(28, 28)
			g.f("SUB $%d, R%d, R9", q8kBsums, p)
			g.f("FMOVS (R9), F29")
			g.fmulS(30, 11, 29) // dmin·da
			g.fmulS(31, 10, 29) // d·da
			g.scvtf(24+r, 24+r)
			g.fmlaElem(16+r, 24+r, 31, 0)
			g.fmlsElem(16+r, 28, 30, 0)
			g.f("ADD $32, R%d", p)
		}
		g.f("ADD $%d, R%d", 84, wr)
	}
	g.tile(name, fmt.Sprintf("%s is the Q2_K × Q8_K kernel for nb super-blocks.", name), sh, q8kSize, setup, func(r int) { g.zero(16 + r) }, body, func(r int) { g.hsum(0, 16+r) })
}

// q3KKernel is the q3_K × Q8_K kernel: x = d·sc·q per sub-block of 16, q =
// (2 low bits | high bit << 2) - 4, used unsigned (0..7) with the offset
// applied through the block sums as in q6KKernel. Registers: V0 0x03; V1
// 0x04; V2..V5 scales as int32; V6, V7 the low bits of a half; V8, V9 the
// high bits; V10 d; V11 scratch; V12, V13 weights; V14, V15 activations;
// V16+r accumulators; V20+r d·da (lane 0); V24+r int32 sums; V28..V31
// scratch.
func (g *gen) q3KKernel(tr tier, sh shape) {
	name := fmt.Sprintf("dotQ3_K%s%s", tr.name, sh.suffix)
	setup := func() {
		g.movi8(0, 0x03)
		g.movi8(1, 0x04)
	}
	body := func(wr int, ap, rows []int) {
		g.f("MOVD R%d, R15", wr)
		g.f("MOVHU 108(R15), R9")
		g.half(10, 9)
		// The scales, as in the amd64 kernel: the low 4 bits of sc_j are
		// nibble j/8 of byte j%8, the high 2 bits are bits 2(j/4) of byte
		// 8 + j%4; sc_j is that minus 32. R11 gets sc0..7 + 32, R12 sc8..15 + 32.
		g.f("MOVD 96(R15), R9")
		g.f("MOVWU 104(R15), R10")
		g.f("AND $0x0f0f0f0f0f0f0f0f, R9, R11")
		g.f("LSR $4, R9, R9")
		g.f("AND $0x0f0f0f0f0f0f0f0f, R9, R12")
		g.f("AND $0x03030303, R10, R13")
		g.f("LSR $2, R10, R14")
		g.f("AND $0x03030303, R14, R14")
		g.f("ORR R14<<32, R13, R13")
		g.f("ORR R13<<4, R11, R11")
		g.f("LSR $4, R10, R13")
		g.f("AND $0x03030303, R13, R13")
		g.f("LSR $6, R10, R14")
		g.f("AND $0x03030303, R14, R14")
		g.f("ORR R14<<32, R13, R13")
		g.f("ORR R13<<4, R12, R12")
		g.insD(2, 11)
		g.insD1(2, 12)
		g.movi8(11, 0x20)
		g.sub8(2, 2, 11)
		g.sxtl8(3, 2)
		g.sxtl28(5, 2)
		for i, r := range rows {
			p := ap[i]
			g.f("FMOVS (R%d), F%d", p, 20+r)
			g.fmulS(20+r, 10, 20+r)
			g.f("ADD $%d, R%d, R9", q8kBsums, p)
			g.ld1(9, false, 12, 13)
			g.smull16(28, 12, 3)
			g.smlal216(28, 12, 3)
			g.smlal16(28, 13, 5)
			g.smlal216(28, 13, 5)
			g.shl32(28, 28, 2)
			g.zero(24 + r)
			g.sub32(24+r, 24+r, 28) // -4·Σ sc·bsum
			g.f("ADD $4, R%d", p)
		}
		g.sxtl16(2, 3)
		g.sxtl216(3, 3)
		g.sxtl16(4, 5)
		g.sxtl216(5, 5)
		g.ld1(15, false, 8, 9)
		for h := range 2 {
			g.f("ADD $%d, R15, R9", 32+32*h)
			g.ld1(9, false, 6, 7)
			for k := range 4 {
				for i := range 2 {
					q := 12 + i
					if k == 0 {
						g.and(q, 6+i, 0)
					} else {
						g.ushr8(q, 6+i, 2*k)
						g.and(q, q, 0)
					}
					switch b := 4*h + k; {
					case b < 2:
						g.shl8(31, 8+i, 2-b)
					case b > 2:
						g.ushr8(31, 8+i, b-2)
					default:
						g.and(31, 8+i, 8+i)
					}
					g.and(31, 31, 1)
					g.orr(q, q, 31)
				}
				for i, r := range rows {
					g.ld1(ap[i], true, 14, 15)
					s := 8*h + 2*k
					g.dot16(tr, 28, 12, 14, 30)
					g.mlaElem(24+r, 28, 2+s/4, s%4)
					g.dot16(tr, 28, 13, 15, 30)
					g.mlaElem(24+r, 28, 2+(s+1)/4, (s+1)%4)
				}
			}
		}
		for i, r := range rows {
			g.scvtf(24+r, 24+r)
			g.fmlaElem(16+r, 24+r, 20+r, 0)
			g.f("ADD $32, R%d", ap[i])
		}
		g.f("ADD $%d, R%d", 110, wr)
	}
	g.tile(name, fmt.Sprintf("%s is the Q3_K × Q8_K kernel for nb super-blocks.", name), sh, q8kSize, setup, func(r int) { g.zero(16 + r) }, body, func(r int) { g.hsum(0, 16+r) })
}

// floatKernel is the float32, float16 or bfloat16 × float32 kernel over n
// values, n a positive multiple of 4: four accumulators over 16 values at a
// time, then 4 at a time.
func (g *gen) floatKernel(kind string) {
	name := "dot" + kind + "NEON"
	doc := fmt.Sprintf("%s is the %s × float32 kernel for n values, n a positive multiple of 4.", name, strings.ToLower(kind))
	fmt.Fprintf(&g.stubs, "\n// %s\n//\n//go:noescape\nfunc %s(n int, w, a *byte) float32\n", doc, name)
	fmt.Fprintf(&g.b, "\n// func %s(n int, w, a *byte) float32\nTEXT ·%s(SB), NOSPLIT, $0-28\n", name, name)
	// widen converts 4 (hi: the upper 4) 16-bit floats of n to float32 in d.
	widen := func(d, n int, hi bool) {
		switch {
		case kind == "F16" && !hi:
			g.fcvtl(d, n)
		case kind == "F16":
			g.fcvtl2(d, n)
		case !hi: // bfloat16: the top half of a float32
			g.word(rrr(0x2e613800, d, n, 0), "shll v%d.4s, v%d.4h, #16", d, n)
		default:
			g.word(rrr(0x6e613800, d, n, 0), "shll2 v%d.4s, v%d.8h, #16", d, n)
		}
	}
	g.f("MOVD n+0(FP), R0")
	g.f("MOVD w+8(FP), R1")
	g.f("MOVD a+16(FP), R2")
	for i := range 4 {
		g.zero(16 + i)
	}
	g.f("LSR $4, R0, R9")
	g.f("CBZ R9, %s_tail", name)
	g.label(name + "_loop16")
	if kind == "F32" {
		g.ld1(1, true, 0, 1, 2, 3)
	} else {
		g.ld1(1, true, 8, 9)
		widen(0, 8, false)
		widen(1, 8, true)
		widen(2, 9, false)
		widen(3, 9, true)
	}
	g.ld1(2, true, 4, 5, 6, 7)
	for i := range 4 {
		g.fmla(16+i, i, 4+i)
	}
	g.f("SUBS $1, R9, R9")
	g.f("BNE %s_loop16", name)
	g.label(name + "_tail")
	g.f("AND $15, R0, R9")
	g.f("LSR $2, R9, R9")
	g.f("CBZ R9, %s_done", name)
	g.label(name + "_loop4")
	if kind == "F32" {
		g.ld1(1, true, 0)
	} else {
		g.f("FMOVD.P 8(R1), F8")
		widen(0, 8, false)
	}
	g.ld1(2, true, 4)
	g.fmla(16, 0, 4)
	g.f("SUBS $1, R9, R9")
	g.f("BNE %s_loop4", name)
	g.label(name + "_done")
	g.fadd(16, 16, 17)
	g.fadd(18, 18, 19)
	g.fadd(16, 16, 18)
	g.hsum(0, 16)
	g.f("FMOVS F0, ret+24(FP)")
	g.f("RET")
}

func main() {
	out := flag.String("out", "../dot_arm64.s", "assembly output")
	stubs := flag.String("stubs", "../dot_decl_arm64.go", "Go declarations output")
	check := flag.Bool("check", false, "compare every encoding with aarch64-linux-gnu-as")
	flag.Parse()

	var g gen
	const header = "// Code generated by command: go run ./arm64 -out ../dot_arm64.s -stubs ../dot_decl_arm64.go. DO NOT EDIT.\n\n//go:build !purego\n\n"
	g.b.WriteString(header + "#include \"textflag.h\"\n")
	// q5Sel: the bit of each byte to test, then two TBL selections spreading
	// the 4 bytes of qh (byte j/8 to byte j, then bytes 2, 3 for the high
	// half).
	sel := []byte{}
	for j := range 16 {
		sel = append(sel, byte(1)<<(j%8))
	}
	for j := range 32 {
		sel = append(sel, byte(j/8))
	}
	for i := 0; i < len(sel); i += 8 {
		var v uint64
		for b := range 8 {
			v |= uint64(sel[i+b]) << (8 * b)
		}
		fmt.Fprintf(&g.b, "DATA q5Sel<>+%d(SB)/8, $0x%016x\n", i, v)
	}
	fmt.Fprintf(&g.b, "GLOBL q5Sel<>(SB), RODATA|NOPTR, $%d\n", len(sel))
	g.stubs.WriteString(header + "package quant\n")

	for _, tr := range tiers {
		for _, sh := range shapes {
			for _, k := range blocks32 {
				g.dot32Kernel(k, tr, sh)
			}
			if sh.weights {
				continue // as on amd64, MatVec runs x1 for the k-quants
			}
			g.q4KKernel(false, tr, sh)
			g.q4KKernel(true, tr, sh)
			g.q6KKernel(tr, sh)
			g.q2KKernel(tr, sh)
			g.q3KKernel(tr, sh)
		}
	}
	for _, kind := range []string{"F32", "F16", "BF16"} {
		g.floatKernel(kind)
	}

	if err := os.WriteFile(*out, g.b.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*stubs, g.stubs.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	if *check {
		if err := checkWords(g.words); err != nil {
			log.Fatal(err)
		}
	}
}

// checkWords assembles every encoded instruction with GNU as and compares.
func checkWords(words []word) error {
	seen := map[string]uint32{}
	var src strings.Builder
	var order []string
	for _, w := range words {
		if _, ok := seen[w.gnu]; ok {
			continue
		}
		seen[w.gnu] = w.enc
		order = append(order, w.gnu)
		src.WriteString(w.gnu + "\n")
	}
	dir, err := os.MkdirTemp("", "arm64check")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, o := filepath.Join(dir, "a.s"), filepath.Join(dir, "a.o")
	if err := os.WriteFile(s, []byte(".arch armv8.2-a+dotprod\n"+src.String()), 0o644); err != nil {
		return err
	}
	if b, err := exec.Command("aarch64-linux-gnu-as", "-o", o, s).CombinedOutput(); err != nil {
		return fmt.Errorf("as: %v\n%s", err, b)
	}
	b, err := exec.Command("aarch64-linux-gnu-objdump", "-d", o).Output()
	if err != nil {
		return err
	}
	var encs []uint32
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasSuffix(f[0], ":") && len(f[1]) == 8 {
			v, err := strconv.ParseUint(f[1], 16, 32)
			if err == nil {
				encs = append(encs, uint32(v))
			}
		}
	}
	if len(encs) != len(order) {
		return fmt.Errorf("objdump gave %d instructions, want %d", len(encs), len(order))
	}
	bad := 0
	for i, gnu := range order {
		if encs[i] != seen[gnu] {
			fmt.Printf("%-40s ours %08x, as %08x\n", gnu, seen[gnu], encs[i])
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d encodings differ", bad)
	}
	fmt.Printf("%d distinct encodings checked\n", len(order))
	return nil
}
