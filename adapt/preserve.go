package adapt

import (
	"fmt"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/quant"
)

// preserve is the Preserve term of a GradTrainer's loss: the
// second-order (Fisher) approximation of the mean KL between the model
// before and after the delta over the rows of some text, factored as
// K-FAC does: ½·weight·tr(G·Δ·C·Δᵀ), with C the second moment of the
// down-projection's inputs h there and G that of the loss's gradient at
// the projection's output for tokens drawn from the model.
type preserve struct {
	weight float64
	c      []float32 // [In × In] (1/N) Σ h·hᵀ
	f      []float32 // [Out × Out] (1/N) Σ g·gᵀ
	// Scratch: the delta as a matrix, Δ·C, and G·Δ·C.
	delta, dc, gdc []float32 // [Out × In]
}

// Preserve adds to the loss that steps descend weight times an estimate
// of the mean, over every row of examples, of KL(model before ‖ after)
// at that row: the change the delta makes to the model where the
// computation should stay (give the model's own samples, SelfSamples).
// It is KL rehearsal's second-order approximation in the delta, taken at
// the delta's value now (zero for a new one), with the Fisher matrix
// factored as K-FAC does (Martens & Grosse 2015): the second moment C of
// the down-projection's inputs (as ROME and MEMIT weigh an edit against
// the covariance of other keys) and the second moment G of the gradient
// at its output, for tokens drawn from the model at each row (seeded by
// seed). Both are computed here, once: a step then costs
// Out·In·(In+Out+2·Rank) products whatever the number of rows, where
// rehearsing the rows costs their forward and backward passes. weight 0
// removes the term. A resumed run calls Preserve again with the same
// examples, seed and delta.
func (g *GradTrainer) Preserve(examples []Example, weight float64, seed uint64) error {
	if !(weight >= 0) {
		return fmt.Errorf("adapt: gradient training: preserve weight %g: want ≥ 0", weight)
	}
	if weight == 0 {
		g.keep = nil
		return nil
	}
	if err := g.check(examples); err != nil {
		return err
	}
	ans, err := g.anchorsOf(examples)
	if err != nil {
		return err
	}
	in, out, nv := g.pr.In, g.pr.Out, g.tl.cfg.NVocab
	c, f := make([]float64, in*in), make([]float64, out*out)
	w := g.workers[0]
	rows := 0
	for i, an := range ans {
		g.input(w, an)
		w.scored = w.scored[:0]
		for r := range an.n {
			w.scored = append(w.scored, r)
		}
		ps := w.ps
		ps.forward(w.x1, an.n, w.scored)
		ps.exps = grow(ps.exps, nv)
		key := stream(seed, i)
		for r := range an.n {
			// softmax − onehot(y), y drawn from the softmax.
			row := rowOf(ps.logits, r, nv)
			lse := logSumExp(row, ps.exps)
			copy(ps.exps, row)
			cpu.ExpSub(ps.exps, float32(lse))
			u, y := float32(uniform(key, uint64(r))), nv-1
			for v, p := range ps.exps {
				if u -= p; u < 0 {
					y = v
					break
				}
			}
			copy(row, ps.exps)
			row[y]--
		}
		dx := ps.backward(ps.logits, w.scored)
		for t := range an.n {
			outer(c, rowOf(an.h, t, in))
			outer(f, rowOf(dx, t, out))
		}
		rows += an.n
	}
	g.keep = &preserve{weight: weight, c: mean32(c, rows), f: mean32(f, rows),
		delta: make([]float32, out*in), dc: make([]float32, out*in), gdc: make([]float32, out*in)}
	return nil
}

// outer adds x·xᵀ to the n × n matrix m, n = len(x).
func outer(m []float64, x []float32) {
	n := len(x)
	for i, xi := range x {
		if xi == 0 {
			continue
		}
		r := m[i*n : (i+1)*n]
		for j, xj := range x {
			r[j] += float64(xi) * float64(xj)
		}
	}
}

// mean32 is m/n as float32.
func mean32(m []float64, n int) []float32 {
	out := make([]float32, len(m))
	for i, v := range m {
		out[i] = float32(v / float64(n))
	}
	return out
}

// compute sets p.delta = scale·B·A, p.dc = Δ·C and p.gdc = G·Δ·C, and
// returns the term's value ½·weight·tr(Δᵀ·G·Δ·C).
func (p *preserve) compute(g *GradTrainer) float64 {
	pr := g.pr
	clear(p.delta)
	for o := range pr.Out {
		d := rowOf(p.delta, o, pr.In)
		for k, b := range rowOf(pr.B, o, pr.Rank) {
			if b != 0 {
				axpy(d, g.scale*b, rowOf(pr.A, k, pr.In))
			}
		}
		matVec(rowOf(p.dc, o, pr.In), p.c, d) // C is symmetric: rows are columns
	}
	clear(p.gdc)
	var v float64
	for o := range pr.Out {
		gdc := rowOf(p.gdc, o, pr.In)
		for k, x := range rowOf(p.f, o, pr.Out) {
			axpy(gdc, x, rowOf(p.dc, k, pr.In))
		}
		v += float64(quant.DotF32(rowOf(p.delta, o, pr.In), gdc))
	}
	return p.weight / 2 * v
}

// addGrad adds the term's gradient to g.grads: weight·G·Δ·C with respect
// to the delta, through Δ = scale·B·A.
func (p *preserve) addGrad(g *GradTrainer) {
	p.compute(g)
	pr := g.pr
	f := float32(p.weight) * g.scale
	gB := g.grads[1]
	for o := range pr.Out {
		gdc := rowOf(p.gdc, o, pr.In)
		for k := range pr.Rank {
			gB[o*pr.Rank+k] += f * quant.DotF32(gdc, rowOf(pr.A, k, pr.In))
		}
	}
	if gA := g.grads[0]; gA != nil {
		for o := range pr.Out {
			gdc := rowOf(p.gdc, o, pr.In)
			for k, b := range rowOf(pr.B, o, pr.Rank) {
				if b != 0 {
					axpy(rowOf(gA, k, pr.In), f*b, gdc)
				}
			}
		}
	}
}
