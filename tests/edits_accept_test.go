package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edged/edged/protocol"
)

var edits100 = flag.Bool("edits100", false, "run TestEdits100, issue 9's acceptance run (a few minutes)")

// TestEdits100 is issue 9's acceptance run: the 100 edits of
// cmd/edgectl/testdata/edits100.jsonl published through the stream of a
// running edged (aidreams260K, its defaults), trained by the edit job it
// submits by itself, while 1-token completions measure the time to the
// first token against the same requests before the edits arrived. It
// reports the version's metrics and asserts the bounds.
//
//	go test ./tests -run TestEdits100 -edits100 -v
func TestEdits100(t *testing.T) {
	if !*edits100 {
		t.Skip("an acceptance run of minutes: -edits100")
	}
	e, url := startNATSEdged(t, "acc", "")
	js, err := jetstream.New(natsClient(t, url))
	if err != nil {
		t.Fatal(err)
	}
	ttft := func(n int, until func() bool) []time.Duration {
		var d []time.Duration
		for i := 0; i < n && (until == nil || !until()); i++ {
			start := time.Now()
			status, data := e.post("/v1/completions", fmt.Sprintf(`{"model": "aid", "prompt": "Once upon a time %d", "max_tokens": 1, "temperature": 0}`, i))
			if status != 200 {
				t.Fatalf("completion: %d %s", status, data)
			}
			d = append(d, time.Since(start))
		}
		return d
	}
	ttft(20, nil) // load the model
	idle := ttft(200, nil)

	f, err := os.Open("../cmd/edgectl/testdata/edits100.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var ed protocol.Edit
		if err := json.Unmarshal(sc.Bytes(), &ed); err != nil {
			t.Fatal(err)
		}
		ed.Model = "aid"
		data, _ := json.Marshal(ed)
		if _, err := js.Publish(context.Background(), protocol.EditsAllSubject, data, jetstream.WithMsgID(ed.ID)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	start := time.Now()
	var job protocol.Job
	checkFor(t, 60*time.Second, 5*time.Millisecond, func() error {
		for _, j := range e.jobs() {
			if j.Kind == protocol.JobKindEdits && j.State == protocol.JobRunning && j.Examples == n {
				job = j
				return nil
			}
		}
		return fmt.Errorf("no edit job of %d edits running", n)
	})
	busy := ttft(1000, func() bool { return e.job(job.ID).State != protocol.JobRunning })
	checkFor(t, 30*time.Minute, 100*time.Millisecond, func() error {
		if job = e.job(job.ID); job.State != protocol.JobDone {
			return fmt.Errorf("job %s %s at step %d", job.ID, job.State, job.Step)
		}
		return nil
	})
	var list protocol.AdapterList
	e.get("/v1/adapters?model=aid", &list)
	var m protocol.EditMetrics
	for _, r := range list.Data {
		if r.Source.Job == job.ID {
			if err := json.Unmarshal(r.Metrics, &m); err != nil {
				t.Fatal(err)
			}
		}
	}
	p50 := func(d []time.Duration) time.Duration { d = slices.Clone(d); slices.Sort(d); return d[len(d)/2] }
	opt := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f", *v)
	}
	t.Logf("%d edits, job %s: %d steps (stopped by the loss: %v), %.0f s from publishing to the version", n, job.ID, m.Steps, m.Learnt, time.Since(start).Seconds())
	t.Logf("base:   reliability %.3f generalization %s locality %s", m.Base.Reliability, opt(m.Base.Generalization), opt(m.Base.Locality))
	t.Logf("edited: reliability %.3f generalization %s locality %s", m.Reliability, opt(m.Generalization), opt(m.Locality))
	ratio := float64(p50(busy)) / float64(p50(idle))
	t.Logf("TTFT p50: idle %v (%d requests), during training %v (%d requests): %.2fx", p50(idle), len(idle), p50(busy), len(busy), ratio)
	if m.Reliability < 0.95 || m.Locality == nil || *m.Locality < 0.9 {
		t.Errorf("reliability %.3f, locality %s: want ≥ 0.95 and ≥ 0.9", m.Reliability, opt(m.Locality))
	}
	if len(busy) < 20 || ratio > 2 {
		t.Errorf("TTFT p50 during training %.2fx idle over %d requests: want ≤ 2x over at least 20", ratio, len(busy))
	}
	if !strings.Contains(e.log.String(), "edits trained") {
		t.Error("no \"edits trained\" in the log")
	}
}
