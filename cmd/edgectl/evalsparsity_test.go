package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
	"github.com/edged/edged/prune"
)

// tinyLlamaAttn is the attention FLOPs of a causal prefill into an empty
// cache on tiny-llama (8 heads of 32), given the rows each layer cached:
// per layer n(n+1)/2 query-key pairs, 32 multiply-adds (64 FLOPs) each for
// q·k and for p·v in each head.
func tinyLlamaAttn(rows ...int64) int64 {
	var sum int64
	for _, n := range rows {
		sum += 8 * 64 * 2 * n * (n + 1) / 2
	}
	return sum
}

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
	dense := 2 * tinyLlamaAttn(48, 48, 48, 48) // 2 sequences
	assert.Equal(t, dense, r.DenseAttnFLOPs)
	assert.Equal(t, dense, r.AttnFLOPs)
	assert.Equal(t, 1.0, r.AttnFLOPsRatio, "keep 1 is dense")
	assert.Equal(t, 1.0, r.Baselines["recent"].AttnFLOPsRatio)

	r = run("0.5")
	// 4 layers, pruning after layer 1: layers 2 and 3 hold 24 of 48 rows.
	assert.InDelta(t, float64(2*48+2*24)/(4*48), r.KVBytesRatio, 1e-9)
	// Layer 1 prunes but still runs densely; only layers 2 and 3 save.
	assert.Equal(t, dense, r.DenseAttnFLOPs)
	assert.Equal(t, 2*tinyLlamaAttn(48, 48, 24, 24), r.AttnFLOPs)
	assert.InDelta(t, float64(tinyLlamaAttn(48, 48, 24, 24))/float64(tinyLlamaAttn(48, 48, 48, 48)), r.AttnFLOPsRatio, 1e-12)
	assert.Less(t, r.AttnFLOPsRatio, 1.0)
	assert.Equal(t, r.AttnFLOPs, r.Baselines["random"].AttnFLOPs)
	assert.Equal(t, dense, r.Baselines["random"].DenseAttnFLOPs)
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

func TestReadSparsityData(t *testing.T) {
	f, err := model.Open(fixture.Path(t, "gguf", "tiny-llama-q8_0.gguf"))
	require.NoError(t, err)
	defer f.Close()
	tok, err := model.NewTokenizer(f)
	require.NoError(t, err)
	const text = "Once upon a time there was a little girl who liked to play in the park with her dog."
	textIDs := tok.Encode(text, true, false)
	require.Greater(t, len(textIDs), 12)
	require.Equal(t, tok.BOS(), textIDs[0], "BOS added as the metadata asks")
	long := `{"ids": [1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]}`
	for _, c := range []struct {
		name string
		data string
		tok  *model.Tokenizer
		want [][]int32
		errs []string // substrings of the error; nil: no error
	}{
		{name: "text and ids, blank lines skipped", data: `{"text": "` + text + `"}` + "\n\n  \n" + long + "\n", tok: tok,
			want: [][]int32{textIDs[:12], {1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}}},
		{name: "ids without a tokenizer", data: long, want: [][]int32{{1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}}},
		{name: "short line", data: long + "\n" + `{"ids": [1, 2, 3, 4, 5]}`, tok: tok,
			errs: []string{"d.jsonl:2: 5 tokens, want at least 12"}},
		{name: "errors reported at once", data: "not json\n" + long + "\n" + `{"prompt": "x"}`, tok: tok,
			errs: []string{"d.jsonl:1: ", "d.jsonl:3: ", `unknown field "prompt"`}},
		{name: "both fields", data: `{"text": "` + text + `", "ids": [1]}`, tok: tok, errs: []string{`d.jsonl:1: give "text" or "ids", not both`}},
		{name: "neither field", data: `{}`, tok: tok, errs: []string{"d.jsonl:1: want"}},
		{name: "outside the vocabulary", data: `{"ids": [1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 512]}`, tok: tok,
			errs: []string{"d.jsonl:1: token 12 is 512, outside the vocabulary of 512"}},
		{name: "negative id", data: `{"ids": [-1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]}`, tok: tok, errs: []string{"token 0 is -1"}},
		{name: "text without a tokenizer", data: `{"text": "` + text + `"}`, errs: []string{"d.jsonl:1: text needs a model with a tokenizer"}},
		{name: "empty", data: "\n\n", tok: tok, errs: []string{"d.jsonl: no sequences"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := readSparsityData(strings.NewReader(c.data), "d.jsonl", c.tok, 512, 12)
			if c.errs == nil {
				require.NoError(t, err)
				assert.Equal(t, c.want, got)
				return
			}
			require.Error(t, err)
			for _, e := range c.errs {
				assert.Contains(t, err.Error(), e)
			}
		})
	}
}

// eval-sparsity --data evaluates the file's sequences, cut to --len +
// --cont, and says so in the report.
func TestEvalSparsityData(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-q8_0.gguf")
	dir := t.TempDir()
	write := func(name string, lines ...string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
		return p
	}
	ids := make([]string, 30)
	for i := range ids {
		ids[i] = fmt.Sprint(300 + i)
	}
	good := write("good.jsonl",
		`{"text": "Once upon a time there was a little girl who liked to play in the park with her dog and her cat."}`,
		"",
		`{"ids": [1, `+strings.Join(ids, ", ")+`]}`)
	short := write("short.jsonl", `{"ids": [1, 2, 3]}`)
	args := []string{"eval-sparsity", "--model", path, "-t", "1", "--keep", "0.5", "--len", "16", "--cont", "4",
		"--window", "4", "--baselines=false"}
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{name: "short line", args: []string{"--data", short}, code: 1, stderr: short + ":1: 3 tokens, want at least 20"},
		{name: "missing file", args: []string{"--data", filepath.Join(dir, "none.jsonl")}, code: 1, stderr: "--data: open"},
		{name: "with --self-sample", args: []string{"--data", good, "--self-sample", "2"}, code: 2, stderr: "not both"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := edgectl(t, append(args, c.args...)...)
			assert.Equal(t, c.code, code)
			assert.Contains(t, stderr, c.stderr)
		})
	}

	var r sparsityReport
	require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, append(args, "--data", good, "--json")...)), &r))
	assert.Equal(t, good, r.Data)
	assert.Equal(t, 2, r.Sequences)
	assert.Equal(t, 16, r.PrefixLen)
	// Pruning after layer 1 keeps 8 of 16 rows in layers 2 and 3.
	assert.Equal(t, 2*tinyLlamaAttn(16, 16, 8, 8), r.AttnFLOPs)
	assert.Less(t, r.AttnFLOPsRatio, 1.0)

	out := mustEdgectl(t, append(args, "--data", good)...)
	assert.Contains(t, out, "2 sequences from "+good)
	assert.Contains(t, out, "attn ratio")
}
