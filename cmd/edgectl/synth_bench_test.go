package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
)

type benchJSON struct {
	Model   string   `json:"model"`
	Desc    string   `json:"desc"`
	Size    int64    `json:"size"`
	Params  int64    `json:"params"`
	Kernels string   `json:"kernels"`
	Threads int      `json:"threads"`
	LoadMS  float64  `json:"load_ms"`
	PP      *float64 `json:"pp"`
	PPStd   *float64 `json:"pp_std"`
	TG      *float64 `json:"tg"`
	TGStd   *float64 `json:"tg_std"`
}

func benchJSONOf(t *testing.T, args ...string) benchJSON {
	t.Helper()
	out := mustEdgectl(t, append([]string{"bench", "--json"}, args...)...)
	var r benchJSON
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	return r
}

func TestBenchJSON(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-q4_0.gguf")
	r := benchJSONOf(t, "--model", path, "-p", "8", "-n", "4", "-r", "2", "-t", "1")
	require.NotNil(t, r.PP)
	require.NotNil(t, r.TG)
	assert.Positive(t, *r.PP)
	assert.Positive(t, *r.TG)
	assert.GreaterOrEqual(t, *r.PPStd, 0.0)
	assert.GreaterOrEqual(t, *r.TGStd, 0.0)
	assert.Positive(t, r.LoadMS)
	assert.Equal(t, 1, r.Threads)
	assert.NotEmpty(t, r.Kernels)
	assert.Equal(t, path, r.Model)
	assert.Positive(t, r.Size)
	assert.Positive(t, r.Params)

	// -n 0 skips generation.
	r = benchJSONOf(t, "--model", path, "-p", "4", "-n", "0", "-r", "1")
	assert.NotNil(t, r.PP)
	assert.Nil(t, r.TG)
}

func TestBenchTable(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-q4_0.gguf")
	out := mustEdgectl(t, "bench", "-m", path, "-p", "8", "-n", "2", "-r", "2", "-t", "2")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.GreaterOrEqual(t, len(lines), 5, out)
	assert.Regexp(t, `^\| model +\| +size \| +params \| backend +\| threads \| +test \| +t/s \|$`, lines[0])
	assert.Regexp(t, `^\| llama .* Q4_0 +\| .* MiB \| .* M \| CPU +\| +2 \| +pp8 \| +[0-9.]+ ± [0-9.]+ \|$`, lines[2])
	assert.Regexp(t, `\| +tg2 \| +[0-9.]+ ± [0-9.]+ \|$`, lines[3])
	assert.Regexp(t, `^load: [0-9]+ ms; CPU kernels: (portable|avx2|avx512vnni|neon|neon\+dot)$`, lines[len(lines)-1])

	// -d puts tokens in the context first, as llama-bench's -d does.
	out = mustEdgectl(t, "bench", "-m", path, "-p", "4", "-n", "2", "-d", "8", "-r", "1", "-t", "1")
	assert.Regexp(t, `\| +pp4 @ d8 \| +[0-9.]+ ± [0-9.]+ \|`, out)
	assert.Regexp(t, `\| +tg2 @ d8 \| +[0-9.]+ ± [0-9.]+ \|`, out)
}

func TestBenchUsage(t *testing.T) {
	code, _, _ := edgectl(t, "bench", "-p", "8")
	assert.Equal(t, 2, code, "no model")
	code, _, _ = edgectl(t, "bench", "--model", "x.gguf", "-p", "0", "-n", "0")
	assert.Equal(t, 2, code, "nothing to run")
	code, _, _ = edgectl(t, "bench", "--model", "x.gguf", "-r", "0")
	assert.Equal(t, 2, code, "no repetitions")
	code, _, _ = edgectl(t, "bench", "--model", "x.gguf", "-d", "-1")
	assert.Equal(t, 2, code, "negative depth")
	code, _, errOut := edgectl(t, "bench", "--model", filepath.Join(t.TempDir(), "missing.gguf"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "missing.gguf")
}

// synth writes the tiny shapes, which load and run under bench.
func TestSynthThenBench(t *testing.T) {
	for _, c := range []struct{ shape, typ string }{{"test-llama-tiny", "q4_0"}, {"test-qwen2-tiny", "q4_k_m"}} {
		path := filepath.Join(t.TempDir(), "sub", c.shape+".gguf")
		out := mustEdgectl(t, "synth", "--shape", c.shape, "--type", c.typ, "--out", path, "--seed", "5")
		assert.Contains(t, out, "wrote "+path)

		f, err := model.Open(path)
		require.NoError(t, err)
		ft, err := f.Int("general.file_type")
		f.Close()
		require.NoError(t, err)
		want, err := model.ParseFType(c.typ)
		require.NoError(t, err)
		assert.Equal(t, int64(want), ft)

		r := benchJSONOf(t, "--model", path, "-p", "6", "-n", "3", "-r", "1", "-t", "1")
		require.NotNil(t, r.PP)
		require.NotNil(t, r.TG)
		assert.Positive(t, *r.PP)
		assert.Positive(t, *r.TG)
		assert.Contains(t, r.Desc, strings.ToUpper(c.typ))
	}
}

func TestSynthUsage(t *testing.T) {
	out := mustEdgectl(t, "synth", "--list")
	for _, s := range []string{"smollm2-135m", "qwen2.5-0.5b", "llama3.2-1b", "tinyllama-1.1b"} {
		assert.Contains(t, out, s)
	}
	dir := t.TempDir()
	for _, args := range [][]string{
		{"synth", "--shape", "smollm2-135m"},
		{"synth", "--out", filepath.Join(dir, "m.gguf")},
		{"synth", "--shape", "nope", "--out", filepath.Join(dir, "m.gguf")},
		{"synth", "--shape", "smollm2-135m", "--type", "q4_2", "--out", filepath.Join(dir, "m.gguf")},
	} {
		code, _, _ := edgectl(t, args...)
		assert.Equal(t, 2, code, "%v", args)
	}
	// A file type whose fallback edged cannot write is an error, not a
	// usage error, and leaves no file.
	code, _, errOut := edgectl(t, "synth", "--shape", "smollm2-135m", "--type", "q2_k", "--out", filepath.Join(dir, "m.gguf"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "IQ4_NL")
	assert.NoFileExists(t, filepath.Join(dir, "m.gguf"))
}
