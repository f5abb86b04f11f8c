package model

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/internal/fixture"
)

// suite is one file pair of llama.cpp's tokenizer conformance suite.
type suite struct {
	inputs []string
	want   [][]int32
}

// vocabSuite reads NAME.inp and NAME.out beside a vocab fixture. The .inp
// strings are separated by "\n__ggml_vocab_test__\n", which also ends the
// file, so the empty piece after the last separator is not a string; the
// .out lines hold each string's ids.
func vocabSuite(t testing.TB, name string) suite {
	t.Helper()
	inp, err := os.ReadFile(fixture.Path(t, "vocab", name+".inp"))
	require.NoError(t, err)
	out, err := os.ReadFile(fixture.Path(t, "vocab", name+".out"))
	require.NoError(t, err)

	inputs := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	require.Equal(t, "", inputs[len(inputs)-1], "the .inp file ends with a separator")
	inputs = inputs[:len(inputs)-1]

	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	require.Len(t, lines, len(inputs), "one .out line per string")
	s := suite{inputs: inputs, want: make([][]int32, len(lines))}
	for i, line := range lines {
		for _, f := range strings.Fields(line) {
			id, err := strconv.ParseInt(f, 10, 32)
			require.NoError(t, err, "%s.out line %d", name, i+1)
			s.want[i] = append(s.want[i], int32(id))
		}
	}
	return s
}

// Every vocabulary of the suite tokenizes every string as llama.cpp does.
// A family that cannot be loaded fails the test.
func TestTokenizerVocabSuite(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(fixture.Dir(t, "vocab"), "ggml-vocab-*.gguf"))
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	for _, path := range paths {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			f, err := Open(path)
			require.NoError(t, err)
			defer f.Close()
			tok, err := NewTokenizer(f)
			require.NoError(t, err)
			s := vocabSuite(t, name)
			pass := 0
			for i, in := range s.inputs {
				got := tok.Encode(in, false, false)
				if len(s.want[i]) == 0 && assert.Empty(t, got, "string %d %q", i, in) ||
					len(s.want[i]) > 0 && assert.Equal(t, s.want[i], got, "string %d %q", i, in) {
					pass++
				}
			}
			t.Logf("%s: %d/%d strings tokenize as llama.cpp does", name, pass, len(s.inputs))
		})
	}
}

// The prompts of the llama2.c reference run encode to its prompt ids
// (BOS first; the empty prompt is BOS alone).
func TestTokenizerAidreamsPrompts(t *testing.T) {
	tok := openTokenizer(t, "llama2c", "aidreams260K.llamacpp.gguf")
	raw, err := os.ReadFile(fixture.Path(t, "llama2c", "aidreams260K.greedy.json"))
	require.NoError(t, err)
	var ref struct {
		Cases []struct {
			Prompt    string  `json:"prompt"`
			PromptIDs []int32 `json:"prompt_ids"`
		} `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(raw, &ref))
	require.NotEmpty(t, ref.Cases)
	for _, c := range ref.Cases {
		assert.Equal(t, c.PromptIDs, tok.Encode(c.Prompt, true, false), "%q", c.Prompt)
	}
}

// The random-weight models' golden prompts encode to llama.cpp's ids.
func TestTokenizerGoldenPrompts(t *testing.T) {
	dir := fixture.Dir(t, "gguf")
	paths, err := filepath.Glob(filepath.Join(dir, "*.golden.json"))
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			raw, err := os.ReadFile(path)
			require.NoError(t, err)
			var g struct {
				Model     string  `json:"model"`
				Prompt    string  `json:"prompt"`
				PromptIDs []int32 `json:"prompt_ids"`
			}
			require.NoError(t, json.Unmarshal(raw, &g))
			f, err := Open(filepath.Join(dir, g.Model))
			require.NoError(t, err)
			defer f.Close()
			tok, err := NewTokenizer(f)
			require.NoError(t, err)
			assert.Equal(t, g.PromptIDs, tok.Encode(g.Prompt, true, false))
		})
	}
}
