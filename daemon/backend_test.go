package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/edged/edged/protocol"
)

// loadReporting loads "aid" on the backend named and returns its status,
// the metrics text and the model_loaded event message.
func loadReporting(t *testing.T, name string) (protocol.ModelStatus, string, string) {
	t.Helper()
	o := testOptions(t)
	o.Engine.Backend = name
	s := startDaemon(t, o).Service()
	events := make(chan Event, 16) // OnEvent's fn must not block
	s.OnEvent(func(ev Event) { events <- ev })
	if _, err := s.Load(context.Background(), &protocol.LoadRequest{Model: "aid"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var metrics strings.Builder
	s.WriteMetrics(&metrics)
	for { // the event is sent before Load returns
		select {
		case ev := <-events:
			if ev.Kind == "model_loaded" {
				return st.Models[0], metrics.String(), ev.Msg
			}
		default:
			t.Fatal("no model_loaded event")
		}
	}
}

func backendInfo(model, backend string) string {
	return "edged_model_backend_info" + labelSet([]string{"model", "backend"}, []string{model, backend}) + " 1\n"
}

func TestBackendReported(t *testing.T) {
	ms, metrics, msg := loadReporting(t, "cpu")
	if ms.Backend != "cpu (1 threads)" || msg != "backend cpu (1 threads)" {
		t.Fatalf("status backend %q, event %q", ms.Backend, msg)
	}
	for _, want := range []string{"# TYPE edged_model_backend_info gauge\n", backendInfo("aid", ms.Backend)} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// "auto" takes a GPU when one opens; without one (as on the CI machines)
// it falls back to the CPU, the model loads, and the event says why.
func TestBackendAutoFallsBack(t *testing.T) {
	ms, metrics, msg := loadReporting(t, "auto")
	if !strings.HasPrefix(msg, "backend "+ms.Backend) || !strings.Contains(metrics, backendInfo("aid", ms.Backend)) {
		t.Fatalf("status backend %q, event %q, metrics:\n%s", ms.Backend, msg, metrics)
	}
	if strings.HasPrefix(ms.Backend, "cpu") && !strings.Contains(msg, ": not available: ") {
		t.Errorf("fell back to %q without saying why: %q", ms.Backend, msg)
	}
	t.Logf("auto: %s", msg)
}

// A GPU named outright that does not open fails the load and says why.
// metal is built into no binary yet, so it never opens.
func TestBackendNamedGPUFails(t *testing.T) {
	o := testOptions(t)
	o.Engine.Backend = "metal"
	s := startDaemon(t, o).Service()
	_, err := s.Load(context.Background(), &protocol.LoadRequest{Model: "aid"})
	if protocol.CodeOf(err) != protocol.CodeModelLoad || !strings.Contains(err.Error(), "model aid: backend metal: not available") {
		t.Fatalf("load on metal: %v", err)
	}
	st, _ := s.Status(context.Background())
	if ms := st.Models[0]; ms.State != protocol.StateFailed || ms.Backend != "" {
		t.Fatalf("status %+v", ms)
	}
	var metrics strings.Builder
	s.WriteMetrics(&metrics)
	if strings.Contains(metrics.String(), "edged_model_backend_info{") {
		t.Errorf("a model that did not load has a backend:\n%s", metrics.String())
	}
}
