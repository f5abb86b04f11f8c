package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/edged/edged/accel/backend"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
)

// engineFlags are the flags of every command that runs a model.
type engineFlags struct {
	model   string
	threads int
	context int
	kvType  string
	backend backendFlags
}

func (f *engineFlags) register(fs *flag.FlagSet, defaultKV string) {
	fs.StringVar(&f.model, "model", "", "GGUF model `file` (required)")
	fs.StringVar(&f.model, "m", "", "shorthand for --model")
	fs.IntVar(&f.threads, "t", 0, "CPU threads (0: one per core)")
	fs.IntVar(&f.context, "c", 0, fmt.Sprintf("context length in tokens (0: the model's, at most %d)", engine.DefaultContext))
	fs.StringVar(&f.kvType, "kv-type", defaultKV, "KV cache storage: f16 or f32")
	f.backend.register(fs)
}

// backendFlags choose where a model runs.
type backendFlags struct {
	name      string
	gpuLayers int
}

func (f *backendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "backend", "auto", "compute backend: "+strings.Join(backend.Names, ", ")+" (auto: a GPU when one opens, else the CPU)")
	fs.IntVar(&f.gpuLayers, "gpu-layers", -1, "layers on the GPU, the last ones and the output; the rest run on the CPU (-1: all)")
	fs.IntVar(&f.gpuLayers, "ngl", -1, "shorthand for --gpu-layers")
}

// newEngine places m on the chosen backend (and the CPU, for the layers
// --gpu-layers leaves there) and builds its engine. The engine owns the
// backends: engine.Close closes them.
func (f *backendFlags) newEngine(m *model.Model, threads int, opts engine.Options) (*engine.Engine, error) {
	c, err := backend.Open(f.name, backend.Options{Threads: threads})
	if err != nil {
		return nil, err
	}
	p := c.Place(f.gpuLayers, m.Config.NLayer, threads)
	opts.Offload, opts.OffloadLayers = p.Offload, p.OffloadLayers
	e, err := engine.New(m, p.Backend, opts)
	if err != nil {
		p.Close()
		return nil, err
	}
	return e, nil
}

// loaded is an open model ready to run.
type loaded struct {
	path   string
	file   *model.File
	model  *model.Model
	engine *engine.Engine
}

// tokenizer loads the model's tokenizer. It is loaded only when text is to
// be tokenized, so that a model whose tokenizer family is not supported
// still runs on token ids.
func (l *loaded) tokenizer() (*model.Tokenizer, error) {
	tok, err := model.NewTokenizer(l.file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.path, err)
	}
	return tok, nil
}

func (l *loaded) Close() error {
	l.engine.Close()
	return l.file.Close()
}

// open loads the model and an engine on the CPU with hooks installed (the
// zero Hooks for plain inference).
func (f *engineFlags) open(hooks engine.Hooks) (*loaded, error) {
	cache, err := engine.ParseCacheType(f.kvType)
	if err != nil {
		return nil, err
	}
	file, err := model.Open(f.model)
	if err != nil {
		return nil, err
	}
	l := &loaded{path: f.model, file: file}
	if l.model, err = model.Load(file); err != nil {
		file.Close()
		return nil, fmt.Errorf("%s: %w", f.model, err)
	}
	opts := engine.Options{Context: f.context, Cache: cache, Hooks: hooks}
	if l.engine, err = f.backend.newEngine(l.model, f.threads, opts); err != nil {
		file.Close()
		return nil, fmt.Errorf("%s: %w", f.model, err)
	}
	return l, nil
}
