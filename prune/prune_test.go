package prune

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/engine"
)

func TestConfigValidate(t *testing.T) {
	_, err := NewZeroTPrune(Config{Keep: 1.5, Layers: []int{2, 1}, Window: -1, Iterations: -2, HeadVarRatio: 0.5, Similarity: 2})
	require.ErrorIs(t, err, ErrConfig)
	for _, want := range []string{"keep", "layers", "window", "iterations", "head variance", "similarity"} {
		assert.Contains(t, err.Error(), want)
	}
	z, err := NewZeroTPrune(Config{})
	require.NoError(t, err)
	want := DefaultConfig()
	want.Similarity = 0 // a zero share is a setting: no similarity stage
	assert.Equal(t, want, z.Config())
}

func TestTarget(t *testing.T) {
	c := Config{Keep: 0.25, Layers: []int{1, 3}}
	assert.Equal(t, 50, c.target(100, 0))
	assert.Equal(t, 25, c.target(100, 1))
	c = Config{Keep: 0.7, Layers: []int{1}}
	assert.Equal(t, 70, c.target(100, 0))
	assert.Equal(t, 8, c.target(11, 0))
}

// prefill returns the rows of a fresh sequence's prefill of n tokens, the
// last wanting logits.
func prefill(seq *engine.Sequence, n int) []engine.Row {
	rows := make([]engine.Row, n)
	for i := range rows {
		rows[i] = engine.Row{Seq: seq, Pos: int32(i), Logits: i == n-1}
	}
	return rows
}

// causal returns attention probabilities [heads][n][n] in which every row
// gives weight w to row hot (when it can see it) and spreads the rest
// evenly over what it sees.
func causal(heads, n, hot int, w float32) []float32 {
	p := make([]float32, heads*n*n)
	for h := range heads {
		for i := range n {
			row := p[(h*n+i)*n:][:i+1]
			sees := hot <= i && i > 0
			rest := float32(1)
			if sees {
				rest = 1 - w
			}
			for j := range row {
				row[j] = rest / float32(i+1)
			}
			if sees {
				row[hot] += w
			}
		}
	}
	return p
}

// run drives one selector the way the engine does after layers 0..last.
func run(t *testing.T, s engine.TokenSelector, o engine.AttentionObserver, rows []engine.Row, heads int, probs map[*engine.Sequence][]float32, last int) []engine.Row {
	t.Helper()
	for l := 0; l <= last; l++ {
		if o != nil && o.Wants(l) {
			for start := 0; start < len(rows); {
				end := start + 1
				for end < len(rows) && rows[end].Seq == rows[start].Seq {
					end++
				}
				n := end - start
				p := probs[rows[start].Seq]
				if len(p) != heads*n*n {
					p = causal(heads, n, 0, 0)
				}
				o.Observe(l, rows[start].Seq, 0, n, heads, p)
				start = end
			}
		}
		keep := s.Select(l, rows)
		if keep == nil {
			continue
		}
		for i, k := range keep {
			if i > 0 {
				require.Greater(t, k, keep[i-1])
			}
			rows[i] = rows[k]
		}
		rows = rows[:len(keep)]
	}
	return rows
}

func positions(rows []engine.Row) []int32 {
	var pos []int32
	for _, r := range rows {
		pos = append(pos, r.Pos)
	}
	return pos
}

func TestZeroTPruneKeepsCountAndProtectedRows(t *testing.T) {
	const n, heads = 100, 4
	seq := new(engine.Sequence)
	z, err := NewZeroTPrune(Config{Keep: 0.3, Layers: []int{1}, Window: 8})
	require.NoError(t, err)
	z.Enable(seq)
	probs := map[*engine.Sequence][]float32{seq: causal(heads, n, 40, 0.5)}
	got := run(t, z, z, prefill(seq, n), heads, probs, 3)
	require.Len(t, got, 30)
	pos := positions(got)
	assert.Contains(t, pos, int32(0), "BOS")
	assert.Contains(t, pos, int32(40), "the row every row attends to")
	for p := int32(n - 8); p < n; p++ {
		assert.Contains(t, pos, p, "window")
	}
	again := run(t, z, z, prefill(seq, n), heads, probs, 3)
	assert.Equal(t, pos, positions(again), "deterministic")
}

func TestGeometricStages(t *testing.T) {
	seq := new(engine.Sequence)
	z, err := NewZeroTPrune(Config{Keep: 0.25, Layers: []int{0, 2}, Window: 4})
	require.NoError(t, err)
	z.Enable(seq)
	got := run(t, z, z, prefill(seq, 64), 2, nil, 3)
	assert.Len(t, got, 16)
}

func TestOnlyEnabledSequences(t *testing.T) {
	on, off := new(engine.Sequence), new(engine.Sequence)
	z, err := NewZeroTPrune(Config{Keep: 0.5, Layers: []int{1}, Window: 2})
	require.NoError(t, err)
	z.Enable(on)
	rows := append(prefill(off, 20), prefill(on, 20)...)
	rows = append(rows, engine.Row{Seq: new(engine.Sequence), Pos: 7, Logits: true})
	got := run(t, z, z, rows, 2, nil, 2)
	var nOff, nOn int
	for _, r := range got {
		switch r.Seq {
		case off:
			nOff++
		case on:
			nOn++
		}
	}
	assert.Equal(t, 20, nOff)
	assert.Equal(t, 10, nOn)
	assert.Len(t, got, 31)
	z.Disable(on)
	assert.False(t, z.Enabled(on))
	assert.Len(t, run(t, z, z, prefill(on, 20), 2, nil, 2), 20, "disabled")
}

// Decode steps and short prompts (all rows protected) are never pruned,
// nor are rows wanting logits.
func TestProtectedRowsWin(t *testing.T) {
	seq := new(engine.Sequence)
	z, err := NewZeroTPrune(Config{Keep: 0.1, Layers: []int{0}, Window: 4})
	require.NoError(t, err)
	z.Enable(seq)
	assert.Len(t, run(t, z, z, []engine.Row{{Seq: seq, Pos: 50, Logits: true}}, 2, nil, 1), 1)
	assert.Len(t, run(t, z, z, prefill(seq, 5), 2, nil, 1), 5)
	rows := prefill(seq, 30)
	for i := range rows {
		rows[i].Logits = i%3 == 0
	}
	got := run(t, z, z, rows, 2, nil, 1)
	for _, r := range rows {
		if r.Logits {
			assert.Contains(t, positions(got), r.Pos)
		}
	}
}

func TestRecent(t *testing.T) {
	seq := new(engine.Sequence)
	r, err := NewRecent(Config{Keep: 0.5, Layers: []int{1}, Window: 2})
	require.NoError(t, err)
	r.Enable(seq)
	got := run(t, r, nil, prefill(seq, 10), 0, nil, 2)
	assert.Equal(t, []int32{0, 6, 7, 8, 9}, positions(got))
}

func TestRandom(t *testing.T) {
	seq := new(engine.Sequence)
	draw := func(seed uint64) []int32 {
		r, err := NewRandom(Config{Keep: 0.5, Layers: []int{1}, Window: 2}, seed)
		require.NoError(t, err)
		r.Enable(seq)
		got := run(t, r, nil, prefill(seq, 100), 0, nil, 2)
		require.Len(t, got, 50)
		pos := positions(got)
		assert.Contains(t, pos, int32(0))
		assert.Contains(t, pos, int32(98))
		assert.Contains(t, pos, int32(99))
		return pos
	}
	assert.Equal(t, draw(1), draw(1))
	assert.NotEqual(t, draw(1), draw(2))
}

func TestHeadFilter(t *testing.T) {
	z, err := NewZeroTPrune(Config{HeadVarRatio: 4})
	require.NoError(t, err)
	assert.Equal(t, []bool{true, true, false, true, false}, z.informativeHeads([]float64{1, 2, 100, 0.5, 0.01}))
}

// Two iterations of s ← Aᵀs on a 3-row causal matrix seeded on the last
// row, worked by hand.
func TestWeightedPageRank(t *testing.T) {
	z, err := NewZeroTPrune(Config{Window: 1, Iterations: 2})
	require.NoError(t, err)
	probs := []float32{
		1, 0, 0,
		0.6, 0.4, 0,
		0.5, 0.25, 0.25,
	}
	scores := make([]float32, 3)
	z.rank(attention{probs: probs, rows: 3}, 1, make([]float32, 3), scores)
	assert.InDeltaSlice(t, []float32{0.775, 0.1625, 0.0625}, scores, 1e-6)

	// Cached rows before the batch are left out of the graph.
	past := []float32{
		0.5, 0.5, 0, 0,
		0.2, 0.3, 0.5, 0,
		0.1, 0.2, 0.3, 0.4,
	}
	scores = scores[:3]
	z.rank(attention{probs: past, past: 1, rows: 3}, 1, make([]float32, 3), scores)
	assert.InDelta(t, 1, scores[0]+scores[1]+scores[2], 1e-6)
	assert.Greater(t, scores[0], scores[2])
}

// The similarity stage drops first the less important rows whose key
// repeats a more important row's; the rest goes by importance.
func TestSimilarityStage(t *testing.T) {
	z, err := NewZeroTPrune(Config{Keep: 0.5, Layers: []int{1}, Window: 1, Similarity: 0.5})
	require.NoError(t, err)
	// Rows 1..8 may be dropped, in decreasing importance; row 8 repeats
	// row 1's key, row 7 is unlike anything.
	keys := [][]float32{{0, 0, 1}, {1, 0, 0}, {0, 1, 0}, {1, 1, 0}, {0, 1, 1}, {1, 0, 1}, {1, 1, 1}, {-1, -1, 0}, {2, 0, 0}, {0, 0, 2}}
	mandatory := []bool{true, false, false, false, false, false, false, false, false, true}
	scores := []float32{0, 9, 8, 7, 6, 5, 4, 3, 2, 0}
	var flat []float32
	for _, k := range keys {
		flat = append(flat, k...)
	}
	z.dropSimilar(flat, 3, mandatory, 2, scores)
	assert.Equal(t, float32(math.Inf(-1)), scores[8], "repeats row 1")
	assert.Equal(t, float32(3), scores[7], "unlike the kept rows, and only one of 2 drops is by similarity")
	assert.Equal(t, float32(9), scores[1])
}
