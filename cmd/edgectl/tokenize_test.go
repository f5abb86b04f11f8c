package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
)

// runTokenizeCLI runs "edgectl tokenize" in-process and returns its exit
// code and output.
func runTokenizeCLI(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = dispatch(context.Background(), append([]string{"tokenize"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// Every string of llama.cpp's tokenizer suite, for every vocabulary in the
// fixture folder, goes through "edgectl tokenize --no-add-special --file"
// and prints the ids of its .out line.
func TestTokenizeVocabSuite(t *testing.T) {
	dir := fixture.Dir(t, "vocab")
	paths, err := filepath.Glob(filepath.Join(dir, "ggml-vocab-*.gguf"))
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	for _, path := range paths {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			inp, err := os.ReadFile(path + ".inp")
			require.NoError(t, err)
			out, err := os.ReadFile(path + ".out")
			require.NoError(t, err)
			inputs := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
			require.Equal(t, "", inputs[len(inputs)-1], "the .inp file ends with a separator")
			inputs = inputs[:len(inputs)-1]
			want := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			require.Len(t, want, len(inputs))

			tmp := t.TempDir()
			pass := 0
			for i, in := range inputs {
				file := filepath.Join(tmp, fmt.Sprintf("%02d.txt", i))
				require.NoError(t, os.WriteFile(file, []byte(in), 0o644))
				code, stdout, stderr := runTokenizeCLI(t, "--model", path, "--no-add-special", "--file", file)
				require.Equal(t, 0, code, "string %d: %s", i, stderr)
				require.True(t, strings.HasSuffix(stdout, "\n"), "output ends with a newline")
				if assert.Equal(t, strings.Fields(want[i]), strings.Fields(stdout), "string %d %q", i, in) {
					pass++
				}
			}
			t.Logf("%s: %d/%d strings print llama.cpp's ids", name, pass, len(inputs))
		})
	}
}

func TestTokenizeFlags(t *testing.T) {
	vocab := fixture.Dir(t, "vocab")
	gpt2 := filepath.Join(vocab, "ggml-vocab-gpt-2.gguf")
	bert := filepath.Join(vocab, "ggml-vocab-bert-bge.gguf")
	spm := filepath.Join(vocab, "ggml-vocab-llama-spm.gguf")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		// "<|endoftext|>" is GPT-2's end-of-text token (50256): text unless
		// --parse-special.
		{"gpt2 literal", []string{"--model", gpt2, "--text", "Hello<|endoftext|>"}, "15496 27 91 437 1659 5239 91 29"},
		{"gpt2 parsed", []string{"--model", gpt2, "--parse-special", "--text", "Hello<|endoftext|>"}, "15496 50256"},
		// WPM frames the text with [CLS] (101) and [SEP] (102).
		{"bert framed", []string{"--model", bert, "--text", "Hello world"}, "101 7592 2088 102"},
		{"bert bare", []string{"--model", bert, "--no-add-special", "--text", "Hello world"}, "7592 2088"},
		{"spm bos", []string{"--model", spm, "--text", "Hello world"}, "1 15043 3186"},
		{"empty", []string{"--model", gpt2, "--text", ""}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runTokenizeCLI(t, tc.args...)
			require.Equal(t, 0, code, stderr)
			assert.Equal(t, tc.want+"\n", stdout)
		})
	}
}

func TestTokenizeErrors(t *testing.T) {
	gpt2 := filepath.Join(fixture.Dir(t, "vocab"), "ggml-vocab-gpt-2.gguf")
	code, _, stderr := runTokenizeCLI(t, "--model", gpt2)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "exactly one of --text and --file")

	code, _, stderr = runTokenizeCLI(t, "--text", "x")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "--model is required")

	code, _, stderr = runTokenizeCLI(t, "--model", gpt2, "--file", filepath.Join(t.TempDir(), "missing.txt"))
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "missing.txt")
}
