package main

import (
	"encoding/json"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/adapt"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

func loadFixtureModel(t *testing.T, path string) *model.Model {
	t.Helper()
	f, err := model.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	m, err := model.Load(f)
	require.NoError(t, err)
	return m
}

// saveLoRA writes a new LoRA of m (B zero: it changes nothing) after fill,
// when not nil, has changed it.
func saveLoRA(t *testing.T, m *model.Model, fill func(lo *adapt.LoRA)) string {
	t.Helper()
	lo, err := adapt.NewLoRA(m, adapt.LoRAOptions{Rank: 4, Seed: 1})
	require.NoError(t, err)
	if fill != nil {
		fill(lo)
	}
	path := filepath.Join(t.TempDir(), "lora.gguf")
	require.NoError(t, adapt.SaveLoRA(path, lo, quant.F32))
	return path
}

// trainedB stands in for a trained adapter: a B far from zero.
func trainedB(lo *adapt.LoRA) {
	for _, p := range lo.Pairs {
		for i := range p.B {
			p.B[i] = 0.2 * float32(math.Sin(float64(i)))
		}
	}
}

// logitsWith runs edgectl logits over idList with extra flags.
func logitsWith(t *testing.T, modelPath string, idList []int32, extra ...string) []float32 {
	t.Helper()
	out := filepath.Join(t.TempDir(), "logits.f32")
	args := append([]string{"logits", "--model", modelPath, "--ids", ids(idList), "--out", out, "-t", "2"}, extra...)
	mustEdgectl(t, args...)
	return fixture.ReadF32(t, out)
}

func TestLogitsAdapterLoRA(t *testing.T) {
	gguf := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	m := loadFixtureModel(t, gguf)
	zero, trained := saveLoRA(t, m, nil), saveLoRA(t, m, trainedB)
	prompt := []int32{1, 319, 459, 355, 260}
	base := logitsWith(t, gguf, prompt)

	for _, tc := range []struct {
		name  string
		flags []string
		same  bool
	}{
		{"all-zero LoRA", []string{"--adapter", zero}, true},
		{"trained LoRA", []string{"--adapter", trained}, false},
		{"trained LoRA at scale 0", []string{"--adapter", trained, "--adapter-scale", "0"}, true},
		{"trained LoRA at scale 0.5", []string{"--adapter", trained, "--adapter-scale", "0.5"}, false},
		{"zero LoRA, then trained at scale 0", []string{"--adapter", zero, "--adapter", trained, "--adapter-scale", "1", "--adapter-scale", "0"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := logitsWith(t, gguf, prompt, tc.flags...)
			if tc.same {
				assert.Equal(t, base, got, "bit-for-bit")
				return
			}
			assert.Greater(t, fixture.RelL2(got, base), 1e-3)
		})
	}
}

// A prefix adapter made from tokens T, before tokens U, gives the logits
// that U has after T in a plain run; run accepts it too.
func TestAdapterPrefix(t *testing.T) {
	gguf := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	m := loadFixtureModel(t, gguf)
	head, tail := []int32{1, 319, 459}, []int32{355, 260, 288}
	be := cpu.New(2)
	defer be.Close()
	p, err := adapt.NewPrefix(m, be, head)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "prefix.gguf")
	require.NoError(t, adapt.SavePrefix(path, p, quant.F32))

	want := logitsWith(t, gguf, append(append([]int32{}, head...), tail...))
	want = want[len(head)*512:]
	got := logitsWith(t, gguf, tail, "--adapter", path)
	l2 := fixture.RelL2(got, want)
	t.Logf("rel L2 of prefix vs plain: %.2e", l2)
	assert.Less(t, l2, 1e-5)

	out := mustEdgectl(t, "run", "--model", gguf, "--adapter", path, "--prompt", "Once", "-n", "8", "--temp", "0", "--json")
	var r runResult
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	assert.NotEmpty(t, r.GeneratedIDs)
}

func TestAdapterErrors(t *testing.T) {
	gguf := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	m := loadFixtureModel(t, gguf)
	other := saveLoRA(t, loadFixtureModel(t, fixture.Path(t, "gguf", "tiny-llama-q8_0.gguf")), trainedB)
	zero := saveLoRA(t, m, nil)
	be := cpu.New(2)
	defer be.Close()
	p, err := adapt.NewPrefix(m, be, []int32{1, 319})
	require.NoError(t, err)
	prefix := filepath.Join(t.TempDir(), "prefix.gguf")
	require.NoError(t, adapt.SavePrefix(prefix, p, quant.F32))

	for _, tc := range []struct {
		name  string
		flags []string
		code  int
		says  []string
	}{
		{"LoRA of another shape", []string{"--adapter", other}, 1, []string{"adapter does not match the base model", "blk.0.attn_q.weight", "do not fit the base weight"}},
		{"a model, not an adapter", []string{"--adapter", gguf}, 1, []string{"not an adapter file", "general.type"}},
		{"missing file", []string{"--adapter", filepath.Join(t.TempDir(), "none.gguf")}, 1, []string{"none.gguf"}},
		{"scaled prefix", []string{"--adapter", prefix, "--adapter-scale", "2"}, 1, []string{"cannot be scaled"}},
		{"two prefixes", []string{"--adapter", prefix, "--adapter", prefix}, 1, []string{"one prefix adapter"}},
		{"more scales than adapters", []string{"--adapter", zero, "--adapter-scale", "1", "--adapter-scale", "2"}, 1, []string{"2 --adapter-scale for 1 --adapter"}},
		{"scale not a number", []string{"--adapter", zero, "--adapter-scale", "big"}, 2, []string{`"big" is not a number`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range [][]string{
				{"logits", "--model", gguf, "--ids", "1,2", "--out", filepath.Join(t.TempDir(), "l.f32")},
				{"run", "--model", gguf, "--prompt", "Once", "-n", "2"},
			} {
				code, _, stderr := edgectl(t, append(cmd, tc.flags...)...)
				assert.Equal(t, tc.code, code, "%s: %s", cmd[0], stderr)
				for _, s := range tc.says {
					assert.Contains(t, stderr, s, cmd[0])
				}
			}
		})
	}
}
