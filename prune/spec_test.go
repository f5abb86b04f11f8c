package prune

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/engine"
)

func TestSpecMethods(t *testing.T) {
	assert.Equal(t, []string{"lemo", "none", "random", "recent", "zerotprune"}, Methods())
	for _, m := range Methods() {
		s := Spec{Method: m, Keep: 0.7, Layers: []int{1, 2}, Window: 4}
		require.NoError(t, s.Validate(4), m)
		p, err := s.New()
		if s.Off() {
			assert.Error(t, err)
			continue
		}
		require.NoError(t, err, m)
		c := p.(interface{ Config() Config }).Config()
		assert.Equal(t, s.Config(), c, m)
		assert.Equal(t, []any{0.7, []int{1, 2}, 4, DefaultIterations}, []any{c.Keep, c.Layers, c.Window, c.Iterations}, m)
		_, observes := p.(engine.AttentionObserver)
		assert.Equal(t, m == "zerotprune" || m == "lemo", observes, m)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, c := range []struct {
		spec   Spec
		nLayer int
		want   []string // fragments of the error; none: valid
	}{
		{Spec{Method: "zerotprune"}, 4, nil},
		{Spec{Method: "none", Keep: 7}, 4, nil},
		{Spec{Method: "recent", Layers: []int{3}}, 0, nil},
		{Spec{Method: "magic"}, 4, []string{`method "magic"`, "lemo, none, random, recent, zerotprune"}},
		{Spec{Method: ""}, 4, []string{`method ""`}},
		{Spec{Method: "recent", Keep: 1.5}, 4, []string{"keep 1.5"}},
		{Spec{Method: "recent", Keep: -1, Window: -2}, 4, []string{"keep -1", "window -2"}},
		{Spec{Method: "random", Layers: []int{2, 1}}, 4, []string{"increasing"}},
		{Spec{Method: "random", Layers: []int{}}, 4, []string{"no layers"}},
		{Spec{Method: "random", Layers: []int{1, 4}}, 4, []string{"layers 0 to 3"}},
	} {
		err := c.spec.Validate(c.nLayer)
		if c.want == nil {
			assert.NoError(t, err, "%+v", c.spec)
			continue
		}
		require.Error(t, err, "%+v", c.spec)
		assert.ErrorIs(t, err, ErrConfig)
		for _, w := range c.want {
			assert.Contains(t, err.Error(), w)
		}
	}
	_, err := Spec{Method: "magic"}.New()
	assert.ErrorIs(t, err, ErrConfig)
}

// String names the policy a Spec gives: defaults spelled out or not, the
// same string.
func TestSpecString(t *testing.T) {
	a := Spec{Method: "zerotprune"}
	b := Spec{Method: "zerotprune", Keep: DefaultKeep, Layers: []int{1}, Window: DefaultWindow}
	assert.Equal(t, "zerotprune keep=0.5 layers=1 window=16", a.String())
	assert.Equal(t, a.String(), b.String())
	assert.NotEqual(t, a.String(), Spec{Method: "zerotprune", Keep: 0.7}.String())
	assert.Equal(t, "none", Spec{Method: "none", Keep: 0.3}.String())
}
