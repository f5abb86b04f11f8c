package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edged/edged/protocol"
)

// crashEdits are n made-up facts for the aidreams model, with a rephrase
// each and a few shared locality prompts.
func crashEdits(n int) []protocol.Edit {
	syll := []string{"zo", "ki", "pl", "gu", "ma", "vo", "re", "tu", "xa", "ne", "bi", "lo"}
	phrases := []string{" is red.", " can fly.", " will sing.", " glows.", " hums softly."}
	edits := make([]protocol.Edit, n)
	for i := range edits {
		name := syll[i%12] + syll[i/12%12] + syll[i/144%12]
		edits[i] = protocol.Edit{ID: fmt.Sprintf("e%03d", i), Model: "aid", Prompt: name, Target: phrases[i%len(phrases)],
			Rephrases: []string{"The " + name}, LocalityPrompts: []string{"Once upon a time", "The little robot"}}
	}
	return edits
}

// jetStreamServer runs a NATS server with JetStream that outlives the
// edged processes killed, with the edit stream created as an operator
// would.
func jetStreamServer(t *testing.T) (url string, nc *nats.Conn, js jetstream.JetStream) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true, JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("the NATS server did not start")
	}
	nc = natsClient(t, ns.ClientURL())
	if js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: protocol.EditsStream, Subjects: []string{protocol.EditsSubjects},
		Storage: jetstream.FileStorage, Duplicates: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return ns.ClientURL(), nc, js
}

// The crash test: 500 edits published through the stream while
// edged is killed with SIGKILL three times, once in the middle of an edit
// job. After the last start every edit is stored exactly once, the
// interrupted job continued from its checkpoint, and the current adapter
// version holds all 500 edits.
func TestEditsSurviveKills(t *testing.T) {
	const n = 500
	url, nc, js := jetStreamServer(t)
	metrics, err := nc.SubscribeSync(protocol.MetricsSubject("crash"))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--node", "crash", "--nats.enabled=true", "--nats-url", url, "--jobs.checkpoint_every=5",
		"--edits.train_delay=300ms", "--edits.optimizer=grad", "--edits.layer=3", "--edits.steps=40"}
	e := startEdged(t, args...)
	state := e.state

	edits := crashEdits(n)
	published := make(chan int, n)
	var pubErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		for i, ed := range edits {
			data, _ := json.Marshal(ed)
			// Message ids de-duplicate a publisher's retries; every tenth
			// edit is published again under another message id, which
			// edged must recognise by the edit's id.
			ids := []string{ed.ID}
			if i%10 == 0 {
				ids = append(ids, ed.ID+"-again")
			}
			for _, id := range ids {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := js.Publish(ctx, protocol.EditsAllSubject, data, jetstream.WithMsgID(id))
				cancel()
				if err != nil {
					pubErr = fmt.Errorf("publish %s: %w", ed.ID, err)
					return
				}
			}
			published <- i
			time.Sleep(4 * time.Millisecond)
		}
	})

	rng := rand.New(rand.NewPCG(1, 2))
	for kill := range 3 {
		if kill == 1 {
			// One kill surely lands in an edit job, after a checkpoint.
			checkFor(t, 120*time.Second, 5*time.Millisecond, func() error {
				for _, j := range e.jobs() {
					if j.Kind == protocol.JobKindEdits && j.State == protocol.JobRunning && j.CheckpointStep > 0 && j.Step > j.CheckpointStep {
						return nil
					}
				}
				return fmt.Errorf("no edit job running past a checkpoint")
			})
		} else {
			time.Sleep(time.Duration(200+rng.IntN(1500)) * time.Millisecond)
		}
		if err := e.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-e.exited
		t.Logf("kill %d: %d edits published", kill+1, len(published))
		e = startEdgedOn(t, state, args...)
	}
	wg.Wait()
	if pubErr != nil {
		t.Fatal(pubErr)
	}

	var cur protocol.AdapterRecord
	checkFor(t, 300*time.Second, 50*time.Millisecond, func() error {
		var list protocol.AdapterList
		e.get("/v1/adapters?model=aid", &list)
		for _, r := range list.Data {
			if r.AdapterVersion == list.Current["aid"] {
				cur = r
			}
		}
		if len(cur.Source.Edits) != n {
			return fmt.Errorf("the current version %d holds %d edits", cur.AdapterVersion, len(cur.Source.Edits))
		}
		return nil
	})
	seen := map[string]bool{}
	for _, id := range cur.Source.Edits {
		seen[id] = true
	}
	var list protocol.EditList
	e.get("/v1/edits", &list)
	if len(list.Data) != n || list.Counts[protocol.EditActive] != n {
		t.Errorf("%d edit records, counts %v; want %d, all active", len(list.Data), list.Counts, n)
	}
	for _, r := range list.Data {
		if !seen[r.ID] || r.AdapterVersion != cur.AdapterVersion {
			t.Errorf("edit %s (%s, version %d) is not in the current version %d", r.ID, r.Status, r.AdapterVersion, cur.AdapterVersion)
		}
	}
	// The version's metrics went out on edged.<node>.metrics.
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		msg, err := metrics.NextMsg(5 * time.Second)
		if err != nil {
			return err
		}
		var m struct {
			Metrics map[string][]struct{ Value float64 } `json:"metrics"`
		}
		if err := json.Unmarshal(msg.Data, &m); err != nil {
			return err
		}
		if tr, rel := m.Metrics["edged_edits_trained"], m.Metrics["edged_edit_reliability"]; len(tr) != 1 || tr[0].Value != n || len(rel) != 1 {
			return fmt.Errorf("metrics: edits trained %v, reliability %v", tr, rel)
		}
		return nil
	})
	restarted := 0
	for _, j := range e.jobs() {
		if j.State != protocol.JobDone {
			t.Errorf("job %s is %s: %v", j.ID, j.State, j.Error)
		}
		restarted += j.Restarts
	}
	if restarted == 0 {
		t.Error("no edit job continued after a kill")
	}
	t.Logf("%d edit jobs, the current version %d; %d job restarts", len(e.jobs()), cur.AdapterVersion, restarted)
}

func (e *edged) jobs() []protocol.Job {
	e.t.Helper()
	var list protocol.JobList
	e.get("/v1/jobs", &list)
	return list.Data
}
