package main

import (
	"flag"
	"fmt"
	"strconv"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
)

// adapterFlags are the --adapter and --adapter-scale flags of the commands
// that run a model.
type adapterFlags struct {
	files  stringList
	scales scaleList
}

func (a *adapterFlags) register(fs *flag.FlagSet) {
	fs.Var(&a.files, "adapter", "LoRA or prefix adapter `file` (GGUF; repeatable)")
	fs.Var(&a.scales, "adapter-scale", "`scale` of the LoRA adapter in the same position (repeatable; default 1)")
}

// scaleList is a repeatable --adapter-scale flag.
type scaleList []float32

func (s *scaleList) String() string { return fmt.Sprint([]float32(*s)) }

func (s *scaleList) Set(v string) error {
	f, err := strconv.ParseFloat(v, 32)
	if err != nil {
		return fmt.Errorf("%q is not a number", v)
	}
	*s = append(*s, float32(f))
	return nil
}

// pair returns the scales of n adapters: those given, in order, then 1.
func (s scaleList) pair(n int) ([]float32, error) {
	if len(s) > n {
		return nil, fmt.Errorf("%d --adapter-scale for %d --adapter", len(s), n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = 1
		if i < len(s) {
			out[i] = s[i]
		}
	}
	return out, nil
}

// adapters are the loaded adapters that every new sequence gets.
type adapters struct {
	set    *adapt.Set // nil without adapters
	loras  []adapt.Applied
	prefix *adapt.Prefix
}

// open opens the model of ef with the adapters loaded and checked against
// it. With adapters the engine gets an adapt.Set as its Hooks.Delta (a file's
// kind is known only once it is read against the model); without, it runs
// with no hooks at all.
func (a *adapterFlags) open(ef *engineFlags) (*loaded, *adapters, error) {
	scales, err := a.scales.pair(len(a.files))
	if err != nil {
		return nil, nil, err
	}
	ad := &adapters{}
	var hooks engine.Hooks
	if len(a.files) > 0 {
		ad.set = adapt.NewSet()
		hooks.Delta = ad.set
	}
	l, err := ef.open(hooks)
	if err != nil {
		return nil, nil, err
	}
	if err := ad.load(l, a.files, scales); err != nil {
		l.Close()
		return nil, nil, err
	}
	return l, ad, nil
}

func (ad *adapters) load(l *loaded, files []string, scales []float32) error {
	for i, path := range files {
		a, err := adapt.Load(path, l.model)
		if err != nil {
			return fmt.Errorf("--adapter: %w", err)
		}
		switch a := a.(type) {
		case *adapt.LoRA:
			ad.loras = append(ad.loras, adapt.Applied{LoRA: a, Scale: scales[i]})
		case *adapt.Prefix:
			if scales[i] != 1 {
				return fmt.Errorf("--adapter %s: a prefix adapter cannot be scaled (--adapter-scale %g)", path, scales[i])
			}
			if ad.prefix != nil {
				return fmt.Errorf("--adapter %s: a sequence takes one prefix adapter, and another is given", path)
			}
			ad.prefix = a
		}
	}
	return nil
}

// newSequence returns a sequence of e with the adapters attached and the
// function that frees it.
func (ad *adapters) newSequence(e *engine.Engine) (*engine.Sequence, func(), error) {
	var p engine.PrefixProvider
	if ad.prefix != nil {
		p = ad.prefix
	}
	seq, err := e.NewSequence(p)
	if err != nil {
		return nil, nil, err
	}
	if len(ad.loras) == 0 {
		return seq, seq.Free, nil
	}
	ad.set.Use(seq, ad.loras...)
	return seq, func() { ad.set.Forget(seq); seq.Free() }, nil
}
