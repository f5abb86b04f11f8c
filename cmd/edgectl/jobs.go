package main

// edgectl jobs: the background jobs of the running edged (adaptation
// runs). Each subcommand is a command in jobsCommands.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edged/edged/internal/jsonl"
	"github.com/edged/edged/protocol"
)

var jobsCommands = map[string]command{
	"list":   {"list the jobs with their state and progress", runJobsList},
	"status": {"show one job", runJobsStatus},
	"submit": {"submit an adaptation run (the flags of edgectl adapt)", runJobsSubmit},
	"watch":  {"follow a job with a progress bar until it ends", runJobsWatch},
	"pause":  {"pause a job (a running one checkpoints first)", jobControl("pause")},
	"resume": {"queue a paused or failed job again, to continue from its checkpoint", jobControl("resume")},
	"cancel": {"cancel a job", jobControl("cancel")},
}

func runJobs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		jobsUsage(stderr)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	cmd, ok := jobsCommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "edgectl jobs: unknown subcommand %q\n", args[0])
		jobsUsage(stderr)
		return errUsage
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func jobsUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: edgectl jobs SUBCOMMAND [flags]\n\nsubcommands:")
	names := make([]string, 0, len(jobsCommands))
	for n := range jobsCommands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-7s %s\n", n, jobsCommands[n].summary)
	}
}

func runJobsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("jobs list", "[--state "+strings.Join(protocol.JobStates, "|")+"] [--json]", stderr)
	mk := socketFlag(fs)
	state := fs.String("state", "", "list only the jobs in this `state`")
	asJSON := fs.Bool("json", false, "print the list as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	path := "/v1/jobs"
	if *state != "" {
		path += "?state=" + url.QueryEscape(*state)
	}
	var list protocol.JobList
	if err := mk().call(ctx, http.MethodGet, path, nil, &list); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tMODEL\tSTATE\tSTEP\tLOSS\tUPDATED\tDETAIL")
	for _, j := range list.Data {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", j.ID, j.Kind, j.Model, j.State, j.Step, j.Steps,
			lossText(j.Loss), j.UpdatedAt.Local().Format(time.DateTime), jobDetail(j))
	}
	return tw.Flush()
}

func lossText(l *float64) string {
	if l == nil {
		return "-"
	}
	return strconv.FormatFloat(*l, 'f', 4, 64)
}

// jobDetail is one line about a job: why it failed, what it wrote, or
// its pace.
func jobDetail(j protocol.Job) string {
	switch {
	case j.Error != nil:
		return clip(string(j.Error.Code)+": "+j.Error.Message, 80)
	case j.Output != "":
		return j.Output
	case j.State == protocol.JobRunning && j.StepsPerSecond > 0:
		return fmt.Sprintf("%.1f steps/s, ETA %v", j.StepsPerSecond, eta(j.ETASeconds))
	}
	return ""
}

func eta(s float64) time.Duration { return time.Duration(s * float64(time.Second)).Round(time.Second) }

// jobArg takes the job id of a subcommand, before or after its flags.
func jobArg(fs *flag.FlagSet, args []string) (string, error) {
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return "", err
	}
	rest := fs.Args()
	if id == "" && len(rest) > 0 {
		id, rest = rest[0], rest[1:]
	}
	if id == "" || len(rest) > 0 {
		return "", usageError(fs, "give one job ID")
	}
	return id, nil
}

func runJobsStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("jobs status", "ID [--json]", stderr)
	mk := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	id, err := jobArg(fs, args)
	if err != nil {
		return err
	}
	j, err := getJob(ctx, mk(), id)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, j)
	}
	return printJob(stdout, j)
}

func getJob(ctx context.Context, c *client, id string) (*protocol.Job, error) {
	var j protocol.Job
	if err := c.call(ctx, http.MethodGet, "/v1/jobs/status?id="+url.QueryEscape(id), nil, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// printJob prints a job, one field a line.
func printJob(w io.Writer, j *protocol.Job) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	line := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, args...)) }
	line("id", "%s", j.ID)
	line("kind", "%s on %s", j.Kind, j.Model)
	line("state", "%s", j.State)
	line("step", "%d of %d (loss %s)", j.Step, j.Steps, lossText(j.Loss))
	if j.State == protocol.JobRunning && j.StepsPerSecond > 0 {
		line("pace", "%.1f steps/s, ETA %v", j.StepsPerSecond, eta(j.ETASeconds))
	}
	if j.Error != nil {
		line("error", "%s: %s", j.Error.Code, j.Error.Message)
	}
	if j.Checkpoint != "" {
		line("checkpoint", "%s (step %d)", j.Checkpoint, j.CheckpointStep)
	}
	if j.Output != "" {
		line("output", "%s", j.Output)
	}
	if a := j.Adapt; a != nil {
		line("examples", "%d", j.Examples)
		line("method", "%s, lr %g, eps %g, batch %d, seed %d", a.Method, a.LR, a.Eps, a.Batch, *a.Seed)
	}
	if e := j.Edits; e != nil {
		line("edits", "%d", j.Examples)
		line("training", "%s on the down-projection of layer %d, rank %d, lr %g, stop loss %g, seed %d", e.Optimizer, *e.Layer, *e.Rank, e.LR, e.StopLoss, *e.Seed)
	}
	if j.MemoryBytes > 0 {
		line("memory", "%.1f MiB", float64(j.MemoryBytes)/(1<<20))
	}
	line("ran", "%v (restarted %d times)", eta(j.RunSeconds), j.Restarts)
	line("created", "%s", j.CreatedAt.Local().Format(time.DateTime))
	return tw.Flush()
}

func runJobsSubmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("jobs submit", "--model NAME --data train.jsonl --steps N [adapt flags] [--watch]\n\n"+
		"Submits an adaptation run to the running edged, with the settings of 'edgectl adapt'; the flags left out take its defaults.", stderr)
	mk := socketFlag(fs)
	var rf runFlags
	rf.register(fs)
	modelName := fs.String("model", "", "`name` of a model registered with edged (required)")
	remote := fs.Bool("data-on-daemon", false, "send --data as a path for edged to read (the file must be readable by edged; up to 64 MiB) instead of the examples inline (up to 4 MiB)")
	watch := fs.Bool("watch", false, "follow the job with a progress bar until it ends")
	every := fs.Duration("interval", 500*time.Millisecond, "with --watch, how often to ask edged")
	asJSON := fs.Bool("json", false, "print the job as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *modelName == "" || rf.data == "" {
		return usageError(fs, "--model and --data are required")
	}
	cfg, err := rf.adaptJob(fs)
	if err != nil {
		return usageError(fs, "%v", err)
	}
	if *remote {
		if cfg.Data, err = filepath.Abs(rf.data); err != nil {
			return err
		}
	} else if cfg.Examples, err = readJobExamples(rf.data); err != nil {
		return err
	}
	c := mk()
	var j protocol.Job
	req := protocol.JobSubmitRequest{Kind: protocol.JobKindAdapt, Model: *modelName, Adapt: cfg}
	if err := c.call(ctx, http.MethodPost, "/v1/jobs/submit", req, &j); err != nil {
		if !*remote && protocol.CodeOf(err) == protocol.CodeTooLarge {
			return fmt.Errorf("%w (with --data-on-daemon edged reads the file itself)", err)
		}
		return err
	}
	if *watch {
		return watchJob(ctx, c, j.ID, *every, stdout, stderr, *asJSON)
	}
	if *asJSON {
		return printJSON(stdout, j)
	}
	fmt.Fprintf(stdout, "%s %s: %d steps on %d examples of model %s\n", j.ID, j.State, j.Steps, j.Examples, j.Model)
	return nil
}

// adaptJob is the request of the settings given on the command line:
// the others are left to the daemon, whose defaults are edgectl adapt's
// (and a setting of the other method would be refused).
func (a *runFlags) adaptJob(fs *flag.FlagSet) (*protocol.AdaptJob, error) {
	cfg := &protocol.AdaptJob{Steps: a.steps, Method: a.method}
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "type":
			cfg.Type = a.outType
		case "lr":
			cfg.LR = a.lr
		case "eps":
			cfg.Eps = a.eps
		case "weight-decay":
			cfg.WeightDecay = a.decay
		case "schedule":
			cfg.Schedule = a.schedule
		case "batch":
			cfg.Batch = a.batch
		case "samples":
			cfg.Samples = a.samples
		case "max-grad":
			cfg.MaxGrad = a.maxGrad
		case "seed":
			cfg.Seed = &a.seed
		case "rank":
			cfg.Rank = a.rank
		case "alpha":
			cfg.Alpha = a.alpha
		case "projs":
			for _, p := range strings.Split(a.projs, ",") {
				cfg.Projs = append(cfg.Projs, strings.TrimSpace(p))
			}
		case "layers":
			var err error
			if cfg.Layers, err = parseLayers(a.layers); err != nil {
				errs = append(errs, err)
			}
		case "init":
			cfg.Init = a.init
		case "init-ref":
			cfg.InitRef = a.initRef
		case "prefix-len":
			cfg.PrefixLen = a.prefixLen
		case "replay":
			cfg.Replay = a.replay
		case "replay-len":
			cfg.ReplayLen = a.replayLen
		case "replay-weight":
			cfg.ReplayWeight = a.replayWeight
		case "loss-floor":
			cfg.LossFloor = a.lossFloor
		}
	})
	return cfg, errors.Join(errs...)
}

// readJobExamples reads a JSONL data file as the inline examples of a
// job, each line checked as the daemon will.
func readJobExamples(path string) ([]protocol.AdaptExample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return jsonl.Read(f, path, "examples", func(line string) (protocol.AdaptExample, error) {
		var ex protocol.AdaptExample
		if err := jsonl.Strict(line, &ex); err != nil {
			return ex, err
		}
		if err := ex.Validate(); err != nil {
			return ex, errors.New(protocol.AsError(err).Message)
		}
		return ex, nil
	})
}

func runJobsWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("jobs watch", "ID [--interval D] [--json]\n\nFollows the job with a progress bar until it is done, failed or cancelled (exit status 1 unless done).", stderr)
	mk := socketFlag(fs)
	every := fs.Duration("interval", 500*time.Millisecond, "how often to ask edged")
	asJSON := fs.Bool("json", false, "print the final job as JSON")
	id, err := jobArg(fs, args)
	if err != nil {
		return err
	}
	return watchJob(ctx, mk(), id, *every, stdout, stderr, *asJSON)
}

// watchJob redraws the job's progress bar on stderr until it ends, then
// prints where it ended on stdout.
func watchJob(ctx context.Context, c *client, id string, every time.Duration, stdout, stderr io.Writer, asJSON bool) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		j, err := getJob(ctx, c, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "\r%s", progressLine(j))
		if j.State == protocol.JobFailed || protocol.JobFinal(j.State) {
			fmt.Fprintln(stderr)
			if asJSON {
				if err := printJSON(stdout, j); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(stdout, "%s %s after %d of %d steps (loss %s) %s\n", j.ID, j.State, j.Step, j.Steps, lossText(j.Loss), jobDetail(*j))
			}
			if j.State != protocol.JobDone {
				return fmt.Errorf("job %s %s", j.ID, j.State)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(stderr)
			return ctx.Err()
		case <-t.C:
		}
	}
}

// barWidth is the width of the progress bar in characters.
const barWidth = 24

// progressLine is the one-line view of a job: a bar, the step, the loss,
// the pace and what is left, in the manner of edgectl adapt's.
func progressLine(j *protocol.Job) string {
	done := 0
	if j.Steps > 0 {
		done = j.Step * barWidth / j.Steps
	}
	bar := strings.Repeat("█", done) + strings.Repeat("░", barWidth-done)
	line := fmt.Sprintf("%s %-9s %s %3.0f%%  step %d/%d  loss %s", j.ID, j.State, bar, 100*float64(j.Step)/float64(max(1, j.Steps)), j.Step, j.Steps, lossText(j.Loss))
	if j.State == protocol.JobRunning && j.StepsPerSecond > 0 {
		line += fmt.Sprintf("  %.1f steps/s  ETA %v", j.StepsPerSecond, eta(j.ETASeconds))
	}
	return line + "   "
}

// jobControl is a subcommand that pauses, resumes or cancels a job.
func jobControl(verb string) func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		fs := newFlags("jobs "+verb, "ID [--json]", stderr)
		mk := socketFlag(fs)
		asJSON := fs.Bool("json", false, "print the job as JSON")
		id, err := jobArg(fs, args)
		if err != nil {
			return err
		}
		var j protocol.Job
		if err := mk().call(ctx, http.MethodPost, "/v1/jobs/"+verb, protocol.JobRequest{ID: id}, &j); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, j)
		}
		fmt.Fprintf(stdout, "%s %s at step %d of %d\n", j.ID, j.State, j.Step, j.Steps)
		return nil
	}
}
