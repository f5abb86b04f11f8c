package engine

import "github.com/edged/edged/accel"

// Hooks are the seams through which token pruning (package prune) and
// adaptation (package adapt) reach into the forward pass without the
// engine knowing about either. Every hook is optional; a nil hook costs
// nothing. Observer may also implement ScoreObserver, HiddenObserver or
// KeyObserver.
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

// ScoreObserver is an AttentionObserver that may ask, per layer, for the
// pre-softmax scores q·k·scale instead of the probabilities: Observe then
// gets the scores, same layout, masked entries zero (see
// accel.AttnSeq.Scores). LeMo's informativeness is ReLU of them, which the
// probabilities cannot give back (softmax drops each row's offset).
type ScoreObserver interface {
	AttentionObserver
	// WantsScores reports whether Observe at layer, when Wants(layer),
	// gets scores rather than probabilities.
	WantsScores(layer int) bool
}

// HiddenObserver is an AttentionObserver that also sees the residual
// stream entering the layers it asks for (a pattern predictor estimates
// attention from it before attention runs). Without it the engine reads
// nothing back.
type HiddenObserver interface {
	AttentionObserver
	// WantsHidden reports whether layer's input should be read back.
	WantsHidden(layer int) bool
	// ObserveHidden gets the batch's rows entering layer and their
	// residual stream, [row][NEmbd]. The slice is reused after the call.
	ObserveHidden(layer int, rows []Row, x []float32)
}

// KeyObserver is an AttentionObserver that also gets the key rows of the
// batch at the layers it asks for, before RoPE (Zero-TPrune's similarity
// stage compares them by cosine). Without it the engine reads nothing
// back.
type KeyObserver interface {
	AttentionObserver
	// WantsKeys reports whether layer's keys should be read back.
	WantsKeys(layer int) bool
	// ObserveKeys gets the batch's rows at layer and their keys,
	// [row][KVDim]. The slice is reused after the call.
	ObserveKeys(layer int, rows []Row, k []float32)
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
