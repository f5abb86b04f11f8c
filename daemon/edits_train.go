package daemon

// Training the knowledge edits: when a model's edits change (an edit
// stored pending, or an edit of its current version retracted), the
// daemon waits EditJobOptions.Delay for the burst to end and submits an
// "edits" job (jobs_edits.go) over every pending and active edit of the
// model, unless an edit job of the model is unfinished; a job that ends
// done looks again, for the edits that arrived while it ran. Its
// completion hook (commitJobAdapter) commits the version and calls
// editsTrained, which marks the edits active and publishes the metrics.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edged/edged/protocol"
)

// scheduleEdits asks for a look at model's edits after the configured
// delay; calls within the delay are one look.
func (d *Daemon) scheduleEdits(model string) {
	o := d.options().EditJobs
	if !o.Auto {
		return
	}
	d.editsMu.Lock()
	defer d.editsMu.Unlock()
	if d.editsTimers[model] != nil {
		return
	}
	d.editsTimers[model] = time.AfterFunc(o.Delay, func() {
		d.editsMu.Lock()
		delete(d.editsTimers, model)
		d.editsMu.Unlock()
		if err := d.trainEditsIfChanged(model); err != nil {
			d.log.Error("edits: submitting an edit job", "model", model, "err", err)
		}
	})
}

// stopEditTimers stops the looks not taken yet (at shutdown; the next
// start looks at every model).
func (d *Daemon) stopEditTimers() {
	d.editsMu.Lock()
	defer d.editsMu.Unlock()
	for m, t := range d.editsTimers {
		t.Stop()
		delete(d.editsTimers, m)
	}
}

// trainEditsIfChanged submits an edit job for model when its edits differ
// from what its current version holds and no edit job of the model is
// unfinished. Looks run one at a time, so two never both submit.
func (d *Daemon) trainEditsIfChanged(model string) error {
	d.editsLookMu.Lock()
	defer d.editsLookMu.Unlock()
	d.mu.Lock()
	stopped := d.stopped
	d.mu.Unlock()
	if stopped {
		return nil
	}
	jobs, err := d.store.jobs()
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if j.Kind == protocol.JobKindEdits && j.Model == model && !protocol.JobFinal(j.State) {
			return nil
		}
	}
	changed, err := d.editsChanged(model)
	if err != nil || !changed {
		return err
	}
	j, err := d.jobs.submit(context.Background(), &protocol.JobSubmitRequest{Kind: protocol.JobKindEdits, Model: model}, false)
	if err != nil {
		return err
	}
	d.log.Info("edits: training submitted", "model", model, "job", j.ID, "edits", j.Examples)
	return nil
}

// editsChanged reports whether model has pending edits, or a current
// version that holds a retracted edit.
func (d *Daemon) editsChanged(model string) (bool, error) {
	recs, _, err := d.store.edits("")
	if err != nil {
		return false, err
	}
	status := map[string]string{}
	for _, r := range recs {
		if r.Edit != nil && r.Edit.Model == model {
			if r.Status == protocol.EditPending {
				return true, nil
			}
			status[r.ID] = r.Status
		}
	}
	cur, err := d.currentAdapterRecord(model)
	if err != nil || cur == nil {
		return false, err
	}
	return slices.ContainsFunc(cur.Source.Edits, func(id string) bool { return status[id] == protocol.EditRetracted }), nil
}

// currentAdapterRecord is the record of model's current version, nil for
// the base model.
func (d *Daemon) currentAdapterRecord(model string) (*protocol.AdapterRecord, error) {
	recs, currents, err := d.store.adapters(model)
	if err != nil {
		return nil, err
	}
	for i := range recs {
		if recs[i].AdapterVersion == currents[model] {
			return &recs[i], nil
		}
	}
	return nil, nil
}

// editsTrained marks the edits of the edit job j active in version, which
// holds them, and announces it (an edits_trained event; the metrics on
// edged.<node>.metrics). It is idempotent, as the completion hook must
// be.
func (d *Daemon) editsTrained(j protocol.Job, version uint64) error {
	n, err := d.store.activateEdits(j.Edits.Edits, version)
	if err != nil {
		return fmt.Errorf("marking the edits of job %s active: %w", j.ID, err)
	}
	msg := fmt.Sprintf("%d edits in version %d (%d newly active)", len(j.Edits.Edits), version, n)
	if cur, err := d.currentAdapterRecord(j.Model); err == nil && cur != nil && cur.AdapterVersion == version {
		if m, ok := editMetricsOf(cur); ok {
			msg += fmt.Sprintf("; reliability %.3f, locality %s, generalization %s", m.Reliability, optional(m.Locality), optional(m.Generalization))
		}
	}
	d.log.Info("edits trained", "model", j.Model, "job", j.ID, "adapter_version", version, "msg", msg)
	d.emit(Event{Kind: "edits_trained", Model: j.Model, Job: j.ID, AdapterVersion: version, Msg: msg})
	return nil
}

func optional(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f", *v)
}

// editMetricsOf decodes the edit metrics of an adapter version an edit
// job made.
func editMetricsOf(rec *protocol.AdapterRecord) (protocol.EditMetrics, bool) {
	var m protocol.EditMetrics
	if rec.Source.Edits == nil || rec.Metrics == nil || json.Unmarshal(rec.Metrics, &m) != nil {
		return m, false
	}
	return m, true
}

// activateEdits marks the edits ids that are pending active in version
// (and records version in those already active); retracted and rejected
// edits stay as they are. It returns how many were pending.
func (s *store) activateEdits(ids []string, version uint64) (n int, err error) {
	err = s.updateEdits(func(b *bolt.Bucket) error {
		n = 0
		for _, id := range ids {
			rec, err := getEdit(b, id)
			if err != nil {
				return err
			}
			if rec == nil || rec.Status != protocol.EditPending && rec.Status != protocol.EditActive {
				continue
			}
			if rec.Status == protocol.EditPending {
				n++
			}
			rec.Status, rec.AdapterVersion = protocol.EditActive, version
			if err := putEdit(b, *rec); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// writeEditGauges writes the edit metrics of each model's current
// version, when an edit job made it.
func (d *Daemon) writeEditGauges(w io.Writer) {
	recs, currents, err := d.store.adapters("")
	if err != nil {
		d.log.Warn("metrics: reading the adapter versions", "err", err)
		return
	}
	var rows [][]string
	var edits, rel, gen, loc []float64
	for i := range recs {
		r := &recs[i]
		m, ok := editMetricsOf(r)
		if !ok || currents[r.Model] != r.AdapterVersion {
			continue
		}
		rows = append(rows, []string{r.Model})
		edits, rel = append(edits, float64(len(r.Source.Edits))), append(rel, m.Reliability)
		gen, loc = append(gen, orNaN(m.Generalization)), append(loc, orNaN(m.Locality))
	}
	m := []string{"model"}
	gauge(w, "edged_edits_trained", "Knowledge edits in the model's current adapter version.", m, rows, edits)
	gauge(w, "edged_edit_reliability", "Mean reliability of the current version's edits (teacher-forced target token accuracy).", m, rows, rel)
	gauge(w, "edged_edit_generalization", "Mean generalization of the current version's edits (reliability after the rephrases; NaN: none).", m, rows, gen)
	gauge(w, "edged_edit_locality", "Mean locality of the current version's edits (share of unchanged next tokens on locality prompts; NaN: none).", m, rows, loc)
}

func orNaN(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}

// editsAtStart looks at every registered model's edits once the daemon
// runs: changes that arrived before a stop are trained.
func (d *Daemon) editsAtStart() {
	for _, m := range d.reg.names() {
		d.scheduleEdits(m)
	}
}

// jobFinished is the runner's hook after a job's end is recorded: an edit
// job done looks again, for the edits that arrived while it ran.
func (d *Daemon) jobFinished(j protocol.Job) {
	if j.Kind == protocol.JobKindEdits && j.State == protocol.JobDone {
		d.scheduleEdits(j.Model)
	}
}
