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
		{Spec{Method: "zerotprune", Similarity: ptr(0.5)}, 4, nil},
		{Spec{Method: "zerotprune", Similarity: ptr(1.0)}, 4, nil},
		{Spec{Method: "zerotprune", Similarity: ptr(1.5)}, 4, []string{"similarity share 1.5"}},
		{Spec{Method: "zerotprune", Similarity: ptr(-0.1)}, 4, []string{"similarity share -0.1"}},
		{Spec{Method: "lemo", Block: 4}, 4, nil},
		{Spec{Method: "lemo", Block: -4}, 4, []string{"block -4"}},
		{Spec{Method: "lemo", Similarity: ptr(0.5)}, 4, []string{"similarity 0.5: only zerotprune"}},
		{Spec{Method: "recent", Block: 4}, 4, []string{"block 4: only lemo"}},
		{Spec{Method: "random", Similarity: ptr(0.5), Block: 4}, 4, []string{"only zerotprune", "only lemo"}},
		{Spec{Method: "none", Similarity: ptr(0.5), Block: 4}, 4, nil},
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

// String names the policy a Spec gives, with the settings of its method:
// defaults spelled out or not, the same string.
func TestSpecString(t *testing.T) {
	for _, c := range []struct {
		specs []Spec // all give want
		want  string
	}{
		{[]Spec{{Method: "zerotprune"}, {Method: "zerotprune", Keep: DefaultKeep, Layers: []int{1}, Window: DefaultWindow, Similarity: ptr(DefaultSimilarity)}}, "zerotprune keep=0.5 layers=1 window=16 similarity=0.5"},
		{[]Spec{{Method: "zerotprune", Similarity: ptr(0.0)}}, "zerotprune keep=0.5 layers=1 window=16 similarity=0"},
		{[]Spec{{Method: "zerotprune", Keep: 0.7, Similarity: ptr(0.25)}}, "zerotprune keep=0.7 layers=1 window=16 similarity=0.25"},
		{[]Spec{{Method: "lemo"}, {Method: "lemo", Block: DefaultBlock}}, "lemo keep=0.5 layers=1 window=16 block=64"},
		{[]Spec{{Method: "lemo", Layers: []int{1, 3}, Block: 4}}, "lemo keep=0.5 layers=1,3 window=16 block=4"},
		{[]Spec{{Method: "recent", Window: 4}}, "recent keep=0.5 layers=1 window=4"},
		{[]Spec{{Method: "none", Keep: 0.3}, {Method: "none", Similarity: ptr(0.5)}}, "none"},
	} {
		for _, s := range c.specs {
			assert.Equal(t, c.want, s.String(), "%+v", s)
		}
	}
}

// For keeps the settings that apply to a method and clears the others,
// so that one set of settings gives every method a valid Spec.
func TestSpecFor(t *testing.T) {
	all := Spec{Keep: 0.7, Layers: []int{2}, Window: 8, Similarity: ptr(0.25), Block: 4}
	for _, c := range []struct {
		method string
		want   Spec
	}{
		{"zerotprune", Spec{Method: "zerotprune", Keep: 0.7, Layers: []int{2}, Window: 8, Similarity: ptr(0.25)}},
		{"lemo", Spec{Method: "lemo", Keep: 0.7, Layers: []int{2}, Window: 8, Block: 4}},
		{"random", Spec{Method: "random", Keep: 0.7, Layers: []int{2}, Window: 8}},
		{"recent", Spec{Method: "recent", Keep: 0.7, Layers: []int{2}, Window: 8}},
	} {
		got := all.For(c.method)
		assert.Equal(t, c.want, got, c.method)
		assert.NoError(t, got.Validate(4), c.method)
	}
	p, err := all.For("zerotprune").New()
	require.NoError(t, err)
	assert.Equal(t, 0.25, p.(*ZeroTPrune).Config().Similarity)
	p, err = Spec{Method: "zerotprune", Similarity: ptr(0.0)}.New()
	require.NoError(t, err)
	assert.Zero(t, p.(*ZeroTPrune).Config().Similarity, "a zero share turns the default stage off")
	p, err = all.For("lemo").New()
	require.NoError(t, err)
	assert.Equal(t, 4, p.(*LeMo).Config().Block)
}

func ptr[T any](v T) *T { return &v }
