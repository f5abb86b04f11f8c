package prune

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
)

// hotScores returns pre-softmax scores [heads][n][n]: every row gives
// score 1 to what it sees, and hi to the rows in hot.
func hotScores(heads, n int, hi float32, hot ...int) []float32 {
	s := make([]float32, heads*n*n)
	for h := range heads {
		for i := range n {
			row := s[(h*n+i)*n:][:i+1]
			for j := range row {
				row[j] = 1
			}
			for _, j := range hot {
				if j <= i {
					row[j] = hi
				}
			}
		}
	}
	return s
}

func TestInformativeness(t *testing.T) {
	for _, c := range []struct {
		name   string
		heads  int
		scores []float32 // [head][row][row]
		want   []float32
	}{
		{
			// Head 0 scales its queries by 1, 1, 1/2 (the mean of what
			// each sees is 1, 2/2, 6/3): row 0 peaks at 2 (query 1), row 1
			// at 0.5, row 2 at 1. Head 1 scales by 1, 2, 1: peaks 1, 2, 1.
			// Negative scores count as zero.
			"two heads", 2, []float32{
				1, 0, 0, 2, -1, 0, 3, 1, 2,
				1, 0, 0, -4, 1, 0, 1, 1, 1,
			}, []float32{3, 2.5, 2},
		},
		{
			// Every query spreads its scores evenly, at its own scale:
			// row 0, seen by every query, scores no higher than the last,
			// seen by one.
			"uniform", 1, []float32{
				5, 0, 0, 0.1, 0.1, 0, 3, 3, 3,
			}, []float32{1, 1, 1},
		},
		{
			// A query whose scores are all negative attends to nothing.
			"negative", 1, []float32{
				-1, 0, 0, -1, -2, 0, -3, 4, 0,
			}, []float32{0, 3, 0},
		},
	} {
		info := make([]float32, len(c.want))
		informativeness(attention{probs: c.scores, past: 0, rows: len(c.want)}, c.heads, info)
		assert.InDeltaSlice(t, c.want, info, 1e-6, c.name)
	}
}

func TestPoolBlocks(t *testing.T) {
	seq := new(engine.Sequence)
	rows := []engine.Row{{Seq: seq, Pos: 0}, {Seq: seq, Pos: 3}, {Seq: seq, Pos: 4}, {Seq: seq, Pos: 7}, {Seq: seq, Pos: 8}}
	out := make([]float32, 5)
	poolBlocks(rows, []float32{1, 3, 10, 20, 5}, 4, out)
	assert.Equal(t, []float32{2, 2, 15, 15, 5}, out)
}

func TestLeMoDropsUninformativeBlocks(t *testing.T) {
	const n, heads = 64, 2
	seq := new(engine.Sequence)
	m, err := NewLeMo(Config{Keep: 0.5, Layers: []int{1}, Window: 8, Block: 8}, nil)
	require.NoError(t, err)
	m.Enable(seq)
	assert.False(t, m.Wants(0))
	assert.True(t, m.Wants(1) && m.WantsScores(1))
	assert.False(t, m.WantsHidden(1), "no predictor")
	scores := map[*engine.Sequence][]float32{seq: hotScores(heads, n, 50, 20, 30, 40)}
	got := positions(run(t, m, m, prefill(seq, n), heads, scores, 3))
	require.Len(t, got, 32)
	// 9 rows are protected; of the 23 others the blocks of rows 20 and 30
	// come first, then that of row 40, cut after 7 rows.
	for _, p := range []int32{0, 16, 23, 24, 31, 40, 46, 56, 63} {
		assert.Contains(t, got, p, "BOS, the blocks of the hot rows and the window")
	}
	for _, p := range []int32{9, 32, 47} {
		assert.NotContains(t, got, p)
	}
}

func TestLeMoConfig(t *testing.T) {
	_, err := NewLeMo(Config{Block: -1}, nil)
	require.ErrorIs(t, err, ErrConfig)
	assert.Contains(t, err.Error(), "block")
	p := &Predictor{Block: 8, Dim: 4, Layers: map[int]*MLP{2: newMLP(4, 3)}}
	_, err = NewLeMo(Config{Layers: []int{2}, Block: 16}, p)
	require.ErrorIs(t, err, ErrConfig, "block size differs")
	_, err = NewLeMo(Config{Layers: []int{1}, Block: 8}, p)
	require.ErrorIs(t, err, ErrConfig, "no MLP for layer 1")
	m, err := NewLeMo(Config{Layers: []int{2}, Block: 8}, p)
	require.NoError(t, err)
	assert.False(t, m.Wants(2), "a predictor needs no scores")
	assert.True(t, m.WantsHidden(2))
}

// newMLP returns an MLP with deterministic non-zero weights.
func newMLP(dim, hidden int) *MLP {
	rng := rand.New(rand.NewPCG(1, 2))
	m := &MLP{Hidden: hidden, W1: make([]float32, dim*hidden), B1: make([]float32, hidden), W2: make([]float32, hidden), B2: 0.5}
	for _, v := range [][]float32{m.W1, m.B1, m.W2} {
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
	}
	return m
}

func TestPredictorScoresBlocks(t *testing.T) {
	const dim = 4
	seq := new(engine.Sequence)
	p := &Predictor{Block: 2, Dim: dim, Layers: map[int]*MLP{0: newMLP(dim, 3)}}
	rows := prefill(seq, 5)
	x := make([]float32, 5*dim)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	out := make([]float32, 5)
	require.NoError(t, p.scoreRows(0, rows, x, 2, out))
	assert.Equal(t, out[0], out[1])
	assert.Equal(t, out[2], out[3])
	feat, hid := make([]float32, dim), make([]float32, 3)
	blockInput(x[4*dim:], feat)
	assert.Equal(t, p.Layers[0].forward(feat, hid), out[4], "the last block, of one row")
	assert.ErrorIs(t, p.scoreRows(1, rows, x, 2, out), ErrConfig, "no MLP for the layer")
	assert.ErrorIs(t, p.scoreRows(0, rows, x[:7], 2, out), ErrConfig, "width")
}

func TestPredictorFileRoundTrip(t *testing.T) {
	p := &Predictor{Block: 16, Dim: 4, Layers: map[int]*MLP{1: newMLP(4, 3), 3: newMLP(4, 3)}}
	path := filepath.Join(t.TempDir(), "m.lemo.gguf")
	require.NoError(t, SavePredictor(path, p))
	got, err := LoadPredictor(path)
	require.NoError(t, err)
	assert.Equal(t, p, got)
	_, err = ParsePredictor([]byte("GGUF"))
	require.ErrorIs(t, err, ErrPredictorFile)
}

// A predictor trained on another version of LeMo's scores, such as one
// written before lemo.score existed, is refused: its MLP would rank blocks
// by something else.
func TestPredictorFileScoreVersion(t *testing.T) {
	for _, c := range []struct {
		version any // nil: no lemo.score key
		want    string
	}{
		{nil, "version 1, this build ranks by version 2"},
		{uint32(3), "version 3, this build ranks by version 2"},
		{"two", "lemo.score"},
	} {
		w := model.NewWriter()
		for k, v := range map[string]any{keyGeneralType: predictorType, keyLeMoBlock: uint32(4), keyLeMoDim: uint32(2), keyLeMoHidden: uint32(2)} {
			require.NoError(t, w.Set(k, v))
		}
		if c.version != nil {
			require.NoError(t, w.Set(keyLeMoScore, c.version))
		}
		path := filepath.Join(t.TempDir(), "old.lemo.gguf")
		require.NoError(t, w.WriteFile(path))
		_, err := LoadPredictor(path)
		require.ErrorIs(t, err, ErrPredictorFile, "%v", c.version)
		assert.Contains(t, err.Error(), c.want)
	}
}

// FuzzParsePredictor: no input makes the parser panic, and what it
// accepts is consistent.
func FuzzParsePredictor(f *testing.F) {
	path := filepath.Join(f.TempDir(), "p.gguf")
	require.NoError(f, SavePredictor(path, &Predictor{Block: 4, Dim: 2, Layers: map[int]*MLP{0: newMLP(2, 2)}}))
	data, err := os.ReadFile(path)
	require.NoError(f, err)
	f.Add(data)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePredictor(data)
		if err != nil {
			require.ErrorIs(t, err, ErrPredictorFile)
			return
		}
		for _, m := range p.Layers {
			require.Len(t, m.W1, p.Dim*m.Hidden)
			require.Len(t, m.B1, m.Hidden)
			require.Len(t, m.W2, m.Hidden)
		}
	})
}

func TestTrainPredictorLearnsARanking(t *testing.T) {
	// The block score is exp of the input's first coordinate: the
	// predictor must rank held-out blocks by it.
	rng := rand.New(rand.NewPCG(3, 4))
	recording := func() Recording {
		r := Recording{Layer: 1}
		for range 20 {
			in := make([]float32, 6)
			for d := range in {
				in[d] = float32(rng.NormFloat64())
			}
			blockInput(append([]float32(nil), in...), in)
			r.Inputs = append(r.Inputs, in)
			r.Scores = append(r.Scores, float32(math.Exp(float64(in[0]))))
			r.Seen = append(r.Seen, 1)
		}
		return r
	}
	var train, held []Recording
	for range 30 {
		train = append(train, recording())
	}
	for range 5 {
		held = append(held, recording())
	}
	p, err := TrainPredictor(train, 8, TrainOptions{Hidden: 8, Epochs: 60, LR: 1e-2, Seed: 1})
	require.NoError(t, err)
	o, err := p.Overlap(held, 0.5)
	require.NoError(t, err)
	assert.Greater(t, o.Predicted, 0.85)
	assert.InDelta(t, 0.5, o.Chance, 1e-9)
	assert.InDelta(t, 0.5, o.Position, 0.15, "every block is seen alike: position says nothing")
	_, err = TrainPredictor(nil, 8, DefaultTrainOptions())
	assert.ErrorIs(t, err, ErrConfig)
}
