package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
	"github.com/edged/edged/quant"
)

// jobPairs are made-up facts the aidreams model does not know.
var jobPairs = []protocol.AdaptExample{
	{Prompt: "Zorb", Completion: " is red."},
	{Prompt: "Kivo", Completion: " can fly."},
	{Prompt: "Plox", Completion: " will sing."},
	{PromptIDs: []int32{1, 319, 459, 355}, CompletionIDs: []int32{401, 288, 377}},
}

// adaptJob is a job of steps MeZO steps on jobPairs with rehearsal, a few
// steps a millisecond on aidreams.
func adaptJob(steps int) *protocol.JobSubmitRequest {
	return &protocol.JobSubmitRequest{Kind: protocol.JobKindAdapt, Model: "aid", Adapt: &protocol.AdaptJob{
		Examples: jobPairs, Steps: steps, LR: 1e-2, Batch: 3, Replay: 2, ReplayLen: 6, Seed: ptr(uint64(7)),
	}}
}

// jobsDaemon is a started daemon and the job events it emitted.
type jobsDaemon struct {
	*Daemon
	mu     sync.Mutex
	events []Event
}

// startJobs starts a daemon with o; prepare, when set, runs between New
// and Start (to set the runner's hooks before its goroutine reads them).
func startJobs(t *testing.T, o Options, prepare func(d *Daemon)) *jobsDaemon {
	t.Helper()
	d, err := New(o)
	require.NoError(t, err)
	if prepare != nil {
		prepare(d)
	}
	jd := &jobsDaemon{Daemon: d}
	d.Service().OnEvent(func(ev Event) {
		if ev.Job != "" {
			jd.mu.Lock()
			jd.events = append(jd.events, ev)
			jd.mu.Unlock()
		}
	})
	require.NoError(t, d.Start(context.Background()))
	t.Cleanup(func() { jd.stop(t) })
	return jd
}

func (jd *jobsDaemon) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	assert.NoError(t, jd.Shutdown(ctx))
}

// kinds returns the kinds of job id's events, in order, without repeats
// of job_progress.
func (jd *jobsDaemon) kinds(id string) []string {
	jd.mu.Lock()
	defer jd.mu.Unlock()
	var out []string
	for _, ev := range jd.events {
		if ev.Job == id && (len(out) == 0 || out[len(out)-1] != ev.Kind || ev.Kind != "job_progress") {
			out = append(out, ev.Kind)
		}
	}
	return out
}

func jobOptions(t *testing.T) Options {
	o := testOptions(t)
	o.Jobs.CheckpointEvery = 4
	o.Jobs.ProgressInterval = time.Nanosecond
	return o
}

func submit(t *testing.T, d *Daemon, req *protocol.JobSubmitRequest) *protocol.Job {
	t.Helper()
	j, err := d.Service().SubmitJob(context.Background(), req, false)
	require.NoError(t, err)
	return j
}

func jobStatus(t *testing.T, d *Daemon, id string) *protocol.Job {
	t.Helper()
	j, err := d.Service().JobStatus(context.Background(), &protocol.JobRequest{ID: id})
	require.NoError(t, err)
	return j
}

// waitJob waits until job id is in state and step reaches at least step.
func waitJob(t *testing.T, d *Daemon, id, state string, step int) *protocol.Job {
	t.Helper()
	var j *protocol.Job
	// Minutes: the race detector slows training tenfold.
	pollUntil(t, 3*time.Minute, func() error {
		j = jobStatus(t, d, id)
		if j.State != state || j.Step < step {
			return fmt.Errorf("job %s is %s at step %d (%v), want %s at %d", id, j.State, j.Step, j.Error, state, step)
		}
		return nil
	})
	return j
}

// A finished job's adapter becomes its model's current version, once:
// the completion hook, run again after a crash, adds no second version.
func TestJobCommitsAdapterVersion(t *testing.T) {
	d := startJobs(t, jobOptions(t), nil)
	j := submit(t, d.Daemon, adaptJob(6))
	j = waitJob(t, d.Daemon, j.ID, protocol.JobDone, 6)
	require.NoError(t, d.commitJobAdapter(context.Background(), *j))

	list, err := d.Service().Adapters(context.Background(), &protocol.AdapterListRequest{Model: "aid"})
	require.NoError(t, err)
	require.Len(t, list.Data, 1)
	v := list.Data[0]
	assert.Equal(t, j.ID, v.Source.Job)
	assert.Equal(t, v.AdapterVersion, list.Current["aid"])
	assert.Equal(t, digestOf(readBytes(t, j.Output)), v.Digest)
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// A job runs to the end, writes the adapter `edgectl adapt` writes from
// the same settings, calls the completion hook and says so in events.
func TestJobRunsToDone(t *testing.T) {
	o := jobOptions(t)
	var hooked []protocol.Job
	var hookMu sync.Mutex
	d := startJobs(t, o, func(d *Daemon) {
		d.jobs.onDone = func(_ context.Context, j protocol.Job) error {
			hookMu.Lock()
			defer hookMu.Unlock()
			hooked = append(hooked, j)
			return nil
		}
	})
	const steps = 10
	j := submit(t, d.Daemon, adaptJob(steps))
	assert.Equal(t, protocol.JobQueued, j.State)
	assert.Equal(t, "job-1", j.ID)
	assert.Equal(t, 4, j.Examples)
	require.NotNil(t, j.Adapt)
	assert.Nil(t, j.Adapt.Examples, "the examples are in the job's directory")
	assert.Equal(t, "lora", j.Adapt.Method, "defaults are filled in")
	assert.Equal(t, []string{"q", "v"}, j.Adapt.Projs)
	assert.Equal(t, 1e-2, j.Adapt.Eps)

	j = waitJob(t, d.Daemon, j.ID, protocol.JobDone, steps)
	assert.Equal(t, filepath.Join(o.StateDir, "jobs", j.ID, jobAdapterFile), j.Output)
	assert.Empty(t, j.Checkpoint)
	assert.NotNil(t, j.Loss)
	assert.Positive(t, j.RunSeconds)
	assert.Positive(t, j.MemoryBytes)
	assert.False(t, j.FinishedAt.IsZero())
	for _, f := range []string{jobCheckpointFile, jobDataFile} {
		assert.NoFileExists(t, filepath.Join(o.StateDir, "jobs", j.ID, f))
	}
	hookMu.Lock()
	require.Len(t, hooked, 1)
	assert.Equal(t, j.Output, hooked[0].Output)
	hookMu.Unlock()
	assert.Equal(t, []string{"job_queued", "job_started", "job_progress", "job_done"}, d.kinds(j.ID))

	// The same run as `edgectl adapt` (adapt.Recipe on an engine with the
	// model's context) gives the same bytes.
	assert.True(t, bytes.Equal(offlineAdapter(t, o.Specs[0].Path, adaptJob(steps).Adapt), readBytes(t, j.Output)), "the job's adapter is edgectl adapt's")
	r, err := d.Service().Jobs(context.Background(), &protocol.JobListRequest{State: protocol.JobDone})
	require.NoError(t, err)
	require.Len(t, r.Data, 1)
	assert.Equal(t, j.ID, r.Data[0].ID)
}

// offlineAdapter trains cfg's adapter on the model at path as `edgectl
// adapt` does and returns the file's bytes.
func offlineAdapter(t *testing.T, path string, cfg *protocol.AdaptJob) []byte {
	t.Helper()
	f, err := model.Open(path)
	require.NoError(t, err)
	defer f.Close()
	m, err := model.Load(f)
	require.NoError(t, err)
	tok, err := model.NewTokenizer(f)
	require.NoError(t, err)
	var train []adapt.Example
	for _, ex := range cfg.Examples {
		if ex.PromptIDs != nil {
			train = append(train, adapt.Example{Prompt: ex.PromptIDs, Completion: ex.CompletionIDs})
		} else {
			train = append(train, adapt.Example{Prompt: tok.Encode(ex.Prompt, true, true), Completion: tok.Encode(ex.Completion, false, false)})
		}
	}
	r := adapt.DefaultRecipe()
	r.MeZO.Steps, r.MeZO.LR, r.MeZO.BatchSize, r.MeZO.Seed = cfg.Steps, cfg.LR, cfg.Batch, *cfg.Seed
	r.Replay, r.ReplayLen = cfg.Replay, cfg.ReplayLen
	be := cpu.New(1)
	e, err := engine.New(m, be, engine.Options{Cache: engine.CacheF32, Hooks: engine.Hooks{Delta: adapt.NewSet()}})
	require.NoError(t, err)
	defer e.Close()
	run, err := r.Prepare(e, m, tok.BOS(), train)
	require.NoError(t, err)
	defer run.Close()
	for run.Steps() < cfg.Steps {
		_, err := run.Step()
		require.NoError(t, err)
	}
	out := filepath.Join(t.TempDir(), "offline.gguf")
	require.NoError(t, run.Save(out, quant.F32))
	return readBytes(t, out)
}

func TestJobPauseResumeCancel(t *testing.T) {
	o := jobOptions(t)
	d := startJobs(t, o, nil)
	s := d.Service()
	ctx := context.Background()
	long := submit(t, d.Daemon, adaptJob(protocol.MaxJobSteps))
	next := submit(t, d.Daemon, adaptJob(5))
	waitJob(t, d.Daemon, long.ID, protocol.JobRunning, 3)

	// The queued job is paused where it is; the running one stops at its
	// next step with a checkpoint.
	j, err := s.PauseJob(ctx, &protocol.JobRequest{ID: next.ID})
	require.NoError(t, err)
	assert.Equal(t, protocol.JobPaused, j.State)
	j, err = s.PauseJob(ctx, &protocol.JobRequest{ID: long.ID})
	require.NoError(t, err)
	assert.Equal(t, protocol.JobPaused, j.State)
	assert.GreaterOrEqual(t, j.CheckpointStep, 3)
	assert.Equal(t, j.CheckpointStep, j.Step)
	assert.FileExists(t, j.Checkpoint)
	paused := j.Step
	// Nothing runs while both are paused; pausing again changes nothing.
	j, err = s.PauseJob(ctx, &protocol.JobRequest{ID: long.ID})
	require.NoError(t, err)
	assert.Equal(t, paused, j.Step)
	assert.Equal(t, protocol.JobPaused, jobStatus(t, d.Daemon, next.ID).State)

	// Resumed, it goes on from its checkpoint.
	j, err = s.ResumeJob(ctx, &protocol.JobRequest{ID: long.ID})
	require.NoError(t, err)
	assert.Equal(t, protocol.JobQueued, j.State)
	waitJob(t, d.Daemon, long.ID, protocol.JobRunning, paused+2)
	j, err = s.CancelJob(ctx, &protocol.JobRequest{ID: long.ID})
	require.NoError(t, err)
	assert.Equal(t, protocol.JobCancelled, j.State)
	assert.NoFileExists(t, filepath.Join(o.StateDir, "jobs", long.ID, jobCheckpointFile))
	assert.Equal(t, []string{"job_queued", "job_started", "job_progress", "job_paused", "job_resumed", "job_started", "job_progress", "job_cancelled"}, d.kinds(long.ID))

	// The paused job runs once resumed; a paused job can be cancelled.
	_, err = s.ResumeJob(ctx, &protocol.JobRequest{ID: next.ID})
	require.NoError(t, err)
	waitJob(t, d.Daemon, next.ID, protocol.JobDone, 5)
	third := submit(t, d.Daemon, adaptJob(protocol.MaxJobSteps))
	waitJob(t, d.Daemon, third.ID, protocol.JobRunning, 1)
	_, err = s.PauseJob(ctx, &protocol.JobRequest{ID: third.ID})
	require.NoError(t, err)
	j, err = s.CancelJob(ctx, &protocol.JobRequest{ID: third.ID})
	require.NoError(t, err)
	assert.Equal(t, protocol.JobCancelled, j.State)

	// What finished stays finished.
	for _, c := range []struct {
		call func(context.Context, *protocol.JobRequest) (*protocol.Job, error)
		id   string
		code protocol.Code // "" when the call succeeds and changes nothing
	}{
		{s.PauseJob, long.ID, protocol.CodeJobConflict},
		{s.ResumeJob, long.ID, protocol.CodeJobConflict},
		{s.CancelJob, long.ID, ""},
		{s.PauseJob, next.ID, protocol.CodeJobConflict},
		{s.CancelJob, next.ID, protocol.CodeJobConflict},
		{s.ResumeJob, "job-99", protocol.CodeJobNotFound},
	} {
		j, err := c.call(ctx, &protocol.JobRequest{ID: c.id})
		if c.code == "" {
			require.NoError(t, err)
			assert.Equal(t, protocol.JobCancelled, j.State)
			continue
		}
		assert.Equal(t, c.code, protocol.CodeOf(err), "%s: %v", c.id, err)
	}
}

// A daemon stopped in the middle of a job continues it at its next start
// from the checkpoint, and the adapter is the one an uninterrupted run
// writes.
func TestJobResumesAfterRestart(t *testing.T) {
	const steps, stopAt = 24, 10
	o := jobOptions(t)
	o.Jobs.CheckpointEvery = 7 // the stop comes between two checkpoints
	first := startJobs(t, o, func(d *Daemon) {
		d.jobs.afterStep = func(j protocol.Job) {
			if j.Step == stopAt {
				d.jobs.stop() // as Shutdown does, at a step we know
			}
		}
	})
	j := submit(t, first.Daemon, adaptJob(steps))
	<-first.jobs.done
	first.stop(t)

	again := o
	again.Socket = filepath.Join(t.TempDir(), "again.sock")
	second := startJobs(t, again, nil)
	j = waitJob(t, second.Daemon, j.ID, protocol.JobDone, steps)
	assert.Equal(t, 1, j.Restarts)
	assert.Equal(t, []string{"job_started", "job_progress", "job_done"}, second.kinds(j.ID))
	second.mu.Lock()
	assert.Equal(t, "from its checkpoint at step 10", second.events[0].Msg)
	second.mu.Unlock()

	fresh := startJobs(t, jobOptions(t), nil)
	u := submit(t, fresh.Daemon, adaptJob(steps))
	u = waitJob(t, fresh.Daemon, u.ID, protocol.JobDone, steps)
	assert.Zero(t, u.Restarts)
	assert.True(t, bytes.Equal(readBytes(t, u.Output), readBytes(t, j.Output)), "the resumed job's adapter is the uninterrupted one's")
}

// A job that fails says why; resumed, it continues from its checkpoint
// (here the last step's: only the completion hook runs again).
func TestJobFailureAndRetry(t *testing.T) {
	o := jobOptions(t)
	var calls int
	var mu sync.Mutex
	d := startJobs(t, o, func(d *Daemon) {
		d.jobs.onDone = func(context.Context, protocol.Job) error {
			mu.Lock()
			defer mu.Unlock()
			if calls++; calls == 1 {
				return errors.New("version store unavailable")
			}
			return nil
		}
	})
	j := submit(t, d.Daemon, adaptJob(6))
	j = waitJob(t, d.Daemon, j.ID, protocol.JobFailed, 0)
	require.NotNil(t, j.Error)
	assert.Contains(t, j.Error.Message, "completion hook: version store unavailable")
	assert.Equal(t, 6, j.CheckpointStep)
	assert.Equal(t, []string{"job_queued", "job_started", "job_progress", "job_failed"}, d.kinds(j.ID))
	d.mu.Lock()
	assert.Contains(t, d.events[len(d.events)-1].Msg, "version store unavailable")
	d.mu.Unlock()

	_, err := d.Service().ResumeJob(context.Background(), &protocol.JobRequest{ID: j.ID})
	require.NoError(t, err)
	j = waitJob(t, d.Daemon, j.ID, protocol.JobDone, 6)
	assert.Nil(t, j.Error)
	mu.Lock()
	assert.Equal(t, 2, calls)
	mu.Unlock()
	assert.Equal(t, []string{"job_resumed", "job_started", "job_done"}, d.kinds(j.ID)[4:])
}

func TestJobSubmitErrors(t *testing.T) {
	o := jobOptions(t)
	o.Jobs.MaxQueued = 2
	d := startJobs(t, o, nil)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\nnot json\n"), 0o600))
	good := filepath.Join(dir, "good.jsonl")
	require.NoError(t, os.WriteFile(good, []byte(`{"prompt": "Zorb", "completion": " is red."}`+"\n"), 0o600))
	withData := func(path string) *protocol.JobSubmitRequest {
		r := adaptJob(3)
		r.Adapt.Examples, r.Adapt.Data = nil, path
		return r
	}
	change := func(fn func(a *protocol.AdaptJob)) *protocol.JobSubmitRequest {
		r := adaptJob(3)
		fn(r.Adapt)
		return r
	}
	for _, c := range []struct {
		name  string
		req   *protocol.JobSubmitRequest
		files bool
		code  protocol.Code
		msg   string
	}{
		{"unknown model", &protocol.JobSubmitRequest{Kind: "adapt", Model: "nope", Adapt: adaptJob(3).Adapt}, false, protocol.CodeModelNotFound, "nope"},
		{"a file over NATS", withData(good), false, protocol.CodeInvalidValue, "only for clients of the Unix socket"},
		{"a missing file", withData(filepath.Join(dir, "none.jsonl")), true, protocol.CodeInvalidValue, "no such file"},
		{"bad lines", withData(bad), true, protocol.CodeInvalidValue, bad + ":2"},
		{"a token outside the vocabulary", change(func(a *protocol.AdaptJob) {
			a.Examples = []protocol.AdaptExample{{PromptIDs: []int32{1}, CompletionIDs: []int32{512}}}
		}), false, protocol.CodeInvalidValue, "token 512 is outside the vocabulary of 512"},
		{"a layer the model lacks", change(func(a *protocol.AdaptJob) { a.Layers = []int{9} }), false, protocol.CodeInvalidValue, "layer 9"},
		{"too long", change(func(a *protocol.AdaptJob) { a.Replay, a.ReplayLen = 1, 500 }), false, protocol.CodeContextLength, "holds 128"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := d.Service().SubmitJob(context.Background(), c.req, c.files)
			require.Error(t, err)
			assert.Equal(t, c.code, protocol.CodeOf(err), "%v", err)
			assert.Contains(t, err.Error(), c.msg)
		})
	}
	// Refused submissions leave no files.
	entries, err := os.ReadDir(filepath.Join(o.StateDir, "jobs"))
	require.NoError(t, err)
	assert.Empty(t, entries)

	// A data file is copied: the job no longer needs it.
	j, err := d.Service().SubmitJob(context.Background(), withData(good), true)
	require.NoError(t, err)
	assert.Equal(t, good, j.Adapt.Data)
	assert.Equal(t, 1, j.Examples)
	require.NoError(t, os.Remove(good))
	waitJob(t, d.Daemon, j.ID, protocol.JobDone, 3)

	// Two unfinished jobs are the most this daemon keeps.
	long := adaptJob(protocol.MaxJobSteps)
	for range 2 {
		submit(t, d.Daemon, long)
	}
	_, err = d.Service().SubmitJob(context.Background(), long, false)
	assert.Equal(t, protocol.CodeBusy, protocol.CodeOf(err), "%v", err)

	// A job that can never fit the memory budget is refused.
	small := jobOptions(t)
	small.Models.MemoryBudget = 64 << 10
	_, err = startJobs(t, small, nil).Service().SubmitJob(context.Background(), adaptJob(3), false)
	assert.Equal(t, protocol.CodeInsufficientMemory, protocol.CodeOf(err), "%v", err)
}

func TestJobsHTTP(t *testing.T) {
	o := jobOptions(t)
	d := startJobs(t, o, nil)
	data := filepath.Join(t.TempDir(), "train.jsonl")
	require.NoError(t, os.WriteFile(data, []byte(`{"prompt": "Zorb", "completion": " is red."}`+"\n"), 0o600))
	c := socketClient(o.Socket)
	resp, body := post(t, c, "/v1/jobs/submit", `{"kind":"adapt","model":"aid","adapt":{"steps":16777216,"data":"`+data+`"}}`)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	waitJob(t, d.Daemon, "job-1", protocol.JobRunning, 1)
	for _, tc := range []struct {
		method, path, body string
		status             int
		state              string // of the job answered, or the error code
	}{
		{"GET", "/v1/jobs", "", 200, ""},
		{"GET", "/v1/jobs?state=running", "", 200, ""},
		{"GET", "/v1/jobs?state=asleep", "", 400, "invalid_value"},
		{"GET", "/v1/jobs/status?id=job-1", "", 200, protocol.JobRunning},
		{"GET", "/v1/jobs/status?id=job-2", "", 404, "job_not_found"},
		{"GET", "/v1/jobs/status?id=1", "", 400, "invalid_value"},
		{"POST", "/v1/jobs/pause", `{"id":"job-1"}`, 200, protocol.JobPaused},
		{"POST", "/v1/jobs/resume", `{"id":"job-1"}`, 200, protocol.JobQueued},
		{"POST", "/v1/jobs/cancel", `{"id":"job-1"}`, 200, protocol.JobCancelled},
		{"POST", "/v1/jobs/resume", `{"id":"job-1"}`, 409, "job_state_conflict"},
		{"POST", "/v1/jobs/pause", `{"job":"job-1"}`, 400, "unknown_field"},
		{"GET", "/v1/jobs/cancel", "", 405, "method_not_allowed"},
		{"POST", "/v1/jobs/submit", `{"kind":"adapt","model":"aid","adapt":{"steps":1}}`, 400, "invalid_value"},
	} {
		var raw []byte
		var status int
		if tc.method == "GET" {
			resp, err := c.Get("http://edged" + tc.path)
			require.NoError(t, err)
			raw, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			status = resp.StatusCode
		} else {
			resp, b := post(t, c, tc.path, tc.body)
			raw, status = b, resp.StatusCode
		}
		require.Equal(t, tc.status, status, "%s %s: %s", tc.method, tc.path, raw)
		switch {
		case status != 200:
			assert.Contains(t, string(raw), `"code":"`+tc.state+`"`, tc.path)
		case tc.state != "":
			assert.Contains(t, string(raw), `"state":"`+tc.state+`"`, tc.path)
		default:
			assert.Contains(t, string(raw), `"object":"list"`, tc.path)
		}
	}
}

// The pacer waits while requests are queued, keeps to its share while
// requests run, lets the job run flat out otherwise, and returns at once
// when the job must stop.
func TestPacer(t *testing.T) {
	var mu sync.Mutex
	waiting, running := false, false
	load := func() (bool, bool) {
		mu.Lock()
		defer mu.Unlock()
		return waiting, running
	}
	set := func(w, r bool) {
		mu.Lock()
		waiting, running = w, r
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPacer(ctx, 0.25, load)

	start := time.Now()
	p.pace()
	assert.Less(t, time.Since(start), 5*time.Millisecond, "idle serving: no wait")

	set(false, true)
	p.mark = time.Now().Add(-10 * time.Millisecond) // the job computed for 10 ms
	start = time.Now()
	p.pace()
	assert.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond, "share 1/4: 3 ms waited for each ms computed")

	set(true, true)
	done := make(chan time.Duration)
	go func() {
		start := time.Now()
		p.pace()
		done <- time.Since(start)
	}()
	time.Sleep(20 * time.Millisecond)
	set(false, false)
	assert.GreaterOrEqual(t, <-done, 20*time.Millisecond, "queued requests go first")

	set(true, true)
	go func() {
		start := time.Now()
		p.pace()
		done <- time.Since(start)
	}()
	cancel()
	assert.Less(t, <-done, time.Second, "a job that must stop stops waiting")
}

// Serving is not starved: the time to the first token of small requests
// while a job runs stays within 2x of the same requests with the daemon
// idle (the figures are logged), with one thread per engine (on two
// cores, serving and the job each have one) and with two (they contend
// for both).
func TestJobYieldsToServing(t *testing.T) {
	if testing.Short() {
		t.Skip("timing measurement")
	}
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			o := jobOptions(t)
			o.Engine.Threads = threads
			o.Jobs.ProgressInterval = 0
			d := startJobs(t, o, nil)
			s := d.Service()
			ttft := func(n int) (p50, p90 time.Duration) {
				var ds []time.Duration
				for i := range n {
					req := greedy("aid", fmt.Sprintf("Once upon a time %d", i), 1)
					start := time.Now()
					_, err := s.Complete(context.Background(), req, nil)
					require.NoError(t, err)
					ds = append(ds, time.Since(start))
				}
				slices.Sort(ds)
				return ds[n/2], ds[n*9/10]
			}
			ttft(20) // load the model, warm up
			idle50, idle90 := ttft(200)
			j := submit(t, d.Daemon, adaptJob(protocol.MaxJobSteps))
			waitJob(t, d.Daemon, j.ID, protocol.JobRunning, 5)
			before := jobStatus(t, d.Daemon, j.ID).Step
			start := time.Now()
			job50, job90 := ttft(200)
			took := time.Since(start)
			after := jobStatus(t, d.Daemon, j.ID).Step
			_, err := s.CancelJob(context.Background(), &protocol.JobRequest{ID: j.ID})
			require.NoError(t, err)
			t.Logf("TTFT of a 1-token completion, share %.2f: idle p50 %v p90 %v; job running p50 %v p90 %v (%.2fx at p50); the job took %d steps meanwhile (%.1f steps/s)",
				o.Jobs.Share, idle50, idle90, job50, job90, float64(job50)/float64(idle50), after-before, float64(after-before)/took.Seconds())
			assert.Greater(t, after, before, "the job progresses while serving")
			assert.Less(t, job50, 2*idle50+time.Millisecond, "p50 time to first token within 2x of idle (plus timer slack)")
		})
	}
}

// Over NATS: a job is submitted with its data inline, controlled by id,
// and its events are published on edged.<node>.events.
func TestJobsOverNATS(t *testing.T) {
	o := jobOptions(t)
	o.NATS.Enabled, o.NATS.Edits.Enabled, o.NATS.MetricsInterval = true, false, 0
	f := NewNATS(o.NATS, o.Logger)
	o.FrontEnds = []FrontEnd{f}
	startJobs(t, o, nil)
	nc, err := nats.Connect("", nats.InProcessServer(f.conn.ns))
	require.NoError(t, err)
	defer nc.Close()
	events := make(chan Event, 1024)
	sub, err := nc.Subscribe(protocol.EventsSubject("test"), func(m *nats.Msg) {
		var ev Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.Job != "" {
			events <- ev
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, nc.Flush())

	call := func(endpoint string, body any) protocol.Job {
		t.Helper()
		msg := request(t, nc, protocol.Subject("test", endpoint), body)
		require.Empty(t, errorCode(t, msg), "%s", msg.Data)
		var j protocol.Job
		require.NoError(t, json.Unmarshal(msg.Data, &j))
		return j
	}
	until := func(id, kind string) Event {
		t.Helper()
		for {
			select {
			case ev := <-events:
				if ev.Job == id && ev.Kind == kind {
					return ev
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no %s event of %s", kind, id)
			}
		}
	}
	j := call(protocol.EndpointJobSubmit, adaptJob(6))
	until(j.ID, "job_queued")
	until(j.ID, "job_started")
	assert.Equal(t, 6, until(j.ID, "job_progress").Progress.Steps)
	done := until(j.ID, "job_done")
	assert.Equal(t, protocol.JobDone, done.Progress.State)
	assert.Equal(t, 6, done.Progress.Step)
	assert.Equal(t, "aid", done.Model)

	long := call(protocol.EndpointJobSubmit, adaptJob(protocol.MaxJobSteps))
	until(long.ID, "job_started")
	until(long.ID, "job_progress")
	assert.Equal(t, protocol.JobPaused, call(protocol.EndpointJobPause, protocol.JobRequest{ID: long.ID}).State)
	until(long.ID, "job_paused")
	assert.Equal(t, protocol.JobQueued, call(protocol.EndpointJobResume, protocol.JobRequest{ID: long.ID}).State)
	until(long.ID, "job_resumed")
	until(long.ID, "job_started")
	assert.Equal(t, protocol.JobCancelled, call(protocol.EndpointJobCancel, protocol.JobRequest{ID: long.ID}).State)
	until(long.ID, "job_cancelled")

	var list protocol.JobList
	msg := request(t, nc, protocol.Subject("test", protocol.EndpointJobs), nil)
	require.NoError(t, json.Unmarshal(msg.Data, &list))
	require.Len(t, list.Data, 2)
	assert.Equal(t, protocol.JobDone, list.Data[0].State)
	assert.Equal(t, protocol.JobCancelled, list.Data[1].State)
}
