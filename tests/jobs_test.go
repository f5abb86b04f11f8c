package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/edged/edged/protocol"
)

// jobRequest is a MeZO run on made-up facts with rehearsal; on aidreams
// a step takes milliseconds.
const jobRequest = `{"kind":"adapt","model":"aid","adapt":{"steps":%d,"lr":1e-2,"batch":3,"replay":2,"replay_len":6,"seed":7,
	"examples":[{"prompt":"Zorb","completion":" is red."},{"prompt":"Kivo","completion":" can fly."},{"prompt":"Plox","completion":" will sing."}]}}`

func (e *edged) job(id string) protocol.Job {
	e.t.Helper()
	var j protocol.Job
	e.get("/v1/jobs/status?id="+id, &j)
	return j
}

func (e *edged) submitJob(steps int) protocol.Job {
	e.t.Helper()
	status, data := e.post("/v1/jobs/submit", fmt.Sprintf(jobRequest, steps))
	var j protocol.Job
	if status != 200 || json.Unmarshal(data, &j) != nil {
		e.t.Fatalf("submit: %d %s", status, data)
	}
	return j
}

// A job survives kill -9: edged killed in the middle of a job continues
// it at its next start from the last checkpoint, and the adapter it
// writes is the one of a run never interrupted.
func TestJobSurvivesKill(t *testing.T) {
	const steps = 600
	args := []string{"--jobs.checkpoint_every=25"}
	first := startEdged(t, args...)
	j := first.submitJob(steps)
	checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if j = first.job(j.ID); j.CheckpointStep < 50 || j.Step == j.CheckpointStep {
			return fmt.Errorf("job at step %d, checkpoint at %d", j.Step, j.CheckpointStep)
		}
		return nil
	})
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	if j.Step >= steps {
		t.Fatalf("the job finished (step %d) before edged was killed", j.Step)
	}
	t.Logf("killed at step %d, checkpoint at step %d", j.Step, j.CheckpointStep)

	again := startEdgedOn(t, first.state, args...)
	out, stderr, err := edgectl(t, []string{"EDGED_SOCKET=" + again.socket}, "jobs", "watch", j.ID, "--interval", "50ms", "--json")
	if err != nil {
		t.Fatalf("edgectl jobs watch: %v\n%s", err, stderr)
	}
	var resumed protocol.Job
	if err := json.Unmarshal([]byte(out), &resumed); err != nil {
		t.Fatal(err)
	}
	if resumed.State != protocol.JobDone || resumed.Restarts != 1 || resumed.Step != steps {
		t.Fatalf("after the restart: %+v", resumed)
	}

	fresh := startEdged(t, args...)
	u := fresh.submitJob(steps)
	checkFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if u = fresh.job(u.ID); u.State != protocol.JobDone {
			return fmt.Errorf("uninterrupted job %s at step %d", u.State, u.Step)
		}
		return nil
	})
	a, err := os.ReadFile(resumed.Output)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(u.Output)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("the adapter of the killed and resumed job (%d bytes) differs from the uninterrupted one's (%d bytes)", len(a), len(b))
	}
}
