package adapt

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// InitFromInputs chooses the A of pair from data and freezes it, so that
// training moves only B. keys are inputs of the projection at the rows
// the adapter must change (the scored rows of the training examples, see
// Scorer.Inputs); ref are inputs it should leave alone (the model's own
// text). The rows of A are the Rank directions u with the largest ratio
// of mean (u·k)² over keys to mean (u·x)² over ref — the top generalized
// eigenvectors of the two second-moment matrices, as ROME chooses an
// edit's key direction through the inverse covariance of other keys —
// each scaled so that the keys' mean (u·k)² is 1. B·A·x then reaches
// inputs that look like the keys and little else, which keeps MeZO's
// random walk off the model's other text, and the search has Out×Rank
// values instead of (In+Out)×Rank.
//
// ridge (relative to the mean eigenvalue of ref's matrix) keeps the
// whitening finite along directions ref never visits.
func (lo *LoRA) InitFromInputs(pair *LoRAPair, keys, ref [][]float32, ridge float64) error {
	if len(keys) == 0 || len(ref) == 0 {
		return errors.New("adapt: LoRA init from data: no key or reference rows")
	}
	n := pair.In
	if pair.Rank > n {
		return fmt.Errorf("adapt: LoRA init from data: rank %d above the input size %d", pair.Rank, n)
	}
	s, err := secondMoment(keys, n)
	if err != nil {
		return err
	}
	c, err := secondMoment(ref, n)
	if err != nil {
		return err
	}
	w, err := whitening(c, ridge)
	if err != nil {
		return err
	}
	// M = Wᵀ S W is symmetric; its eigenvectors v give u = W v, and
	// uᵀCu = 1 for each, so the eigenvalue is the keys-to-ref ratio.
	var sw, m mat.Dense
	sw.Mul(s, w)
	m.Mul(w.T(), &sw)
	var eig mat.EigenSym
	if !eig.Factorize(symmetric(&m), true) {
		return errors.New("adapt: LoRA init from data: eigendecomposition failed")
	}
	var v, u mat.Dense
	eig.VectorsTo(&v)
	u.Mul(w, &v)
	// EigenSym orders eigenvalues ascending: the last Rank columns.
	for k := range pair.Rank {
		col := mat.Col(nil, n-1-k, &u)
		norm := math.Sqrt(mat.Inner(mat.NewVecDense(n, col), s, mat.NewVecDense(n, col)))
		if !(norm > 0) {
			return fmt.Errorf("adapt: LoRA init from data: direction %d does not reach the keys", k)
		}
		for i, x := range col {
			pair.A[k*n+i] = float32(x / norm)
		}
	}
	clear(pair.B)
	lo.frozenA = true
	return nil
}

// secondMoment returns (1/N) Σ x xᵀ over rows of length n.
func secondMoment(rows [][]float32, n int) (*mat.SymDense, error) {
	s := mat.NewSymDense(n, nil)
	x := mat.NewVecDense(n, nil)
	for i, r := range rows {
		if len(r) != n {
			return nil, fmt.Errorf("adapt: LoRA init from data: row %d has %d values, want %d", i, len(r), n)
		}
		for j, v := range r {
			x.SetVec(j, float64(v))
		}
		s.SymRankOne(s, 1/float64(len(rows)), x)
	}
	return s, nil
}

// whitening returns W = Q (D + ridge·mean(D))^-1/2 for C = Q D Qᵀ, so that
// Wᵀ (C + ridge·mean(D)·I) W = I.
func whitening(c *mat.SymDense, ridge float64) (*mat.Dense, error) {
	var eig mat.EigenSym
	if !eig.Factorize(c, true) {
		return nil, errors.New("adapt: LoRA init from data: eigendecomposition of the reference failed")
	}
	d := eig.Values(nil)
	mean := 0.0
	for _, x := range d {
		mean += x / float64(len(d))
	}
	if !(mean > 0) {
		return nil, errors.New("adapt: LoRA init from data: the reference rows are all zero")
	}
	var q mat.Dense
	eig.VectorsTo(&q)
	for j, x := range d {
		f := 1 / math.Sqrt(max(x, 0)+ridge*mean)
		for i := range len(d) {
			q.Set(i, j, q.At(i, j)*f)
		}
	}
	return &q, nil
}

// symmetric returns the symmetric part of a square matrix that rounding
// left slightly asymmetric.
func symmetric(m *mat.Dense) *mat.SymDense {
	n, _ := m.Dims()
	s := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			s.SetSym(i, j, (m.At(i, j)+m.At(j, i))/2)
		}
	}
	return s
}

// InitFromData chooses the A of every pair with InitFromInputs: the keys
// are the projection's inputs at the scored rows of train, the reference
// its inputs at those of ref (the model's own text), both recorded by
// base, a Scorer of the base model on an engine with an adapt.Set as its
// Hooks.Delta.
func (lo *LoRA) InitFromData(base *Scorer, train, ref []Example, ridge float64) error {
	keys, err := base.Inputs(train, lo.Pairs)
	if err != nil {
		return fmt.Errorf("adapt: LoRA init from data: %w", err)
	}
	refIn, err := base.Inputs(ref, lo.Pairs)
	if err != nil {
		return fmt.Errorf("adapt: LoRA init from data: %w", err)
	}
	for i, pr := range lo.Pairs {
		if err := lo.InitFromInputs(pr, keys[i], refIn[i], ridge); err != nil {
			return err
		}
	}
	return nil
}
