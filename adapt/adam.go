package adapt

import (
	"fmt"
	"math"
)

// AdamOptions configure Adam (Kingma & Ba 2015). Zero Beta1, Beta2 and
// Eps take the paper's .9, .999 and 1e-8.
type AdamOptions struct {
	LR                float64 // step size α
	Beta1, Beta2, Eps float64
	// WeightDecay is decoupled decay toward zero (AdamW, Loshchilov &
	// Hutter 2019): θ −= α·λ·θ each step, outside the moments.
	WeightDecay float64
	// L2 adds L2/2·‖θ‖² to the loss: L2·θ joins the gradient, inside the
	// moments.
	L2 float64
}

func (o AdamOptions) withDefaults() AdamOptions {
	if o.Beta1 == 0 {
		o.Beta1 = 0.9
	}
	if o.Beta2 == 0 {
		o.Beta2 = 0.999
	}
	if o.Eps == 0 {
		o.Eps = 1e-8
	}
	return o
}

func (o AdamOptions) check() error {
	if !(o.LR >= 0) || !(o.Beta1 >= 0 && o.Beta1 < 1) || !(o.Beta2 >= 0 && o.Beta2 < 1) || !(o.Eps > 0) ||
		!(o.WeightDecay >= 0) || !(o.L2 >= 0) {
		return fmt.Errorf("adapt: Adam: want α ≥ 0, β₁ and β₂ in [0, 1), ε > 0, decay and L2 ≥ 0; have %g, %g, %g, %g, %g, %g",
			o.LR, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, o.L2)
	}
	return nil
}

// AdamState is everything Adam carries from step to step: the steps
// taken and the first and second moments of every tensor (nil for a
// frozen one). Saved with the parameters, it resumes a run bit for bit.
type AdamState struct {
	Step int
	M, V [][]float32
}

// clone returns a deep copy of st.
func (st AdamState) clone() AdamState {
	c := AdamState{Step: st.Step, M: make([][]float32, len(st.M)), V: make([][]float32, len(st.V))}
	for i := range st.M {
		c.M[i] = append([]float32(nil), st.M[i]...)
		c.V[i] = append([]float32(nil), st.V[i]...)
	}
	return c
}

// adam updates a fixed list of tensors.
type adam struct {
	opts   AdamOptions
	params []Param
	st     AdamState
}

func newAdam(params []Param, opts AdamOptions) (*adam, error) {
	opts = opts.withDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	a := &adam{opts: opts, params: params, st: AdamState{M: make([][]float32, len(params)), V: make([][]float32, len(params))}}
	for i, p := range params {
		if !p.Frozen {
			a.st.M[i], a.st.V[i] = make([]float32, len(p.Data)), make([]float32, len(p.Data))
		}
	}
	return a, nil
}

// setState replaces the state with a copy of st, which must fit the
// tensors.
func (a *adam) setState(st AdamState) error {
	if st.Step < 0 || len(st.M) != len(a.params) || len(st.V) != len(a.params) {
		return fmt.Errorf("adapt: Adam: %w: state of step %d for %d/%d tensors, want %d", ErrCheckpoint, st.Step, len(st.M), len(st.V), len(a.params))
	}
	for i, p := range a.params {
		n := len(p.Data)
		if p.Frozen {
			n = 0
		}
		if len(st.M[i]) != n || len(st.V[i]) != n {
			return fmt.Errorf("adapt: Adam: %w: %s has %d/%d moments, want %d", ErrCheckpoint, p.Name, len(st.M[i]), len(st.V[i]), n)
		}
	}
	a.st = st.clone()
	return nil
}

// update takes one step along grads (one per tensor, nil for a frozen
// one), in float64 per element.
func (a *adam) update(grads [][]float32) {
	o := &a.opts
	a.st.Step++
	t := float64(a.st.Step)
	c1, c2 := 1-math.Pow(o.Beta1, t), 1-math.Pow(o.Beta2, t)
	for i, p := range a.params {
		if p.Frozen {
			continue
		}
		m, v, g := a.st.M[i], a.st.V[i], grads[i]
		for j, th := range p.Data {
			gj := float64(g[j]) + o.L2*float64(th)
			mj := o.Beta1*float64(m[j]) + (1-o.Beta1)*gj
			vj := o.Beta2*float64(v[j]) + (1-o.Beta2)*gj*gj
			m[j], v[j] = float32(mj), float32(vj)
			step := (mj / c1) / (math.Sqrt(vj/c2) + o.Eps)
			p.Data[j] = float32(float64(th) - o.LR*(step+o.WeightDecay*float64(th)))
		}
	}
}
