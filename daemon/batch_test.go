package daemon

import (
	"context"
	"testing"
	"time"
)

// A step holds a decode row of every running sequence first, then prompt
// rows, shortest remaining prompt first, PrefillChunk of them at most: a
// long prompt never starves running streams or a short prompt behind it.
func TestBuildBatchFairness(t *testing.T) {
	o := testOptions(t)
	so := o.Scheduler
	so.PrefillChunk = 10
	inst, err := openInstance("aid", o.Specs[0], o.Specs[0].Path, o.Engine, so, newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer inst.file.Close()
	mk := func(promptLen int) *seqState {
		j := &job{ctx: context.Background(), out: newOutput(), enqueued: time.Now(), prompt: make([]int32, promptLen), maxTokens: 5}
		for i := range j.prompt {
			j.prompt[i] = 1
		}
		st := inst.start(j)
		if st == nil {
			t.Fatal("start failed")
		}
		t.Cleanup(st.seq.Free)
		return st
	}
	long, running, short := mk(100), mk(3), mk(4)
	running.decode, running.fed, running.next = true, 3, 7
	batch, owners := inst.buildBatch([]*seqState{long, running, short}, nil, nil)
	if len(batch) != 1+10 {
		t.Fatalf("batch of %d rows, want 1 decode row and 10 prompt rows", len(batch))
	}
	if batch[0].Seq != running.seq || batch[0].Token != 7 || !batch[0].Logits {
		t.Errorf("first row %+v is not the running sequence's decode row", batch[0])
	}
	for i := 1; i <= 4; i++ {
		if batch[i].Seq != short.seq {
			t.Fatalf("row %d belongs to another sequence than the short prompt", i)
		}
	}
	if !batch[4].Logits || short.fed != 4 {
		t.Errorf("short prompt not completed in one step (fed %d)", short.fed)
	}
	if long.fed != 6 || batch[10].Seq != long.seq || batch[10].Logits {
		t.Errorf("long prompt got %d rows, want the remaining 6 without logits", long.fed)
	}
	if len(owners) != 2 || owners[0] != running || owners[1] != short {
		t.Errorf("logit owners %v", owners)
	}
}
