package adapt

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/quant"
)

func TestRecipeCheck(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(*Recipe)
		bad    string // "" when the recipe runs
	}{
		{"default", func(*Recipe) {}, ""},
		{"prefix", func(r *Recipe) { r.Method = MethodPrefix }, ""},
		{"prefix ignores init", func(r *Recipe) { r.Method, r.Init = MethodPrefix, "bogus" }, ""},
		{"method", func(r *Recipe) { r.Method = "bogus" }, `method "bogus"`},
		{"init", func(r *Recipe) { r.Init = "bogus" }, `init "bogus"`},
		{"init data without reference", func(r *Recipe) { r.Init, r.InitRef = InitData, 0 }, "reference sample"},
		{"prefix rows", func(r *Recipe) { r.Method, r.PrefixLen = MethodPrefix, 0 }, "at least 1 row"},
		{"steps", func(r *Recipe) { r.MeZO.Steps = 0 }, "steps 0"},
		{"replay length", func(r *Recipe) { r.Replay, r.ReplayLen = 2, 0 }, "replay 2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := DefaultRecipe()
			c.change(&r)
			err := r.Check()
			if c.bad == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, c.bad)
		})
	}
	// Every problem at once.
	r := DefaultRecipe()
	r.Init, r.MeZO.Steps = "bogus", 0
	err := r.Check()
	assert.ErrorContains(t, err, "init")
	assert.ErrorContains(t, err, "steps")
}

func TestRecipeDefaults(t *testing.T) {
	lora := DefaultRecipe().WithDefaults()
	assert.Equal(t, 1e-4, lora.MeZO.LR)
	assert.Equal(t, 1e-2, lora.MeZO.Eps)
	p := DefaultRecipe()
	p.Method = MethodPrefix
	p.MeZO.LR = 3e-3
	p = p.WithDefaults()
	assert.Equal(t, 3e-3, p.MeZO.LR, "a given rate stays")
	assert.Equal(t, 1e-1, p.MeZO.Eps)
}

// Prepare builds runs of every kind on an engine whose context is exactly
// the one Footprint asks for; they step, pace every forward pass, save,
// and the same recipe gives the same adapter.
func TestRecipePrepare(t *testing.T) {
	m := aidreams(t)
	for _, c := range []struct {
		name   string
		change func(*Recipe)
	}{
		{"lora", func(*Recipe) {}},
		{"lora init data replay", func(r *Recipe) {
			r.Init, r.InitRef, r.Layers, r.Replay, r.ReplayLen = InitData, 4, []int{2}, 3, 6
		}},
		{"prefix replay", func(r *Recipe) { r.Method, r.PrefixLen, r.Replay, r.ReplayLen = MethodPrefix, 3, 2, 4 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := DefaultRecipe()
			r.MeZO.Steps, r.MeZO.BatchSize, r.MeZO.LR = 3, 2, 1e-2
			c.change(&r)
			seqs, ctx, held := r.Footprint(trainPairs, m.Config)
			assert.GreaterOrEqual(t, held, int64(r.Replay*r.ReplayLen*m.Config.NVocab*4))
			assert.GreaterOrEqual(t, seqs, min(2, len(trainPairs)+r.Replay))

			adapter := func() ([]byte, int) {
				paced := 0
				r.Pace = func() { paced++ }
				e, err := engine.New(m, testBackend(t), engine.Options{Context: ctx, Cache: engine.CacheF32, Hooks: engine.Hooks{Delta: NewSet()}})
				require.NoError(t, err)
				run, err := r.Prepare(e, m, 1, trainPairs)
				require.NoError(t, err)
				defer run.Close()
				for run.Steps() < r.MeZO.Steps {
					_, err := run.Step()
					require.NoError(t, err)
				}
				path := filepath.Join(t.TempDir(), "a.gguf")
				require.NoError(t, run.Save(path, quant.F32))
				a, err := Load(path, m)
				require.NoError(t, err)
				assert.Len(t, a.Params(), len(run.Adapter.Params()))
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				return b, paced
			}
			first, paced := adapter()
			assert.GreaterOrEqual(t, paced, 2*r.MeZO.Steps, "every loss paces its forward passes")
			again, _ := adapter()
			assert.Equal(t, first, again)
		})
	}
}

func TestRecipePrepareErrors(t *testing.T) {
	m := aidreams(t)
	e := newEngine(t, m, NewSet())
	r := DefaultRecipe()
	_, err := r.Prepare(e, m, 1, nil)
	assert.ErrorContains(t, err, "no training examples")
	r.Replay = 2
	_, err = r.Prepare(e, m, -1, trainPairs)
	assert.ErrorContains(t, err, "BOS", "replay samples start at BOS")
	r = DefaultRecipe()
	r.Method = "bogus"
	_, err = r.Prepare(e, m, 1, trainPairs)
	assert.ErrorContains(t, err, "method")
}
