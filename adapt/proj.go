package adapt

import (
	"fmt"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
)

// projNames are the GGUF tensor names (without "blk.N." and ".weight") of
// the projections, in engine.Proj order.
var projNames = [...]string{
	engine.ProjQ:    "attn_q",
	engine.ProjK:    "attn_k",
	engine.ProjV:    "attn_v",
	engine.ProjO:    "attn_output",
	engine.ProjGate: "ffn_gate",
	engine.ProjUp:   "ffn_up",
	engine.ProjDown: "ffn_down",
}

// ParseProj maps a short name (q, k, v, o, gate, up, down) or a GGUF name
// (attn_q, …) to a projection.
func ParseProj(s string) (engine.Proj, error) {
	short := map[string]engine.Proj{"q": engine.ProjQ, "k": engine.ProjK, "v": engine.ProjV, "o": engine.ProjO,
		"gate": engine.ProjGate, "up": engine.ProjUp, "down": engine.ProjDown}
	if p, ok := short[s]; ok {
		return p, nil
	}
	for p, n := range projNames {
		if n == s {
			return engine.Proj(p), nil
		}
	}
	return 0, fmt.Errorf("adapt: unknown projection %q (want q, k, v, o, gate, up or down)", s)
}

func projName(p engine.Proj) string {
	if int(p) < 0 || int(p) >= len(projNames) {
		return fmt.Sprintf("proj(%d)", int(p))
	}
	return projNames[p]
}

// baseWeight returns the base model's tensor of projection p of layer l,
// or nil when the layer or projection does not exist.
func baseWeight(m *model.Model, l int, p engine.Proj) *model.Tensor {
	if l < 0 || l >= len(m.Layers) {
		return nil
	}
	ly := &m.Layers[l]
	switch p {
	case engine.ProjQ:
		return ly.Wq
	case engine.ProjK:
		return ly.Wk
	case engine.ProjV:
		return ly.Wv
	case engine.ProjO:
		return ly.Wo
	case engine.ProjGate:
		return ly.Gate
	case engine.ProjUp:
		return ly.Up
	case engine.ProjDown:
		return ly.Down
	}
	return nil
}

func engineProj(i int) engine.Proj { return engine.Proj(i) }
