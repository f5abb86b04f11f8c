package prune

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
)

func openEngine(t *testing.T, hooks engine.Hooks) *engine.Engine {
	t.Helper()
	f, err := model.Open(fixture.Path(t, "gguf", "tiny-llama-q8_0.gguf"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	m, err := model.Load(f)
	require.NoError(t, err)
	e, err := engine.New(m, cpu.New(2), engine.Options{Cache: engine.CacheF32, Hooks: hooks})
	require.NoError(t, err)
	return e
}

// prompt is a deterministic token sequence starting with BOS.
func prompt(n, salt int) []int32 {
	ids := []int32{1}
	for i := 1; i < n; i++ {
		ids = append(ids, int32(3+(i*37+salt*11)%500))
	}
	return ids
}

// stepPrompts prefills one fresh sequence per prompt in a single batch,
// enabling the policy (when not nil) on the sequences marked in on, and
// returns each prompt's last-row logits and its sequence.
func stepPrompts(t *testing.T, e *engine.Engine, enable func(*engine.Sequence), on []bool, prompts ...[]int32) ([][]float32, []*engine.Sequence) {
	t.Helper()
	nv := e.Config().NVocab
	var batch []engine.Entry
	seqs := make([]*engine.Sequence, len(prompts))
	for p, ids := range prompts {
		seq, err := e.NewSequence(nil)
		require.NoError(t, err)
		t.Cleanup(seq.Free)
		if on != nil && on[p] {
			enable(seq)
		}
		seqs[p] = seq
		for i, id := range ids {
			batch = append(batch, engine.Entry{Seq: seq, Token: id, Pos: int32(i), Logits: i == len(ids)-1})
		}
	}
	logits := make([]float32, len(prompts)*nv)
	require.NoError(t, e.Step(batch, logits))
	out := make([][]float32, len(prompts))
	for p := range prompts {
		out[p] = logits[p*nv : (p+1)*nv]
	}
	return out, seqs
}

// With Keep = 1 the policy observes but drops nothing: the logits are
// bit-identical to the dense engine's.
func TestKeepAllIsDense(t *testing.T) {
	a, b := prompt(120, 1), prompt(90, 2)
	dense, _ := stepPrompts(t, openEngine(t, engine.Hooks{}), nil, nil, a, b)
	z, err := NewZeroTPrune(Config{Keep: 1, Layers: []int{0, 1, 2}, Window: 4})
	require.NoError(t, err)
	e := openEngine(t, engine.Hooks{Observer: z, Selector: z})
	got, seqs := stepPrompts(t, e, z.Enable, []bool{true, true}, a, b)
	assert.Equal(t, dense, got)
	assert.Equal(t, 120, seqs[0].CacheLen(3))
}

// A sequence the policy does not act on gets the dense engine's logits,
// bit for bit, even in a batch beside one that is pruned; the pruned one
// caches the kept rows only after the pruning layer.
func TestOthersUnaffected(t *testing.T) {
	a, b := prompt(100, 3), prompt(80, 4)
	dense, _ := stepPrompts(t, openEngine(t, engine.Hooks{}), nil, nil, a, b)
	for name, mk := range map[string]func() (engine.Hooks, func(*engine.Sequence)){
		"zerotprune": func() (engine.Hooks, func(*engine.Sequence)) {
			z, err := NewZeroTPrune(Config{Keep: 0.5, Layers: []int{1}, Window: 8})
			require.NoError(t, err)
			return engine.Hooks{Observer: z, Selector: z}, z.Enable
		},
		"zerotprune similarity": func() (engine.Hooks, func(*engine.Sequence)) {
			z, err := NewZeroTPrune(Config{Keep: 0.5, Layers: []int{1}, Window: 8, Similarity: 0.5})
			require.NoError(t, err)
			return engine.Hooks{Observer: z, Selector: z}, z.Enable
		},
		"lemo": func() (engine.Hooks, func(*engine.Sequence)) {
			m, err := NewLeMo(Config{Keep: 0.5, Layers: []int{1}, Window: 8, Block: 4}, nil)
			require.NoError(t, err)
			return engine.Hooks{Observer: m, Selector: m}, m.Enable
		},
		"lemo predictor": func() (engine.Hooks, func(*engine.Sequence)) {
			p := &Predictor{Block: 4, Dim: 256, Layers: map[int]*MLP{1: newMLP(256, 8)}}
			m, err := NewLeMo(Config{Keep: 0.5, Layers: []int{1}, Window: 8, Block: 4}, p)
			require.NoError(t, err)
			return engine.Hooks{Observer: m, Selector: m}, m.Enable
		},
		"recent": func() (engine.Hooks, func(*engine.Sequence)) {
			r, err := NewRecent(Config{Keep: 0.5, Layers: []int{1}, Window: 8})
			require.NoError(t, err)
			return engine.Hooks{Selector: r}, r.Enable
		},
		"random": func() (engine.Hooks, func(*engine.Sequence)) {
			r, err := NewRandom(Config{Keep: 0.5, Layers: []int{1}, Window: 8}, 7)
			require.NoError(t, err)
			return engine.Hooks{Selector: r}, r.Enable
		},
	} {
		t.Run(name, func(t *testing.T) {
			hooks, enable := mk()
			e := openEngine(t, hooks)
			got, seqs := stepPrompts(t, e, enable, []bool{false, true}, a, b)
			assert.Equal(t, dense[0], got[0], "the sequence without the policy")
			assert.NotEqual(t, dense[1], got[1], "the pruned sequence")
			assert.Equal(t, 80, seqs[1].CacheLen(1), "layers up to the pruning layer are dense")
			assert.Equal(t, 40, seqs[1].CacheLen(2), "later layers cache the kept rows")
			assert.Equal(t, 100, seqs[0].CacheLen(3))

			// Decoding after a pruned prefill works and prunes nothing.
			nv := e.Config().NVocab
			out := make([]float32, nv)
			require.NoError(t, e.Step([]engine.Entry{{Seq: seqs[1], Token: 5, Pos: 80, Logits: true}}, out))
			assert.Equal(t, 41, seqs[1].CacheLen(2))
		})
	}
}

// With Keep = 1 LeMo asks the kernel for scores and drops nothing: the
// logits are bit-identical to the dense engine's.
func TestLeMoKeepAllIsDense(t *testing.T) {
	a := prompt(100, 5)
	dense, _ := stepPrompts(t, openEngine(t, engine.Hooks{}), nil, nil, a)
	m, err := NewLeMo(Config{Keep: 1, Layers: []int{0, 2}, Window: 4, Block: 8}, nil)
	require.NoError(t, err)
	got, _ := stepPrompts(t, openEngine(t, engine.Hooks{Observer: m, Selector: m}), m.Enable, []bool{true}, a)
	assert.Equal(t, dense, got)
}

// capture keeps what an observer is given at layer 1, as scores or as
// probabilities, and the hidden states entering it.
type capture struct {
	scores bool
	got    []float32
	hidden []float32
}

func (c *capture) Wants(layer int) bool       { return layer == 1 }
func (c *capture) WantsScores(int) bool       { return c.scores }
func (c *capture) WantsHidden(layer int) bool { return layer == 1 }
func (c *capture) Observe(_ int, _ *engine.Sequence, _, _, _ int, v []float32) {
	c.got = append([]float32(nil), v...)
}
func (c *capture) ObserveHidden(_ int, _ []engine.Row, x []float32) {
	c.hidden = append([]float32(nil), x...)
}

// The scores the engine hands a ScoreObserver are the logits of the
// probabilities it hands a plain observer: softmax of each row's visible
// scores gives them back.
func TestScoresAreProbabilityLogits(t *testing.T) {
	const n, heads = 12, 8
	a := prompt(n, 6)
	ps, ss := &capture{}, &capture{scores: true}
	stepPrompts(t, openEngine(t, engine.Hooks{Observer: ps}), nil, nil, a)
	stepPrompts(t, openEngine(t, engine.Hooks{Observer: ss}), nil, nil, a)
	require.Len(t, ss.got, heads*n*n)
	require.Len(t, ss.hidden, n*256)
	assert.Equal(t, ps.hidden, ss.hidden)
	for h := range heads {
		for i := range n {
			row := ss.got[(h*n+i)*n:][:n]
			mx := row[0]
			for _, v := range row[:i+1] {
				mx = max(mx, v)
			}
			var sum float64
			for _, v := range row[:i+1] {
				sum += math.Exp(float64(v - mx))
			}
			for j := range n {
				want := float32(0)
				if j <= i {
					want = float32(math.Exp(float64(row[j]-mx)) / sum)
				}
				assert.InDelta(t, want, ps.got[(h*n+i)*n+j], 1e-5)
			}
		}
	}
}
