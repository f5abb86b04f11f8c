// Package prune holds token-sparsity policies for long prompts. A policy
// watches what the attention kernel already produced (an
// engine.AttentionObserver) and drops token rows after chosen layers (an
// engine.TokenSelector), so that later layers compute on, and cache K/V
// for, fewer rows; kept rows keep their RoPE positions.
//
// A policy is installed once, in engine.Options.Hooks, and acts only on
// the sequences it was told about with Enable: every other sequence of the
// same engine, in the same batch, runs dense and is unaffected.
//
// A policy prunes within one forward pass: a sequence's rows are ranked
// against the other rows of the same pass. A prompt longer than the
// engine's BatchSize is computed in slices, and each slice is pruned on its
// own (its last Window rows protected); cached rows of earlier passes are
// never dropped.
package prune

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Config configures a policy. DefaultConfig gives the defaults; zero
// fields of a Config passed to a constructor take them.
type Config struct {
	// Keep is the share, in (0, 1], of a sequence's rows of one forward
	// pass that remain after the last pruning layer. With several layers
	// the share shrinks geometrically: after the i-th of m layers,
	// ⌈n·Keep^(i/m)⌉ rows remain (never fewer than the protected rows).
	Keep float64
	// Layers are the layers after which rows are dropped, increasing.
	// Layer l's attention decides what is dropped after layer l.
	Layers []int
	// Window is how many of the last rows of a sequence in a forward pass
	// are always kept; Zero-TPrune seeds its ranking from them.
	Window int
	// Iterations of Zero-TPrune's weighted PageRank (s ← Aᵀs).
	Iterations int
	// HeadVarRatio leaves out of Zero-TPrune's head combination the heads
	// whose score variance is more than HeadVarRatio times, or less than
	// 1/HeadVarRatio of, the median head's.
	HeadVarRatio float64
	// Similarity is the share, in [0, 1], of the rows Zero-TPrune drops
	// that its similarity stage picks (see ZeroTPrune); 0 leaves the stage
	// out. A zero here is that choice, not a field to default: DefaultConfig
	// (and Spec) turn the stage on, a zero Config leaves it off.
	Similarity float64
	// Block is LeMo's block size: rows are scored, and dropped, in blocks
	// of Block consecutive positions.
	Block int
}

// Defaults.
const (
	DefaultKeep         = 0.5
	DefaultWindow       = 16
	DefaultIterations   = 2
	DefaultHeadVarRatio = 16
	DefaultBlock        = 64 // LeMo's (ATC 2025) block size
	// DefaultSimilarity turns Zero-TPrune's similarity stage on: on
	// stories260K it lowered the NLL increase at keep 0.9 and 0.7 and
	// changed nothing at 0.5 (BENCHMARKS.md, issue 7).
	DefaultSimilarity = 0.5
)

// DefaultConfig returns the default configuration: keep half the rows
// after layer 1, protect the last 16 rows, two PageRank iterations, the
// similarity stage on.
func DefaultConfig() Config {
	return Config{
		Keep:         DefaultKeep,
		Layers:       []int{1},
		Window:       DefaultWindow,
		Iterations:   DefaultIterations,
		HeadVarRatio: DefaultHeadVarRatio,
		Similarity:   DefaultSimilarity,
		Block:        DefaultBlock,
	}
}

// withDefaults fills zero fields but Similarity from DefaultConfig and
// copies Layers.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Keep == 0 {
		c.Keep = d.Keep
	}
	if c.Layers == nil {
		c.Layers = d.Layers
	}
	c.Layers = slices.Clone(c.Layers)
	if c.Block == 0 {
		c.Block = d.Block
	}
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.Iterations == 0 {
		c.Iterations = d.Iterations
	}
	if c.HeadVarRatio == 0 {
		c.HeadVarRatio = d.HeadVarRatio
	}
	return c
}

// validate reports every invalid field at once.
func (c Config) validate() error {
	var errs []error
	if !(c.Keep > 0 && c.Keep <= 1) {
		errs = append(errs, fmt.Errorf("%w: keep %v outside (0, 1]", ErrConfig, c.Keep))
	}
	if len(c.Layers) == 0 {
		errs = append(errs, fmt.Errorf("%w: no layers", ErrConfig))
	}
	for i, l := range c.Layers {
		if l < 0 || (i > 0 && l <= c.Layers[i-1]) {
			errs = append(errs, fmt.Errorf("%w: layers %v: want increasing non-negative layers", ErrConfig, c.Layers))
			break
		}
	}
	if c.Window < 1 {
		errs = append(errs, fmt.Errorf("%w: window %d: want at least 1", ErrConfig, c.Window))
	}
	if c.Block < 1 {
		errs = append(errs, fmt.Errorf("%w: block %d: want at least 1", ErrConfig, c.Block))
	}
	if !(c.Similarity >= 0 && c.Similarity <= 1) {
		errs = append(errs, fmt.Errorf("%w: similarity share %v outside [0, 1]", ErrConfig, c.Similarity))
	}
	if c.Iterations < 1 {
		errs = append(errs, fmt.Errorf("%w: iterations %d: want at least 1", ErrConfig, c.Iterations))
	}
	if !(c.HeadVarRatio >= 1) || math.IsInf(c.HeadVarRatio, 0) {
		errs = append(errs, fmt.Errorf("%w: head variance ratio %v: want a finite value ≥ 1", ErrConfig, c.HeadVarRatio))
	}
	return errors.Join(errs...)
}

// stage returns the index of layer among c.Layers, or -1.
func (c *Config) stage(layer int) int {
	i, ok := slices.BinarySearch(c.Layers, layer)
	if !ok {
		return -1
	}
	return i
}

// target is how many of n0 rows remain after pruning stage i.
func (c *Config) target(n0, stage int) int {
	share := math.Pow(c.Keep, float64(stage+1)/float64(len(c.Layers)))
	return int(math.Ceil(float64(n0)*share - 1e-9))
}
