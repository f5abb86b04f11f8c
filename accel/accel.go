// Package accel defines the compute backend behind the forward pass. The
// CPU backend (accel/cpu) is always present; GPU backends implement the
// same interface over device memory.
//
// Activations live in backend Buffers of float32 values laid out as rows
// of one token each. The engine never touches Buffer memory directly: it
// moves data in and out with Write and Read, so a backend may keep buffers
// on a device.
package accel

import (
	"math"

	"github.com/edged/edged/quant"
)

// Buffer is activation or cache memory owned by a backend.
type Buffer interface {
	// Len is the number of elements the buffer holds.
	Len() int
}

// Matrix is a weight in its storage type: Rows rows of Cols values, each
// row stored contiguously as quant blocks. Data is host memory (usually a
// view into a memory-mapped model file).
type Matrix struct {
	Name string
	Type quant.Type
	Rows int
	Cols int
	Data []byte
}

// Weight is a matrix prepared by a backend (for a GPU: uploaded).
type Weight interface {
	Dims() (rows, cols int)
}

// RoPE describes one rotary embedding application. Make it with NewRoPE.
type RoPE struct {
	HeadDim int       // width of one head
	Dims    int       // leading dimensions of each head that rotate
	NeoX    bool      // pairs (i, i+Dims/2) instead of (2i, 2i+1)
	Freqs   []float64 // the angle per position of each pair, Dims/2 values
}

// Rotate rotates each pair of head by its angle: pair i by the one whose
// cosine and sine are cs[2i] and cs[2i+1]. inverse rotates the other way
// (the transposed rotation: RoPE's backward pass).
func (r *RoPE) Rotate(head []float32, cs []float64, inverse bool) {
	half := r.Dims / 2
	for i := range half {
		cos, sin := cs[2*i], cs[2*i+1]
		if inverse {
			sin = -sin
		}
		a, c := 2*i, 2*i+1
		if r.NeoX {
			a, c = i, i+half
		}
		x0, x1 := float64(head[a]), float64(head[c])
		head[a] = float32(x0*cos - x1*sin)
		head[c] = float32(x0*sin + x1*cos)
	}
}

// NewRoPE computes the pair frequencies θ^(-2i/dims), divided by the
// optional llama 3 frequency factors. They are computed once, in float64,
// because angles pos·freq grow with the context.
func NewRoPE(headDim, dims int, theta float64, neox bool, factors []float32) RoPE {
	freqs := make([]float64, dims/2)
	for i := range freqs {
		freqs[i] = math.Pow(theta, -2*float64(i)/float64(dims))
		if factors != nil {
			freqs[i] /= float64(factors[i])
		}
	}
	return RoPE{HeadDim: headDim, Dims: dims, NeoX: neox, Freqs: freqs}
}

// AttnShape describes grouped-query attention.
type AttnShape struct {
	NHead   int
	NHeadKV int
	HeadDim int
	Scale   float32 // applied to q·k, usually 1/sqrt(HeadDim)
}

// AttnSeq is one sequence's share of a batched attention call: its Rows
// consecutive rows of the batch attend causally over the sequence's cache.
type AttnSeq struct {
	K, V Buffer // this layer's cache rows for the sequence
	Past int    // cache rows already present before this call
	Rows int    // rows of this sequence in the batch
	// Probs, when non-nil, receives the attention probabilities of these
	// rows: [NHead][Rows][Past+Rows], row i's entries past Past+i zero.
	// Attention observers (token pruning) read them from here, so they
	// cost no second attention pass.
	Probs []float32
	// Scores, when non-nil, receives the pre-softmax scores q·k·Scale of
	// these rows in the layout of Probs, masked entries zero (LeMo's
	// informativeness needs them; softmax loses each row's offset).
	Scores []float32
}

// Checker is implemented by backends whose operations can fail after they
// have returned (a GPU runs them later): Err returns the first failure.
type Checker interface {
	Err() error
}

// Check returns b's first failure when b is a Checker, else nil.
func Check(b Backend) error {
	if c, ok := b.(Checker); ok {
		return c.Err()
	}
	return nil
}

// Product is one of the matrix products of MatMuls: Dst = W·x.
type Product struct {
	Dst Buffer
	W   Weight
}

// MultiMatMuler is implemented by backends that multiply one input by
// several weights as a single operation (q, k and v; gate and up): the
// input is rounded once, and the CPU's threads meet once instead of once
// per weight, which in decoding a small model is a fair part of a step.
type MultiMatMuler interface {
	// MatMuls computes p.Dst[r] = p.W·x[r] for each p of ps and rows
	// rows, exactly as MatMul computes each.
	MatMuls(x Buffer, rows int, ps []Product)
}

// MatMuls computes p.Dst[r] = p.W·x[r] for each p of ps: in one operation
// where b is a MultiMatMuler, else one MatMul at a time.
func MatMuls(b Backend, x Buffer, rows int, ps []Product) {
	if m, ok := b.(MultiMatMuler); ok {
		m.MatMuls(x, rows, ps)
		return
	}
	for _, p := range ps {
		b.MatMul(p.Dst, p.W, x, rows)
	}
}

// Backend runs the operations of a transformer forward pass. Row counts
// describe how many token rows of the buffers an operation covers; every
// buffer is at least that large. Methods with an error result may fail for
// resource reasons (memory); compute methods on valid arguments do not.
type Backend interface {
	Name() string
	// Close releases the backend's resources (threads, device memory).
	// Buffers and weights are invalid afterwards.
	Close() error
	// Alloc returns a zeroed buffer of n float32 values.
	Alloc(n int) (Buffer, error)
	// AllocCache returns a zeroed buffer of n values stored as typ (F32 or
	// F16), for the KV cache.
	AllocCache(n int, typ quant.Type) (Buffer, error)
	// Free releases a buffer; using it afterwards is an error.
	Free(b Buffer)
	// Load prepares a weight matrix for MatMul and Embed.
	Load(m Matrix) (Weight, error)
	// Write copies src into dst starting at element off.
	Write(dst Buffer, off int, src []float32)
	// Read copies len(dst) elements of src starting at element off.
	Read(dst []float32, src Buffer, off int)

	// Embed writes row ids[r] of table into row r of dst.
	Embed(dst Buffer, table Weight, ids []int32)
	// MatMul computes dst[r] = W·x[r] for rows rows: x rows have Cols
	// values, dst rows have Rows values.
	MatMul(dst Buffer, w Weight, x Buffer, rows int)
	// RMSNorm computes dst[r] = x[r] / rms(x[r]) * w for rows of len(w).
	RMSNorm(dst, x, w Buffer, rows int, eps float32)
	// AddRows adds the vector b to each of rows rows of dst (a bias).
	AddRows(dst, b Buffer, rows int)
	// Add computes dst[i] += x[i] for the first n elements.
	Add(dst, x Buffer, n int)
	// SwiGLU computes dst[i] = silu(gate[i]) * up[i] for the first n.
	SwiGLU(dst, gate, up Buffer, n int)
	// RoPE rotates each head of each row r in place at position pos[r];
	// rows have width a multiple of r.HeadDim.
	RoPE(x Buffer, width int, pos []int32, r RoPE)
	// WriteCache stores rows of keys k and values v (each a multiple of
	// kvDim values) in a layer's cache buffers kc, vc from row at on. The
	// cache layout is the backend's own.
	WriteCache(kc, vc Buffer, kvDim, at int, k, v []float32)
	// Attention stores the k and v rows of each sequence in its cache after
	// its Past rows, then computes for each row causal attention over the
	// cache (row i of a sequence sees cache rows [0, Past+i]) into out.
	// Rows of q, k, v and out are grouped by sequence in the order of seqs.
	Attention(out, q, k, v Buffer, seqs []AttnSeq, s AttnShape)
	// Gather copies rows idx[i] of src (rows of width values) into row i
	// of dst; dst and src must differ.
	Gather(dst, src Buffer, width int, idx []int32)
}
