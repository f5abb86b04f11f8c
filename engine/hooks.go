package engine

import "github.com/edged/edged/accel"

// Hooks are the seams through which token pruning (package prune) and
// adaptation (package adapt) reach into the forward pass without the
// engine knowing about either. Every hook is optional; a nil hook costs
// nothing.
type Hooks struct {
	Observer AttentionObserver
	Selector TokenSelector
	Delta    DeltaProvider
}

// Row describes one row of a batch as a hook sees it.
type Row struct {
	Seq *Sequence
	Pos int32
	// Logits marks rows whose logits the caller asked for; a selector must
	// keep them.
	Logits bool
}

// AttentionObserver receives the attention probabilities of the layers it
// asks for, as the attention kernel produced them.
type AttentionObserver interface {
	// Wants reports whether layer's probabilities should be collected.
	Wants(layer int) bool
	// Observe gets, for one sequence's rows of the batch, the probabilities
	// laid out [head][row][past+rows] (see accel.AttnSeq.Probs). The slice
	// is reused after the call returns.
	Observe(layer int, seq *Sequence, past, rows, heads int, probs []float32)
}

// TokenSelector drops token rows after a layer: later layers compute on,
// and cache K/V for, the kept rows only, which keep their positions.
type TokenSelector interface {
	// Select is called after layer with the batch's rows and returns the
	// indices of the rows to keep in increasing order, or nil to keep all.
	// Rows with Logits set must be kept.
	Select(layer int, rows []Row) []int32
}

// Proj names the projections a DeltaProvider may adjust.
type Proj int

// The projections of one layer.
const (
	ProjQ Proj = iota
	ProjK
	ProjV
	ProjO
	ProjGate
	ProjUp
	ProjDown
)

// DeltaProvider adds a low-rank or dense correction to a projection's
// output: y[r] += Δ(layer, proj, row r's sequence) · x[r]. LoRA adapters and
// MeZO's perturbations arrive through it. It uses the backend for its own
// arithmetic so that it runs where the activations live.
type DeltaProvider interface {
	Apply(b accel.Backend, layer int, p Proj, x, y accel.Buffer, rows []Row) error
}

// PrefixProvider supplies per-layer K/V rows that are placed in a new
// sequence's cache before its first token (prefix tuning). Positions of the
// sequence's own tokens are the caller's to choose (usually after the
// prefix).
type PrefixProvider interface {
	// PrefixLen is the number of prefix rows.
	PrefixLen() int
	// Prefix returns layer's keys and values, each PrefixLen × KVDim,
	// keys already rotated for their positions.
	Prefix(layer int) (k, v []float32)
}
