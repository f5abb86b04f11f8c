package daemon

// The "adapt" job kind: `edgectl adapt` in the daemon. The job runs a
// MeZO adaptation (adapt.Recipe, the same run the command makes from its
// flags) of a registered model on an engine of its own over the model's
// file, and writes the adapter into its directory.
//
// Memory: the job's engine has a KV cache per sequence the run holds at
// once (a step's batch, or a larger group while it sets up replay or an
// init from data), each of the longest example's tokens rather than the
// model's context, in f32 as `edgectl adapt` keeps it; besides that the
// replay samples' reference distributions (4·n_vocab bytes a token). On
// the CPU the job maps the model file that serving maps, so the weights'
// pages are shared (and clean: the kernel can drop them); on a GPU the
// job holds its own copy of the weights, counted too. The total is
// reserved against models.memory_budget while the job runs, and a job
// that does not fit beside the loaded models fails rather than evict one.

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
	"github.com/edged/edged/quant"
)

// adaptKind runs jobs of kind "adapt".
type adaptKind struct{}

func (adaptKind) prepare(env jobEnv, req *protocol.JobSubmitRequest, files bool, dir string, j *protocol.Job) error {
	cfg := *req.Adapt
	if _, err := adaptRecipe(&cfg); err != nil {
		return err
	}
	if err := writeAdaptData(&cfg, files, filepath.Join(dir, jobDataFile)); err != nil {
		return err
	}
	s, err := openAdaptSetup(env, req.Model, &cfg, dir)
	if err != nil {
		return err
	}
	defer s.close()
	// A job that could never fit is refused now rather than failed later.
	if budget := env.opts.Models.MemoryBudget; budget > 0 {
		if need := s.memory(!env.cpuOnly()); need > budget {
			return protocol.Errorf(protocol.CodeInsufficientMemory, "the job needs about %s, more than the memory budget of %s", human(need), human(budget))
		}
	}
	cfg.Examples = nil // they are in the job's directory
	j.Steps, j.Examples, j.Adapt = s.recipe.MeZO.Steps, len(s.train), &cfg
	return nil
}

// cpuOnly reports whether a job's engine surely runs on the CPU alone.
func (env jobEnv) cpuOnly() bool { return env.opts.Engine.Backend == "cpu" }

func (adaptKind) open(env jobEnv, j *protocol.Job, dir string) (jobTask, error) {
	s, err := openAdaptSetup(env, j.Model, j.Adapt, dir)
	if err != nil {
		return nil, err
	}
	eo := env.opts.engineOptions()
	if env.opts.Jobs.Threads > 0 {
		eo.Threads = env.opts.Jobs.Threads
	}
	eng, _, _, err := newEngine(s.mdl, eo, engine.Options{Context: s.ctx, BatchSize: eo.BatchSize, Cache: engine.CacheF32, Hooks: engine.Hooks{Delta: adapt.NewSet()}})
	if err != nil {
		s.close()
		return nil, protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", j.Model, err)
	}
	_, onCPU := eng.Backend().(*cpu.Backend)
	mem := s.memory(!onCPU || eng.Options().Offload != nil)
	if err := env.reg.reserveFree("job "+j.ID, mem); err != nil {
		eng.Close()
		s.close()
		return nil, err
	}
	t := &adaptTask{setup: s, eng: eng, mem: mem, release: func() { env.reg.unreserve(mem) }}
	t.typ, _ = quant.ParseType(j.Adapt.Type)
	recipe := s.recipe
	recipe.Pace = env.pace
	if t.run, err = recipe.Prepare(eng, s.mdl, s.bos, s.train); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// adaptTask is a running "adapt" job.
type adaptTask struct {
	setup   *adaptSetup
	eng     *engine.Engine
	run     *adapt.Run
	typ     quant.Type // of the adapter file
	mem     int64
	release func() // gives the memory reservation back
}

func (t *adaptTask) Step() (float64, error) {
	r, err := t.run.Step()
	return r.Loss, err
}

func (t *adaptTask) Steps() int                   { return t.run.Steps() }
func (t *adaptTask) Done() bool                   { return false }
func (t *adaptTask) Checkpoint(path string) error { return t.run.SaveCheckpoint(path) }
func (t *adaptTask) Restore(path string) error    { return t.run.Restore(path) }
func (t *adaptTask) Memory() int64                { return t.mem }

func (t *adaptTask) Finish(dir string) (string, error) {
	path := filepath.Join(dir, jobAdapterFile)
	return path, t.run.Save(path, t.typ)
}

func (t *adaptTask) Close() {
	t.run.Close()
	t.close()
}

// close frees what open made before the run.
func (t *adaptTask) close() {
	t.eng.Close()
	t.setup.close()
	t.release()
}

// adaptSetup is an adapt job's model, data and run, checked.
type adaptSetup struct {
	file   *model.File
	mdl    *model.Model
	bos    int32 // -1: the model has no tokenizer
	train  []adapt.Example
	recipe adapt.Recipe
	// The run's footprint (adapt.Recipe.Footprint).
	seqs, ctx int
	held      int64
}

// openAdaptSetup opens the model of a job and reads its data from dir,
// checking that the run fits the model. Submission and every start of
// the job do the same, so that what was accepted runs.
func openAdaptSetup(env jobEnv, name string, cfg *protocol.AdaptJob, dir string) (*adaptSetup, error) {
	recipe, err := adaptRecipe(cfg)
	if err != nil {
		return nil, err
	}
	path, spec, err := env.reg.modelFile(env.ctx, name)
	if err != nil {
		return nil, err
	}
	f, err := model.Open(path)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", name, err)
	}
	s := &adaptSetup{file: f, recipe: recipe, bos: -1}
	if err := s.load(env, name, spec, cfg, dir); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func (s *adaptSetup) load(env jobEnv, name string, spec ModelSpec, cfg *protocol.AdaptJob, dir string) error {
	var err error
	if s.mdl, err = model.Load(s.file); err != nil {
		return protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", name, err)
	}
	tok, err := model.NewTokenizer(s.file) // nil: only id examples can be read
	if err == nil {
		s.bos = tok.BOS()
	}
	param, source := "adapt.examples", "adapt.examples"
	if cfg.Data != "" {
		param, source = "adapt.data", cfg.Data
	}
	data, err := os.Open(filepath.Join(dir, jobDataFile))
	if err != nil {
		return err
	}
	defer data.Close()
	if s.train, err = adapt.ReadExamples(data, source, tok); err != nil {
		return protocol.ParamErrorf(protocol.CodeInvalidValue, param, "%s", clipLines(err.Error(), 5))
	}
	c := s.mdl.Config
	for i, ex := range s.train {
		for _, id := range append(append([]int32(nil), ex.Prompt...), ex.Completion...) {
			if int(id) >= c.NVocab {
				return protocol.ParamErrorf(protocol.CodeInvalidValue, param, "%s:%d: token %d is outside the vocabulary of %d", source, i+1, id, c.NVocab)
			}
		}
	}
	if s.bos < 0 && (s.recipe.Replay > 0 || s.recipe.Method == adapt.MethodLoRA && s.recipe.Init == adapt.InitData) {
		return protocol.Errorf(protocol.CodeInvalidValue, "replay and init data sample the model from BOS, and model %s has no tokenizer", name)
	}
	if s.recipe.Method == adapt.MethodLoRA {
		// Layers and projections the model lacks.
		if _, err := adapt.NewLoRA(s.mdl, adapt.LoRAOptions{Rank: 1, Projs: s.recipe.Projs, Layers: s.recipe.Layers}); err != nil {
			return protocol.ParamErrorf(protocol.CodeInvalidValue, "adapt.layers", "%v", err)
		}
	}
	s.seqs, s.ctx, s.held = s.recipe.Footprint(s.train, c)
	limit := modelContext(c, env.opts.Engine, spec.Context)
	if s.ctx > limit {
		return protocol.Errorf(protocol.CodeContextLength, "the job's longest sequence has %d tokens; model %s holds %d", s.ctx, name, limit)
	}
	// The CPU attention reads value rows in steps of 8, and a cache that
	// ends inside a step sums them in another order: with the context
	// rounded up the job computes what `edgectl adapt` does with the
	// model's context, bit for bit.
	s.ctx = min((s.ctx+jobContextStep-1)/jobContextStep*jobContextStep, limit)
	return nil
}

// jobContextStep is what a job's context is rounded up to (see load).
const jobContextStep = 32

// memory is what the job's engine and run hold (see the top of the
// file); weights says whether the weights are a copy of their own.
func (s *adaptSetup) memory(weights bool) int64 {
	m := int64(s.seqs)*kvBytes(s.mdl.Config, s.ctx, "f32") + s.held
	if weights {
		m += fileSize(s.file)
	}
	return m
}

func (s *adaptSetup) close() { s.file.Close() }

// adaptRecipe is the run cfg describes, over the defaults of `edgectl
// adapt`; it fills cfg's left-out settings with the values the run uses,
// so that the stored job says what ran and opening it again gives the
// same recipe.
func adaptRecipe(cfg *protocol.AdaptJob) (adapt.Recipe, error) {
	r := adapt.DefaultRecipe()
	r.Method = cmp.Or(cfg.Method, r.Method)
	r.MeZO.Steps, r.MeZO.LR, r.MeZO.Eps = cfg.Steps, cfg.LR, cfg.Eps
	r.MeZO.WeightDecay, r.MeZO.MaxGrad, r.MeZO.LossFloor = cfg.WeightDecay, cfg.MaxGrad, cfg.LossFloor
	if cfg.Schedule == "linear" {
		r.MeZO.Schedule = adapt.Linear
	}
	r.MeZO.BatchSize = cmp.Or(cfg.Batch, r.MeZO.BatchSize)
	r.MeZO.Samples = cmp.Or(cfg.Samples, r.MeZO.Samples)
	r.MeZO.RehearsalWeight = cmp.Or(cfg.ReplayWeight, r.MeZO.RehearsalWeight)
	if cfg.Seed != nil {
		r.MeZO.Seed = *cfg.Seed
	}
	r.Rank = cmp.Or(cfg.Rank, r.Rank)
	r.Alpha = cmp.Or(float32(cfg.Alpha), r.Alpha)
	if cfg.Projs != nil {
		r.Projs = nil
		for _, name := range cfg.Projs {
			p, err := adapt.ParseProj(name)
			if err != nil {
				return r, protocol.ParamErrorf(protocol.CodeInvalidValue, "adapt.projs", "%v", err)
			}
			r.Projs = append(r.Projs, p)
		}
	}
	r.Layers = cfg.Layers
	r.Init = cmp.Or(cfg.Init, r.Init)
	r.InitRef = cmp.Or(cfg.InitRef, r.InitRef)
	r.PrefixLen = cmp.Or(cfg.PrefixLen, r.PrefixLen)
	r.Replay, r.ReplayLen = cfg.Replay, cmp.Or(cfg.ReplayLen, r.ReplayLen)
	r = r.WithDefaults()
	if err := r.Check(); err != nil {
		return r, protocol.ParamErrorf(protocol.CodeInvalidValue, "adapt", "%v", err)
	}

	seed := r.MeZO.Seed
	cfg.Method, cfg.LR, cfg.Eps, cfg.Seed = r.Method, r.MeZO.LR, r.MeZO.Eps, &seed
	cfg.Schedule = cmp.Or(cfg.Schedule, "constant")
	cfg.Batch, cfg.Samples, cfg.ReplayWeight = r.MeZO.BatchSize, r.MeZO.Samples, r.MeZO.RehearsalWeight
	cfg.Type = cmp.Or(cfg.Type, "f32")
	if r.Replay > 0 {
		cfg.ReplayLen = r.ReplayLen
	}
	if r.Method == adapt.MethodPrefix {
		cfg.PrefixLen = r.PrefixLen
		return r, nil
	}
	cfg.Rank, cfg.Alpha, cfg.Init = r.Rank, float64(r.Alpha), r.Init
	if cfg.Projs == nil {
		cfg.Projs = []string{"q", "v"} // DefaultRecipe's
	}
	if r.Init == adapt.InitData {
		cfg.InitRef = r.InitRef
	}
	return r, nil
}

// writeAdaptData writes the job's training data to path as JSONL: the
// inline examples, or a copy of the data file (files says whether the
// submission may name one), so that the job keeps running on what it was
// given whatever happens to the file.
func writeAdaptData(cfg *protocol.AdaptJob, files bool, path string) error {
	if cfg.Data == "" {
		return writeFileAtomic(path, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			for _, ex := range cfg.Examples {
				if err := enc.Encode(ex); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if !files {
		return protocol.ParamErrorf(protocol.CodeInvalidValue, "adapt.data", "files are read only for clients of the Unix socket: send the pairs in adapt.examples")
	}
	src, err := os.Open(cfg.Data)
	if err != nil {
		return protocol.ParamErrorf(protocol.CodeInvalidValue, "adapt.data", "%v", err)
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil || !fi.Mode().IsRegular() {
		return protocol.ParamErrorf(protocol.CodeInvalidValue, "adapt.data", "%s is not a regular file", cfg.Data)
	} else if fi.Size() > protocol.MaxJobDataBytes {
		return protocol.ParamErrorf(protocol.CodeTooLarge, "adapt.data", "%s has %d bytes, more than %d", cfg.Data, fi.Size(), protocol.MaxJobDataBytes)
	}
	return writeFileAtomic(path, func(w io.Writer) error {
		n, err := io.Copy(w, io.LimitReader(src, protocol.MaxJobDataBytes+1))
		if err == nil && n > protocol.MaxJobDataBytes {
			err = protocol.ParamErrorf(protocol.CodeTooLarge, "adapt.data", "%s grew beyond %d bytes", cfg.Data, protocol.MaxJobDataBytes)
		}
		return err
	})
}

// writeFileAtomic writes path through a synced temporary file renamed
// over it.
func writeFileAtomic(path string, write func(w io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}

// clipLines keeps the first n lines of s (a list of errors, one a line)
// and says how many more there were.
func clipLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) <= n {
		return s
	}
	return strings.Join(lines[:n], "\n") + fmt.Sprintf("\n… and %d more", len(lines)-n)
}
