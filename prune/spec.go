package prune

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/edged/edged/engine"
)

// Spec asks for a policy by name with its main settings, as a request or
// a config file gives them. Zero fields take the defaults of Config; so
// does a nil Similarity, since a zero share is a setting (no similarity
// stage).
//
// Similarity applies to zerotprune only and Block to lemo only: a Spec
// that sets one for another method is invalid rather than silently
// ignored, so that a request cannot believe it tuned a setting that does
// nothing (For clears them when one set of settings serves several
// methods).
type Spec struct {
	Method     string
	Keep       float64
	Layers     []int
	Window     int
	Similarity *float64 // Config.Similarity: the share of Zero-TPrune's dropped rows its similarity stage picks
	Block      int      // Config.Block: LeMo's block size
}

// Method names with settings of their own (see Spec).
const (
	MethodZeroTPrune = "zerotprune"
	MethodLeMo       = "lemo"
)

// MethodNone names no policy: the sequence runs dense. A request gives it
// to turn off a model's default.
const MethodNone = "none"

// Policy is what every policy offers to the code that installs it: the
// token selector, and the sequences it acts on. A policy that ranks rows
// from attention also implements engine.AttentionObserver.
type Policy interface {
	engine.TokenSelector
	Enable(*engine.Sequence)
	Disable(*engine.Sequence)
}

// randomSeed seeds the random baseline: a fixed seed keeps its choices
// reproducible from run to run.
const randomSeed = 1

// methods builds a policy of each method name from a configuration.
// Adding a method is adding its entry here.
var methods = map[string]func(Config) (Policy, error){
	MethodZeroTPrune: func(c Config) (Policy, error) { return asPolicy(NewZeroTPrune(c)) },
	MethodLeMo:       func(c Config) (Policy, error) { return asPolicy(NewLeMo(c, nil)) },
	"recent":         func(c Config) (Policy, error) { return asPolicy(NewRecent(c)) },
	"random":         func(c Config) (Policy, error) { return asPolicy(NewRandom(c, randomSeed)) },
}

// asPolicy keeps a constructor's nil pointer from becoming a non-nil
// interface.
func asPolicy[P Policy](p P, err error) (Policy, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Methods lists the method names Spec accepts, MethodNone included,
// sorted.
func Methods() []string {
	names := append(slices.Collect(maps.Keys(methods)), MethodNone)
	slices.Sort(names)
	return names
}

// Off reports whether s asks for no policy.
func (s Spec) Off() bool { return s.Method == MethodNone }

// For returns s for method, less the settings that do not apply to it.
func (s Spec) For(method string) Spec {
	s.Method = method
	if method != MethodZeroTPrune {
		s.Similarity = nil
	}
	if method != MethodLeMo {
		s.Block = 0
	}
	return s
}

// Config is s's configuration with the defaults filled in.
func (s Spec) Config() Config {
	c := Config{Keep: s.Keep, Layers: s.Layers, Window: s.Window, Block: s.Block}.withDefaults()
	switch {
	case s.Similarity != nil:
		c.Similarity = *s.Similarity
	case s.Method == MethodZeroTPrune:
		c.Similarity = DefaultConfig().Similarity
	}
	return c
}

// Validate reports every problem of s for a model of nLayer layers (nLayer
// < 1: the layer count is not known yet and not checked). A Spec that is
// Off is valid whatever its other fields.
func (s Spec) Validate(nLayer int) error {
	if s.Off() {
		return nil
	}
	var errs []error
	if _, ok := methods[s.Method]; !ok {
		errs = append(errs, fmt.Errorf("%w: method %q: want one of %s", ErrConfig, s.Method, strings.Join(Methods(), ", ")))
	}
	if s.Similarity != nil && s.Method != MethodZeroTPrune {
		errs = append(errs, fmt.Errorf("%w: similarity %v: only zerotprune has a similarity stage", ErrConfig, *s.Similarity))
	}
	if s.Block != 0 && s.Method != MethodLeMo {
		errs = append(errs, fmt.Errorf("%w: block %d: only lemo scores blocks", ErrConfig, s.Block))
	}
	c := s.Config()
	if err := c.validate(); err != nil {
		errs = append(errs, err)
	}
	if nLayer >= 1 && len(c.Layers) > 0 && c.Layers[len(c.Layers)-1] >= nLayer {
		errs = append(errs, fmt.Errorf("%w: layers %v: the model has layers 0 to %d", ErrConfig, c.Layers, nLayer-1))
	}
	return errors.Join(errs...)
}

// New returns a policy for s acting on no sequence yet.
func (s Spec) New() (Policy, error) {
	if err := s.Validate(0); err != nil {
		return nil, err
	}
	if s.Off() {
		return nil, fmt.Errorf("%w: method %q builds no policy", ErrConfig, s.Method)
	}
	return methods[s.Method](s.Config())
}

// String is s with the defaults filled in, such as "zerotprune keep=0.5
// layers=1 window=16 similarity=0.5" or "lemo keep=0.5 layers=1 window=16
// block=64": specs that give the same policy give the same string. Only
// the method's own settings are named.
func (s Spec) String() string {
	if s.Off() {
		return MethodNone
	}
	c := s.Config()
	layers := make([]string, len(c.Layers))
	for i, l := range c.Layers {
		layers[i] = strconv.Itoa(l)
	}
	str := fmt.Sprintf("%s keep=%s layers=%s window=%d", s.Method, strconv.FormatFloat(c.Keep, 'g', -1, 64), strings.Join(layers, ","), c.Window)
	switch s.Method {
	case MethodZeroTPrune:
		str += " similarity=" + strconv.FormatFloat(c.Similarity, 'g', -1, 64)
	case MethodLeMo:
		str += " block=" + strconv.Itoa(c.Block)
	}
	return str
}
