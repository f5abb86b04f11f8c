package daemon

// Background jobs: the Service side. The runner (jobs_runner.go) runs
// them; the socket and NATS endpoints call these methods.

import (
	"context"
	"os"
	"slices"
	"time"

	"github.com/edged/edged/protocol"
)

// SubmitJob checks a job and queues it, returning its record. files
// says whether the request may name files of the daemon's machine (an
// adapt job's data): the socket allows it, its peers being the daemon's
// user, root and the socket group; NATS clients send their data inline.
func (s *Service) SubmitJob(ctx context.Context, req *protocol.JobSubmitRequest, files bool) (*protocol.Job, error) {
	if s.d.draining.Load() {
		return nil, protocol.Errorf(protocol.CodeShuttingDown, "the daemon is shutting down")
	}
	j, err := s.d.jobs.submit(ctx, req, files)
	if err != nil {
		return nil, protocol.AsError(err)
	}
	return j, nil
}

// Jobs lists the jobs (those in req.State when set) in submission order,
// the running one with its live progress.
func (s *Service) Jobs(ctx context.Context, req *protocol.JobListRequest) (*protocol.JobList, error) {
	jobs, err := s.d.jobs.list()
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInternal, "reading the jobs: %v", err)
	}
	out := []protocol.Job{}
	for _, j := range jobs {
		if req.State == "" || j.State == req.State {
			out = append(out, j)
		}
	}
	return &protocol.JobList{Version: protocol.Version, Object: protocol.ObjectList, Data: out}, nil
}

// JobStatus returns one job, with its live progress when it runs.
func (s *Service) JobStatus(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error) {
	return s.d.jobs.get(req.ID)
}

// PauseJob pauses a queued or running job; a running one checkpoints
// first, and the call returns once it has (or ctx ends). Pausing a
// paused job changes nothing.
func (s *Service) PauseJob(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error) {
	return s.d.jobs.control(ctx, req.ID, errJobPaused, func(j *protocol.Job) (string, error) {
		switch j.State {
		case protocol.JobQueued:
			j.State = protocol.JobPaused
			return "job_paused", nil
		case protocol.JobPaused:
			return "", nil
		}
		return "", jobConflict(j, "paused", "a queued or running one")
	})
}

// ResumeJob queues a paused or failed job again, to continue from its
// last checkpoint. Resuming a queued or running job changes nothing.
func (s *Service) ResumeJob(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error) {
	j, err := s.d.jobs.control(ctx, req.ID, nil, func(j *protocol.Job) (string, error) {
		switch j.State {
		case protocol.JobPaused, protocol.JobFailed:
			j.State, j.Error = protocol.JobQueued, nil
			return "job_resumed", nil
		case protocol.JobQueued, protocol.JobRunning:
			return "", nil
		}
		return "", jobConflict(j, "resumed", "a paused or failed one")
	})
	if err == nil {
		s.d.jobs.signal()
	}
	return j, err
}

// CancelJob cancels a job that has not finished: a running one stops at
// its next step, and the call returns once it has (or ctx ends). The
// job's checkpoint and data are removed. Cancelling a cancelled job
// changes nothing.
func (s *Service) CancelJob(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error) {
	return s.d.jobs.control(ctx, req.ID, errJobCancelled, func(j *protocol.Job) (string, error) {
		switch j.State {
		case protocol.JobQueued, protocol.JobPaused, protocol.JobFailed:
			j.State, j.FinishedAt, j.Checkpoint = protocol.JobCancelled, time.Now().UTC(), ""
			return "job_cancelled", nil
		case protocol.JobCancelled:
			return "", nil
		}
		return "", jobConflict(j, "cancelled", "an unfinished one")
	})
}

func jobConflict(j *protocol.Job, verb, which string) error {
	return protocol.ParamErrorf(protocol.CodeJobConflict, "id", "job %s is %s: only %s can be %s", j.ID, j.State, which, verb)
}

// submit prepares a job's files, then records it queued.
func (r *jobRunner) submit(ctx context.Context, req *protocol.JobSubmitRequest, files bool) (*protocol.Job, error) {
	kind := jobKindOf(req.Kind)
	if kind == nil {
		return nil, protocol.ParamErrorf(protocol.CodeInvalidValue, "kind", "this daemon runs no jobs of kind %q", req.Kind)
	}
	env := r.env(ctx)
	if !env.reg.has(req.Model) {
		return nil, protocol.ParamErrorf(protocol.CodeModelNotFound, "model", "model %q is not registered (see GET /v1/models)", req.Model)
	}
	limit := env.opts.Jobs.MaxQueued
	if err := r.room(limit); err != nil {
		return nil, err
	}
	seq, err := r.store.nextJobSeq()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	j := protocol.Job{ID: protocol.JobID(seq), Seq: seq, Kind: req.Kind, Model: req.Model, State: protocol.JobQueued, CreatedAt: now, UpdatedAt: now}
	dir := r.jobDir(j.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	err = kind.prepare(env, req, files, dir, &j)
	if err == nil {
		r.mu.Lock()
		if err = r.room(limit); err == nil { // another submission may have come in
			err = r.store.putJob(j)
		}
		r.mu.Unlock()
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r.log.Info("job queued", "job", j.ID, "kind", j.Kind, "model", j.Model, "steps", j.Steps)
	r.event("job_queued", j, "")
	r.signal()
	return &j, nil
}

// room fails with busy when limit jobs are unfinished.
func (r *jobRunner) room(limit int) error {
	jobs, err := r.store.jobs()
	if err != nil {
		return err
	}
	n := 0
	for _, j := range jobs {
		if !protocol.JobFinal(j.State) {
			n++
		}
	}
	if n >= limit {
		return protocol.Errorf(protocol.CodeBusy, "%d jobs are unfinished (queued, running, paused or failed), the most jobs.max_queued allows: wait, or cancel one", n)
	}
	return nil
}

// list returns every job, the running one with its live record.
func (r *jobRunner) list() ([]protocol.Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	jobs, err := r.store.jobs()
	if run := r.cur; run != nil && err == nil {
		if i := slices.IndexFunc(jobs, func(j protocol.Job) bool { return j.ID == run.job.ID }); i >= 0 {
			jobs[i] = run.job
		}
	}
	return jobs, err
}

// get returns job id, live when it runs.
func (r *jobRunner) get(id string) (*protocol.Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if run := r.cur; run != nil && run.job.ID == id {
		j := run.job
		return &j, nil
	}
	j, err := r.store.job(id)
	switch {
	case err != nil:
		return nil, protocol.Errorf(protocol.CodeInternal, "reading job %s: %v", id, err)
	case j == nil:
		return nil, protocol.ParamErrorf(protocol.CodeJobNotFound, "id", "no job %q", id)
	}
	return j, nil
}

// control applies a pause, resume or cancel to job id. A running job is
// stopped with the cause stop (nil: it keeps running) and the call waits
// until it has stopped and its state is recorded; any other job's record
// is changed by change, which returns the event to emit ("" when nothing
// changed) or why the request does not apply.
func (r *jobRunner) control(ctx context.Context, id string, stop error, change func(j *protocol.Job) (string, error)) (*protocol.Job, error) {
	r.mu.Lock()
	if run := r.cur; run != nil && run.job.ID == id {
		if stop == nil {
			j := run.job
			r.mu.Unlock()
			return &j, nil
		}
		run.cancel(stop)
		r.mu.Unlock()
		select {
		case <-run.done:
		case <-ctx.Done():
			return nil, ctxError(ctx)
		}
		return r.get(id)
	}
	defer r.mu.Unlock()
	var event string
	j, err := r.store.updateJob(id, func(j *protocol.Job) error {
		var err error
		if event, err = change(j); err == nil && event != "" {
			j.UpdatedAt = time.Now().UTC()
		}
		return err
	})
	if err != nil {
		return nil, protocol.AsError(err)
	}
	if event != "" && protocol.JobFinal(j.State) {
		r.removeFiles(j.ID)
	}
	if event != "" {
		r.log.Info("job "+j.State, "job", j.ID)
		r.event(event, j, "")
	}
	return &j, nil
}
