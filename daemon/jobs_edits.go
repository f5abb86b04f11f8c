package daemon

// The "edits" job kind: `edgectl edits train` in the daemon. At
// submission the job takes the model's stored edits that are pending or
// active (in the order the stream delivered them) into edits.jsonl in its
// directory; it trains them (adapt.EditRecipe) on an engine of its own
// over the model's file, writes the adapter and its edit metrics
// (metrics.json), and its completion hook (edits_train.go) commits the
// adapter as the model's newest version with the metrics in its record
// and marks the edits active.
//
// Memory: the job's engine holds a KV cache (f32) per sequence of the
// largest group it scores at once, which is the measure: every edit's
// target, rephrases and locality continuations together; besides that the
// rehearsal samples' reference distributions. Weights as for "adapt"
// jobs (jobs_adapt.go).

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
	"github.com/edged/edged/quant"
)

// The files of an edit job besides the runner's.
const (
	jobEditsFile   = "edits.jsonl"  // the edits it trains, as the stream carried them
	jobMetricsFile = "metrics.json" // protocol.EditMetrics of its adapter
)

// defaultEditJobs are the edits.* defaults (see the example config).
func defaultEditJobs() EditJobOptions {
	d := adapt.DefaultEditOptions()
	return EditJobOptions{Auto: true, Delay: 2 * time.Second, Optimizer: d.Optimizer, Layer: -1, Rank: 0, Steps: d.Steps, StopLoss: d.StopLoss}
}

// editsKind runs jobs of kind "edits".
type editsKind struct{}

func (editsKind) prepare(env jobEnv, req *protocol.JobSubmitRequest, _ bool, dir string, j *protocol.Job) error {
	cfg := editsJobConfig(req.Edits, env.opts.EditJobs)
	recs, err := trainableEdits(env.store, req.Model)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return protocol.ParamErrorf(protocol.CodeInvalidValue, "model", "model %s has no pending or active edits to train", req.Model)
	}
	for _, r := range recs {
		cfg.Edits = append(cfg.Edits, r.ID)
	}
	err = writeFileAtomic(filepath.Join(dir, jobEditsFile), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for _, r := range recs {
			if err := enc.Encode(r.Edit); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s, err := openEditsSetup(env, req.Model, &cfg, dir)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.checkBudget(env); err != nil {
		return err
	}
	layer := s.recipe.Adapter.Layer // -1 resolved: the record says which
	cfg.Layer = &layer
	j.Steps, j.Examples, j.Edits = cfg.Steps, len(recs), &cfg
	return nil
}

// trainableEdits are the model's edits that a version should hold: those
// pending or active, in the order the stream delivered them.
func trainableEdits(st *store, name string) ([]protocol.EditRecord, error) {
	all, _, err := st.edits("")
	if err != nil {
		return nil, fmt.Errorf("reading the edits: %w", err)
	}
	var recs []protocol.EditRecord
	for _, r := range all {
		if r.Edit != nil && r.Edit.Model == name && (r.Status == protocol.EditPending || r.Status == protocol.EditActive) {
			recs = append(recs, r)
		}
	}
	slices.SortFunc(recs, func(a, b protocol.EditRecord) int { return cmp.Compare(a.StreamSeq, b.StreamSeq) })
	return recs, nil
}

// editsJobConfig is the submission's settings over the daemon's; the
// stored job says what ran.
func editsJobConfig(req *protocol.EditsJob, def EditJobOptions) protocol.EditsJob {
	var c protocol.EditsJob
	if req != nil {
		c = *req
	}
	c.Optimizer = cmp.Or(c.Optimizer, def.Optimizer)
	if c.Layer == nil {
		c.Layer = &def.Layer
	}
	if c.Rank == nil {
		c.Rank = &def.Rank
	}
	c.Steps = cmp.Or(c.Steps, def.Steps)
	c.LR = cmp.Or(c.LR, def.LR)
	c.StopLoss = cmp.Or(c.StopLoss, def.StopLoss)
	if c.Seed == nil {
		seed := uint64(1)
		c.Seed = &seed
	}
	return c
}

// editRecipe is the run of cfg on a model of c layers.
func editRecipe(cfg *protocol.EditsJob, c model.Config) adapt.EditRecipe {
	layer := *cfg.Layer
	if layer == -1 {
		layer = c.NLayer - 1
	}
	r := adapt.DefaultEditRecipe(layer)
	r.Adapter.Rank = *cfg.Rank
	o := &r.Train
	o.Optimizer, o.Steps, o.StopLoss, o.MeZO.Seed = cfg.Optimizer, cfg.Steps, cfg.StopLoss, *cfg.Seed
	if cfg.LR > 0 {
		o.MeZO.LR, o.Grad.Adam.LR = cfg.LR, cfg.LR
	}
	return r
}

func (editsKind) open(env jobEnv, j *protocol.Job, dir string) (jobTask, error) {
	s, err := openEditsSetup(env, j.Model, j.Edits, dir)
	if err != nil {
		return nil, err
	}
	eng, err := s.engine(env, j.ID)
	if err != nil {
		s.close()
		return nil, err
	}
	t := &editsTask{setup: s, eng: eng, ids: j.Edits.Edits}
	recipe := s.recipe
	recipe.Pace = env.pace
	// The gradient's goroutines, as many as the engine's threads (its sums,
	// and so its bits, depend on the number).
	recipe.Train.Grad.Workers = cmp.Or(env.threads(), runtime.NumCPU())
	if t.run, err = recipe.Prepare(eng.Engine, s.mdl, s.tok.BOS(), s.edits); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// editsTask is a running "edits" job.
type editsTask struct {
	setup *editsSetup
	eng   *jobEngine
	run   *adapt.EditRun
	ids   []string // of the edits, in training order
	loss  float64  // of the last step taken
}

func (t *editsTask) Step() (float64, error) {
	r, err := t.run.Step()
	if !r.Done {
		t.loss = r.Loss
	}
	return t.loss, err
}

func (t *editsTask) Done() bool                   { return t.run.Learnt() }
func (t *editsTask) Steps() int                   { return t.run.Steps() }
func (t *editsTask) Checkpoint(path string) error { return t.run.SaveCheckpoint(path) }
func (t *editsTask) Restore(path string) error    { return t.run.Restore(path) }
func (t *editsTask) Memory() int64                { return t.eng.mem }

// Finish writes the adapter and its metrics; both are the same when it
// runs again after a crash (the measure is deterministic).
func (t *editsTask) Finish(dir string) (string, error) {
	m, err := t.run.Measure()
	if err != nil {
		return "", err
	}
	metrics := protocol.EditMetrics{EditScores: scores("", m.Loss, m.Reliability, m.Generalization, m.Locality),
		Base:  scores("", t.run.Base.Loss, t.run.Base.Reliability, t.run.Base.Generalization, t.run.Base.Locality),
		Steps: t.run.Steps(), Learnt: t.run.Learnt()}
	for i, e := range m.Edits {
		metrics.Edits = append(metrics.Edits, scores(t.ids[i], e.Loss, e.Reliability, e.Generalization, e.Locality))
	}
	err = writeFileAtomic(filepath.Join(dir, jobMetricsFile), func(w io.Writer) error { return json.NewEncoder(w).Encode(metrics) })
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, jobAdapterFile)
	return path, t.run.Save(path, quant.F32)
}

func scores(id string, loss, rel float64, gen, loc *float64) protocol.EditScores {
	return protocol.EditScores{ID: id, Loss: loss, Reliability: rel, Generalization: gen, Locality: loc}
}

func (t *editsTask) Close() {
	t.run.Close()
	t.close()
}

func (t *editsTask) close() {
	t.eng.close()
	t.setup.close()
}

// editsSetup is an edit job's model, edits and run, checked.
type editsSetup struct {
	*jobModel
	edits  []adapt.Edit
	recipe adapt.EditRecipe
}

// openEditsSetup opens the model of an edit job and reads its edits from
// dir, checking that the run fits the model.
func openEditsSetup(env jobEnv, name string, cfg *protocol.EditsJob, dir string) (*editsSetup, error) {
	m, err := openJobModel(env, name)
	if err != nil {
		return nil, err
	}
	s := &editsSetup{jobModel: m}
	if err := s.load(env, cfg, dir); err != nil {
		m.close()
		return nil, err
	}
	return s, nil
}

func (s *editsSetup) load(env jobEnv, cfg *protocol.EditsJob, dir string) error {
	if s.tok == nil {
		return protocol.Errorf(protocol.CodeInvalidValue, "model %s: edits are text, and the model has no tokenizer: %v", s.name, s.tokErr)
	}
	c := s.mdl.Config
	s.recipe = editRecipe(cfg, c)
	if err := s.recipe.Check(c); err != nil {
		return protocol.ParamErrorf(protocol.CodeInvalidValue, "edits", "%v", err)
	}
	data, err := os.Open(filepath.Join(dir, jobEditsFile))
	if err != nil {
		return err
	}
	defer data.Close()
	if s.edits, err = adapt.ReadEdits(data, jobEditsFile, s.tok); err != nil {
		return protocol.Errorf(protocol.CodeInvalidValue, "the edits of model %s: %s", s.name, clipLines(err.Error(), 5))
	}
	if len(s.edits) != len(cfg.Edits) {
		return fmt.Errorf("%s holds %d edits, the job %d", jobEditsFile, len(s.edits), len(cfg.Edits))
	}
	seqs, ctx, held := s.recipe.Footprint(s.edits, c)
	return s.fit(env, seqs, ctx, held)
}

// readEditMetrics reads the metrics an edit job wrote into dir.
func readEditMetrics(dir string) (json.RawMessage, error) {
	data, err := os.ReadFile(filepath.Join(dir, jobMetricsFile))
	if err != nil {
		return nil, err
	}
	if !json.Valid(data) {
		return nil, errors.New(jobMetricsFile + " is not JSON")
	}
	return json.RawMessage(data), nil
}
