package adapt

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/quant"
)

// A prefix made from tokens T, followed by tokens U numbered from position
// 0, gives the logits of the plain sequence T+U.
func TestPrefixFromTokens(t *testing.T) {
	m := loadModel(t, tinyLlama(t))
	head, tail := []int32{1, 15, 27, 99}, []int32{3, 42, 8}
	p, err := NewPrefix(m, testBackend(t), head)
	require.NoError(t, err)
	require.Equal(t, len(head), p.PrefixLen())

	e := newEngine(t, m, nil)
	want := runSeq(t, e, nil, append(append([]int32(nil), head...), tail...), 0)
	want = want[len(head)*e.Config().NVocab:]
	got := runSeq(t, e, p, tail, 0)
	var maxDiff float64
	for i := range want {
		maxDiff = max(maxDiff, math.Abs(float64(want[i]-got[i])))
	}
	t.Logf("max |prefix - plain| = %g", maxDiff)
	assert.Less(t, maxDiff, 1e-4)
}

// runSeq feeds ids to a new sequence with prefix p from position at and
// returns every row's logits.
func runSeq(t *testing.T, e *engine.Engine, p engine.PrefixProvider, ids []int32, at int) []float32 {
	t.Helper()
	seq, err := e.NewSequence(p)
	require.NoError(t, err)
	defer seq.Free()
	batch := make([]engine.Entry, len(ids))
	for i, id := range ids {
		batch[i] = engine.Entry{Seq: seq, Token: id, Pos: int32(at + i), Logits: true}
	}
	logits := make([]float32, len(ids)*e.Config().NVocab)
	require.NoError(t, e.Step(batch, logits))
	return logits
}

func TestPrefixFile(t *testing.T) {
	m := loadModel(t, tinyLlama(t))
	p, err := NewPrefix(m, testBackend(t), []int32{1, 5, 6})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "prefix.gguf")
	require.NoError(t, SavePrefix(path, p, quant.F32))
	got, err := LoadPrefix(path, m)
	require.NoError(t, err)
	assert.Equal(t, p, got)

	_, err = LoadLoRA(path, m)
	assert.ErrorIs(t, err, ErrNotAdapter)
	narrow := &Prefix{Arch: p.Arch, Len: 1, KVDim: p.KVDim / 2, K: make([][]float32, len(p.K)), V: make([][]float32, len(p.V))}
	for l := range p.K {
		narrow.K[l], narrow.V[l] = p.K[l][:narrow.KVDim], p.V[l][:narrow.KVDim]
	}
	bad := filepath.Join(t.TempDir(), "narrow.gguf")
	require.NoError(t, SavePrefix(bad, narrow, quant.F16))
	_, err = LoadPrefix(bad, m)
	assert.ErrorIs(t, err, ErrMismatch)
	assert.ErrorContains(t, err, "blk.0.prefix_k")
}

// MeZO lowers the training loss of a prefix initialised from real tokens.
func TestMeZOPrefix(t *testing.T) {
	if testing.Short() {
		t.Skip("200 MeZO steps (3 s) in -short mode")
	}
	m := aidreams(t)
	p, err := NewPrefix(m, testBackend(t), []int32{1, 260, 275, 280, 269})
	require.NoError(t, err)
	mz, err := NewMeZO(newEngine(t, m, nil), p, trainPairs, MeZOOptions{LR: 1e-2, Eps: 1e-1, Seed: 3, MaxGrad: 100})
	require.NoError(t, err)
	defer mz.Close()
	before, err := mz.Loss(trainPairs)
	require.NoError(t, err)
	for range 200 {
		_, err := mz.Step()
		require.NoError(t, err)
	}
	after, err := mz.Loss(trainPairs)
	require.NoError(t, err)
	t.Logf("prefix loss %.4f → %.4f", before, after)
	assert.Less(t, after, before*0.9)
}
