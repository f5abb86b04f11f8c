package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

func TestAdaptCommand(t *testing.T) {
	gguf := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	dir := t.TempDir()
	data := filepath.Join(dir, "train.jsonl")
	require.NoError(t, os.WriteFile(data, []byte(`{"prompt_ids": [1, 319, 459, 355], "completion_ids": [401, 288, 377]}
{"prompt": "Once upon a time", "completion": " Zorblax sang."}
`), 0o600))
	f, err := model.Open(gguf)
	require.NoError(t, err)
	defer f.Close()
	m, err := model.Load(f)
	require.NoError(t, err)

	for _, method := range []string{"lora", "prefix"} {
		t.Run(method, func(t *testing.T) {
			out := filepath.Join(dir, method+".gguf")
			logPath := filepath.Join(dir, method+".log")
			ckpt := filepath.Join(dir, method+".ckpt")
			stdout := mustEdgectl(t, "adapt", "--model", gguf, "-c", "64", "-t", "2", "--method", method, "--data", data,
				"--eval", data, "--steps", "20", "--lr", "1e-2", "--out", out, "--log", logPath,
				"--checkpoint", ckpt, "--checkpoint-every", "10", "--replay", "2", "--replay-len", "4")
			var res map[string]any
			require.NoError(t, json.Unmarshal([]byte(stdout), &res))
			assert.EqualValues(t, 20, res["steps"])
			assert.Contains(t, res, "eval_loss_after")

			lf, err := os.Open(logPath)
			require.NoError(t, err)
			defer lf.Close()
			lines := 0
			for sc := bufio.NewScanner(lf); sc.Scan(); lines++ {
				var l stepLog
				require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
				assert.Equal(t, lines+1, l.Step)
			}
			assert.Equal(t, 20, lines)
			_, err = os.Stat(ckpt)
			require.NoError(t, err)

			if method == "lora" {
				_, err = adapt.LoadLoRA(out, m)
				require.NoError(t, err)
				merged := filepath.Join(dir, "merged.gguf")
				mustEdgectl(t, "lora", "merge", "--model", gguf, "--adapter", out, "--adapter-scale", "0.5", "--type", "f16", "--out", merged)
				mf, err := model.Open(merged)
				require.NoError(t, err)
				defer mf.Close()
				mm, err := model.Load(mf)
				require.NoError(t, err)
				assert.Equal(t, quant.F16, mm.Layers[0].Wq.Type)
				assert.Equal(t, m.Layers[0].Wk.Type, mm.Layers[0].Wk.Type)
			} else {
				_, err = adapt.LoadPrefix(out, m)
			}
			require.NoError(t, err)
		})
	}

	code, _, _ := edgectl(t, "adapt", "--model", gguf, "--data", data, "--out", filepath.Join(dir, "x.gguf"), "--method", "bogus")
	assert.Equal(t, 2, code)
}

// adapt eval: the committed pairs are new to the base model; an all-zero
// LoRA changes nothing, a trained one moves the held-out likelihood.
func TestAdaptEval(t *testing.T) {
	gguf := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	data := filepath.Join("testdata", "adapt-names20.jsonl")
	m := loadFixtureModel(t, gguf)
	eval := func(adapter string) evalReport {
		t.Helper()
		out := mustEdgectl(t, "adapt", "eval", "--model", gguf, "--data", data, "--adapter", adapter,
			"--heldout", "4", "--heldout-len", "8", "-t", "2")
		var r evalReport
		require.NoError(t, json.Unmarshal([]byte(out), &r))
		require.NotNil(t, r.Adapted)
		require.NotNil(t, r.LLChange)
		return r
	}
	zero := eval(saveLoRA(t, m, nil))
	assert.Equal(t, 20, zero.Pairs)
	assert.Equal(t, 32, zero.HeldoutTokens)
	assert.Zero(t, zero.Base.Exact, "the pairs are new to the model")
	assert.Len(t, zero.Base.Missed, 20)
	assert.Equal(t, 20, zero.Base.Missed[19])
	assert.Equal(t, zero.Base, *zero.Adapted)
	assert.Zero(t, *zero.LLChange)

	trained := eval(saveLoRA(t, m, trainedB))
	assert.Equal(t, zero.Base, trained.Base)
	assert.NotEqual(t, trained.Base.HeldoutNLL, trained.Adapted.HeldoutNLL)
	assert.NotZero(t, *trained.LLAbsChange)
}
