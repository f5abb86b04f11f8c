package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/daemon"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
)

// jobsDaemon starts an edged in-process serving aidreams as "aid" and
// returns its socket.
func jobsDaemon(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	o := daemon.DefaultOptions()
	o.Node, o.Socket, o.StateDir = "n1", filepath.Join(dir, "s.sock"), filepath.Join(dir, "state")
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.NATS.Enabled = false
	o.Engine.Backend, o.Engine.Threads = "cpu", 1
	o.Specs = []daemon.ModelSpec{{Name: "aid", Path: fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")}}
	d, err := daemon.New(o)
	require.NoError(t, err)
	require.NoError(t, d.Start(context.Background()))
	t.Cleanup(func() { d.Shutdown(context.Background()) })
	return o.Socket
}

// jobState asks for a job's state until it is want.
func jobState(t *testing.T, sock, id, want string) protocol.Job {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var j protocol.Job
		require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, "jobs", "status", id, "--json", "--socket", sock)), &j))
		if j.State == want && (want != protocol.JobRunning || j.StepsPerSecond > 0) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s, want %s", id, j.State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJobsCommands(t *testing.T) {
	sock := jobsDaemon(t)
	data := filepath.Join("testdata", "adapt-names20.jsonl")

	// submit --watch follows the job to its end; the adapter is a LoRA
	// of the model, with the settings given and the defaults of adapt.
	code, out, errOut := edgectl(t, "jobs", "submit", "--socket", sock, "--model", "aid", "--data", data, "--steps", "6",
		"--lr", "1e-2", "--projs", "down", "--layers", "3", "--rank", "4", "--watch", "--interval", "20ms")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "job-1 done after 6 of 6 steps")
	assert.Contains(t, errOut, "step 6/6")
	assert.Contains(t, errOut, "100%")
	var j protocol.Job
	require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, "jobs", "status", "--json", "--socket", sock, "job-1")), &j))
	assert.Equal(t, 20, j.Examples)
	assert.Equal(t, []string{"down"}, j.Adapt.Projs)
	assert.Equal(t, 4, j.Adapt.Rank)
	assert.Equal(t, 16.0, j.Adapt.Alpha, "a default")
	f, err := model.Open(fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf"))
	require.NoError(t, err)
	defer f.Close()
	m, err := model.Load(f)
	require.NoError(t, err)
	lo, err := adapt.LoadLoRA(j.Output, m)
	require.NoError(t, err)
	require.Len(t, lo.Pairs, 1)
	assert.Equal(t, 3, lo.Pairs[0].Layer)

	// A long job: paused, resumed, cancelled; watch reports the end.
	out = mustEdgectl(t, "jobs", "submit", "--socket", sock, "--model", "aid", "--data", data, "--steps", "16000000", "--method", "prefix", "--prefix-len", "2")
	assert.Contains(t, out, "job-2 queued: 16000000 steps on 20 examples of model aid")
	jobState(t, sock, "job-2", protocol.JobRunning)
	assert.Contains(t, mustEdgectl(t, "jobs", "pause", "job-2", "--socket", sock), "job-2 paused at step")
	assert.Contains(t, mustEdgectl(t, "jobs", "status", "job-2", "--socket", sock), "checkpoint:")
	assert.Contains(t, mustEdgectl(t, "jobs", "resume", "job-2", "--socket", sock), "job-2 queued")
	jobState(t, sock, "job-2", protocol.JobRunning)
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"jobs", "list"}, []string{"ID", "job-1", "done", j.Output, "job-2", "running", "steps/s"}},
		{[]string{"jobs", "list", "--state", "done"}, []string{"job-1"}},
		{[]string{"jobs", "status", "job-2"}, []string{"state:", "running", "pace:", "method:", "prefix"}},
	} {
		out := mustEdgectl(t, append(c.args, "--socket", sock)...)
		for _, w := range c.want {
			assert.Contains(t, out, w, strings.Join(c.args, " "))
		}
	}
	assert.Contains(t, mustEdgectl(t, "jobs", "cancel", "job-2", "--socket", sock), "job-2 cancelled")
	code, out, _ = edgectl(t, "jobs", "watch", "job-2", "--socket", sock)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "job-2 cancelled")

	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n"), 0o600))
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"jobs"}, 2, "subcommands:"},
		{[]string{"jobs", "start"}, 2, `unknown subcommand "start"`},
		{[]string{"jobs", "submit", "--data", data}, 2, "--model and --data are required"},
		{[]string{"jobs", "submit", "--model", "aid", "--data", bad}, 1, bad + ":2: prompt and completion must both be non-empty"},
		{[]string{"jobs", "submit", "--model", "aid", "--data", data, "--method", "prefix", "--rank", "4"}, 1, "adapt.rank: not a setting of method prefix"},
		{[]string{"jobs", "submit", "--model", "ghost", "--data", data}, 1, `model "ghost" is not registered`},
		{[]string{"jobs", "pause", "job-9"}, 1, `no job "job-9"`},
		{[]string{"jobs", "resume", "job-1"}, 1, "job_state_conflict"},
		{[]string{"jobs", "cancel"}, 2, "give one job ID"},
		{[]string{"jobs", "list", "--state", "asleep"}, 1, `state "asleep"`},
	} {
		code, _, errOut := edgectl(t, append(c.args, "--socket", sock)...)
		assert.Equal(t, c.code, code, strings.Join(c.args, " "))
		assert.Contains(t, errOut, c.want, strings.Join(c.args, " "))
	}
}

func TestProgressLine(t *testing.T) {
	loss := 2.5
	line := progressLine(&protocol.Job{ID: "job-3", State: protocol.JobRunning, Step: 250, Steps: 1000, Loss: &loss, StepsPerSecond: 12.5, ETASeconds: 60})
	assert.Equal(t, "job-3 running   ██████░░░░░░░░░░░░░░░░░░  25%  step 250/1000  loss 2.5000  12.5 steps/s  ETA 1m0s   ", line)
	assert.Contains(t, progressLine(&protocol.Job{ID: "job-4", State: protocol.JobQueued, Steps: 10}), "░░░░░░░░░░░░░░░░░░░░░░░░   0%  step 0/10  loss -")
}
