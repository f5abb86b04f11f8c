package tests

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// loraFile writes a LoRA of the aidreams fixture whose B stands in for
// training, so that it changes the greedy text.
func loraFile(t *testing.T) string {
	t.Helper()
	f, err := model.Open(aidreams(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := model.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := adapt.NewLoRA(m, adapt.LoRAOptions{Rank: 4, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lo.Pairs {
		for i := range p.B {
			p.B[i] = 0.3 * float32(math.Sin(float64(i)+1))
		}
	}
	out := filepath.Join(t.TempDir(), "lora.gguf")
	if err := adapt.SaveLoRA(out, lo, quant.F32); err != nil {
		t.Fatal(err)
	}
	return out
}

// The acceptance with the real binaries: a second edged joined to
// the first's NATS server pulls the adapter version the first published
// (edgectl adapters add, adapters publish, edits pull) and generates the
// same greedy text; pulling again changes nothing.
func TestFleetPull(t *testing.T) {
	a, url := startNATSEdged(t, "fa", "")
	b, _ := startNATSEdged(t, "fb", url)
	ctl := func(e *edged, args ...string) string {
		t.Helper()
		out, errOut, err := edgectl(t, nil, append(args, "--socket", e.socket)...)
		if err != nil {
			t.Fatalf("edgectl %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out
	}
	ctl(a, "adapters", "add", "--model", "aid", loraFile(t))
	if out := ctl(a, "adapters", "publish"); !strings.Contains(out, "model aid: adapter version 1 (lora, ") {
		t.Errorf("publish: %q", out)
	}
	if out := ctl(b, "edits", "pull"); !strings.Contains(out, "pulled from node fa (its version 1) is current") {
		t.Errorf("pull: %q", out)
	}
	changed := false
	for _, prompt := range []string{"The robot", "Once upon a time", "The support line is"} {
		gen := func(e *edged, extra ...string) string {
			return ctl(e, append([]string{"generate", "--model", "aid", "--prompt", prompt, "-n", "24", "--temp", "0"}, extra...)...)
		}
		want, got := gen(a), gen(b)
		if got != want {
			t.Errorf("%q: the puller generates %q, the publisher %q", prompt, got, want)
		}
		changed = changed || gen(b, "--adapter-version", "-1") != got
	}
	if !changed {
		t.Error("the adapter changes no text: the comparison means nothing")
	}
	if out := ctl(b, "edits", "pull"); !strings.Contains(out, "adapter version 1 holds the published adapter") {
		t.Errorf("second pull: %q", out)
	}
}
