package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/prune"
)

func TestEvalSparsity(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-q8_0.gguf")
	run := func(keep string) sparsityReport {
		out := mustEdgectl(t, "eval-sparsity", "--model", path, "-t", "2", "--keep", keep,
			"--self-sample", "2", "--len", "48", "--cont", "8", "--window", "4", "--json")
		var r sparsityReport
		require.NoError(t, json.Unmarshal([]byte(out), &r))
		return r
	}
	r := run("1")
	assert.Equal(t, "zerotprune", r.Method)
	assert.Equal(t, prune.DefaultSimilarity, r.Similarity, "the similarity stage is on by default")
	assert.Equal(t, 2, r.Sequences)
	assert.Zero(t, r.NLLIncreasePct, "keep 1 is dense")
	assert.Zero(t, r.KL)
	assert.Equal(t, 1.0, r.Top1Agreement)
	assert.Equal(t, 1.0, r.KVBytesRatio)
	require.Contains(t, r.Baselines, "recent")
	require.Contains(t, r.Baselines, "random")
	assert.Equal(t, 1.0, r.Baselines["random"].Top1Agreement)

	r = run("0.5")
	// 4 layers, pruning after layer 1: layers 2 and 3 hold 24 of 48 rows.
	assert.InDelta(t, float64(2*48+2*24)/(4*48), r.KVBytesRatio, 1e-9)
	assert.Positive(t, r.KL)
	assert.Equal(t, r.KVBytesRatio, r.Baselines["recent"].KVBytesRatio)

	code, _, _ := edgectl(t, "eval-sparsity", "--model", path, "--method", "magic")
	assert.Equal(t, 2, code)
	code, _, _ = edgectl(t, "eval-sparsity", "--model", path, "--len", "300", "--cont", "8", "--self-sample", "1")
	assert.Equal(t, 2, code, "longer than the context")
	code, _, stderr := edgectl(t, "eval-sparsity", "--model", path, "--method", "lemo", "--similarity", "1.5")
	assert.Equal(t, 2, code, "the zerotprune baseline takes the similarity share")
	assert.Contains(t, stderr, "similarity share 1.5")
}

// lemo train writes a predictor that eval-sparsity's lemo method loads;
// a predictor for other blocks or layers is refused.
func TestLeMoTrainAndEval(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-q8_0.gguf")
	pred := filepath.Join(t.TempDir(), "tiny.lemo.gguf")
	out := mustEdgectl(t, "lemo", "train", "--model", path, "-t", "2", "--layers", "1", "--block", "4",
		"--self-sample", "4", "--holdout", "1", "--len", "48", "--epochs", "5", "--out", pred)
	assert.Contains(t, out, "held-out")
	eval := func(args ...string) sparsityReport {
		out := mustEdgectl(t, append([]string{"eval-sparsity", "--model", path, "-t", "2", "--method", "lemo",
			"--self-sample", "2", "--len", "48", "--cont", "8", "--window", "4", "--json"}, args...)...)
		var r sparsityReport
		require.NoError(t, json.Unmarshal([]byte(out), &r))
		return r
	}
	r := eval("--keep", "0.5", "--predictor", pred, "--baselines=false")
	assert.Equal(t, "lemo", r.Method)
	assert.Equal(t, 4, r.Block, "the predictor's block size")
	assert.InDelta(t, float64(2*48+2*24)/(4*48), r.KVBytesRatio, 1e-9)
	r = eval("--keep", "1", "--block", "8")
	assert.Zero(t, r.KL, "keep 1 is dense")
	assert.Contains(t, r.Baselines, "zerotprune")

	code, _, _ := edgectl(t, "eval-sparsity", "--model", path, "--method", "lemo", "--predictor", pred, "--block", "8")
	assert.Equal(t, 2, code, "trained for blocks of 4")
}
