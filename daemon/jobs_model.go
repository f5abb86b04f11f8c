package daemon

// What every job kind opens: the model's file and weights on an engine of
// the job's own, with the run's memory reserved against the budget.

import (
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
)

// jobModel is a job's model and the footprint of its run: seqs f32 KV
// caches of ctx tokens and held bytes of the run's data.
type jobModel struct {
	name string
	spec ModelSpec
	file *model.File
	mdl  *model.Model
	tok  *model.Tokenizer // nil: the model has none
	// tokErr says why tok is nil.
	tokErr    error
	seqs, ctx int
	held      int64
}

// openJobModel opens the registered model name (downloading it first when
// it is a URL not fetched yet).
func openJobModel(env jobEnv, name string) (*jobModel, error) {
	path, spec, err := env.reg.modelFile(env.ctx, name)
	if err != nil {
		return nil, err
	}
	f, err := model.Open(path)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", name, err)
	}
	m := &jobModel{name: name, spec: spec, file: f}
	if m.mdl, err = model.Load(f); err != nil {
		f.Close()
		return nil, protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", name, err)
	}
	m.tok, m.tokErr = model.NewTokenizer(f)
	return m, nil
}

// fit sets the run's footprint, checking that its longest sequence fits
// the model's context.
func (m *jobModel) fit(env jobEnv, seqs, ctx int, held int64) error {
	limit := modelContext(m.mdl.Config, env.opts.Engine, m.spec.Context)
	if ctx > limit {
		return protocol.Errorf(protocol.CodeContextLength, "the job's longest sequence has %d tokens; model %s holds %d", ctx, m.name, limit)
	}
	// The CPU attention reads value rows in steps of 8, and a cache that
	// ends inside a step sums them in another order: with the context
	// rounded up the job computes what `edgectl adapt` does with the
	// model's context, bit for bit.
	m.seqs, m.ctx, m.held = seqs, min((ctx+jobContextStep-1)/jobContextStep*jobContextStep, limit), held
	return nil
}

// jobContextStep is what a job's context is rounded up to (see fit).
const jobContextStep = 32

// memory is what the job's engine and run hold; weights says whether the
// weights are a copy of their own (on a GPU; on the CPU the job maps the
// file that serving maps).
func (m *jobModel) memory(weights bool) int64 {
	n := int64(m.seqs)*kvBytes(m.mdl.Config, m.ctx, "f32") + m.held
	if weights {
		n += fileSize(m.file)
	}
	return n
}

// checkBudget refuses at submission a job that could never fit.
func (m *jobModel) checkBudget(env jobEnv) error {
	if budget := env.opts.Models.MemoryBudget; budget > 0 {
		if need := m.memory(!env.cpuOnly()); need > budget {
			return protocol.Errorf(protocol.CodeInsufficientMemory, "the job needs about %s, more than the memory budget of %s", human(need), human(budget))
		}
	}
	return nil
}

// threads are the CPU threads a job computes on: jobs.threads, else
// engine.threads (0: one per core).
func (env jobEnv) threads() int {
	if env.opts.Jobs.Threads > 0 {
		return env.opts.Jobs.Threads
	}
	return env.opts.Engine.Threads
}

// cpuOnly reports whether a job's engine surely runs on the CPU alone.
func (env jobEnv) cpuOnly() bool { return env.opts.Engine.Backend == "cpu" }

// jobEngine is a job's engine over its model, with the memory it holds
// reserved.
type jobEngine struct {
	*engine.Engine
	mem     int64
	release func()
}

// engine builds the job's engine (with an adapt.Set for its LoRA) and
// reserves its memory; a job that does not fit beside the loaded models
// fails rather than evict one.
func (m *jobModel) engine(env jobEnv, id string) (*jobEngine, error) {
	eo := env.opts.engineOptions()
	eo.Threads = env.threads()
	eng, _, _, err := newEngine(m.mdl, eo, engine.Options{Context: m.ctx, BatchSize: eo.BatchSize, Cache: engine.CacheF32, Hooks: engine.Hooks{Delta: adapt.NewSet()}})
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", m.name, err)
	}
	_, onCPU := eng.Backend().(*cpu.Backend)
	mem := m.memory(!onCPU || eng.Options().Offload != nil)
	if err := env.reg.reserveFree("job "+id, mem); err != nil {
		eng.Close()
		return nil, err
	}
	return &jobEngine{Engine: eng, mem: mem, release: func() { env.reg.unreserve(mem) }}, nil
}

func (e *jobEngine) close() {
	e.Engine.Close()
	e.release()
}

func (m *jobModel) close() { m.file.Close() }
