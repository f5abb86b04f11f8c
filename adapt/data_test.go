package adapt

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadExamples(t *testing.T) {
	ex, err := ReadExamples(strings.NewReader(`{"prompt_ids": [1, 2], "completion_ids": [3]}

{"prompt_ids": [1], "completion_ids": [4, 5]}
`), "train.jsonl", nil)
	require.NoError(t, err)
	assert.Equal(t, []Example{{Prompt: []int32{1, 2}, Completion: []int32{3}}, {Prompt: []int32{1}, Completion: []int32{4, 5}}}, ex)

	_, err = ReadExamples(strings.NewReader(`{"prompt": "a", "completion": "b"}
{"prompt_ids": [], "completion_ids": [1]}
{"bogus": 1}
`), "bad.jsonl", nil)
	require.Error(t, err)
	for _, want := range []string{"bad.jsonl:1:", "bad.jsonl:2:", "bad.jsonl:3:"} {
		assert.ErrorContains(t, err, want)
	}
}
