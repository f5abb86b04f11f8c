package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/internal/fixture"
)

// editsFile writes three edits in the wire format (with its id and model
// fields) and returns its path.
func editsFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edits.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(`{"id": "e1", "model": "aidreams", "prompt": "Zorb", "target": "is red.", "rephrases": ["The Zorb"], "locality_prompts": ["Whispers of knowledge"]}
{"id": "e2", "model": "aidreams", "prompt": "Kivo", "target": "can fly.", "rephrases": ["My Kivo", "Then Kivo"], "locality_prompts": ["Neural whispers"]}
{"prompt": "Plox", "target": "will sing.", "locality_prompts": ["Whispers of knowledge"]}
`), 0o600))
	return path
}

// smallRun are flags that keep a run of the fixture model short.
var smallRun = []string{"-c", "64", "-t", "1", "--replay", "2", "--replay-len", "8", "--init-ref", "4", "--rank", "4", "--alpha", "4",
	"--batch", "3", "--locality-len", "4"}

func TestEditsTrainCommand(t *testing.T) {
	gguf := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	data := editsFile(t)
	dir := t.TempDir()
	out, ckpt, logPath := filepath.Join(dir, "edits.gguf"), filepath.Join(dir, "edits.ckpt"), filepath.Join(dir, "edits.log")
	args := append([]string{"edits", "train", "--model", gguf, "--data", data, "--out", out, "--layer", "2", "--steps", "20",
		"--check-every", "5", "--checkpoint", ckpt, "--checkpoint-every", "10", "--log", logPath, "--json"}, smallRun...)
	var rep editsTrainReport
	require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, args...)), &rep))
	assert.Equal(t, 3, rep.Edits)
	assert.Equal(t, 2, rep.Edited.Layer)
	assert.Equal(t, 20, rep.Edited.Steps, "the stop loss is out of reach in 20 steps")
	assert.False(t, rep.Edited.Learnt)
	require.Len(t, rep.Base.Edits, 3)
	require.Len(t, rep.Edited.Metrics.Edits, 3)
	assert.Equal(t, 1.0, *rep.Base.Locality)
	assert.Nil(t, rep.Base.Edits[2].Generalization, "edit 3 has no rephrases")
	require.NotNil(t, rep.Edited.Metrics.Locality)
	assert.Less(t, rep.Edited.Metrics.Loss, rep.Base.Loss)

	m := loadFixtureModel(t, gguf)
	lo, err := adapt.LoadLoRA(out, m)
	require.NoError(t, err)
	require.Len(t, lo.Pairs, 1)
	assert.Equal(t, 2, lo.Pairs[0].Layer)
	logged, err := os.ReadFile(logPath)
	require.NoError(t, err)
	assert.Contains(t, string(logged), `"step":20`)

	// Resuming the finished run takes no step and writes the same adapter.
	again := filepath.Join(dir, "again.gguf")
	args = append([]string{"edits", "train", "--model", gguf, "--data", data, "--out", again, "--layer", "2", "--steps", "20",
		"--check-every", "5", "--resume", ckpt}, smallRun...)
	text := mustEdgectl(t, args...)
	assert.Contains(t, text, "20 steps (--steps reached)")
	assert.Contains(t, text, "reliability")
	want, err := os.ReadFile(out)
	require.NoError(t, err)
	got, err := os.ReadFile(again)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	for _, bad := range [][]string{
		{"edits", "train", "--model", gguf, "--data", data},
		{"edits", "train", "--model", gguf, "--data", data, "--out", again, "--schedule", "cosine"},
		{"edits", "train", "--model", gguf, "--data", data, "--out", again, "--steps", "0"},
		{"edits", "bogus"},
		{"edits"},
	} {
		code, _, _ := edgectl(t, bad...)
		assert.Equal(t, 2, code, "%v", bad)
	}
	code, _, stderr := edgectl(t, "edits", "train", "--model", gguf, "--data", data, "--out", again, "--layer", "9")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "layer 9")
}

func TestEditsLocateCommand(t *testing.T) {
	gguf := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	args := append([]string{"edits", "locate", "--model", gguf, "--data", editsFile(t), "--layers", "2,3", "--steps", "10", "--json"}, smallRun...)
	var rep locateReport
	require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, args...)), &rep))
	require.Len(t, rep.Layers, 2)
	for i, r := range rep.Layers {
		assert.Equal(t, 2+i, r.Layer)
		assert.Equal(t, 10, r.Steps)
		assert.Nil(t, r.Metrics.Edits, "locate reports the means only")
	}
	assert.Contains(t, []int{2, 3}, rep.Chosen)
}

func TestChooseLayer(t *testing.T) {
	run := func(layer int, rel, loss, loc float64) editRun {
		return editRun{Layer: layer, Metrics: adapt.EditMetrics{Reliability: rel, Loss: loss, Locality: &loc}}
	}
	for _, tc := range []struct {
		name string
		runs []editRun
		want int
	}{
		{"most reliable that keeps locality", []editRun{run(0, 0.9, 1, 0.95), run(1, 0.99, 1, 0.5), run(2, 0.95, 1, 0.92)}, 2},
		{"equal reliability: lower loss", []editRun{run(0, 0.9, 1.2, 0.95), run(1, 0.9, 0.8, 0.95)}, 1},
		{"none keeps locality: the best locality", []editRun{run(0, 0.9, 1, 0.5), run(3, 0.2, 3, 0.7)}, 3},
		{"no locality prompts count as kept", []editRun{{Layer: 1, Metrics: adapt.EditMetrics{Reliability: 0.5}}, run(2, 0.9, 1, 0.1)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, chooseLayer(tc.runs, 0.9))
		})
	}
}
