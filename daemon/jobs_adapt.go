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

	"github.com/edged/edged/adapt"
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
	if err := s.checkBudget(env); err != nil {
		return err
	}
	cfg.Examples = nil // they are in the job's directory
	j.Steps, j.Examples, j.Adapt = s.recipe.MeZO.Steps, len(s.train), &cfg
	return nil
}

func (adaptKind) open(env jobEnv, j *protocol.Job, dir string) (jobTask, error) {
	s, err := openAdaptSetup(env, j.Model, j.Adapt, dir)
	if err != nil {
		return nil, err
	}
	eng, err := s.engine(env, j.ID)
	if err != nil {
		s.close()
		return nil, err
	}
	t := &adaptTask{setup: s, eng: eng}
	t.typ, _ = quant.ParseType(j.Adapt.Type)
	recipe := s.recipe
	recipe.Pace = env.pace
	if t.run, err = recipe.Prepare(eng.Engine, s.mdl, s.bos, s.train); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// adaptTask is a running "adapt" job.
type adaptTask struct {
	setup *adaptSetup
	eng   *jobEngine
	run   *adapt.Run
	typ   quant.Type // of the adapter file
}

func (t *adaptTask) Step() (float64, error) {
	r, err := t.run.Step()
	return r.Loss, err
}

func (t *adaptTask) Steps() int                   { return t.run.Steps() }
func (t *adaptTask) Done() bool                   { return false }
func (t *adaptTask) Checkpoint(path string) error { return t.run.SaveCheckpoint(path) }
func (t *adaptTask) Restore(path string) error    { return t.run.Restore(path) }
func (t *adaptTask) Memory() int64                { return t.eng.mem }

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
	t.eng.close()
	t.setup.close()
}

// adaptSetup is an adapt job's model, data and run, checked.
type adaptSetup struct {
	*jobModel
	bos    int32 // -1: the model has no tokenizer
	train  []adapt.Example
	recipe adapt.Recipe
}

// openAdaptSetup opens the model of a job and reads its data from dir,
// checking that the run fits the model. Submission and every start of
// the job do the same, so that what was accepted runs.
func openAdaptSetup(env jobEnv, name string, cfg *protocol.AdaptJob, dir string) (*adaptSetup, error) {
	recipe, err := adaptRecipe(cfg)
	if err != nil {
		return nil, err
	}
	m, err := openJobModel(env, name)
	if err != nil {
		return nil, err
	}
	s := &adaptSetup{jobModel: m, recipe: recipe, bos: -1}
	if err := s.load(env, cfg, dir); err != nil {
		m.close()
		return nil, err
	}
	return s, nil
}

func (s *adaptSetup) load(env jobEnv, cfg *protocol.AdaptJob, dir string) error {
	if s.tok != nil { // without one only id examples can be read
		s.bos = s.tok.BOS()
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
	if s.train, err = adapt.ReadExamples(data, source, s.tok); err != nil {
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
		return protocol.Errorf(protocol.CodeInvalidValue, "replay and init data sample the model from BOS, and model %s has no tokenizer", s.name)
	}
	if s.recipe.Method == adapt.MethodLoRA {
		// Layers and projections the model lacks.
		if _, err := adapt.NewLoRA(s.mdl, adapt.LoRAOptions{Rank: 1, Projs: s.recipe.Projs, Layers: s.recipe.Layers}); err != nil {
			return protocol.ParamErrorf(protocol.CodeInvalidValue, "adapt.layers", "%v", err)
		}
	}
	seqs, ctx, held := s.recipe.Footprint(s.train, c)
	return s.fit(env, seqs, ctx, held)
}

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
