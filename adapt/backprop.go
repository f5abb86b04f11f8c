package adapt

import (
	"errors"
	"fmt"
	"math"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// Backpropagation for a delta on one layer's MLP down-projection. The
// residual stream entering that layer does not depend on the delta, and
// neither does the down-projection's input h: a tail holds float32 copies
// of the layers from that one up, the final norm and the output, and runs
//
//	layer L:      x₁ = base + Δ(h)            (base = x₀ + attn + W_down·h)
//	layers > L:   x += Wo·attn(rope(Wq·n), rope(Wk·n), Wv·n),  n = rms(x)
//	              x += Down·(silu(Gate·n) ⊙ Up·n),              n = rms(x)
//	output:       logits = Output·rms(x)
//
// forward and backward over one sequence at a time, as the engine does
// (positions from 0, causal attention), in float32 with the engine's
// rounding choices (RMSNorm sums and RoPE angles in float64). Backward
// stops at x₁: the gradient of the loss with respect to layer L's
// down-projection output at each row, from which the delta's parameters
// get theirs by the chain rule.

// tailLayer is one transformer block as float32 (shapes rows × cols,
// row-major, as the model's tensors).
type tailLayer struct {
	attnNorm, ffnNorm []float32 // [NEmbd]
	wq                []float32 // [QDim × NEmbd]
	wk, wv            []float32 // [KVDim × NEmbd]
	bq, bk, bv        []float32 // [QDim], [KVDim], [KVDim]; nil without biases
	wo                []float32 // [NEmbd × QDim]
	gate, up          []float32 // [NFF × NEmbd]
	down              []float32 // [NEmbd × NFF]
	// The transposes of the matrices, for backward's Wᵀ·dy as rows of
	// dot products (nil in the adapted layer, whose backward stops at
	// the delta).
	wqT, wkT, wvT, woT, gateT, upT, downT []float32
}

// tail is a float32 copy of a model from layer from up.
type tail struct {
	cfg     model.Config
	from    int
	rope    accel.RoPE
	scale   float32     // attention's 1/√HeadDim
	layers  []tailLayer // layers[i] is the model's layer from+i
	outNorm []float32   // [NEmbd]
	output  []float32   // [NVocab × NEmbd]
	outputT []float32   // [NEmbd × NVocab]
	embd    *model.Tensor
}

// gradArchs are the architectures whose forward pass a tail reproduces:
// the engine's llama block, with q/k/v biases and the NeoX rotary layout
// where the model has them.
var gradArchs = map[string]bool{"llama": true, "qwen2": true}

// newTail dequantizes the layers from..NLayer-1 of m, its final norm and
// its output (the token embedding when tied) to float32.
func newTail(m *model.Model, from int) (*tail, error) {
	c := m.Config
	if !gradArchs[c.Arch] {
		return nil, fmt.Errorf("adapt: backpropagation through architecture %q is not implemented (llama, qwen2)", c.Arch)
	}
	if from < 0 || from >= c.NLayer {
		return nil, fmt.Errorf("adapt: %w: layer %d of %d", ErrMismatch, from, c.NLayer)
	}
	var errs []error
	deq := func(t *model.Tensor) []float32 {
		if t == nil {
			return nil
		}
		v := make([]float32, t.Rows*t.Cols)
		if err := quant.Dequantize(t.Type, t.Data, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.Name, err))
		}
		return v
	}
	tl := &tail{
		cfg:   c,
		from:  from,
		rope:  accel.NewRoPE(c.HeadDim, c.Rope.Dims, c.Rope.Theta, c.Rope.NeoX, c.Rope.FreqFactors),
		scale: float32(1 / math.Sqrt(float64(c.HeadDim))),
		embd:  m.TokenEmbd,
	}
	for _, src := range m.Layers[from:] {
		tl.layers = append(tl.layers, tailLayer{
			attnNorm: deq(src.AttnNorm), ffnNorm: deq(src.FFNNorm),
			wq: deq(src.Wq), wk: deq(src.Wk), wv: deq(src.Wv),
			bq: deq(src.Bq), bk: deq(src.Bk), bv: deq(src.Bv),
			wo: deq(src.Wo), gate: deq(src.Gate), up: deq(src.Up), down: deq(src.Down),
		})
	}
	tl.outNorm = deq(m.OutputNorm)
	tl.output = deq(m.Output) // the token embedding when tied
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("adapt: %w", err)
	}
	e, qd, kd, ff := c.NEmbd, c.QDim(), c.KVDim(), c.NFF
	for i := range tl.layers[1:] {
		ly := &tl.layers[i+1]
		ly.wqT, ly.wkT, ly.wvT = transpose(ly.wq, qd, e), transpose(ly.wk, kd, e), transpose(ly.wv, kd, e)
		ly.woT, ly.gateT, ly.upT = transpose(ly.wo, e, qd), transpose(ly.gate, ff, e), transpose(ly.up, ff, e)
		ly.downT = transpose(ly.down, e, ff)
	}
	tl.outputT = transpose(tl.output, c.NVocab, e)
	return tl, nil
}

// transpose returns the cols × rows transpose of a rows × cols matrix.
func transpose(w []float32, rows, cols int) []float32 {
	t := make([]float32, len(w))
	for r := range rows {
		for c, v := range rowOf(w, r, cols) {
			t[c*rows+r] = v
		}
	}
	return t
}

// embed writes the token embedding rows of ids into x: the residual
// stream entering layer 0.
func (tl *tail) embed(ids []int32, x []float32) error {
	t, e := tl.embd, tl.cfg.NEmbd
	size, err := t.Type.RowSize(t.Cols)
	if err != nil {
		return fmt.Errorf("adapt: %s: %w", t.Name, err)
	}
	for r, id := range ids {
		if err := quant.Dequantize(t.Type, t.Data[int(id)*size:(int(id)+1)*size], rowOf(x, r, e)); err != nil {
			return fmt.Errorf("adapt: %s: %w", t.Name, err)
		}
	}
	return nil
}

// rowOf is row i of a row-major matrix of rows of width values.
func rowOf(m []float32, i, width int) []float32 { return m[i*width : (i+1)*width] }

// layerCache holds what one layer's backward needs of its forward over a
// sequence of n rows.
type layerCache struct {
	x       []float32 // [n × NEmbd] the residual stream entering the layer
	s1, s2  []float32 // [n] the RMSNorm scales before attention and MLP
	xn1     []float32 // [n × NEmbd] attention's normed input
	q       []float32 // [n × QDim] queries after RoPE
	k, v    []float32 // [n × KVDim] keys after RoPE, values
	p       []float32 // [NHead × n × n] attention probabilities (causal)
	att     []float32 // [n × QDim] attention output before Wo
	x2      []float32 // [n × NEmbd] the residual stream after attention
	xn2     []float32 // [n × NEmbd] the MLP's normed input
	g, u, h []float32 // [n × NFF] gate, up, silu(gate)·up
}

// alloc sizes the cache for n rows, reusing its memory.
func (lc *layerCache) alloc(c *model.Config, n int) {
	e, ff := n*c.NEmbd, n*c.NFF
	lc.x, lc.xn1, lc.x2, lc.xn2 = grow(lc.x, e), grow(lc.xn1, e), grow(lc.x2, e), grow(lc.xn2, e)
	lc.s1, lc.s2 = grow(lc.s1, n), grow(lc.s2, n)
	lc.q, lc.att = grow(lc.q, n*c.QDim()), grow(lc.att, n*c.QDim())
	lc.k, lc.v = grow(lc.k, n*c.KVDim()), grow(lc.v, n*c.KVDim())
	lc.p = grow(lc.p, c.NHead*n*n)
	lc.g, lc.u, lc.h = grow(lc.g, ff), grow(lc.u, ff), grow(lc.h, ff)
}

// pass is the scratch memory of forward and backward passes over one
// sequence at a time; one goroutine uses one pass.
type pass struct {
	tl     *tail
	n      int          // rows of the current sequence
	caches []layerCache // for tl.layers[1:]
	angles []float64    // [n × Dims/2 × 2] cos, sin of each row's pair angles
	x      []float32    // [n × NEmbd] the residual stream
	xf     []float32    // [m × NEmbd] the final norm's output at scored rows
	sf     []float32    // [m] its scales
	logits []float32    // [m × NVocab]
	// Backward scratch.
	dx, dn, dxf     []float32
	dq, dk, dv, dat []float32
	dh, dg          []float32
	dp              []float32 // one attention row
	exps            []float32 // logSumExp's
}

func newPass(tl *tail) *pass {
	return &pass{tl: tl, caches: make([]layerCache, len(tl.layers)-1)}
}

// ropeAngles computes the cosines and sines of rows at positions 0..n-1.
func (ps *pass) ropeAngles(n int) {
	r, half := &ps.tl.rope, ps.tl.rope.Dims/2
	if len(ps.angles) >= n*2*half {
		return
	}
	ps.angles = make([]float64, n*2*half)
	for pos := range n {
		for i := range half {
			s, c := math.Sincos(float64(pos) * r.Freqs[i])
			ps.angles[(pos*half+i)*2], ps.angles[(pos*half+i)*2+1] = c, s
		}
	}
}

// rope rotates each head of row (at position pos) in place; inverse
// applies the transposed rotation (RoPE's backward).
func (ps *pass) rope(row []float32, pos int, inverse bool) {
	r, half := &ps.tl.rope, ps.tl.rope.Dims/2
	cs := ps.angles[pos*2*half : (pos+1)*2*half]
	for h := 0; h+r.HeadDim <= len(row); h += r.HeadDim {
		r.Rotate(row[h:h+r.HeadDim], cs, inverse)
	}
}

// rmsNorm sets out = x·s⊙w with s = 1/√(mean(x²)+eps), as the engine
// does, and returns s.
func rmsNorm(out, x, w []float32, eps float32) float32 {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	s := float32(1 / math.Sqrt(ss/float64(len(x))+float64(eps)))
	for i, v := range x {
		out[i] = v * s * w[i]
	}
	return s
}

// rmsNormBack adds to dx the gradient through out = x·s⊙w given dout:
// s·(w⊙dout) − s³/n·(x·(w⊙dout))·x.
func rmsNormBack(dx, dout, x, w []float32, s float32) {
	var dot float64
	for i, v := range x {
		dot += float64(dout[i]) * float64(w[i]) * float64(v)
	}
	c := float32(float64(s) * float64(s) * float64(s) * dot / float64(len(x)))
	for i, v := range x {
		dx[i] += s*dout[i]*w[i] - c*v
	}
}

// matVec sets y = W·x for W of len(y) rows of len(x) values.
func matVec(y, w, x []float32) {
	for o := range y {
		y[o] = quant.DotF32(rowOf(w, o, len(x)), x)
	}
}

// matVecAdd adds W·x to y, for W of len(y) rows of len(x) values (Wᵀ·dy
// in backward, with W's transpose).
func matVecAdd(y, w, x []float32) {
	for o := range y {
		y[o] += quant.DotF32(rowOf(w, o, len(x)), x)
	}
}

// axpy adds a·x to y.
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

func silu(g float32) float32 { return float32(float64(g) / (1 + math.Exp(-float64(g)))) }

// siluGrad is d silu(g)/dg = σ(g)·(1 + g·(1−σ(g))).
func siluGrad(g float32) float32 {
	sg := 1 / (1 + math.Exp(-float64(g)))
	return float32(sg * (1 + float64(g)*(1-sg)))
}

// layer runs block ly over the n rows of x in place, filling lc.
func (ps *pass) layer(ly *tailLayer, lc *layerCache, x []float32, n int) {
	c := &ps.tl.cfg
	lc.alloc(c, n)
	e, qd, kd, ff := c.NEmbd, c.QDim(), c.KVDim(), c.NFF
	copy(lc.x, x)
	for r := range n {
		xr, xn := rowOf(x, r, e), rowOf(lc.xn1, r, e)
		lc.s1[r] = rmsNorm(xn, xr, ly.attnNorm, c.RMSEps)
		q, k, v := rowOf(lc.q, r, qd), rowOf(lc.k, r, kd), rowOf(lc.v, r, kd)
		matVec(q, ly.wq, xn)
		matVec(k, ly.wk, xn)
		matVec(v, ly.wv, xn)
		if ly.bq != nil {
			axpy(q, 1, ly.bq)
			axpy(k, 1, ly.bk)
			axpy(v, 1, ly.bv)
		}
		ps.rope(q, r, false)
		ps.rope(k, r, false)
	}
	ps.attention(lc, n)
	for r := range n {
		xr, x2 := rowOf(x, r, e), rowOf(lc.x2, r, e)
		matVec(x2, ly.wo, rowOf(lc.att, r, qd))
		for i := range x2 {
			x2[i] += xr[i]
		}
		xn := rowOf(lc.xn2, r, e)
		lc.s2[r] = rmsNorm(xn, x2, ly.ffnNorm, c.RMSEps)
		g, u, h := rowOf(lc.g, r, ff), rowOf(lc.u, r, ff), rowOf(lc.h, r, ff)
		matVec(g, ly.gate, xn)
		matVec(u, ly.up, xn)
		for i := range h {
			h[i] = silu(g[i]) * u[i]
		}
		matVec(xr, ly.down, h)
		for i := range xr {
			xr[i] += x2[i]
		}
	}
}

// attention computes lc.att and lc.p from lc.q, lc.k, lc.v: each row
// attends to itself and the rows before it, query head h to key/value
// head h/GroupSize.
func (ps *pass) attention(lc *layerCache, n int) {
	c := &ps.tl.cfg
	hd, qd, kd, group := c.HeadDim, c.QDim(), c.KVDim(), c.GroupSize()
	clear(lc.att[:n*qd])
	for h := range c.NHead {
		kv := h / group * hd
		for i := range n {
			q := rowOf(lc.q, i, qd)[h*hd : (h+1)*hd]
			p := lc.p[(h*n+i)*n : (h*n+i+1)*n]
			mx := math.Inf(-1)
			for j := range i + 1 {
				p[j] = ps.tl.scale * quant.DotF32(q, rowOf(lc.k, j, kd)[kv:kv+hd])
				mx = max(mx, float64(p[j]))
			}
			var sum float64
			for j := range i + 1 {
				e := math.Exp(float64(p[j]) - mx)
				p[j], sum = float32(e), sum+e
			}
			out := rowOf(lc.att, i, qd)[h*hd : (h+1)*hd]
			for j := range i + 1 {
				p[j] = float32(float64(p[j]) / sum)
				axpy(out, p[j], rowOf(lc.v, j, kd)[kv:kv+hd])
			}
			clear(p[i+1:])
		}
	}
}

// forward runs the residual stream x1 leaving layer from (n rows) through
// the layers above and computes the logits of the rows in scored,
// caching what backward needs.
func (ps *pass) forward(x1 []float32, n int, scored []int) {
	tl, c := ps.tl, &ps.tl.cfg
	e := c.NEmbd
	ps.n = n
	ps.ropeAngles(n)
	ps.x = grow(ps.x, n*e)
	copy(ps.x, x1[:n*e])
	for i := range ps.caches {
		ps.layer(&tl.layers[i+1], &ps.caches[i], ps.x, n)
	}
	m := len(scored)
	ps.xf, ps.sf = grow(ps.xf, m*e), grow(ps.sf, m)
	ps.logits = grow(ps.logits, m*c.NVocab)
	for k, r := range scored {
		xf := rowOf(ps.xf, k, e)
		ps.sf[k] = rmsNorm(xf, rowOf(ps.x, r, e), tl.outNorm, c.RMSEps)
		matVec(rowOf(ps.logits, k, c.NVocab), tl.output, xf)
	}
}

// first runs layer from over the residual stream x0 entering it (n rows)
// and returns the down-projection's input h and the stream leaving the
// layer without any delta, both newly allocated.
func (ps *pass) first(x0 []float32, n int) (h, base []float32) {
	c := &ps.tl.cfg
	ps.ropeAngles(n)
	base = append([]float32(nil), x0[:n*c.NEmbd]...)
	var lc layerCache
	ps.layer(&ps.tl.layers[0], &lc, base, n)
	return lc.h[:n*c.NFF], base
}

// backward takes dlogits, the loss's gradient at the logits of the
// scored rows of the last forward, back to the residual stream leaving
// layer from, and returns it (n × NEmbd, valid until the next call).
func (ps *pass) backward(dlogits []float32, scored []int) []float32 {
	tl, c := ps.tl, &ps.tl.cfg
	e, n := c.NEmbd, ps.n
	ps.dx = grow(ps.dx, n*e)
	clear(ps.dx)
	ps.dxf = grow(ps.dxf, e)
	for k, r := range scored {
		clear(ps.dxf)
		matVecAdd(ps.dxf, tl.outputT, rowOf(dlogits, k, c.NVocab))
		rmsNormBack(rowOf(ps.dx, r, e), ps.dxf, rowOf(ps.x, r, e), tl.outNorm, ps.sf[k])
	}
	for i := len(ps.caches) - 1; i >= 0; i-- {
		ps.layerBack(&tl.layers[i+1], &ps.caches[i], ps.dx, n)
	}
	return ps.dx[:n*e]
}

// layerBack takes dx, the gradient at the residual stream leaving block
// ly, to the stream entering it, in place.
func (ps *pass) layerBack(ly *tailLayer, lc *layerCache, dx []float32, n int) {
	c := &ps.tl.cfg
	e, qd, kd, ff := c.NEmbd, c.QDim(), c.KVDim(), c.NFF
	ps.dn, ps.dh, ps.dg = grow(ps.dn, e), grow(ps.dh, ff), grow(ps.dg, ff)
	// MLP: x = x2 + Down·h, h = silu(g)⊙u, g = Gate·n, u = Up·n, n = rms(x2).
	for r := range n {
		dxr := rowOf(dx, r, e)
		clear(ps.dh)
		matVecAdd(ps.dh, ly.downT, dxr)
		g, u := rowOf(lc.g, r, ff), rowOf(lc.u, r, ff)
		for i, d := range ps.dh {
			ps.dg[i] = d * u[i] * siluGrad(g[i])
			ps.dh[i] = d * silu(g[i]) // now du
		}
		clear(ps.dn)
		matVecAdd(ps.dn, ly.gateT, ps.dg)
		matVecAdd(ps.dn, ly.upT, ps.dh)
		rmsNormBack(dxr, ps.dn, rowOf(lc.x2, r, e), ly.ffnNorm, lc.s2[r])
	}
	// Attention: x2 = x + Wo·att.
	ps.dat = grow(ps.dat, n*qd)
	clear(ps.dat)
	for r := range n {
		matVecAdd(rowOf(ps.dat, r, qd), ly.woT, rowOf(dx, r, e))
	}
	ps.attentionBack(lc, n)
	for r := range n {
		dq, dk := rowOf(ps.dq, r, qd), rowOf(ps.dk, r, kd)
		ps.rope(dq, r, true)
		ps.rope(dk, r, true)
		clear(ps.dn)
		matVecAdd(ps.dn, ly.wqT, dq)
		matVecAdd(ps.dn, ly.wkT, dk)
		matVecAdd(ps.dn, ly.wvT, rowOf(ps.dv, r, kd))
		rmsNormBack(rowOf(dx, r, e), ps.dn, rowOf(lc.x, r, e), ly.attnNorm, lc.s1[r])
	}
}

// attentionBack computes ps.dq, ps.dk, ps.dv (queries and keys after
// RoPE) from ps.dat, the gradient at the attention output.
func (ps *pass) attentionBack(lc *layerCache, n int) {
	c := &ps.tl.cfg
	hd, qd, kd, group := c.HeadDim, c.QDim(), c.KVDim(), c.GroupSize()
	ps.dq, ps.dk, ps.dv = grow(ps.dq, n*qd), grow(ps.dk, n*kd), grow(ps.dv, n*kd)
	clear(ps.dq)
	clear(ps.dk)
	clear(ps.dv)
	ps.dp = grow(ps.dp, n)
	for h := range c.NHead {
		kv := h / group * hd
		for i := range n {
			p := lc.p[(h*n+i)*n : (h*n+i+1)*n]
			do := rowOf(ps.dat, i, qd)[h*hd : (h+1)*hd]
			// out = Σ_j p_j v_j: dp_j = do·v_j, dv_j += p_j do.
			var pdp float64
			for j := range i + 1 {
				ps.dp[j] = quant.DotF32(do, rowOf(lc.v, j, kd)[kv:kv+hd])
				pdp += float64(p[j]) * float64(ps.dp[j])
				axpy(rowOf(ps.dv, j, kd)[kv:kv+hd], p[j], do)
			}
			// p = softmax(s): ds_j = p_j (dp_j − Σ p·dp); s_j = scale q·k_j.
			q, dq := rowOf(lc.q, i, qd)[h*hd:(h+1)*hd], rowOf(ps.dq, i, qd)[h*hd:(h+1)*hd]
			for j := range i + 1 {
				ds := ps.tl.scale * float32(float64(p[j])*(float64(ps.dp[j])-pdp))
				axpy(dq, ds, rowOf(lc.k, j, kd)[kv:kv+hd])
				axpy(rowOf(ps.dk, j, kd)[kv:kv+hd], ds, q)
			}
		}
	}
}
