// Command _asm generates quant/dot_amd64.s, the AVX2 dot kernels, with avo.
// It lives in its own module so that avo is not a dependency of edged.
//
//	cd quant/_asm && go run . -out ../dot_amd64.s -stubs ../dot_decl_amd64.go -pkg quant
//
// (go generate ./quant does the same.) Every kernel is generated twice from
// one function: for one activation row (x1) and for a tile of four (x4).
// Both run the same instructions on each row in the same order, so a row's
// result is the same bit for bit whichever way it was computed.
package main

import (
	"encoding/binary"
	"fmt"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Activation layouts (see quant/dot.go).
const (
	q8aSize  = 40 // Q8A block: d f32 | s f32 | qs[32]
	q8aQs    = 8
	q8kSize  = 292 // Q8_K block: d f32 | qs[256] | bsums[16] int16
	q8kQs    = 4
	q8kBsums = 260
)

var (
	c03, c04, c20, c0F, c10, c30, ones16, hiShift, q5Shuf, q5Bits, wordBcast, q6Order, absMask, permPack, i127 Mem
)

func bytes32(name string, f func(i int) byte) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	var b [32]byte
	for i := range b {
		b[i] = f(i)
	}
	for i := 0; i < 32; i += 8 {
		DATA(i, U64(binary.LittleEndian.Uint64(b[i:])))
	}
	return m
}

func constants() {
	c03 = bytes32("c03", func(int) byte { return 0x03 })
	c04 = bytes32("c04", func(int) byte { return 0x04 })
	c20 = bytes32("c20", func(int) byte { return 0x20 })
	c0F = bytes32("c0F", func(int) byte { return 0x0f })
	c10 = bytes32("c10", func(int) byte { return 0x10 })
	c30 = bytes32("c30", func(int) byte { return 0x30 })
	ones16 = bytes32("ones16", func(i int) byte { return byte(1 - i%2) })
	// hiShift, as VPSRLVQ's counts, shifts the upper 128-bit lane right
	// by 4 bits and leaves the lower one: a broadcast block of nibbles
	// becomes low nibbles below, high ones above (see weights4).
	hiShift = bytes32("hiShift", func(i int) byte {
		if i == 16 || i == 24 {
			return 4
		}
		return 0
	})
	// q5Shuf spreads the 4 bytes of a broadcast qh so that byte j of the
	// result holds qh byte j/8; q5Bits then selects bit j%8 of it.
	q5Shuf = bytes32("q5Shuf", func(i int) byte { return byte(i / 8) })
	q5Bits = bytes32("q5Bits", func(i int) byte { return 1 << (i % 8) })
	// wordBcast+32k is a VPSHUFB mask copying 16-bit word k of each 128-bit
	// lane to the whole lane.
	wordBcast = GLOBL("wordBcast", RODATA|NOPTR)
	for k := range 8 {
		for i := 0; i < 32; i += 2 {
			DATA(32*k+i, U16(uint16(2*k)|uint16(2*k+1)<<8))
		}
	}
	// q6Order puts the even q6_K scales in bytes 0..7 and the odd ones in
	// 8..15.
	q6Order = GLOBL("q6Order", RODATA|NOPTR)
	for i := range 16 {
		DATA(i, U8(uint8(2*(i%8)+i/8)))
	}
	absMask = GLOBL("absMask", RODATA|NOPTR)
	for i := 0; i < 32; i += 4 {
		DATA(i, U32(0x7fffffff))
	}
	i127 = GLOBL("i127", RODATA|NOPTR)
	for i := 0; i < 32; i += 4 {
		DATA(i, U32(127))
	}
	permPack = GLOBL("permPack", RODATA|NOPTR)
	for i, v := range []uint32{0, 4, 1, 5, 2, 6, 3, 7} {
		DATA(4*i, U32(v))
	}
}

var f32Consts = map[float32]Mem{}

func f32Const(v float32) Mem {
	if m, ok := f32Consts[v]; ok {
		return m
	}
	// As bits: avo prints F32(127) as $(127), which the assembler stores
	// as an integer.
	m := ConstData(fmt.Sprintf("f32_%d", len(f32Consts)), U32(math.Float32bits(v)))
	f32Consts[v] = m
	return m
}

func main() {
	ConstraintExpr("!purego")
	constants()
	for _, sh := range shapes {
		for _, k := range blocks32 {
			if sh.weights && hasTile(k) {
				continue // mat32 is their four-row mat-vec kernel
			}
			dot32(k, sh, avx2)
		}
		if sh.weights {
			// Measured: a k-quant super-block is long enough that four
			// weight rows at a time gain nothing over one (they lost
			// 10-40% on a 2048×2048 matrix), so MatVec runs x1 for them.
			continue
		}
		dotQ4K(false, sh)
		dotQ4K(true, sh)
		dotQ6K(sh)
		dotQ2K(sh)
		dotQ3K(sh)
	}
	dotFloat("dotF32AVX2", kF32, 1)
	dotFloat("dotF16AVX2", kF16, 1)
	for _, k := range blocks32 {
		if hasTile(k) {
			pack32(k)
			tile32(k, avx2)
			mat32(k, avx2)
		}
	}
	dotFloatW4("dotF32AVX2w4", kF32, 1)
	dotFloatW4("dotF16AVX2w4", kF16, 1)
	dotFloatW4("dotF32AVX2w4x2", kF32, 2)
	dotFloatW4("dotF16AVX2w4x2", kF16, 2)
	dotFloat("dotBF16AVX2", kBF16, 1)
	dotFloat("dotF32AVX2x3", kF32, 3)
	dotFloat("dotF16AVX2x3", kF16, 3)
	dotFloat("dotBF16AVX2x3", kBF16, 3)
	quantQ8A()
	quantQ8K()
	// The VNNI tier: the kernels of the 32-element block types again, with
	// VPDPBUSD for their byte products. The k-quants weight their pair
	// sums by sub-block scales in VPMADDWD, which VNNI does not replace,
	// so they, the float kernels and the quantizers stay AVX2's.
	for _, sh := range shapes {
		for _, k := range blocks32 {
			if !(sh.weights && hasTile(k)) {
				dot32(k, sh, vnni)
			}
		}
	}
	for _, k := range blocks32 {
		if hasTile(k) {
			tile32(k, vnni)
			mat32(k, vnni)
		}
	}
	Generate()
}

// A target is the instruction set a block32 kernel is generated for: AVX2,
// or AVX2 with AVX-512 VNNI's VPDPBUSD (EVEX-encoded on YMM registers, so
// AVX512VL as well) for the byte products. Both give every int32 lane the
// same exact sum (the four byte products of its lane; VPMADDUBSW's int16
// pair sums cannot saturate, the activations being at most 127 in
// magnitude), and the float arithmetic after is the same instructions, so
// the two tiers' results agree bit for bit.
type target struct {
	suffix string
	vnni   bool
}

var (
	avx2 = target{"AVX2", false}
	vnni = target{"VNNI", true}
)

// mulBytes returns the int32 sums of four products of unsigned bytes u and
// signed bytes s per lane; ones holds ones16 for AVX2, which overwrites s
// when it is a register.
func (isa target) mulBytes(s Op, u VecVirtual, ones Op) VecVirtual {
	p, ok := s.(VecVirtual)
	if !ok || isa.vnni {
		p = YMM()
	}
	if isa.vnni {
		VPXOR(p, p, p)
		VPDPBUSD(s, u, p)
		return p
	}
	VPMADDUBSW(s, u, p)
	VPMADDWD(ones, p, p)
	return p
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

// A kernel is generated from the code of one block step.
type kernel struct {
	name, doc    string
	wsize, asize int // bytes per block of a weight and an activation row
	// setup runs before the loop (constants); newRow(r) sets up row r's
	// state beyond its accumulator; fixup(r, x) adjusts row r's sum x.
	setup  func()
	newRow func(r int)
	fixup  func(r int, x Register)
	// body emits one block step of the weight row at w with the
	// activation rows at a, whose tile rows and accumulators are rows and
	// acc. It may not move w or a.
	body func(w Register, a []Register, rows []int, acc []VecVirtual)
}

// emit generates k for the tile shape sh. For a tile of weight rows, the
// step of each row is exactly the one-row step, and for a tile of
// activation rows each row runs the one-row step's instructions on the
// shared weights, so every shape gives a row the same result bit for bit.
func (k kernel) emit(sh shape) {
	name := k.name
	switch {
	case sh.rows == 1:
		TEXT(name, NOSPLIT, "func(nb int, w, a *byte) float32")
	case sh.weights:
		TEXT(name, NOSPLIT, "func(nb int, w *byte, wstride int, a *byte, out *float32)")
	default:
		TEXT(name, NOSPLIT, "func(nb int, w, a *byte, stride int, out *float32)")
	}
	Pragma("noescape")
	doc := k.doc
	switch {
	case sh.weights:
		doc += " Four weight rows wstride bytes apart, one activation row."
	case sh.rows > 1:
		doc += " One weight row, four activation rows stride bytes apart."
	}
	Doc(doc)
	nb := Load(Param("nb"), GP64())
	ws := []Register{Load(Param("w"), GP64())}
	var as []Register
	var out Register
	switch {
	case sh.rows == 1:
		as = []Register{Load(Param("a"), GP64())}
	case sh.weights:
		ws = strided(ws[0], "wstride", sh.rows)
		as = []Register{Load(Param("a"), GP64())}
	default:
		as = strided(Load(Param("a"), GP64()), "stride", sh.rows)
	}
	if sh.rows > 1 {
		out = Load(Param("out"), GP64())
	}
	var pf tilePrefetch
	if sh.weights {
		pf = prefetchNextTile(ws[0], k.wsize)
	}
	if k.setup != nil {
		k.setup()
	}
	acc := make([]VecVirtual, sh.rows)
	rows := make([]int, sh.rows)
	for r := range acc {
		rows[r] = r
		acc[r] = YMM()
		zero(acc[r])
		if k.newRow != nil {
			k.newRow(r)
		}
	}
	Label(name + "_loop")
	if sh.weights {
		pf.step()
		for r := range sh.rows {
			k.body(ws[r], as, rows[r:r+1], acc[r:r+1])
		}
	} else {
		k.body(ws[0], as, rows, acc)
	}
	for _, w := range ws {
		ADDQ(U32(k.wsize), w)
	}
	for _, a := range as {
		ADDQ(U32(k.asize), a)
	}
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	for r := range sh.rows {
		x := hsum(acc[r])
		if k.fixup != nil {
			k.fixup(r, x)
		}
		if sh.rows == 1 {
			VZEROUPPER()
			Store(x, ReturnIndex(0))
			RET()
			return
		}
		VMOVSS(x, Mem{Base: out, Disp: 4 * r})
	}
	VZEROUPPER()
	RET()
}

// A tilePrefetch walks the next tile of four weight rows, the four rows
// below the kernel's, in address order, a block step's worth (4·size bytes)
// per step of the kernel's loop, so that the tile is in cache when the
// kernel's next call (MatVec's next four rows) reads it.
//
// A matrix-vector product streams its weights from memory once, in rows
// too short (1 to 3 KB) for the hardware prefetcher to ramp up in, and
// four rows walked side by side do not look sequential to it. Prefetching
// the same place of each row four below (four strided streams) doubled
// the throughput; walking the next tile in address order instead gains
// again where memory is the limit. On a 2-core Zen 3 EPYC VM, 256 MB of
// weights, two threads each on half the rows (rows × columns, three runs
// each): q4_0 2048×2048 8.5–9.8 → 10.2–12.4 GB/s, 5632×2048 11.1–12.0 →
// 13.0–16.1; q8_0 2048×2048 11.4–13.2 → 11.3–15.0, 5632×2048 13.7–15.1 →
// 13.0–16.2. One thread (BenchmarkMatVecStream): q4_0 rows of 2048
// 6.3–8.2 → 8.9–11.0, of 5632 no change; q8_0 rows of 2048 8.8–9.8 →
// 9.8–10.7, but of 5632 11.5–12.9 → 10.5–10.6 (a tile of such rows is 24
// KB, and walking it in order fetches its first lines further ahead of
// their use, out of L1). Decoding, medians of four alternating runs, two
// threads: tinyllama q4_0 20.0 → 26.2 tokens/s, smollm2 q8_0 68.5 → 94.5,
// smollm2 q4_0 111 → 125; one thread (edgectl bench -t 1, three runs):
// tinyllama q4_0 13.0–14.2 → 16.5–18.3, smollm2 q8_0 44.2–47.4 →
// 63.9–76.4. The rows of a weight matrix are packed (wstride is the row
// size); with gaps between them less of the next tile is fetched. A
// prefetch past the matrix does not fault.
type tilePrefetch struct {
	next Register
	size int // bytes of the tile per block step
}

// prefetchNextTile starts a tilePrefetch for the tile below the four rows
// at w0 (wstride apart), of blocks of size bytes.
func prefetchNextTile(w0 Register, size int) tilePrefetch {
	next := Load(Param("wstride"), GP64())
	SHLQ(Imm(2), next)
	ADDQ(w0, next)
	return tilePrefetch{next: next, size: 4 * size}
}

// step prefetches the next block step's bytes of the tile, an address
// every 64 bytes (no two consecutive ones further apart, across steps too,
// so every cache line of the tile is touched), and moves on.
func (p tilePrefetch) step() {
	for off := 0; off < p.size; off += 64 {
		PREFETCHT0(Mem{Base: p.next, Disp: off})
	}
	ADDQ(U32(p.size), p.next)
}

// scaledAdd adds d·da·v to acc (subtracts it when sub), da being the
// scale of the activation block at a: the last step of every k-quant
// kernel, for its sums and for its minimum or offset terms.
func scaledAdd(d Register, a Register, v, acc VecVirtual, sub bool) {
	x := XMM()
	VMULSS(Mem{Base: a}, d, x)
	s := YMM()
	VBROADCASTSS(x, s)
	if sub {
		VFNMADD231PS(s, v, acc)
		return
	}
	VFMADD231PS(s, v, acc)
}

// hsum adds the 8 lanes of y into lane 0 of the returned register.
func hsum(y VecVirtual) Register {
	x := XMM()
	VEXTRACTF128(Imm(1), y, x)
	VADDPS(y.AsX(), x, x)
	t := XMM()
	VMOVHLPS(x, x, t)
	VADDPS(t, x, x)
	VMOVSHDUP(x, t)
	VADDSS(t, x, x)
	return x
}

func zero(y VecVirtual) { VXORPS(y, y, y) }

// block32 describes a weight type with 32-element blocks.
type block32 struct {
	name   string
	size   int  // bytes per block
	qs, qh int  // offsets of the nibbles and of the fifth bits (qh < 0: none)
	signed bool // int8 weights (q8_0) instead of unsigned nibbles
	// corr says how the activation sums s enter: -8 or -16, the offset
	// of q4_0 and q5_0, times Σ d·sa; 1 for the minimum of q4_1 and q5_1,
	// Σ m·sa; 0 for none.
	corr float32
}

var blocks32 = []block32{
	{name: "Q4_0", size: 18, qs: 2, qh: -1, corr: -8},
	{name: "Q4_1", size: 20, qs: 4, qh: -1, corr: 1},
	{name: "Q5_0", size: 22, qs: 6, qh: 2, corr: -16},
	{name: "Q5_1", size: 24, qs: 8, qh: 4, corr: 1},
	{name: "Q8_0", size: 34, qs: 2, qh: -1, signed: true},
}

// dot32: per block, the 32 weights as bytes (unsigned 0..31 for the
// nibble types, so VPMADDUBSW multiplies them with the signed activations
// directly), 16 pair sums, 8 int32 sums, converted and scaled by d·da into
// a float accumulator; the offset or minimum is applied once at the end
// through the activation block sums s.
func dot32(k block32, sh shape, isa target) {
	name := fmt.Sprintf("dot%s%s%s", k.name, isa.suffix, sh.suffix)
	var mask, ones VecVirtual
	corr := make([]VecVirtual, sh.rows)
	kernel{
		name: name, doc: name + " is the " + k.name + " × Q8A kernel for nb blocks.",
		wsize: k.size, asize: q8aSize,
		setup: func() {
			if !k.signed {
				mask = YMM()
				VMOVDQU(c0F, mask)
			}
			if !isa.vnni {
				ones = YMM()
				VMOVDQU(ones16, ones)
			}
		},
		newRow: func(r int) {
			if k.corr != 0 {
				corr[r] = XMM()
				zero(corr[r])
			}
		},
		body: func(w Register, a []Register, rows []int, acc []VecVirtual) {
			wq := YMM()
			var wabs VecVirtual
			if k.signed {
				VMOVDQU(Mem{Base: w, Disp: k.qs}, wq)
				wabs = YMM()
				VPSIGNB(wq, wq, wabs)
			} else {
				VMOVDQU(Mem{Base: w, Disp: k.qs}, wq.AsX())
				hi := XMM()
				VPSRLW(Imm(4), wq.AsX(), hi)
				VINSERTI128(Imm(1), hi, wq, wq)
				VPAND(mask, wq, wq)
				if k.qh >= 0 {
					h := YMM()
					VPBROADCASTD(Mem{Base: w, Disp: k.qh}, h)
					VPSHUFB(q5Shuf, h, h)
					VPAND(q5Bits, h, h)
					VPCMPEQB(q5Bits, h, h)
					VPAND(c10, h, h)
					VPOR(h, wq, wq)
				}
			}
			// ws = (d, m or junk, junk, junk).
			ws := XMM()
			VCVTPH2PS(Mem{Base: w}, ws)
			offset := k.corr != 0 && k.corr != 1
			for i, ar := range a {
				var p VecVirtual
				if k.signed {
					as := YMM()
					VMOVDQU(Mem{Base: ar, Disp: q8aQs}, as)
					VPSIGNB(wq, as, as)
					p = isa.mulBytes(as, wabs, ones)
				} else {
					p = isa.mulBytes(Mem{Base: ar, Disp: q8aQs}, wq, ones)
				}
				VCVTDQ2PS(p, p)
				t := XMM()
				s := YMM()
				switch {
				case offset: // lane 0 of the correction sums d·sa
					VMULSS(Mem{Base: ar}, ws, t) // d·da
					VBROADCASTSS(t, s)
					VFMADD231PS(s, p, acc[i])
					VFMADD231SS(Mem{Base: ar, Disp: 4}, ws, corr[rows[i]])
				case k.corr != 0: // lane 1 sums m·sa
					VMULPS(Mem{Base: ar}, ws, t) // (d·da, m·sa, junk, junk)
					VBROADCASTSS(t, s)
					VFMADD231PS(s, p, acc[i])
					VADDPS(t, corr[rows[i]], corr[rows[i]])
				default:
					VMULSS(Mem{Base: ar}, ws, t) // d·da
					VBROADCASTSS(t, s)
					VFMADD231PS(s, p, acc[i])
				}
			}
		},
		fixup: func(r int, x Register) {
			if k.corr == 0 {
				return
			}
			c := XMM()
			if k.corr == 1 {
				VMOVSHDUP(corr[r], c)
			} else {
				VMULSS(f32Const(k.corr), corr[r], c)
			}
			VADDSS(c, x, x)
		},
	}.emit(sh)
}

// A panel is four weight rows of a 32-element block type made ready for
// tile32's kernel: per block, the four rows' 32 weights as bytes (q4_0's
// nibbles unpacked, 0..15; q8_0's as they are), then their scales as
// float32 (dw0..dw3, dw0..dw3), then, for q4_0, -8·(dw0..dw3, 0, 0, 0, 0).
// The tile kernel runs over a panel once per four activation rows, so
// unpacking once per panel saves the unpacking of every tile after the
// first.
const (
	panelW     = 0   // the four rows' weights, 32 bytes each
	panelD     = 128 // their scales, twice
	panelCorr  = 160 // q4_0's offset times the scales, lower lanes
	panelBlock = 192 // bytes per block
)

// hasTile reports whether k has the tile kernels (pack32, tile32, mat32).
func hasTile(k block32) bool { return k.name == "Q4_0" || k.name == "Q8_0" }

// strided returns the pointers of n rows: first, then each the stride
// parameter's bytes after the one before.
func strided(first Register, strideParam string, n int) []Register {
	ps := []Register{first}
	stride := Load(Param(strideParam), GP64())
	for r := 1; r < n; r++ {
		p := GP64()
		LEAQ(Mem{Base: ps[r-1], Index: stride, Scale: 1}, p)
		ps = append(ps, p)
	}
	return ps
}

// loopConsts are the constants of the four-row block loops as operands:
// in memory, or in registers loaded once before the loop (mat32's loop
// has registers to spare), which saves a load at every use.
type loopConsts struct {
	mask, shift, ones Op // c0F, hiShift, ones16
	corr              Op // k.corr broadcast, or nil: broadcast it at each use
}

// memConsts are the constants in memory.
func memConsts() loopConsts { return loopConsts{mask: c0F, shift: hiShift, ones: ones16} }

// regConsts loads the constants that k's loop uses on isa into registers.
func regConsts(k block32, isa target) loopConsts {
	c := memConsts()
	load := func(m Mem) Op {
		r := YMM()
		VMOVDQU(m, r)
		return r
	}
	if !k.signed {
		c.mask, c.shift = load(c0F), load(hiShift)
	}
	if !isa.vnni {
		c.ones = load(ones16)
	}
	if k.corr != 0 {
		r := YMM()
		VBROADCASTSS(f32Const(k.corr), r)
		c.corr = r
	}
	return c
}

// scales4 returns, for the current block of four weight rows, their
// scales as float32 (dw0..dw3, dw0..dw3) and, for q4_0, -8·(dw0..dw3, 0,
// 0, 0, 0) (nil otherwise).
func scales4(k block32, ws []Register, cs loopConsts) (dw, corr VecVirtual) {
	g := GP32()
	x := XMM()
	MOVWLZX(Mem{Base: ws[0]}, g)
	VMOVD(g, x)
	for c := 1; c < 4; c++ {
		VPINSRW(U8(c), Mem{Base: ws[c]}, x, x)
	}
	lo := YMM()
	VCVTPH2PS(x, lo.AsX()) // the upper lanes are zeroed
	dw = YMM()
	VINSERTF128(Imm(1), lo.AsX(), lo, dw)
	if k.corr != 0 {
		f := cs.corr
		if f == nil {
			r := YMM()
			VBROADCASTSS(f32Const(k.corr), r)
			f = r
		}
		VMULPS(f, lo, lo)
		corr = lo
	}
	return dw, corr
}

// weights4 loads the current block of four weight rows as bytes: q4_0's
// nibbles unpacked (0..15), q8_0's as they are. The 16 bytes of nibbles
// go to both lanes, the upper lane shifts right by 4 (VPSRLVQ: a shift,
// where an insert of the shifted half would be a shuffle, which most
// Intel cores run on port 5 alone) and the mask keeps the low nibbles.
func weights4(k block32, ws []Register, cs loopConsts) [4]VecVirtual {
	var wq [4]VecVirtual
	for c, wr := range ws {
		wq[c] = YMM()
		if k.signed {
			VMOVDQU(Mem{Base: wr, Disp: k.qs}, wq[c])
			continue
		}
		VBROADCASTI128(Mem{Base: wr, Disp: k.qs}, wq[c])
		VPSRLVQ(cs.shift, wq[c], wq[c])
		VPAND(cs.mask, wq[c], wq[c])
	}
	return wq
}

// pack32 packs nb blocks of four weight rows wstride bytes apart into a
// panel at dst.
func pack32(k block32) {
	name := fmt.Sprintf("pack%sAVX2", k.name)
	TEXT(name, NOSPLIT, "func(nb int, w *byte, wstride int, dst *byte)")
	Pragma("noescape")
	Doc(name + " packs nb blocks of four " + k.name + " weight rows wstride bytes apart into a panel for the tile kernel.")
	nb := Load(Param("nb"), GP64())
	ws := strided(Load(Param("w"), GP64()), "wstride", 4)
	dst := Load(Param("dst"), GP64())
	Label(name + "_loop")
	dw, corr := scales4(k, ws, memConsts())
	VMOVUPS(dw, Mem{Base: dst, Disp: panelD})
	if corr != nil {
		VMOVUPS(corr, Mem{Base: dst, Disp: panelCorr})
	}
	for c, q := range weights4(k, ws, memConsts()) {
		VMOVDQU(q, Mem{Base: dst, Disp: panelW + 32*c})
	}
	for _, wr := range ws {
		ADDQ(U32(k.size), wr)
	}
	ADDQ(U32(panelBlock), dst)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}

// tileStep adds one block of four weight rows (wq, scales dw and, for
// q4_0, corr) times the activation block at ar into acc: the integer sums
// of the four rows against the activation block are folded (VPHADDW or
// VPHADDD, exact) into one register, lane c and c+4 holding halves of
// row c's, so that one conversion and one multiply-add serve four rows.
// The offset of q4_0 goes in through the activation block sum, on the
// lower lanes only; q8_0's weights are signed, so each pair multiplies |a|
// by w·sign(a). tile32 and mat32 run exactly these instructions, so that
// a row's product is the same in a tile and alone.
func tileStep(k block32, isa target, wq [4]VecVirtual, dw, corr Op, ar Register, acc VecVirtual, cs loopConsts) {
	var p [4]VecVirtual
	aq := YMM()
	VMOVDQU(Mem{Base: ar, Disp: q8aQs}, aq)
	var aabs VecVirtual
	if k.signed {
		aabs = YMM()
		VPSIGNB(aq, aq, aabs)
	}
	// AVX2 and nibbles: a 16-bit pair sum is at most 2·15·127, so four of
	// them still fit in 16 bits; fold in 16 bits, widen once.
	fold16 := !k.signed && !isa.vnni
	for c := range p {
		switch {
		case k.signed:
			ws := YMM()
			VPSIGNB(aq, wq[c], ws)
			p[c] = isa.mulBytes(ws, aabs, cs.ones)
		case fold16:
			p[c] = YMM()
			VPMADDUBSW(aq, wq[c], p[c])
		default:
			p[c] = isa.mulBytes(aq, wq[c], nil)
		}
	}
	if fold16 {
		VPHADDW(p[1], p[0], p[0])
		VPHADDW(p[3], p[2], p[2])
		VPHADDW(p[2], p[0], p[0])
		VPMADDWD(cs.ones, p[0], p[0])
	} else {
		VPHADDD(p[1], p[0], p[0])
		VPHADDD(p[3], p[2], p[2])
		VPHADDD(p[2], p[0], p[0])
	}
	VCVTDQ2PS(p[0], p[0])
	sc := YMM()
	VBROADCASTSS(Mem{Base: ar}, sc)
	VMULPS(dw, sc, sc)
	VFMADD231PS(sc, p[0], acc)
	if k.corr != 0 {
		sa := YMM()
		VBROADCASTSS(Mem{Base: ar, Disp: 4}, sa)
		VFMADD231PS(corr, sa, acc)
	}
}

// storeTile writes acc's four row sums (lanes c and c+4 added) to out.
func storeTile(acc VecVirtual, out Mem) {
	h := XMM()
	VEXTRACTF128(Imm(1), acc, h)
	VADDPS(acc.AsX(), h, h)
	VMOVUPS(h, out)
}

// tile32 is the kernel of a 4×4 tile of a matrix product (prefill): a
// panel of four weight rows (pack32) by four activation rows astride bytes
// apart, out[4r+c] = w_c · a_r, each activation row by tileStep. Where
// dot32's tiles spend a conversion, a scale and a fused multiply-add on
// every (weight, activation) block pair, this spends them on four. Results
// agree with dot32's within float32 rounding (they sum in another order).
func tile32(k block32, isa target) {
	name := fmt.Sprintf("dot%s%sp4", k.name, isa.suffix)
	TEXT(name, NOSPLIT, "func(nb int, panel *byte, a *byte, astride int, out *float32)")
	Pragma("noescape")
	Doc(name + " is the " + k.name + " × Q8A kernel for a tile of a panel of four weight rows (nb blocks) by four activation rows astride bytes apart: out[4r+c] = w_c · a_r.")
	nb := Load(Param("nb"), GP64())
	pw := Load(Param("panel"), GP64())
	as := strided(Load(Param("a"), GP64()), "astride", 4)
	var acc [4]VecVirtual
	for r := range acc {
		acc[r] = YMM()
		zero(acc[r])
	}
	Label(name + "_loop")
	var wq [4]VecVirtual
	for c := range wq {
		wq[c] = YMM()
		VMOVDQU(Mem{Base: pw, Disp: panelW + 32*c}, wq[c])
	}
	for r, ar := range as {
		tileStep(k, isa, wq, Mem{Base: pw, Disp: panelD}, Mem{Base: pw, Disp: panelCorr}, ar, acc[r], memConsts())
	}
	ADDQ(U32(panelBlock), pw)
	for _, ar := range as {
		ADDQ(U32(q8aSize), ar)
	}
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	out := Load(Param("out"), GP64())
	for r := range acc {
		storeTile(acc[r], Mem{Base: out, Disp: 16 * r})
	}
	VZEROUPPER()
	RET()
}

// mat32 is the matrix-vector kernel of the tile's arithmetic: four weight
// rows wstride bytes apart, read and unpacked as pack32 does, by one
// activation row, by tileStep. Decoding a token (one row) and prefilling
// (tiles) so give a row the same result bit for bit, and the continuous
// batching of the daemon does not change a request's logits. Like the
// other four-row mat-vec kernels it prefetches the next four rows
// (prefetchNextTile).
func mat32(k block32, isa target) {
	name := fmt.Sprintf("dot%s%sm4", k.name, isa.suffix)
	TEXT(name, NOSPLIT, "func(nb int, w *byte, wstride int, a *byte, out *float32)")
	Pragma("noescape")
	Doc(name + " is the " + k.name + " × Q8A kernel of the tile's arithmetic for four weight rows wstride bytes apart by one activation row, nb blocks: out[c] = w_c · a.")
	nb := Load(Param("nb"), GP64())
	ws := strided(Load(Param("w"), GP64()), "wstride", 4)
	pf := prefetchNextTile(ws[0], k.size)
	a := Load(Param("a"), GP64())
	acc := YMM()
	zero(acc)
	cs := regConsts(k, isa)
	Label(name + "_loop")
	pf.step()
	dw, corr := scales4(k, ws, cs)
	var co Op
	if corr != nil {
		co = corr
	}
	tileStep(k, isa, weights4(k, ws, cs), dw, co, a, acc, cs)
	for _, wr := range ws {
		ADDQ(U32(k.size), wr)
	}
	ADDQ(U32(q8aSize), a)
	DECQ(nb)
	JNZ(LabelRef(name + "_loop"))
	storeTile(acc, Mem{Base: Load(Param("out"), GP64())})
	VZEROUPPER()
	RET()
}

// dotQ4K is the q4_K (q5K false) or q5_K × Q8_K kernel. Per super-block:
// the 6-bit scales and minimums unpacked in general registers; the minimum
// term dmin·da·Σ m_j·(sum of sub-block j's activations) from the Q8_K block
// sums, subtracted first; then each 32-element sub-block's products
// (VPMADDUBSW, unsigned weights), weighted by its scale (VPMADDWD), summed
// in int32 and scaled by d·da.
func dotQ4K(q5K bool, sh shape) {
	tname, size, qsOff := "Q4_K", 144, 16
	if q5K {
		tname, size, qsOff = "Q5_K", 176, 48
	}
	name := fmt.Sprintf("dot%sAVX2%s", tname, sh.suffix)
	kernel{
		name: name, doc: name + " is the " + tname + " × Q8_K kernel for nb super-blocks.",
		wsize: size, asize: q8kSize,
		body: func(w Register, a []Register, _ []int, acc []VecVirtual) {
			rows := len(a)

			// Scales: bytes s0..s11 at offset 4. For j < 4, sc_j = s_j&63 and
			// m_j = s_{j+4}&63; for j ≥ 4, sc_j = s_{j+4}&15 | s_{j-4}>>6<<4 and
			// m_j = s_{j+4}>>4 | s_j>>6<<4.
			s07, s811 := GP64(), GP64()
			MOVQ(Mem{Base: w, Disp: 4}, s07)
			MOVL(Mem{Base: w, Disp: 12}, s811.As32())
			low := GP64() // sc0..3, m0..3
			MOVQ(U64(0x3f3f3f3f3f3f3f3f), low)
			ANDQ(s07, low)
			t := GP64()
			SHRQ(U8(2), s07) // high bits: bits 6,7 of each byte to 4,5
			MOVQ(U64(0x3030303030303030), t)
			ANDQ(t, s07)
			lo4 := GP64()
			MOVL(s811.As32(), lo4.As32())
			ANDL(U32(0x0f0f0f0f), lo4.As32())
			SHRL(U8(4), s811.As32())
			ANDL(U32(0x0f0f0f0f), s811.As32())
			SHLQ(U8(32), s811)
			ORQ(lo4, s07)
			ORQ(s811, s07) // s07 = sc4..7, m4..7
			sc := GP64()
			MOVL(low.As32(), sc.As32())
			MOVQ(s07, t)
			SHLQ(U8(32), t)
			ORQ(t, sc) // sc0..7
			SHRQ(U8(32), low)
			MOVQ(U64(0xffffffff00000000), t)
			ANDQ(s07, t)
			ORQ(t, low) // m0..7

			ysc := YMM() // both lanes: sc0..7 as words
			VMOVQ(sc, ysc.AsX())
			VPMOVZXBW(ysc.AsX(), ysc.AsX())
			VPERMQ(Imm(0x44), ysc, ysc)
			ymin := YMM() // m0,m0,m1,m1,…,m7,m7 as words
			VMOVQ(low, ymin.AsX())
			VPUNPCKLBW(ymin.AsX(), ymin.AsX(), ymin.AsX())
			VPMOVZXBW(ymin.AsX(), ymin)

			dd := XMM() // (d, dmin, junk, junk)
			VCVTPH2PS(Mem{Base: w}, dd)
			for r := range rows {
				p := YMM()
				VPMADDWD(Mem{Base: a[r], Disp: q8kBsums}, ymin, p)
				VCVTDQ2PS(p, p)
				dmin := XMM()
				VMOVSHDUP(dd, dmin)
				scaledAdd(dmin, a[r], p, acc[r], true)
			}

			var qh VecVirtual
			if q5K {
				qh = YMM()
				VMOVDQU(Mem{Base: w, Disp: 16}, qh)
			}
			sumi := make([]VecVirtual, rows)
			for j := range 4 {
				raw := YMM()
				VMOVDQU(Mem{Base: w, Disp: qsOff + 32*j}, raw)
				for half := range 2 {
					sb := 2*j + half // sub-block
					q := YMM()
					if half == 0 {
						VPAND(c0F, raw, q)
					} else {
						VPSRLW(Imm(4), raw, q)
						VPAND(c0F, q, q)
					}
					if q5K { // bit sb of qh is the fifth bit: move it to bit 4
						h := YMM()
						switch {
						case sb < 4:
							VPSLLW(Imm(uint64(4-sb)), qh, h)
						case sb > 4:
							VPSRLW(Imm(uint64(sb-4)), qh, h)
						default:
							VMOVDQA(qh, h)
						}
						VPAND(c10, h, h)
						VPOR(h, q, q)
					}
					s := YMM()
					VPSHUFB(wordBcast.Offset(32*sb), ysc, s)
					for r := range rows {
						p := YMM()
						VPMADDUBSW(Mem{Base: a[r], Disp: q8kQs + 32*sb}, q, p)
						VPMADDWD(s, p, p)
						if sb == 0 {
							sumi[r] = p
						} else {
							VPADDD(p, sumi[r], sumi[r])
						}
					}
				}
			}
			for r := range rows {
				VCVTDQ2PS(sumi[r], sumi[r])
				scaledAdd(dd, a[r], sumi[r], acc[r], false)
			}
		},
	}.emit(sh)
}

// dotQ6K is the q6_K × Q8_K kernel. The weights are used unsigned (0..63);
// the offset -32 is applied through the block sums: Σ sc·(q-32)·a =
// Σ sc·q·a - 32·Σ sc_j·bsum_j. To save a register the int32 sum is kept
// negated: it starts at 32·Σ sc_j·bsum_j and the products are subtracted.
func dotQ6K(sh shape) {
	name := fmt.Sprintf("dotQ6_KAVX2%s", sh.suffix)
	kernel{
		name: name, doc: name + " is the Q6_K × Q8_K kernel for nb super-blocks.",
		wsize: 210, asize: q8kSize,
		body: func(w Register, a []Register, _ []int, acc []VecVirtual) {
			rows := len(a)
			dd := XMM()
			dbits := GP32()
			MOVWLZX(Mem{Base: w, Disp: 208}, dbits)
			VMOVD(dbits, dd)
			VCVTPH2PS(dd, dd)

			raw := XMM()
			VMOVDQU(Mem{Base: w, Disp: 192}, raw)
			yscn := YMM() // the 16 scales as words, in order
			VPMOVSXBW(raw, yscn)
			nsum := make([]VecVirtual, rows)
			for r := range rows {
				nsum[r] = YMM()
				VPMADDWD(Mem{Base: a[r], Disp: q8kBsums}, yscn, nsum[r])
				VPSLLD(Imm(5), nsum[r], nsum[r])
			}
			ysc := YMM() // low lane: sc0, sc2, …, sc14; high lane: sc1, sc3, …
			VPSHUFB(q6Order, raw, raw)
			VPMOVSXBW(raw, ysc)

			for h := range 2 {
				for k := range 4 {
					q, t := YMM(), YMM()
					VMOVDQU(Mem{Base: w, Disp: 64*h + 32*(k%2)}, q)
					if k >= 2 {
						VPSRLW(Imm(4), q, q)
					}
					VPAND(c0F, q, q)
					VMOVDQU(Mem{Base: w, Disp: 128 + 32*h}, t)
					switch k {
					case 0:
						VPSLLW(Imm(4), t, t)
					case 1:
						VPSLLW(Imm(2), t, t)
					case 3:
						VPSRLW(Imm(2), t, t)
					}
					VPAND(c30, t, t)
					VPOR(t, q, q)
					s := YMM()
					VPSHUFB(wordBcast.Offset(32*(4*h+k)), ysc, s)
					for r := range rows {
						p := YMM()
						VPMADDUBSW(Mem{Base: a[r], Disp: q8kQs + 128*h + 32*k}, q, p)
						VPMADDWD(s, p, p)
						VPSUBD(p, nsum[r], nsum[r])
					}
				}
			}
			for r := range rows {
				VCVTDQ2PS(nsum[r], nsum[r])
				scaledAdd(dd, a[r], nsum[r], acc[r], true)
			}
		},
	}.emit(sh)
}

type floatKind int

const (
	kF32 floatKind = iota
	kF16
	kBF16
)

// size is the size in bytes of one weight of kind ft.
func (ft floatKind) size() int {
	if ft == kF32 {
		return 4
	}
	return 2
}

// load converts the 8 weights at m to float32 in a new register.
func (ft floatKind) load(m Mem) VecVirtual {
	y := YMM()
	switch ft {
	case kF32:
		VMOVUPS(m, y)
	case kF16:
		VCVTPH2PS(m, y)
	case kBF16:
		VPMOVZXWD(m, y)
		VPSLLD(Imm(16), y, y)
	}
	return y
}

// dotFloatW4 is dotFloat for four weight rows wstride bytes apart against
// one activation row (acts 1) or two (acts 2: out0 and out1), n a positive
// multiple of 8: each step loads 8 values of each activation row once for
// the four weight rows. Each (weight row, activation row) pair has its own
// accumulator and sees the same instructions in either form, so the two
// agree bit for bit. Attention runs it over keys (rows of one head, 64 or
// 128 values) and over transposed values, with the queries or
// probabilities of two heads that share them.
func dotFloatW4(name string, ft floatKind, acts int) {
	if acts == 1 {
		TEXT(name, NOSPLIT, "func(n int, w *byte, wstride int, a *byte, out *float32)")
		Doc(name + " is the float × float32 kernel for four weight rows wstride bytes apart and one activation row of n values, n a positive multiple of 8.")
	} else {
		TEXT(name, NOSPLIT, "func(n int, w *byte, wstride int, a0, a1 *byte, out0, out1 *float32)")
		Doc(name + " is the float × float32 kernel for four weight rows wstride bytes apart and two activation rows of n values, n a positive multiple of 8.")
	}
	Pragma("noescape")
	n := Load(Param("n"), GP64())
	ws := strided(Load(Param("w"), GP64()), "wstride", 4)
	var as, outs []Register
	if acts == 1 {
		as = []Register{Load(Param("a"), GP64())}
	} else {
		as = []Register{Load(Param("a0"), GP64()), Load(Param("a1"), GP64())}
	}
	acc := make([][4]VecVirtual, acts)
	for j := range acc {
		for i := range acc[j] {
			acc[j][i] = YMM()
			zero(acc[j][i])
		}
	}
	SHRQ(U8(3), n)
	Label(name + "_loop")
	xs := make([]VecVirtual, acts)
	for j, a := range as {
		xs[j] = YMM()
		VMOVUPS(Mem{Base: a}, xs[j])
	}
	for r, wr := range ws {
		y := ft.load(Mem{Base: wr})
		for j := range xs {
			VFMADD231PS(xs[j], y, acc[j][r])
		}
	}
	for _, wr := range ws {
		ADDQ(U32(8*ft.size()), wr)
	}
	for _, a := range as {
		ADDQ(U32(32), a)
	}
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	if acts == 1 {
		outs = []Register{Load(Param("out"), GP64())}
	} else {
		outs = []Register{Load(Param("out0"), GP64()), Load(Param("out1"), GP64())}
	}
	for j, out := range outs {
		for r := range acc[j] {
			VMOVSS(hsum(acc[j][r]), Mem{Base: out, Disp: 4 * r})
		}
	}
	VZEROUPPER()
	RET()
}

// dotFloat is the float32/float16/bfloat16 × float32 kernel over n values,
// n a positive multiple of 8: four accumulators over 32 values at a time,
// then 8 at a time. With rows 3 it takes three activation rows astride
// bytes apart against the one weight row (out[0:3]): each weight chunk is
// loaded once for the three, and each row has its own four accumulators
// and sees the one-row kernel's instructions in its order, so out[r] is
// bit for bit what the one-row kernel returns for row r. Three, because
// their twelve accumulators and the weight fill the sixteen registers; a
// prefill over float weights paid more for the call per pair than for the
// arithmetic of short rows.
func dotFloat(name string, ft floatKind, rows int) {
	if rows == 1 {
		TEXT(name, NOSPLIT, "func(n int, w, a *byte) float32")
		Doc(name + " is the float × float32 kernel for n values, n a positive multiple of 8.")
	} else {
		TEXT(name, NOSPLIT, "func(n int, w, a *byte, astride int, out *float32)")
		Doc(name + " is the float × float32 kernel for one weight row and three activation rows astride bytes apart, n values each, n a positive multiple of 8.")
	}
	Pragma("noescape")
	n := Load(Param("n"), GP64())
	w := Load(Param("w"), GP64())
	a := make([]Register, rows)
	a[0] = Load(Param("a"), GP64())
	if rows > 1 {
		stride := Load(Param("astride"), GP64())
		for r := 1; r < rows; r++ {
			a[r] = GP64()
			LEAQ(Mem{Base: a[r-1], Index: stride, Scale: 1}, a[r])
		}
	}
	wsize := ft.size()
	acc := make([][4]VecVirtual, rows)
	for r := range acc {
		for u := range acc[r] {
			acc[r][u] = YMM()
			zero(acc[r][u])
		}
	}
	cnt := GP64()
	MOVQ(n, cnt)
	SHRQ(U8(5), cnt)
	JZ(LabelRef(name + "_tail"))
	Label(name + "_loop32")
	for u := range 4 {
		y := ft.load(Mem{Base: w, Disp: 8 * wsize * u})
		for r := range a {
			VFMADD231PS(Mem{Base: a[r], Disp: 32 * u}, y, acc[r][u])
		}
	}
	ADDQ(U32(32*wsize), w)
	for r := range a {
		ADDQ(U32(128), a[r])
	}
	DECQ(cnt)
	JNZ(LabelRef(name + "_loop32"))
	Label(name + "_tail")
	ANDQ(U32(31), n)
	SHRQ(U8(3), n)
	JZ(LabelRef(name + "_done"))
	Label(name + "_loop8")
	y := ft.load(Mem{Base: w})
	for r := range a {
		VFMADD231PS(Mem{Base: a[r]}, y, acc[r][0])
		ADDQ(U32(32), a[r])
	}
	ADDQ(U32(8*wsize), w)
	DECQ(n)
	JNZ(LabelRef(name + "_loop8"))
	Label(name + "_done")
	var out Register
	if rows > 1 {
		out = Load(Param("out"), GP64())
	}
	for r := range acc {
		VADDPS(acc[r][1], acc[r][0], acc[r][0])
		VADDPS(acc[r][3], acc[r][2], acc[r][2])
		VADDPS(acc[r][2], acc[r][0], acc[r][0])
		x := hsum(acc[r][0])
		if rows == 1 {
			VZEROUPPER()
			Store(x, ReturnIndex(0))
			RET()
			return
		}
		VMOVSS(x, Mem{Base: out, Disp: 4 * r})
	}
	VZEROUPPER()
	RET()
}

// quantQ8A quantizes nb blocks of 32 float32 into Q8A with exactly the
// operations of the portable quantQ8A: amax = max|x|, d = amax/127,
// id = 127/amax (0 if amax is 0), q = round-to-even(x·id) by VCVTPS2DQ,
// s = d·float32(Σq).
func quantQ8A() {
	TEXT("quantQ8AAVX2", NOSPLIT, "func(nb int, x *float32, dst *byte)")
	Pragma("noescape")
	Doc("quantQ8AAVX2 quantizes nb blocks of 32 values into Q8A.")
	nb := Load(Param("nb"), GP64())
	x := Load(Param("x"), GP64())
	dst := Load(Param("dst"), GP64())
	abs := YMM()
	VMOVDQU(absMask, abs)
	perm := YMM()
	VMOVDQU(permPack, perm)
	Label("quantQ8A_loop")
	var y [4]VecVirtual
	for i := range y {
		y[i] = YMM()
		VMOVUPS(Mem{Base: x, Disp: 32 * i}, y[i])
	}
	m, t := YMM(), YMM()
	VANDPS(abs, y[0], m)
	for i := 1; i < 4; i++ {
		VANDPS(abs, y[i], t)
		VMAXPS(t, m, m)
	}
	amax, u := XMM(), XMM()
	VEXTRACTF128(Imm(1), m, amax)
	VMAXPS(m.AsX(), amax, amax)
	VMOVHLPS(amax, amax, u)
	VMAXPS(u, amax, amax)
	VMOVSHDUP(amax, u)
	VMAXSS(u, amax, amax)

	d := XMM()
	VDIVSS(f32Const(127), amax, d) // d = amax/127
	id, nz, z := XMM(), XMM(), XMM()
	VMOVSS(f32Const(127), id)
	VDIVSS(amax, id, id) // id = 127/amax
	VXORPS(z, z, z)
	VCMPSS(Imm(4), z, amax, nz) // amax != 0
	VANDPS(nz, id, id)
	yid := YMM()
	VBROADCASTSS(id, yid)
	for i := range y {
		VMULPS(yid, y[i], y[i])
		VCVTPS2DQ(y[i], y[i])
	}
	sum := YMM()
	VPADDD(y[1], y[0], sum)
	VPADDD(y[2], sum, sum)
	VPADDD(y[3], sum, sum)
	sx := XMM()
	VEXTRACTI128(Imm(1), sum, sx)
	VPADDD(sum.AsX(), sx, sx)
	v := XMM()
	VPSHUFD(Imm(0x4e), sx, v)
	VPADDD(v, sx, sx)
	VPSHUFD(Imm(0xb1), sx, v)
	VPADDD(v, sx, sx)
	VCVTDQ2PS(sx, sx)
	VMULSS(d, sx, sx) // s = d·Σq
	p01, p23 := YMM(), YMM()
	VPACKSSDW(y[1], y[0], p01)
	VPACKSSDW(y[3], y[2], p23)
	VPACKSSWB(p23, p01, p01)
	VPERMD(p01, perm, p01)
	VMOVSS(d, Mem{Base: dst})
	VMOVSS(sx, Mem{Base: dst, Disp: 4})
	VMOVDQU(p01, Mem{Base: dst, Disp: q8aQs})
	ADDQ(U32(128), x)
	ADDQ(U32(q8aSize), dst)
	DECQ(nb)
	JNZ(LabelRef("quantQ8A_loop"))
	VZEROUPPER()
	RET()
}

// quantQ8K quantizes nb blocks of 256 float32 into Q8_K with exactly the
// operations of llama.cpp's quantize_row_q8_K_ref (quant.quantQ8_K): m is
// the first element of largest magnitude, iscale = -127/m, q =
// min(127, round-to-even(iscale·x)), d = 1/iscale, and the sums of each 16
// quants; an all-zero block is all zero bytes.
func quantQ8K() {
	TEXT("quantQ8KAVX2", NOSPLIT, "func(nb int, x *float32, dst *byte)")
	Pragma("noescape")
	Doc("quantQ8KAVX2 quantizes nb blocks of 256 values into Q8_K.")
	nb := Load(Param("nb"), GP64())
	x := Load(Param("x"), GP64())
	dst := Load(Param("dst"), GP64())
	abs := YMM()
	VMOVDQU(absMask, abs)
	Label("quantQ8K_loop")
	var m [4]VecVirtual
	for i := range m {
		m[i] = YMM()
		VANDPS(Mem{Base: x, Disp: 32 * i}, abs, m[i])
	}
	for i := 4; i < 32; i++ {
		t := YMM()
		VANDPS(Mem{Base: x, Disp: 32 * i}, abs, t)
		VMAXPS(t, m[i%4], m[i%4])
	}
	VMAXPS(m[1], m[0], m[0])
	VMAXPS(m[3], m[2], m[2])
	VMAXPS(m[2], m[0], m[0])
	amax, u := XMM(), XMM()
	VEXTRACTF128(Imm(1), m[0], amax)
	VMAXPS(m[0].AsX(), amax, amax)
	VMOVHLPS(amax, amax, u)
	VMAXPS(u, amax, amax)
	VMOVSHDUP(amax, u)
	VMAXSS(u, amax, amax)

	z := YMM()
	VXORPS(z, z, z)
	VUCOMISS(z.AsX(), amax)
	JNE(LabelRef("quantQ8K_nonzero"))
	for off := 0; off+32 <= 292; off += 32 {
		VMOVDQU(z, Mem{Base: dst, Disp: off})
	}
	MOVL(U32(0), Mem{Base: dst, Disp: 288})
	JMP(LabelRef("quantQ8K_next"))

	Label("quantQ8K_nonzero")
	// The first element whose magnitude is amax gives the sign.
	bamax := YMM()
	VBROADCASTSS(amax, bamax)
	p, cnt, bits := GP64(), GP64(), GP64()
	MOVQ(x, p)
	MOVQ(U32(32), cnt)
	mv := XMM()
	Label("quantQ8K_find")
	t := YMM()
	VANDPS(Mem{Base: p}, abs, t)
	VCMPPS(Imm(0), bamax, t, t) // EQ_OQ
	VMOVMSKPS(t, bits.As32())
	ADDQ(U32(32), p)
	TESTL(bits.As32(), bits.As32())
	JNZ(LabelRef("quantQ8K_found"))
	DECQ(cnt)
	JNZ(LabelRef("quantQ8K_find"))
	VMOVAPS(amax, mv) // not found: only for NaN input
	JMP(LabelRef("quantQ8K_scale"))
	Label("quantQ8K_found")
	BSFL(bits.As32(), bits.As32())
	VMOVSS(Mem{Base: p, Index: bits, Scale: 4, Disp: -32}, mv)
	Label("quantQ8K_scale")
	is, d := XMM(), XMM()
	VMOVSS(f32Const(-127), is)
	VDIVSS(mv, is, is) // iscale = -127/m
	VMOVSS(f32Const(1), d)
	VDIVSS(is, d, d) // d = 1/iscale
	VMOVSS(d, Mem{Base: dst})
	bis := YMM()
	VBROADCASTSS(is, bis)
	c127, perm := YMM(), YMM()
	VMOVDQU(i127, c127)
	VMOVDQU(permPack, perm)
	for c := range 8 {
		var y [4]VecVirtual
		for i := range y {
			y[i] = YMM()
			VMULPS(Mem{Base: x, Disp: 128*c + 32*i}, bis, y[i])
			VCVTPS2DQ(y[i], y[i])
			VPMINSD(c127, y[i], y[i])
		}
		s01, s23 := YMM(), YMM()
		VPADDD(y[1], y[0], s01)
		VPADDD(y[3], y[2], s23)
		VPHADDD(s23, s01, s01)
		VPHADDD(s01, s01, s01)
		hx := XMM()
		VEXTRACTI128(Imm(1), s01, hx)
		VPADDD(s01.AsX(), hx, hx) // the sums of quants 32c..32c+15 and 32c+16..32c+31
		VPACKSSDW(hx, hx, hx)
		VMOVD(hx, Mem{Base: dst, Disp: 260 + 4*c})
		VPACKSSDW(y[1], y[0], y[0])
		VPACKSSDW(y[3], y[2], y[2])
		VPACKSSWB(y[2], y[0], y[0])
		VPERMD(y[0], perm, y[0])
		VMOVDQU(y[0], Mem{Base: dst, Disp: 4 + 32*c})
	}
	Label("quantQ8K_next")
	ADDQ(U32(1024), x)
	ADDQ(U32(292), dst)
	DECQ(nb)
	JNZ(LabelRef("quantQ8K_loop"))
	VZEROUPPER()
	RET()
}

// dotQ2K is the q2_K × Q8_K kernel: x = d·sc·q - dmin·m per sub-block of
// 16, q in 0..3. The minimum term comes from the Q8_K block sums; the
// scales are arranged as for q6_K, a pair of sub-blocks per 32 quants.
func dotQ2K(sh shape) {
	name := fmt.Sprintf("dotQ2_KAVX2%s", sh.suffix)
	kernel{
		name: name, doc: name + " is the Q2_K × Q8_K kernel for nb super-blocks.",
		wsize: 84, asize: q8kSize,
		body: func(w Register, a []Register, _ []int, acc []VecVirtual) {
			rows := len(a)
			dd := XMM() // (d, dmin, junk, junk)
			dbits := GP32()
			MOVL(Mem{Base: w, Disp: 80}, dbits)
			VMOVD(dbits, dd)
			VCVTPH2PS(dd, dd)

			raw, mb := XMM(), XMM()
			VMOVDQU(Mem{Base: w}, raw)
			VPSRLW(Imm(4), raw, mb)
			VPAND(c0F, mb, mb)
			VPAND(c0F, raw, raw)
			ymin := YMM()
			VPMOVZXBW(mb, ymin)
			for r := range rows {
				p := YMM()
				VPMADDWD(Mem{Base: a[r], Disp: q8kBsums}, ymin, p)
				VCVTDQ2PS(p, p)
				dmin := XMM()
				VMOVSHDUP(dd, dmin)
				scaledAdd(dmin, a[r], p, acc[r], true)
			}
			ysc := YMM() // low lane: sc0, sc2, …, sc14; high lane: sc1, sc3, …
			VPSHUFB(q6Order, raw, raw)
			VPMOVZXBW(raw, ysc)

			sumi := make([]VecVirtual, rows)
			for h := range 2 {
				for k := range 4 {
					q := YMM()
					VMOVDQU(Mem{Base: w, Disp: 16 + 32*h}, q)
					if k > 0 {
						VPSRLW(Imm(uint64(2*k)), q, q)
					}
					VPAND(c03, q, q)
					s := YMM()
					VPSHUFB(wordBcast.Offset(32*(4*h+k)), ysc, s)
					for r := range rows {
						p := YMM()
						VPMADDUBSW(Mem{Base: a[r], Disp: q8kQs + 128*h + 32*k}, q, p)
						VPMADDWD(s, p, p)
						if h == 0 && k == 0 {
							sumi[r] = p
						} else {
							VPADDD(p, sumi[r], sumi[r])
						}
					}
				}
			}
			for r := range rows {
				VCVTDQ2PS(sumi[r], sumi[r])
				scaledAdd(dd, a[r], sumi[r], acc[r], false)
			}
		},
	}.emit(sh)
}

// dotQ3K is the q3_K × Q8_K kernel: x = d·sc·q per sub-block of 16, q =
// (2 low bits | high bit << 2) - 4 in -4..3, used unsigned (0..7) with the
// offset applied through the block sums as in dotQ6K.
func dotQ3K(sh shape) {
	name := fmt.Sprintf("dotQ3_KAVX2%s", sh.suffix)
	kernel{
		name: name, doc: name + " is the Q3_K × Q8_K kernel for nb super-blocks.",
		wsize: 110, asize: q8kSize,
		body: func(w Register, a []Register, _ []int, acc []VecVirtual) {
			rows := len(a)
			dd := XMM()
			dbits := GP32()
			MOVWLZX(Mem{Base: w, Disp: 108}, dbits)
			VMOVD(dbits, dd)
			VCVTPH2PS(dd, dd)

			// Scales: the low 4 bits of sc_j are nibble j/8 of byte j%8, the high
			// 2 bits are bits 2(j/4) of byte 8 + j%4; sc_j is that minus 32.
			p8, h4, lo, hi, t := GP64(), GP64(), GP64(), GP64(), GP64()
			MOVQ(Mem{Base: w, Disp: 96}, p8)
			MOVL(Mem{Base: w, Disp: 104}, h4.As32())
			MOVQ(U64(0x0f0f0f0f0f0f0f0f), t)
			MOVQ(p8, lo)
			ANDQ(t, lo) // low 4 bits of sc0..7
			SHRQ(U8(4), p8)
			ANDQ(t, p8) // low 4 bits of sc8..15
			MOVQ(h4, hi)
			ANDL(U32(0x03030303), hi.As32())
			MOVQ(h4, t)
			SHRL(U8(2), t.As32())
			ANDL(U32(0x03030303), t.As32())
			SHLQ(U8(32), t)
			ORQ(t, hi)
			SHLQ(U8(4), hi)
			ORQ(hi, lo) // sc0..7 + 32
			MOVQ(h4, hi)
			SHRL(U8(4), hi.As32())
			ANDL(U32(0x03030303), hi.As32())
			SHRL(U8(6), h4.As32())
			ANDL(U32(0x03030303), h4.As32())
			SHLQ(U8(32), h4)
			ORQ(h4, hi)
			SHLQ(U8(4), hi)
			ORQ(hi, p8) // sc8..15 + 32
			raw := XMM()
			VMOVQ(lo, raw)
			VPINSRQ(Imm(1), p8, raw, raw)
			VPSUBB(c20.Offset(0), raw, raw) // sc0..15, signed

			yscn := YMM()
			VPMOVSXBW(raw, yscn)
			nsum := make([]VecVirtual, rows)
			for r := range rows {
				nsum[r] = YMM()
				VPMADDWD(Mem{Base: a[r], Disp: q8kBsums}, yscn, nsum[r])
				VPSLLD(Imm(2), nsum[r], nsum[r])
			}
			ysc := YMM()
			VPSHUFB(q6Order, raw, raw)
			VPMOVSXBW(raw, ysc)

			for h := range 2 {
				for k := range 4 {
					q, hb := YMM(), YMM()
					VMOVDQU(Mem{Base: w, Disp: 32 + 32*h}, q)
					if k > 0 {
						VPSRLW(Imm(uint64(2*k)), q, q)
					}
					VPAND(c03, q, q)
					VMOVDQU(Mem{Base: w}, hb) // hmask: bit 4h+k to bit 2
					switch b := 4*h + k; {
					case b < 2:
						VPSLLW(Imm(uint64(2-b)), hb, hb)
					case b > 2:
						VPSRLW(Imm(uint64(b-2)), hb, hb)
					}
					VPAND(c04, hb, hb)
					VPOR(hb, q, q)
					s := YMM()
					VPSHUFB(wordBcast.Offset(32*(4*h+k)), ysc, s)
					for r := range rows {
						p := YMM()
						VPMADDUBSW(Mem{Base: a[r], Disp: q8kQs + 128*h + 32*k}, q, p)
						VPMADDWD(s, p, p)
						VPSUBD(p, nsum[r], nsum[r])
					}
				}
			}
			for r := range rows {
				VCVTDQ2PS(nsum[r], nsum[r])
				scaledAdd(dd, a[r], nsum[r], acc[r], true)
			}
		},
	}.emit(sh)
}
