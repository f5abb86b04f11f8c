package protocol

import (
	"cmp"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Background jobs: work a daemon runs beside serving, at a lower
// priority, one at a time, surviving restarts. A job is submitted with a
// JobSubmitRequest, reported as a Job, and paused, resumed or cancelled
// with a JobRequest naming its id.

// Job kinds.
const (
	JobKindAdapt = "adapt" // a MeZO adaptation run (AdaptJob): `edgectl adapt` in the daemon
	JobKindEdits = "edits" // LocFT-BF training of a model's knowledge edits (EditsJob)
)

// JobKinds lists the kinds a daemon runs.
var JobKinds = []string{JobKindAdapt, JobKindEdits}

// Job states. A job is queued, runs, and ends done, failed or cancelled;
// paused or failed, it can be resumed (queued again, to continue from its
// last checkpoint); a job running when the daemon stopped runs again from
// its last checkpoint when it starts.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobPaused    = "paused"
	JobDone      = "done"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// JobStates lists the states, in the order of a job's life.
var JobStates = []string{JobQueued, JobRunning, JobPaused, JobDone, JobFailed, JobCancelled}

// JobFinal reports whether state is one a job never leaves.
func JobFinal(state string) bool { return state == JobDone || state == JobCancelled }

// JobSubmitRequest is the body of POST /v1/jobs/submit and of the NATS
// jobs.submit endpoint.
type JobSubmitRequest struct {
	Version int    `json:"version,omitempty"`
	Kind    string `json:"kind"`  // one of JobKinds
	Model   string `json:"model"` // a model registered on the daemon
	// Adapt configures a job of kind "adapt"; other kinds must leave it
	// out.
	Adapt *AdaptJob `json:"adapt,omitempty"`
	// Edits configures a job of kind "edits" (absent: the daemon's
	// edits.* settings); other kinds must leave it out.
	Edits *EditsJob `json:"edits,omitempty"`
}

// EditsJob is an edit-training run (`edgectl edits train` in the daemon)
// over the model's stored edits that are pending or active, taken when
// the job is submitted; a zero or absent field takes the daemon's
// edits.* setting. The trained adapter becomes the model's newest
// version, its edits active, and the version's record holds the edit
// metrics (EditMetrics).
type EditsJob struct {
	Optimizer string  `json:"optimizer,omitempty"` // one of EditOptimizers
	Layer     *int    `json:"layer,omitempty"`     // whose MLP down-projection is adapted
	Rank      *int    `json:"rank,omitempty"`      // of the LoRA; 0: a full delta of the projection
	Steps     int     `json:"steps,omitempty"`     // the most optimizer steps
	LR        float64 `json:"lr,omitempty"`        // learning rate
	StopLoss  float64 `json:"stop_loss,omitempty"` // stop once every edit's loss is below it (nats)
	Seed      *uint64 `json:"seed,omitempty"`
	// Edits are the ids trained, filled in by the daemon.
	Edits []string `json:"edits,omitempty"`
}

// EditOptimizers are the optimizers of an EditsJob: MeZO (forward passes
// only) and Adam on the exact gradient of the adapted matrix.
var EditOptimizers = []string{"mezo", "grad"}

// AdaptJob is an adaptation run with the settings of `edgectl adapt`
// (its flags, in snake case); a zero or absent field takes that
// command's default. Settings of one method (rank, alpha, projs, layers,
// init and init_ref for lora; prefix_len for prefix) are refused for the
// other.
type AdaptJob struct {
	Method string `json:"method,omitempty"` // lora (default) or prefix
	// Data is a JSONL file of training pairs (as for `edgectl adapt
	// --data`) on the daemon's machine, read when the job is submitted and
	// only for clients of the Unix socket; Examples are the pairs inline.
	// Give one of the two.
	Data     string         `json:"data,omitempty"`
	Examples []AdaptExample `json:"examples,omitempty"`

	Steps        int      `json:"steps"`                   // MeZO steps, required
	LR           float64  `json:"lr,omitempty"`            // 0: 1e-4 for lora, 1e-2 for prefix
	Eps          float64  `json:"eps,omitempty"`           // 0: 1e-2 for lora, 1e-1 for prefix
	WeightDecay  float64  `json:"weight_decay,omitempty"`  // λ
	Schedule     string   `json:"schedule,omitempty"`      // constant (default) or linear
	Batch        int      `json:"batch,omitempty"`         // examples per step (0: 16)
	Samples      int      `json:"samples,omitempty"`       // perturbations per step (0: 1)
	MaxGrad      float64  `json:"max_grad,omitempty"`      // clip |g| (0: no bound)
	Seed         *uint64  `json:"seed,omitempty"`          // absent: 1
	Rank         int      `json:"rank,omitempty"`          // LoRA rank (0: 8)
	Alpha        float64  `json:"alpha,omitempty"`         // LoRA alpha (0: 16)
	Projs        []string `json:"projs,omitempty"`         // of AdaptProjs (absent: q, v)
	Layers       []int    `json:"layers,omitempty"`        // absent: all
	Init         string   `json:"init,omitempty"`          // random (default) or data
	InitRef      int      `json:"init_ref,omitempty"`      // init data's reference samples (0: 64)
	PrefixLen    int      `json:"prefix_len,omitempty"`    // prefix rows (0: 5)
	Replay       int      `json:"replay,omitempty"`        // rehearsal samples of the base model
	ReplayLen    int      `json:"replay_len,omitempty"`    // tokens each (0: 24)
	ReplayWeight float64  `json:"replay_weight,omitempty"` // a replay token's weight (0: 1)
	LossFloor    float64  `json:"loss_floor,omitempty"`    // least cross-entropy a token counts for
	Type         string   `json:"type,omitempty"`          // tensor type of the adapter: f32 (default) or f16
}

// AdaptExample is one training pair, as a line of the JSONL data: text
// (the prompt gets BOS and its special tokens parsed; the completion is
// plain text) or token ids, not both.
type AdaptExample struct {
	Prompt        string  `json:"prompt,omitempty"`
	Completion    string  `json:"completion,omitempty"`
	PromptIDs     []int32 `json:"prompt_ids,omitempty"`
	CompletionIDs []int32 `json:"completion_ids,omitempty"`
}

// Adapter methods, LoRA initialisations, learning-rate schedules and
// adapter tensor types of an AdaptJob; AdaptProjs are the projections a
// LoRA may adapt.
var (
	AdaptMethods   = []string{"lora", "prefix"}
	AdaptInits     = []string{"random", "data"}
	AdaptSchedules = []string{"constant", "linear"}
	AdaptTypes     = []string{"f32", "f16"}
	AdaptProjs     = []string{"q", "k", "v", "o", "gate", "up", "down"}
)

// Job is a background job as a daemon stores and reports it.
type Job struct {
	ID    string `json:"id"` // "job-N", N its submission's sequence
	Seq   uint64 `json:"seq"`
	Kind  string `json:"kind"`
	Model string `json:"model"`
	State string `json:"state"`
	// Step is the number of steps taken, out of Steps; for a paused or
	// failed job, and one waiting to continue after a restart, as of its
	// last checkpoint, where it will continue.
	Step  int `json:"step"`
	Steps int `json:"steps"`
	// Loss is the last step's training loss.
	Loss *float64 `json:"loss,omitempty"`
	// StepsPerSecond and ETASeconds are the pace of the running job
	// since it last started, waits for serving included.
	StepsPerSecond float64 `json:"steps_per_s,omitempty"`
	ETASeconds     float64 `json:"eta_s,omitempty"`
	// Examples is the number of training pairs.
	Examples int `json:"examples"`
	// MemoryBytes is what the job counts against the memory budget while
	// it runs.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// Checkpoint is the file of its last checkpoint, taken after
	// CheckpointStep steps.
	Checkpoint     string `json:"checkpoint,omitempty"`
	CheckpointStep int    `json:"checkpoint_step,omitempty"`
	// Output is the file the job wrote (the adapter, for "adapt").
	Output string `json:"output,omitempty"`
	// Error is why the job failed.
	Error *Error `json:"error,omitempty"`
	// Restarts counts the runs that continued the job after the daemon
	// stopped in the middle of one.
	Restarts   int       `json:"restarts,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"` // its first run
	UpdatedAt  time.Time `json:"updated_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// RunSeconds is the time the job has run, all its runs together.
	RunSeconds float64 `json:"run_seconds"`
	// Adapt is the configuration of an "adapt" job with the defaults
	// filled in (absent layers: all) and the examples left out (they are
	// in the job's directory).
	Adapt *AdaptJob `json:"adapt,omitempty"`
	// Edits is the configuration of an "edits" job with the defaults
	// filled in and the ids of the edits it trains.
	Edits *EditsJob `json:"edits,omitempty"`
}

// JobList answers GET /v1/jobs and the NATS jobs endpoint.
type JobList struct {
	Version int    `json:"version"`
	Object  string `json:"object"` // "list"
	Data    []Job  `json:"data"`   // in submission order
}

// JobListRequest asks for the jobs, those in State when it is set.
type JobListRequest struct {
	Version int    `json:"version,omitempty"`
	State   string `json:"state,omitempty"`
}

// JobRequest names one job: the body of POST /v1/jobs/pause, resume and
// cancel, the query of GET /v1/jobs/status, and of the NATS endpoints
// jobs.status, jobs.pause, jobs.resume and jobs.cancel.
type JobRequest struct {
	Version int    `json:"version,omitempty"`
	ID      string `json:"id"`
}

// DecodeJobSubmit decodes and validates a JobSubmitRequest.
func DecodeJobSubmit(data []byte) (*JobSubmitRequest, error) {
	var r JobSubmitRequest
	if err := Decode(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeJobRequest decodes and validates a JobRequest.
func DecodeJobRequest(data []byte) (*JobRequest, error) {
	var r JobRequest
	if err := Decode(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// JobID is the id of the job submitted as seq.
func JobID(seq uint64) string { return "job-" + strconv.FormatUint(seq, 10) }

// Validate checks a decoded JobSubmitRequest; whether the model is
// registered, and fits the job, is for the daemon to check.
func (r *JobSubmitRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	if r.Kind != JobKindAdapt && r.Adapt != nil || r.Kind != JobKindEdits && r.Edits != nil {
		p.add(CodeInvalidValue, "kind", "settings of another kind than %q", truncate(r.Kind, 40))
	}
	switch r.Kind {
	case JobKindAdapt:
		if r.Adapt == nil {
			p.add(CodeInvalidValue, "adapt", "a job of kind %q needs its settings in \"adapt\"", r.Kind)
		} else {
			r.Adapt.validate(&p)
		}
	case JobKindEdits:
		if r.Edits != nil {
			r.Edits.validate(&p)
		}
	case "":
		p.add(CodeInvalidValue, "kind", "kind is required: one of %s", strings.Join(JobKinds, ", "))
	default:
		p.add(CodeInvalidValue, "kind", "kind %q: want one of %s", truncate(r.Kind, 40), strings.Join(JobKinds, ", "))
	}
	return p.err()
}

// validate checks an AdaptJob's fields on their own.
func (a *AdaptJob) validate(p *problems) {
	oneOf := func(param, v string, allowed []string) {
		if v != "" && !slices.Contains(allowed, v) {
			p.add(CodeInvalidValue, "adapt."+param, "adapt.%s %q: want one of %s", param, truncate(v, 40), strings.Join(allowed, ", "))
		}
	}
	oneOf("method", a.Method, AdaptMethods)
	oneOf("schedule", a.Schedule, AdaptSchedules)
	oneOf("init", a.Init, AdaptInits)
	oneOf("type", a.Type, AdaptTypes)
	a.validateData(p)
	intIn := func(param string, v, lo, hi int) {
		checkInt(p, "adapt."+param, &v, lo, hi)
	}
	intIn("steps", a.Steps, 1, MaxJobSteps)
	intIn("batch", a.Batch, 0, MaxJobExamples+MaxJobSamples)
	intIn("samples", a.Samples, 0, MaxJobPerturbations)
	intIn("rank", a.Rank, 0, MaxLoRARank)
	intIn("init_ref", a.InitRef, 0, MaxJobSamples)
	intIn("prefix_len", a.PrefixLen, 0, MaxJobSampleLen)
	intIn("replay", a.Replay, 0, MaxJobSamples)
	intIn("replay_len", a.ReplayLen, 0, MaxJobSampleLen)
	for _, f := range []struct {
		param string
		v     float64
	}{{"lr", a.LR}, {"eps", a.Eps}, {"weight_decay", a.WeightDecay}, {"max_grad", a.MaxGrad},
		{"alpha", a.Alpha}, {"replay_weight", a.ReplayWeight}, {"loss_floor", a.LossFloor}} {
		if !(f.v >= 0) {
			p.add(CodeInvalidValue, "adapt."+f.param, "adapt.%s %v: must not be negative", f.param, f.v)
		}
	}
	if len(a.Projs) > len(AdaptProjs) {
		p.add(CodeInvalidValue, "adapt.projs", "adapt.projs names %d projections; there are %d", len(a.Projs), len(AdaptProjs))
	}
	for i, s := range a.Projs {
		if !slices.Contains(AdaptProjs, s) {
			p.add(CodeInvalidValue, "adapt.projs", "adapt.projs[%d] %q: want one of %s", i, truncate(s, 40), strings.Join(AdaptProjs, ", "))
		} else if slices.Index(a.Projs, s) != i {
			p.add(CodeInvalidValue, "adapt.projs", "adapt.projs names %s twice", s)
		}
	}
	if len(a.Layers) > MaxJobLayers {
		p.add(CodeTooLarge, "adapt.layers", "adapt.layers holds %d layers, more than %d", len(a.Layers), MaxJobLayers)
	}
	for i, l := range a.Layers {
		if l < 0 || l >= MaxJobLayers {
			p.add(CodeInvalidValue, "adapt.layers", "adapt.layers[%d] %d is outside [0, %d)", i, l, MaxJobLayers)
			break
		}
	}
	// Settings of the other method would be silently ignored.
	var foreign []string
	if a.Method == "prefix" {
		for _, f := range []struct {
			name string
			set  bool
		}{{"rank", a.Rank != 0}, {"alpha", a.Alpha != 0}, {"projs", a.Projs != nil}, {"layers", a.Layers != nil},
			{"init", a.Init != ""}, {"init_ref", a.InitRef != 0}} {
			if f.set {
				foreign = append(foreign, f.name)
			}
		}
	} else if a.PrefixLen != 0 {
		foreign = append(foreign, "prefix_len")
	}
	if len(foreign) > 0 {
		p.add(CodeInvalidValue, "adapt."+foreign[0], "adapt.%s: not a setting of method %s", strings.Join(foreign, ", adapt."), cmp.Or(a.Method, "lora"))
	}
	if a.Init != "data" && a.InitRef != 0 {
		p.add(CodeInvalidValue, "adapt.init_ref", "adapt.init_ref is a setting of init \"data\"")
	}
}

// validate checks an EditsJob's fields on their own.
func (e *EditsJob) validate(p *problems) {
	if e.Optimizer != "" && !slices.Contains(EditOptimizers, e.Optimizer) {
		p.add(CodeInvalidValue, "edits.optimizer", "edits.optimizer %q: want one of %s", truncate(e.Optimizer, 40), strings.Join(EditOptimizers, ", "))
	}
	if e.Layer != nil {
		checkInt(p, "edits.layer", e.Layer, 0, MaxJobLayers-1)
	}
	if e.Rank != nil {
		checkInt(p, "edits.rank", e.Rank, 0, MaxLoRARank)
	}
	checkInt(p, "edits.steps", &e.Steps, 0, MaxJobSteps)
	if !(e.LR >= 0) || !(e.StopLoss >= 0) {
		p.add(CodeInvalidValue, "edits.lr", "edits.lr %v and edits.stop_loss %v: must not be negative", e.LR, e.StopLoss)
	}
	if e.Edits != nil {
		p.add(CodeInvalidValue, "edits.edits", "the daemon chooses the edits: its model's pending and active ones")
	}
}

// validateData checks that exactly one of data and examples is given.
func (a *AdaptJob) validateData(p *problems) {
	switch {
	case a.Data != "" && a.Examples != nil:
		p.add(CodeInvalidValue, "adapt.data", "give adapt.data (a file) or adapt.examples (inline), not both")
	case a.Data != "":
		switch {
		case len(a.Data) > MaxPathBytes:
			p.add(CodeTooLarge, "adapt.data", "adapt.data exceeds %d bytes", MaxPathBytes)
		case strings.ContainsFunc(a.Data, isControl):
			p.add(CodeInvalidValue, "adapt.data", "adapt.data contains control characters")
		case !filepath.IsAbs(a.Data):
			p.add(CodeInvalidValue, "adapt.data", "adapt.data %q: want an absolute path (the daemon reads it from its own directory)", truncate(a.Data, 80))
		}
	case len(a.Examples) == 0:
		p.add(CodeInvalidValue, "adapt.examples", "training data is required: give adapt.data (a file) or adapt.examples (inline)")
	case len(a.Examples) > MaxJobExamples:
		p.add(CodeTooLarge, "adapt.examples", "%d examples exceed %d", len(a.Examples), MaxJobExamples)
	}
	for i := range a.Examples {
		if err := a.Examples[i].Validate(); err != nil {
			e := AsError(err)
			p.add(e.Code, "adapt.examples", "adapt.examples[%d]: %s", i, e.Message)
			return // one bad example is reported; the rest are likely alike
		}
	}
}

// Validate checks one training pair: text or ids, both parts non-empty,
// ids not negative.
func (x *AdaptExample) Validate() error {
	var p problems
	text := x.Prompt != "" || x.Completion != ""
	ids := x.PromptIDs != nil || x.CompletionIDs != nil
	switch {
	case text && ids:
		p.add(CodeInvalidValue, "", "give prompt/completion or prompt_ids/completion_ids, not both")
	case text && (x.Prompt == "" || x.Completion == ""):
		p.add(CodeInvalidValue, "", "prompt and completion must both be non-empty")
	case !text && (len(x.PromptIDs) == 0 || len(x.CompletionIDs) == 0):
		p.add(CodeInvalidValue, "", "want {\"prompt\", \"completion\"} or {\"prompt_ids\", \"completion_ids\"}, both non-empty")
	case len(x.Prompt)+len(x.Completion) > MaxTextBytes:
		p.add(CodeTooLarge, "", "prompt and completion of %d bytes exceed %d", len(x.Prompt)+len(x.Completion), MaxTextBytes)
	}
	for _, id := range append(slices.Clip(x.PromptIDs), x.CompletionIDs...) {
		if id < 0 {
			p.add(CodeInvalidValue, "", "negative token id %d", id)
			break
		}
	}
	return p.err()
}

// Validate checks a decoded JobListRequest.
func (r *JobListRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	if r.State != "" && !slices.Contains(JobStates, r.State) {
		p.add(CodeInvalidValue, "state", "state %q: want one of %s", truncate(r.State, 40), strings.Join(JobStates, ", "))
	}
	return p.err()
}

// Validate checks a decoded JobRequest: an id of the form JobID makes.
func (r *JobRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	n, ok := strings.CutPrefix(r.ID, "job-")
	switch {
	case r.ID == "":
		p.add(CodeInvalidValue, "id", "id is required")
	case !ok || len(n) > 20 || !isDecimal(n) || JobID(mustUint(n)) != r.ID:
		p.add(CodeInvalidValue, "id", "id %q: want job-N", truncate(r.ID, 40))
	}
	return p.err()
}

func mustUint(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}
