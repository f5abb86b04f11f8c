package daemon

// The job runner: background jobs (adaptation runs, and edit training
// once it lands) run one at a time on a goroutine of their own, each on an
// engine of its own, below serving. Their records are in the jobs bucket
// (jobs_store.go), their files in jobs/<id>/ under the state directory.
//
// Why one at a time: a job takes all the compute serving leaves it, so
// two jobs would only share that and both finish later, while each holds
// an engine's memory.
//
// Life of a job: submit writes its files, then its record (queued). The
// runner takes the oldest queued job, marks it running, builds its task
// and restores its checkpoint when there is one, then steps it;
// it checkpoints every jobs.checkpoint_every steps or
// jobs.checkpoint_interval, and when it stops early. A checkpoint is
// written to a temporary file and renamed (the task's Checkpoint), and
// only then is the record updated, so a crash at any point leaves a
// checkpoint that the record's step count does not overstate. At the end
// the task writes its output, the completion hook runs, and the record
// says done. A job found running at start (the daemon died or stopped in
// the middle) is queued again and continues from its checkpoint, which
// gives the result of an uninterrupted run; a crash between the output
// and the record makes the next start write the output and run the hook
// again.
//
// Locking: mu guards cur and orders every change of a job's state: the
// running job's record is written only by the runner's goroutine, the
// others' only under mu.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edged/edged/protocol"
)

// The files of a job, in its directory.
const (
	jobDataFile       = "train.jsonl"  // its training data
	jobCheckpointFile = "checkpoint"   // its last checkpoint
	jobAdapterFile    = "adapter.gguf" // its output
)

// Causes of a running job's early stop (the daemon's shutdown is
// context.Canceled).
var (
	errJobPaused    = errors.New("job paused")
	errJobCancelled = errors.New("job cancelled")
)

// jobKind is one kind of background job (protocol.JobKinds). A kind is
// added by implementing it and naming it in jobKindOf.
type jobKind interface {
	// prepare checks a submission against the daemon and writes what
	// the job needs into its directory dir; it fills in j's Steps,
	// Examples and configuration (defaults resolved). files reports
	// whether the submission may name files of the daemon's machine.
	// Errors are *protocol.Error values.
	prepare(env jobEnv, req *protocol.JobSubmitRequest, files bool, dir string, j *protocol.Job) error
	// open builds the task of the stored job j, with its memory
	// reserved; the task is at step 0 until restored.
	open(env jobEnv, j *protocol.Job, dir string) (jobTask, error)
}

// jobKindOf returns the kind named kind, nil when there is none.
func jobKindOf(kind string) jobKind {
	switch kind {
	case protocol.JobKindAdapt:
		return adaptKind{}
	case protocol.JobKindEdits:
		return editsKind{}
	}
	return nil
}

// jobTask is a job's work as the runner drives it.
type jobTask interface {
	// Step runs one step and returns its loss.
	Step() (float64, error)
	// Steps is the number of steps taken, restored ones included.
	Steps() int
	// Done reports that the task ended before the job's Steps (edit
	// training's stop rule held at the last Step, which took no step).
	Done() bool
	// Checkpoint writes the task's state to path atomically (a temporary
	// file renamed over it); Restore continues from such a file exactly.
	Checkpoint(path string) error
	Restore(path string) error
	// Finish writes the result into dir and returns its path; it may run
	// again after a crash and must then write the same.
	Finish(dir string) (string, error)
	// Memory is what the task counts against the memory budget.
	Memory() int64
	// Close frees the task and its memory reservation.
	Close()
}

// jobEnv is what kinds use of the daemon.
type jobEnv struct {
	ctx   context.Context // ends when the job must stop (a model download waits on it)
	reg   *registry
	store *store
	opts  Options
	// pace runs before every forward pass of the job; nil at submission.
	pace func()
}

// jobRunner runs the background jobs.
type jobRunner struct {
	log   *slog.Logger
	store *store
	dir   string // jobs/ under the state directory
	env   func(ctx context.Context) jobEnv
	// load reports whether requests wait in a queue and whether any are
	// being served (Daemon.servingLoad).
	load func() (waiting, running bool)
	emit func(Event)

	// onDone, when set, runs once a job has written its output, before
	// it is recorded done; an error fails the job. After a crash it can
	// run again for the same job, so it must be idempotent. Adapter
	// versions hook in here. Set it before Start.
	onDone func(ctx context.Context, j protocol.Job) error
	// onFinished, when set, runs after a job's end (done, paused,
	// cancelled or failed) is recorded, with the record; not at a stop of
	// the daemon. Set it before Start.
	onFinished func(j protocol.Job)
	// afterStep, when set (tests), runs on the runner's goroutine after
	// every step with the job's live record.
	afterStep func(j protocol.Job)

	mu   sync.Mutex
	cur  *jobRun // the running job (mu)
	wake chan struct{}
	// stop ends the runner's loop; done is closed when it has ended.
	stop context.CancelFunc
	done chan struct{}
}

// jobRun is the running job.
type jobRun struct {
	job    protocol.Job // its live record (runner.mu)
	ctx    context.Context
	cancel context.CancelCauseFunc // pause and cancel give their cause
	done   chan struct{}           // closed once its state is recorded
}

func newJobRunner(d *Daemon) *jobRunner {
	return &jobRunner{
		log:   d.log.With("component", "jobs"),
		store: d.store,
		dir:   filepath.Join(d.opts.StateDir, "jobs"),
		env: func(ctx context.Context) jobEnv {
			return jobEnv{ctx: ctx, reg: d.reg, store: d.store, opts: d.options()}
		},
		load: d.servingLoad,
		emit: d.emit,
		wake: make(chan struct{}, 1),
	}
}

func (r *jobRunner) jobDir(id string) string { return filepath.Join(r.dir, id) }

// recover readies the jobs of the last run at start: a job that was
// running continues from its checkpoint (queued again, and first, being
// the oldest), and files that no record names are removed.
func (r *jobRunner) recover() error {
	jobs, err := r.store.jobs()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, j := range jobs {
		known[j.ID] = true
		if j.State != protocol.JobRunning {
			continue
		}
		if _, err := r.store.updateJob(j.ID, func(j *protocol.Job) error {
			j.State, j.Restarts = protocol.JobQueued, j.Restarts+1
			return nil
		}); err != nil {
			return err
		}
		r.log.Info("job continues from its checkpoint", "job", j.ID, "step", j.CheckpointStep, "steps", j.Steps)
	}
	entries, err := os.ReadDir(r.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("jobs directory: %w", err)
	}
	for _, e := range entries {
		dir := filepath.Join(r.dir, e.Name())
		if !known[e.Name()] {
			// A submission that failed, or died before its record.
			r.log.Info("removing the files of a job never recorded", "dir", dir)
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
			continue
		}
		// Temporary files of a write the daemon died in.
		tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	return nil
}

// start starts the runner's goroutine.
func (r *jobRunner) start() {
	ctx, stop := context.WithCancel(context.Background())
	r.stop, r.done = stop, make(chan struct{})
	go r.loop(ctx)
}

// shutdown stops the runner and waits for it: the running job stops at
// its next step, checkpoints and stays "running", to continue at the
// next start.
func (r *jobRunner) shutdown() {
	if r.stop == nil {
		return
	}
	r.stop()
	<-r.done
}

// signal wakes the runner to look for a queued job.
func (r *jobRunner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *jobRunner) loop(ctx context.Context) {
	defer close(r.done)
	for ctx.Err() == nil {
		run, err := r.next(ctx)
		switch {
		case err != nil:
			r.log.Error("jobs: reading the queue", "err", err)
			sleepCtx(ctx, time.Second)
		case run == nil:
			select {
			case <-ctx.Done():
			case <-r.wake:
			}
		default:
			err := r.work(ctx, run)
			r.finish(run, err)
		}
	}
}

// next marks the oldest queued job running and returns it; nil when no
// job is queued.
func (r *jobRunner) next(ctx context.Context) (*jobRun, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	jobs, err := r.store.jobs()
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if j.State != protocol.JobQueued {
			continue
		}
		now := time.Now().UTC()
		j, err := r.store.updateJob(j.ID, func(j *protocol.Job) error {
			j.State, j.Error, j.UpdatedAt = protocol.JobRunning, nil, now
			if j.StartedAt.IsZero() {
				j.StartedAt = now
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		run := &jobRun{job: j, done: make(chan struct{})}
		run.ctx, run.cancel = context.WithCancelCause(ctx)
		r.cur = run
		return run, nil
	}
	return nil, nil
}

// work runs the job until it is done or stops early; it returns nil when
// the job is done, else why it stopped (a stop cause or a failure).
func (r *jobRunner) work(base context.Context, run *jobRun) error {
	j := r.live(run, nil)
	msg := "from the start"
	if j.CheckpointStep > 0 {
		msg = fmt.Sprintf("from its checkpoint at step %d", j.CheckpointStep)
	}
	r.log.Info("job started", "job", j.ID, "kind", j.Kind, "model", j.Model, "from", j.CheckpointStep, "steps", j.Steps)
	r.event("job_started", j, msg)
	kind := jobKindOf(j.Kind)
	if kind == nil {
		return protocol.Errorf(protocol.CodeInternal, "job %s: unknown kind %q", j.ID, j.Kind)
	}
	env := r.env(run.ctx)
	p := newPacer(run.ctx, env.opts.Jobs.Share, r.load)
	env.pace = p.pace
	dir := r.jobDir(j.ID)
	t, err := kind.open(env, &j, dir)
	if err != nil {
		return err
	}
	defer t.Close()
	ckpt := filepath.Join(dir, jobCheckpointFile)
	switch _, err := os.Stat(ckpt); {
	case err == nil:
		if err := t.Restore(ckpt); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	opts := env.opts.Jobs
	start, from := time.Now(), t.Steps()
	lastCkpt, lastCkptAt, lastEvent := t.Steps(), start, start
	runBefore := j.RunSeconds
	r.live(run, func(j *protocol.Job) { j.Step, j.MemoryBytes = t.Steps(), t.Memory() })
	save := func() error {
		if err := t.Checkpoint(ckpt); err != nil {
			return err
		}
		lastCkpt, lastCkptAt = t.Steps(), time.Now()
		return r.record(run, func(j *protocol.Job) { j.Checkpoint, j.CheckpointStep = ckpt, lastCkpt })
	}
	for t.Steps() < j.Steps && !t.Done() {
		if run.ctx.Err() != nil {
			if t.Steps() > lastCkpt {
				if err := save(); err != nil {
					// The job goes on from its previous checkpoint.
					r.log.Error("job checkpoint at stop", "job", j.ID, "err", err)
				}
			}
			return context.Cause(run.ctx)
		}
		loss, err := t.Step()
		if err != nil {
			return err
		}
		now := time.Now()
		j = r.live(run, func(j *protocol.Job) {
			j.Step, j.Loss = t.Steps(), &loss
			j.RunSeconds = runBefore + now.Sub(start).Seconds()
			j.StepsPerSecond = float64(j.Step-from) / now.Sub(start).Seconds()
			j.ETASeconds = float64(j.Steps-j.Step) / j.StepsPerSecond
		})
		if r.afterStep != nil {
			r.afterStep(j)
		}
		if t.Steps()-lastCkpt >= opts.CheckpointEvery || now.Sub(lastCkptAt) >= opts.CheckpointInterval {
			if err := save(); err != nil {
				return err
			}
		}
		if opts.ProgressInterval > 0 && now.Sub(lastEvent) >= opts.ProgressInterval {
			r.event("job_progress", j, "")
			lastEvent = now
		}
	}
	// From here on a crash finishes the job without stepping again.
	if t.Steps() > lastCkpt {
		if err := save(); err != nil {
			return err
		}
	}
	out, err := t.Finish(dir)
	if err != nil {
		return err
	}
	j = r.live(run, func(j *protocol.Job) { j.Output = out })
	if r.onDone != nil {
		if err := r.onDone(base, j); err != nil {
			return fmt.Errorf("completion hook: %w", err)
		}
	}
	return nil
}

// finish records how the running job ended (err from work) and makes the
// runner free for the next.
func (r *jobRunner) finish(run *jobRun, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(run.done)
	r.cur = nil
	j := run.job
	j.StepsPerSecond, j.ETASeconds = 0, 0
	now := time.Now().UTC()
	j.UpdatedAt = now
	var kind, msg string
	switch {
	case err == nil:
		j.State, j.FinishedAt, j.Checkpoint, kind = protocol.JobDone, now, "", "job_done"
	case errors.Is(err, errJobPaused):
		j.State, j.Step, kind = protocol.JobPaused, j.CheckpointStep, "job_paused"
	case errors.Is(err, errJobCancelled):
		j.State, j.FinishedAt, j.Checkpoint, kind = protocol.JobCancelled, now, "", "job_cancelled"
	case errors.Is(err, context.Canceled):
		// The daemon is stopping: the job stays running, to continue at
		// the next start.
		j.Step = j.CheckpointStep
		r.log.Info("job interrupted; it continues at the next start", "job", j.ID, "step", j.Step, "checkpoint", j.CheckpointStep)
	default:
		e := protocol.AsError(err)
		j.State, j.Error, j.Step, kind, msg = protocol.JobFailed, e, j.CheckpointStep, "job_failed", e.Message
		r.log.Error("job failed", "job", j.ID, "step", j.Step, "err", err)
	}
	if err := r.store.putJob(j); err != nil {
		r.log.Error("jobs: recording the end of a job", "job", j.ID, "state", j.State, "err", err)
	} else if protocol.JobFinal(j.State) {
		// Only once the record says so: until then a crash needs them.
		r.removeFiles(j.ID)
	}
	if kind != "" {
		r.log.Info("job "+j.State, "job", j.ID, "step", j.Step, "steps", j.Steps)
		r.event(kind, j, msg)
		if r.onFinished != nil {
			r.onFinished(j)
		}
	}
}

// live applies fn (when not nil) to the running job's live record and
// returns a copy.
func (r *jobRunner) live(run *jobRun, fn func(j *protocol.Job)) protocol.Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fn != nil {
		fn(&run.job)
	}
	return run.job
}

// record applies fn to the running job's live record and writes it.
func (r *jobRunner) record(run *jobRun, fn func(j *protocol.Job)) error {
	j := r.live(run, func(j *protocol.Job) {
		fn(j)
		j.UpdatedAt = time.Now().UTC()
	})
	return r.store.putJob(j)
}

// removeFiles removes the checkpoint and the data of a finished job,
// which nothing will read again. A failure is logged: the job's state
// matters more.
func (r *jobRunner) removeFiles(id string) {
	for _, n := range []string{jobCheckpointFile, jobDataFile} {
		if err := os.Remove(filepath.Join(r.jobDir(id), n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("jobs: removing a file", "job", id, "err", err)
		}
	}
}

// JobProgress is where a job stands, in its events.
type JobProgress struct {
	State          string   `json:"state"`
	Step           int      `json:"step"`
	Steps          int      `json:"steps"`
	Loss           *float64 `json:"loss,omitempty"`
	StepsPerSecond float64  `json:"steps_per_s,omitempty"`
	ETASeconds     float64  `json:"eta_s,omitempty"`
}

func (r *jobRunner) event(kind string, j protocol.Job, msg string) {
	r.emit(Event{Kind: kind, Model: j.Model, Job: j.ID, Msg: msg, Progress: &JobProgress{
		State: j.State, Step: j.Step, Steps: j.Steps, Loss: j.Loss, StepsPerSecond: j.StepsPerSecond, ETASeconds: j.ETASeconds,
	}})
}
