package quant

import (
	"fmt"
	"os"
	"unsafe"
)

// The assembly is generated (by avo for amd64, by a small encoder for
// arm64) from the programs in _asm, a module of its own:
//
//go:generate sh -c "cd _asm && go run . -out ../dot_amd64.s -stubs ../dot_decl_amd64.go -pkg quant"
//go:generate sh -c "cd _asm && go run ./arm64 -out ../dot_arm64.s -stubs ../dot_decl_arm64.go"

// Dot kernels: the products of one weight row with one activation row that
// every matrix product of the CPU backend is made of.
//
// As in llama.cpp, an activation row is quantized once ("on the fly") into
// the activation type of the weight type's kernel, and the kernel multiplies
// the two quantized rows with integer arithmetic per block:
//
//	weights                   activations
//	q4_0 q4_1 q5_0 q5_1 q8_0  Q8A (below)
//	q2_K q3_K q4_K q5_K q6_K  q8_K, ggml's layout (d f32 | qs[256] | bsums[16])
//	f32 f16 bf16              f32 (f16 and bf16 weights are widened exactly)
//
// Every kernel exists in portable Go (dot_generic.go, always compiled and
// always tested) and in assembly for the CPU features found at start-up:
// AVX2+FMA+F16C on amd64 (dot_amd64.go), NEON with or without the
// dot-product extension on arm64 (dot_arm64.go). Building with the tag
// purego, or running with EDGED_NOASM=1 in the environment, keeps the
// portable kernels. All tiers share the activation layouts, so any tier's
// quantizer feeds any tier's kernel.

// Q8A is edged's activation type for the 32-element block types; it is not a
// storage type of any file (Known reports false, and RowSize does not know
// it: use Kernel.ActRowSize). A block of 32 values takes 40 bytes:
//
//	d f32 | s f32 | qs[32] int8
//
// with x ≈ d·q, d = max|x|/127, q = round(x/d) (ties to even), and s = d·Σq.
// Against ggml's q8_0 it keeps d in float32 (slightly more accurate, and no
// conversion in the kernels) and stores the block sum s that lets a kernel
// multiply the unsigned 4- and 5-bit quants of q4_0/q5_0 directly and apply
// their offset (-8, -16) or the q4_1/q5_1 minimum once per block.
const Q8A Type = 1<<16 + 0

// q8aBlock is the size in bytes of one Q8A block.
const q8aBlock = 40

// Kernel multiplies weight rows of one storage type with activation rows in
// the kernel's activation type.
type Kernel struct {
	// Weight is the storage type of the weight rows, Act the type that
	// activations must be quantized into (with Quantize).
	Weight, Act Type
	// Tier names the implementation: "portable", "avx2", "neon", "neon+dot".
	Tier string
	// Dot returns the dot product of one weight row w and one activation
	// row a, both n values long; n must be a multiple of the weight block
	// size (and of 32 for Q8A, 256 for Q8_K activations). It panics if w or
	// a is shorter than n values.
	Dot func(n int, w, a []byte) float32
	// DotRows sets out[r] = w · a_r for r < len(out), where a_r =
	// a[r*aStride:] is the r-th activation row (aStride ≥ 0, in bytes), so
	// that a weight row loaded once serves several activation rows: the
	// assembly tiers take them four at a time. Each out[r] is exactly what
	// Dot returns for that row.
	DotRows func(n int, w, a []byte, aStride int, out []float32)
	// MatVec sets out[r] = w_r · a for r < len(out), where w_r =
	// w[r*wStride:] is the r-th weight row (wStride ≥ 0, in bytes): a
	// matrix-vector product, as in decoding one token. The assembly tiers
	// take the weight rows of the 32-element block types four at a time,
	// which hides the latency of short rows and the cost of a call (1.4×
	// faster for q4_0 rows of 576), and call their one-row kernel directly
	// for the others. Each out[r] is exactly what Dot returns for that
	// row, except where the type has a Tile: there the tiles of four
	// weight rows run the tile's arithmetic (exactly what Tile returns),
	// so that a row's result does not depend on whether it was computed
	// alone or in a batch (see FloatMatVec for a float product without
	// that property).
	MatVec func(n int, w []byte, wStride int, a []byte, out []float32)
	// Tile, where it is not nil, multiplies four weight rows w_c =
	// w[c*wStride:] by rows activation rows a_r = a[r*aStride:] (rows =
	// len(out)/4, a multiple of 4; strides ≥ 0, in bytes), n values each:
	// out[4r+c] = w_c · a_r. It packs the weight rows into scratch (at
	// least TileScratch(n) bytes: q4_0's nibbles unpacked, the scales
	// converted) once, then runs a 4×4 tile kernel over the activation
	// rows, which folds the four weight rows' sums against one activation
	// block into one register and so spends a third of the instructions
	// of DotRows. The amd64 q4_0 and q8_0 kernels have one. Its results
	// agree with Dot's within float32 rounding, not bit for bit, and do
	// not depend on a row's place among the activation rows.
	Tile func(n int, w []byte, wStride int, a []byte, aStride int, out []float32, scratch []byte)

	quantize func(x []float32, dst []byte)
}

// Quantize quantizes the activation row x into dst in the kernel's
// activation type. len(x) must be a multiple of the activation block size
// and dst at least ActRowSize(len(x)) bytes long; it panics otherwise.
func (k Kernel) Quantize(x []float32, dst []byte) { k.quantize(x, dst) }

// ActRowSize is the size in bytes of n activation values in the kernel's
// activation type (n a multiple of its block size).
func (k Kernel) ActRowSize(n int) int { return actRowSize(k.Act, n) }

func actRowSize(act Type, n int) int {
	if act == Q8A {
		return n / 32 * q8aBlock
	}
	size, _ := act.RowSize(n)
	return size
}

// KernelFor returns the fastest kernel for weights of type t on this CPU.
// It returns an error wrapping ErrUnknownType for a type that has no kernel
// (q8_1 and q8_K, which are activation types, and unknown types).
func KernelFor(t Type) (Kernel, error) { return kernelFor(bestTier, t) }

// KernelTier names the implementation tier KernelFor uses.
func KernelTier() string { return bestTier.name }

// A tier is one implementation level of the kernels: the portable Go ones,
// or assembly for a set of CPU features. An assembly tier supplies the
// functions it has and leaves the rest to the portable ones, which share its
// activation layouts.
type tier struct {
	name string
	// dot and dotRows return the tier's functions for a weight type, or nil.
	dot     func(t Type) func(n int, w, a []byte) float32
	dotRows func(t Type) func(n int, w, a []byte, aStride int, out []float32)
	matVec  func(t Type) func(n int, w []byte, wStride int, a []byte, out []float32)
	// tile returns the tier's 4×4 tile kernel for a weight type, or nil
	// (nil tile: none).
	tile func(t Type) func(n int, w []byte, wStride int, a []byte, aStride int, out []float32, scratch []byte)
	// floatMatVec returns the tier's four-row float product (FloatMatVec)
	// for F32 or F16, or nil (nil floatMatVec: none).
	floatMatVec func(t Type) FloatRows
	// quantize returns the tier's activation quantizer for act, or nil.
	quantize func(act Type) func(x []float32, dst []byte)
}

var portableTier = tier{
	name:     "portable",
	dot:      portableDot,
	dotRows:  func(Type) func(int, []byte, []byte, int, []float32) { return nil },
	matVec:   func(Type) func(int, []byte, int, []byte, []float32) { return nil },
	quantize: portableQuantize,
}

// bestTier is the tier KernelFor uses, chosen once at start-up: the best
// this CPU runs, unless the environment names another it runs.
// EDGED_NOASM=1 picks the portable kernels, so that tests can check a
// whole model on both paths; EDGED_CPU_KERNELS=name picks a tier by name (see
// KernelTier), so that tiers can be timed against each other.
var bestTier = pickTier(os.Getenv("EDGED_CPU_KERNELS"), os.Getenv("EDGED_NOASM") == "1")

func pickTier(name string, noAsm bool) tier {
	ts := availableTiers()
	if noAsm {
		return ts[0]
	}
	for _, tr := range ts {
		if tr.name == name {
			return tr
		}
	}
	return ts[len(ts)-1]
}

// tilePanelBlock is the scratch Kernel.Tile needs per 32 values: four
// rows' weights as bytes and their scales (see quant/_asm's pack32).
const tilePanelBlock = 192

// TileScratch is the size of the scratch Kernel.Tile needs for rows of n
// values.
func TileScratch(n int) int { return n / 32 * tilePanelBlock }

// FloatRows multiplies float rows w_r = w[r*wStride:] (n values each) by
// one or two float32 vectors: out0[r] = w_r · a0 and, when a1 is not nil,
// out1[r] = w_r · a1 (out1 as long as out0). See FloatMatVec.
type FloatRows func(n int, w []byte, wStride int, a0, a1 []byte, out0, out1 []float32)

// FloatMatVec returns the product of rows of type t (F32 or F16) with one
// or two float32 vectors. Where the CPU allows it takes four rows and both
// vectors per kernel call, summing in another order than Dot, so its
// results agree with Dot's within float32 rounding, not bit for bit: a
// product must always go through the same function. Attention's keys and
// values do (a query row always sees the same keys through it, whether
// its head is paired with another or not); weights go through Kernel,
// whose products agree with Dot exactly whatever the batch.
func FloatMatVec(t Type) (FloatRows, error) {
	if t != F32 && t != F16 {
		return nil, fmt.Errorf("quant: no float matrix-vector product for %s", t)
	}
	if bestTier.floatMatVec != nil {
		if f := bestTier.floatMatVec(t); f != nil {
			return f, nil
		}
	}
	k, err := KernelFor(t)
	if err != nil {
		return nil, err
	}
	return func(n int, w []byte, wStride int, a0, a1 []byte, out0, out1 []float32) {
		k.MatVec(n, w, wStride, a0, out0)
		if a1 != nil {
			k.MatVec(n, w, wStride, a1, out1)
		}
	}, nil
}

// f32Dot is the F32 kernel's Dot, for DotF32.
var f32Dot = func() func(n int, w, a []byte) float32 {
	k, err := KernelFor(F32)
	if err != nil {
		panic(err) // every tier has an F32 kernel
	}
	return k.Dot
}()

// DotF32 is a·b for float32 vectors (b at least as long as a), through the
// F32 weight kernel: assembly where the CPU has it.
func DotF32(a, b []float32) float32 {
	if len(a) == 0 {
		return 0
	}
	_ = b[len(a)-1]
	return f32Dot(len(a), unsafe.Slice((*byte)(unsafe.Pointer(&a[0])), 4*len(a)), unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), 4*len(a)))
}

// Assembly reports whether KernelFor returns assembly kernels: false with
// the purego build tag, with EDGED_NOASM=1, or on a CPU without the
// features. Other packages' assembly (accel/cpu's vector math) follows the
// same switch, so that one setting forces the whole portable path.
func Assembly() bool { return bestTier.name != portableTier.name }

// availableTiers lists the tiers this CPU can run, portable first and the
// best last.
func availableTiers() []tier { return append([]tier{portableTier}, archTiers()...) }

func kernelFor(tr tier, t Type) (Kernel, error) {
	act, ok := kernelAct(t)
	if !ok {
		return Kernel{}, fmt.Errorf("quant: no dot kernel for %w %s", ErrUnknownType, t)
	}
	k := Kernel{Weight: t, Act: act, Tier: "portable"}
	k.Dot = portableDot(t)
	k.quantize = portableQuantize(act)
	if f := tr.dot(t); f != nil {
		k.Dot, k.Tier = f, tr.name
	}
	if f := tr.quantize(act); f != nil {
		k.quantize = f
	}
	dot := k.Dot
	k.DotRows = tr.dotRows(t)
	if k.DotRows == nil {
		k.DotRows = func(n int, w, a []byte, aStride int, out []float32) {
			for r := range out {
				out[r] = dot(n, w, a[r*aStride:])
			}
		}
	}
	if tr.tile != nil {
		k.Tile = tr.tile(t)
	}
	k.MatVec = tr.matVec(t)
	if k.MatVec == nil {
		k.MatVec = func(n int, w []byte, wStride int, a []byte, out []float32) {
			for r := range out {
				out[r] = dot(n, w[r*wStride:], a)
			}
		}
	}
	return k, nil
}

// kernelAct is the activation type of the kernel for weights of type t.
func kernelAct(t Type) (Type, bool) {
	switch t {
	case F32, F16, BF16:
		return F32, true
	case Q4_0, Q4_1, Q5_0, Q5_1, Q8_0:
		return Q8A, true
	case Q2_K, Q3_K, Q4_K, Q5_K, Q6_K:
		return Q8_K, true
	}
	return 0, false
}
