package daemon

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edged/edged/accel/backend"
	"github.com/edged/edged/accel/cuda"
	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
)

// instance is a loaded model: its file, tokenizer, engine and the
// scheduler goroutine that owns the engine. Only run touches the engine
// and the sequences.
type instance struct {
	name   string
	spec   ModelSpec
	file   *model.File
	mdl    *model.Model // the weights' views into file, which adapters are checked against
	tok    *model.Tokenizer
	tmpl   *chatTemplate
	eng    *engine.Engine
	ctxLen int   // tokens one sequence holds
	mem    int64 // bytes counted against the memory budget
	kvSeq  int64 // KV cache bytes of one sequence
	kvRow  int64 // KV cache bytes of one token at one layer
	sparse *sparsity
	// set is the engine's delta hook: the LoRA of each sequence that runs
	// with one. adapters holds the adapter versions loaded for this model.
	set      *adapt.Set
	adapters *adapterCache
	// backend is the engine's backend, by its Name(); skipped are the
	// backends "auto" tried before it and why they did not open.
	backend string
	skipped []string

	sched SchedulerOptions // as when loaded
	m     *metrics
	queue chan *job // bounded: full ⇒ busy

	mu     sync.Mutex // guards closed; held while sending on queue
	closed bool
	// closing is closed by close; run exits once the queue and the active
	// sequences are empty.
	closing chan struct{}
	done    chan struct{} // closed when run has exited and freed the model

	// Read by Status; written by run.
	active   atomic.Int32
	kvTokens atomic.Int64
}

// openInstance opens the model file and builds its engine. The caller has
// reserved the memory that estimateMemory reported.
func openInstance(name string, spec ModelSpec, path string, eo EngineOptions, so SchedulerOptions, m *metrics) (*instance, error) {
	f, err := model.Open(path)
	if err != nil {
		return nil, err
	}
	inst, err := buildInstance(name, spec, path, f, eo, so, defaultAdapterCache, m)
	if err != nil {
		f.Close()
		return nil, err
	}
	return inst, nil
}

// buildInstance builds the instance of the model in f; it holds up to
// adapterCache adapter versions loaded.
func buildInstance(name string, spec ModelSpec, path string, f *model.File, eo EngineOptions, so SchedulerOptions, adapterCache int, m *metrics) (*instance, error) {
	mdl, err := model.Load(f)
	if err != nil {
		return nil, err
	}
	tok, err := model.NewTokenizer(f)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	cache, err := engine.ParseCacheType(eo.KVCache)
	if err != nil {
		return nil, err
	}
	ctx := eo.Context
	if spec.Context > 0 {
		ctx = spec.Context
	}
	// The model's default is checked against its layers before anything
	// is allocated: a bad default fails the load, not every request.
	if _, err := resolveSparsity(nil, spec.Sparsity, mdl.Config.NLayer); err != nil {
		return nil, fmt.Errorf("model %s: default %s", name, protocol.AsError(err).Message)
	}
	pred, err := loadPredictor(path, mdl.Config.NEmbd)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", name, err)
	}
	sparse := newSparsity(mdl.Config.NLayer, pred)
	// The delta hook is there from the start: a version committed while
	// the model is loaded is served without reloading it.
	set := adapt.NewSet()
	hooks := engine.Hooks{Observer: sparse, Selector: sparse, Delta: set}
	eng, where, skipped, err := newEngine(mdl, eo, engine.Options{Context: ctx, BatchSize: eo.BatchSize, Cache: cache, Hooks: hooks})
	if err != nil {
		return nil, err
	}
	inst := &instance{
		name: name, spec: spec, file: f, mdl: mdl, tok: tok, eng: eng, sparse: sparse,
		set: set, adapters: newAdapterCache(adapterCache),
		backend: where, skipped: skipped,
		ctxLen:  eng.Options().Context,
		sched:   so,
		m:       m,
		queue:   make(chan *job, so.MaxQueue),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	inst.tmpl = newChatTemplate(f, tok)
	cfg := eng.Config()
	inst.kvSeq = kvBytes(cfg, inst.ctxLen, eo.KVCache)
	inst.kvRow = kvRowBytes(cfg, eo.KVCache)
	inst.mem = fileSize(f) + int64(so.MaxActive)*inst.kvSeq
	return inst, nil
}

// newEngine builds an engine on the backend eo names (and the CPU for the
// layers eo.GPULayers leaves there), and returns where it runs and the
// backends passed over on the way. The engine owns the backend from then
// on: run closes it when the model is freed.
func newEngine(mdl *model.Model, eo EngineOptions, opts engine.Options) (*engine.Engine, string, []string, error) {
	c, err := backend.Open(eo.Backend, backend.Options{Threads: eo.Threads, CUDA: cuda.Config{LibDir: eo.GPULibDir, CacheDir: eo.KernelCache}})
	if err != nil {
		return nil, "", nil, err
	}
	p := c.Place(eo.GPULayers, mdl.Config.NLayer, eo.Threads)
	opts.Offload, opts.OffloadLayers = p.Offload, p.OffloadLayers
	eng, err := engine.New(mdl, p.Backend, opts)
	if err != nil {
		p.Close() // a GPU backend holds a device context
		return nil, "", nil, err
	}
	return eng, p.Name(), c.Skipped, nil
}

// backendNote names the backend and, when "auto" fell back, why the
// others did not open: "cpu (4 threads); cuda: not available: …".
func (in *instance) backendNote() string {
	return strings.Join(append([]string{in.backend}, in.skipped...), "; ")
}

// kvBytes is the KV cache of one sequence of ctx tokens.
func kvBytes(cfg model.Config, ctx int, kv string) int64 {
	return int64(cfg.NLayer) * int64(ctx) * kvRowBytes(cfg, kv)
}

// kvRowBytes is the KV cache of one token at one layer: its key and value.
func kvRowBytes(cfg model.Config, kv string) int64 {
	per := int64(2)
	if kv == "f32" {
		per = 4
	}
	return 2 * int64(cfg.KVDim()) * per
}

func fileSize(f *model.File) int64 {
	var n int64
	for _, t := range f.Tensors {
		n += t.Size
	}
	return n
}

// estimateMemory is what a model of config cfg in a file of size bytes
// will count against the budget.
func estimateMemory(cfg model.Config, size int64, eo EngineOptions, so SchedulerOptions, specCtx int) int64 {
	return size + int64(so.MaxActive)*kvBytes(cfg, modelContext(cfg, eo, specCtx), eo.KVCache)
}

// modelContext is the context a model of config cfg gets: the model's
// own (specCtx), else the engine's, else its training context capped as
// the engine caps it.
func modelContext(cfg model.Config, eo EngineOptions, specCtx int) int {
	ctx := eo.Context
	if specCtx > 0 {
		ctx = specCtx
	}
	if ctx <= 0 {
		ctx = min(cfg.NCtxTrain, engine.DefaultContext)
	}
	return ctx
}

// submit queues j, or fails with busy (queue full) or errUnloading.
func (in *instance) submit(j *job) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return errUnloading
	}
	select {
	case in.queue <- j:
		return nil
	default:
		e := protocol.Errorf(protocol.CodeBusy, "model %s is busy: %d requests are queued; retry later", in.name, cap(in.queue))
		e.RetryAfter = max(1, int(in.sched.RetryAfter.Round(time.Second)/time.Second))
		return e
	}
}

// close stops admission; run finishes what was accepted, then frees the
// model and closes done.
func (in *instance) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.closed {
		in.closed = true
		close(in.closing)
	}
}

// idle reports whether no request is queued or running.
func (in *instance) idle() bool {
	return len(in.queue) == 0 && in.active.Load() == 0
}

// errUnloading is returned by submit on an instance being unloaded; the
// service then loads the model again.
var errUnloading = protocol.Errorf(protocol.CodeShuttingDown, "model is being unloaded")
