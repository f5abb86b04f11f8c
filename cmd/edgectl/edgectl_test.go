package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
)

// edgectl runs the command line in-process and returns its exit code and
// output.
func edgectl(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = dispatch(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func mustEdgectl(t testing.TB, args ...string) string {
	t.Helper()
	code, out, errOut := edgectl(t, args...)
	require.Equal(t, 0, code, "edgectl %s: %s", strings.Join(args, " "), errOut)
	return out
}

type greedyCase struct {
	Prompt       string  `json:"prompt"`
	PromptIDs    []int32 `json:"prompt_ids"`
	Positions    int     `json:"positions"`
	GeneratedIDs []int32 `json:"generated_ids"`
}

func readCases(t testing.TB, name string) []greedyCase {
	var doc struct {
		Cases []greedyCase `json:"cases"`
	}
	b, err := os.ReadFile(fixture.Path(t, "llama2c", name))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &doc))
	require.NotEmpty(t, doc.Cases)
	return doc.Cases
}

func convert(t testing.TB, checkpoint string) string {
	out := filepath.Join(t.TempDir(), strings.TrimSuffix(checkpoint, ".bin")+".gguf")
	mustEdgectl(t, "convert", "llama2c",
		"--checkpoint", fixture.Path(t, "llama2c", checkpoint),
		"--tokenizer", fixture.Path(t, "llama2c", "tok512-aidreams.bin"),
		"--out", out)
	return out
}

type runResult struct {
	PromptIDs    []int32 `json:"prompt_ids"`
	GeneratedIDs []int32 `json:"generated_ids"`
	Text         string  `json:"text"`
}

func runGreedy(t testing.TB, modelPath, prompt string, n int, kv string) runResult {
	out := mustEdgectl(t, "run", "--model", modelPath, "--prompt", prompt, "-n", fmt.Sprint(n), "--temp", "0", "--kv-type", kv, "--json")
	var r runResult
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	return r
}

// The llama2.c reference's greedy generations, through both our converter
// and llama.cpp's, with either cache type.
func TestAidreamsGreedy(t *testing.T) {
	ours := convert(t, "aidreams260K.bin")
	theirs := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	for _, c := range readCases(t, "aidreams260K.greedy.json") {
		for _, m := range []string{ours, theirs} {
			for _, kv := range []string{"f32", "f16"} {
				t.Run(fmt.Sprintf("%q/%s/%s", c.Prompt, filepath.Base(m), kv), func(t *testing.T) {
					r := runGreedy(t, m, c.Prompt, c.Positions-(len(c.PromptIDs)-1), kv)
					assert.Equal(t, c.PromptIDs, r.PromptIDs)
					assert.Equal(t, c.GeneratedIDs, r.GeneratedIDs)
				})
			}
		}
	}
}

func TestAidreamsTokenize(t *testing.T) {
	path := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	for _, c := range readCases(t, "aidreams260K.greedy.json") {
		out := mustEdgectl(t, "tokenize", "--model", path, "--text", c.Prompt)
		assert.Equal(t, ids(c.PromptIDs), strings.TrimSpace(out), c.Prompt)
		file := filepath.Join(t.TempDir(), "prompt.txt")
		require.NoError(t, os.WriteFile(file, []byte(c.Prompt), 0o644))
		out = mustEdgectl(t, "tokenize", "--model", path, "--file", file)
		assert.Equal(t, ids(c.PromptIDs), strings.TrimSpace(out), c.Prompt)
	}
}

func ids(v []int32) string {
	s := make([]string, len(v))
	for i, id := range v {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, " ")
}

// logitsOf runs edgectl logits over ids and reads the file it wrote.
func logitsOf(t testing.TB, modelPath string, idList []int32, kv string) []float32 {
	out := filepath.Join(t.TempDir(), "logits.f32")
	stdout := mustEdgectl(t, "logits", "--model", modelPath, "--ids", strings.ReplaceAll(ids(idList), " ", ","), "--out", out, "--kv-type", kv)
	var r struct {
		PromptIDs []int32 `json:"prompt_ids"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	require.Equal(t, idList, r.PromptIDs)
	return fixture.ReadF32(t, out)
}

func TestAidreamsLogits(t *testing.T) {
	c := readCases(t, "aidreams260K.greedy.json")[0]
	require.Empty(t, c.Prompt)
	want := fixture.ReadF32(t, fixture.Path(t, "llama2c", "aidreams260K.prompt0.logits.f32"))
	rows := len(want) / 512
	idList := append(append([]int32{}, c.PromptIDs...), c.GeneratedIDs[:rows-1]...)
	m := convert(t, "aidreams260K.bin")
	for _, tc := range []struct {
		kv  string
		max float64
	}{{"f32", 1e-4}, {"f16", 3e-3}} {
		got := logitsOf(t, m, idList, tc.kv)
		l2 := fixture.RelL2(got, want)
		t.Logf("%s cache: rel L2 %.2e", tc.kv, l2)
		assert.LessOrEqual(t, l2, tc.max, tc.kv)
	}
}

// stories260K's tokenizer is not available; ids are what count.
func TestStories(t *testing.T) {
	c := readCases(t, "stories260K.greedy.json")[0]
	m := convert(t, "stories260K.bin")
	r := runGreedy(t, m, "", c.Positions, "f32")
	assert.Equal(t, c.PromptIDs, r.PromptIDs)
	assert.Equal(t, c.GeneratedIDs, r.GeneratedIDs)

	want := fixture.ReadF32(t, fixture.Path(t, "llama2c", "stories260K.logits.f32"))
	idList := append(append([]int32{}, c.PromptIDs...), c.GeneratedIDs[:len(want)/512-1]...)
	l2 := fixture.RelL2(logitsOf(t, m, idList, "f32"), want)
	t.Logf("rel L2 %.2e", l2)
	assert.LessOrEqual(t, l2, 1e-4)
}

type golden struct {
	Model        string  `json:"model"`
	NVocab       int     `json:"n_vocab"`
	PromptIDs    []int32 `json:"prompt_ids"`
	LlamacppFile string  `json:"llamacpp_logits"`
	F64RefLogits string  `json:"f64ref_logits"`
}

// edgectl logits --ids on every fixture model, against both references.
func TestGGUFLogits(t *testing.T) {
	dir := fixture.Dir(t, "gguf")
	paths, err := filepath.Glob(filepath.Join(dir, "*.golden.json"))
	require.NoError(t, err)
	for _, p := range paths {
		var g golden
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &g))
		t.Run(g.Model, func(t *testing.T) {
			got := logitsOf(t, filepath.Join(dir, g.Model), g.PromptIDs, "f32")
			maxL2 := 3e-2
			if strings.HasSuffix(g.Model, "-f32.gguf") || strings.HasSuffix(g.Model, "-f16.gguf") {
				maxL2 = 2e-3
			}
			for _, ref := range []string{g.F64RefLogits, g.LlamacppFile} {
				want := fixture.ReadF32(t, filepath.Join(dir, ref))
				assert.LessOrEqual(t, fixture.RelL2(got, want), maxL2, ref)
				assert.GreaterOrEqual(t, fixture.Top1(got, want, g.NVocab), 0.9, ref)
			}
		})
	}
}

func TestInspect(t *testing.T) {
	out := mustEdgectl(t, "inspect", "--tensors", fixture.Path(t, "gguf", "tiny-qwen2-q4_k_m.gguf"))
	for _, want := range []string{"arch:        qwen2", "layers:      4", "NeoX", "blk.0.attn_q.bias", "q4_k", "tokenizer.ggml.pre"} {
		assert.Contains(t, out, want)
	}
	out = mustEdgectl(t, "inspect", fixture.Path(t, "vocab", "ggml-vocab-llama-spm.gguf"))
	assert.Contains(t, out, "not runnable")
}

// Bad input is a message and a non-zero exit, never a panic.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(fixture.Path(t, "gguf", "tiny-llama-tied-q8_0.gguf"))
	require.NoError(t, err)
	truncated := filepath.Join(dir, "truncated.gguf")
	require.NoError(t, os.WriteFile(truncated, good[:len(good)/2], 0o644))
	garbage := filepath.Join(dir, "garbage.gguf")
	require.NoError(t, os.WriteFile(garbage, []byte("not a model at all"), 0o644))
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nope"}, 2, "unknown command"},
		{[]string{"run", "--prompt", "x"}, 2, "--model is required"},
		{[]string{"run", "--model", truncated, "--prompt", "x"}, 1, "past its end"},
		{[]string{"inspect", garbage}, 1, "magic"},
		{[]string{"logits", "--model", truncated, "--ids", "1"}, 2, "--out"},
		{[]string{"logits", "--model", fixture.Path(t, "gguf", "tiny-llama-tied-q8_0.gguf"), "--ids", "1,99999", "--out", filepath.Join(dir, "l")}, 1, "vocabulary"},
		{[]string{"logits", "--model", fixture.Path(t, "gguf", "tiny-llama-tied-q8_0.gguf"), "--ids", "1,x", "--out", filepath.Join(dir, "l")}, 1, "not a token id"},
		{[]string{"tokenize", "--model", garbage, "--text", "hi"}, 1, "magic"},
		{[]string{"convert", "llama2c", "--checkpoint", garbage, "--tokenizer", garbage, "--out", filepath.Join(dir, "o.gguf")}, 1, "llama2c"},
		{[]string{"convert", "pytorch"}, 2, "usage"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, errOut := edgectl(t, tc.args...)
			assert.Equal(t, tc.code, code)
			assert.Contains(t, errOut, tc.want)
		})
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"inspect", "run", "logits", "tokenize", "convert"} {
		code, _, errOut := edgectl(t, cmd, "--help")
		assert.Equal(t, 0, code, cmd)
		assert.Contains(t, errOut, "usage: edgectl "+cmd, cmd)
	}
	code, _, errOut := edgectl(t)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "commands:")
}
