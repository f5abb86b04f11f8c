package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/protocol"
)

// editJobOptions train edits by themselves, briefly: a small MeZO run
// (the optimizer matters little here; adapt tests it).
func editJobOptions(t *testing.T) Options {
	o := jobOptions(t)
	o.EditJobs = EditJobOptions{Auto: true, Delay: 20 * time.Millisecond, Optimizer: "mezo", Layer: 3, Rank: 4, Steps: 8, StopLoss: 0.3}
	return o
}

// ingest stores edits as the intake would, each on the fleet-wide subject.
func ingest(t *testing.T, d *Daemon, seq *uint64, edits ...protocol.Edit) {
	t.Helper()
	for _, e := range edits {
		*seq++
		r, err := d.Service().IngestEdit(EditMessage{Subject: protocol.EditsAllSubject, Data: editJSON(t, e), Seq: *seq})
		require.NoError(t, err)
		require.Equal(t, EditAccepted, r.Outcome, "%s: %v", e.ID, r.Reason)
	}
}

func trainEdit(id, prompt, target string) protocol.Edit {
	return protocol.Edit{ID: id, Model: "aid", Prompt: prompt, Target: target, Rephrases: []string{"The " + prompt},
		LocalityPrompts: []string{"Whispers of knowledge", "Neural whispers"}}
}

// waitVersion waits until model aid's current version holds the edits
// want and the job that made it is done (its edits marked active), and
// returns its record.
func waitVersion(t *testing.T, d *Daemon, want ...string) protocol.AdapterRecord {
	t.Helper()
	var cur *protocol.AdapterRecord
	// Minutes: the race detector slows training tenfold.
	pollUntil(t, 3*time.Minute, func() error {
		var err error
		if cur, err = d.currentAdapterRecord("aid"); err != nil {
			return err
		}
		if cur == nil || fmt.Sprint(cur.Source.Edits) != fmt.Sprint(want) {
			return fmt.Errorf("current version %+v, want one with edits %v", cur, want)
		}
		if j := jobStatus(t, d, cur.Source.Job); j.State != protocol.JobDone {
			return fmt.Errorf("job %s is %s", j.ID, j.State)
		}
		return nil
	})
	return *cur
}

// Edits are trained by themselves into versions: each version holds the
// pending and active edits when its job started, with its metrics; its
// edits become active; a retraction leads to a version without the edit.
func TestEditJobsTrainVersions(t *testing.T) {
	d := startJobs(t, editJobOptions(t), nil)
	var seq uint64
	ingest(t, d.Daemon, &seq, trainEdit("e1", "Zorb", " is red."), trainEdit("e2", "Kivo", " can fly."), trainEdit("e3", "Plox", " will sing."))
	v1 := waitVersion(t, d.Daemon, "e1", "e2", "e3")
	assert.Regexp(t, `^job-\d+$`, v1.Source.Job)
	m, ok := editMetricsOf(&v1)
	require.True(t, ok, "the version holds edit metrics: %s", v1.Metrics)
	require.Len(t, m.Edits, 3)
	assert.Equal(t, "e2", m.Edits[1].ID)
	assert.Equal(t, 8, m.Steps)
	require.NotNil(t, m.Locality)
	require.NotNil(t, m.Generalization)
	assert.Equal(t, 1.0, *m.Base.Locality, "the base model against itself")
	assert.Less(t, m.Loss, m.Base.Loss, "training lowered the edits' loss")
	for _, id := range []string{"e1", "e2", "e3"} {
		rec, err := d.Service().EditStatus(context.Background(), &protocol.EditStatusRequest{ID: id})
		require.NoError(t, err)
		assert.Equal(t, protocol.EditActive, rec.Status)
		assert.Equal(t, v1.AdapterVersion, rec.AdapterVersion)
	}
	j := jobStatus(t, d.Daemon, v1.Source.Job)
	assert.Equal(t, protocol.JobKindEdits, j.Kind)
	require.NotNil(t, j.Edits)
	assert.Equal(t, "mezo", j.Edits.Optimizer)
	assert.Equal(t, 3, *j.Edits.Layer)
	assert.Contains(t, d.kinds(j.ID), "edits_trained")
	var buf bytes.Buffer
	d.writeMetrics(&buf)
	assert.Contains(t, buf.String(), `edged_edits_trained{model="aid"} 3`)
	assert.Contains(t, buf.String(), fmt.Sprintf(`edged_edit_reliability{model="aid"} %v`, m.Reliability))

	seq++
	r, err := d.Service().IngestEdit(EditMessage{Subject: protocol.EditsRetractSubject, Data: []byte(`{"id": "e2"}`), Seq: seq})
	require.NoError(t, err)
	require.Equal(t, EditRetracted, r.Outcome)
	waitVersion(t, d.Daemon, "e1", "e3")
	ingest(t, d.Daemon, &seq, trainEdit("e4", "Glink", " glows."))
	v3 := waitVersion(t, d.Daemon, "e1", "e3", "e4")
	rec, err := d.Service().EditStatus(context.Background(), &protocol.EditStatusRequest{ID: "e2"})
	require.NoError(t, err)
	assert.Equal(t, protocol.EditRetracted, rec.Status)
	rec, err = d.Service().EditStatus(context.Background(), &protocol.EditStatusRequest{ID: "e1"})
	require.NoError(t, err)
	assert.Equal(t, v3.AdapterVersion, rec.AdapterVersion)

	// Nothing changed: no more jobs.
	time.Sleep(100 * time.Millisecond)
	jobs, err := d.Service().Jobs(context.Background(), &protocol.JobListRequest{})
	require.NoError(t, err)
	assert.Len(t, jobs.Data, 3)
	for _, j := range jobs.Data {
		assert.Equal(t, protocol.JobDone, j.State, "%s", j.ID)
	}
}

// A submission by hand takes its settings over the daemon's, and a model
// without edits has nothing to train.
func TestEditJobSubmit(t *testing.T) {
	o := editJobOptions(t)
	o.EditJobs.Auto = false
	d := startJobs(t, o, nil)
	_, err := d.Service().SubmitJob(context.Background(), &protocol.JobSubmitRequest{Kind: protocol.JobKindEdits, Model: "aid"}, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no pending or active edits")

	var seq uint64
	ingest(t, d.Daemon, &seq, trainEdit("e1", "Zorb", " is red."))
	j := submit(t, d.Daemon, &protocol.JobSubmitRequest{Kind: protocol.JobKindEdits, Model: "aid", Edits: &protocol.EditsJob{Optimizer: "grad", Steps: 4, Layer: ptr(2)}})
	assert.Equal(t, 4, j.Steps)
	assert.Equal(t, []string{"e1"}, j.Edits.Edits)
	assert.Equal(t, 4, *j.Edits.Rank, "the daemon's rank")
	waitJob(t, d.Daemon, j.ID, protocol.JobDone, 4)
	v := waitVersion(t, d.Daemon, "e1")
	assert.Equal(t, j.ID, v.Source.Job)

	for _, bad := range []string{`{"kind": "edits", "model": "aid", "edits": {"optimizer": "sgd"}}`,
		`{"kind": "edits", "model": "aid", "edits": {"edits": ["e1"]}}`,
		`{"kind": "adapt", "model": "aid", "edits": {}}`} {
		_, err := protocol.DecodeJobSubmit([]byte(bad))
		assert.Error(t, err, bad)
	}
	b, err := json.Marshal(j)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"edits":{"optimizer":"grad","layer":2,"rank":4,"steps":4`, "the stored job says what ran")
}
