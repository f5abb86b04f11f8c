package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
)

// registry holds the models by name and the instances of those loaded.
//
// Locking: mu guards entries, used and every entry field marked "(mu)".
// Loading runs without mu held: an entry in state "loading" has a ready
// channel that waiters block on.
type registry struct {
	log     *slog.Logger
	store   *store
	metrics *metrics
	fetch   func(ctx context.Context, ref string) (string, string, error)

	mu      sync.Mutex
	entries map[string]*entry
	used    int64 // bytes reserved by loading and loaded instances (mu)
	// opts are the options new loads use; Reload replaces them (mu).
	engine   EngineOptions
	sched    SchedulerOptions
	models   ModelOptions
	adapters AdapterOptions
	// events receives lifecycle events; nil: none.
	events func(kind, model, msg string)
}

// entry is one registered model.
type entry struct {
	spec    ModelSpec // (mu)
	created time.Time
	// local is the file Path resolves to (equal to Path for a local file,
	// the download for a URL); "" until fetched (mu).
	local    string
	digest   string    // (mu)
	size     int64     // (mu)
	state    string    // protocol.State* (mu)
	err      string    // why the last load failed (mu)
	inst     *instance // when loaded (mu)
	ready    chan struct{}
	users    int       // requests holding inst (mu)
	lastUsed time.Time // (mu)
	fetchMu  sync.Mutex
}

func newRegistry(log *slog.Logger, st *store, m *metrics, o *Options) *registry {
	return &registry{
		log: log, store: st, metrics: m, fetch: o.Fetch,
		entries: map[string]*entry{},
		engine:  o.engineOptions(), sched: o.Scheduler, models: o.Models, adapters: o.Adapters,
	}
}

func isRemote(ref string) bool { return strings.Contains(ref, "://") }

// register adds or replaces a model. persist writes it to the database.
func (r *registry) register(spec ModelSpec, persist bool) error {
	if err := protocol.ValidateName(spec.Name); err != nil {
		return protocol.ParamErrorf(protocol.CodeInvalidValue, "model", "%v", err)
	}
	local := ""
	var size int64
	if !isRemote(spec.Path) {
		abs, err := filepath.Abs(spec.Path)
		if err != nil {
			return err
		}
		spec.Path, local = abs, abs
		if fi, err := os.Stat(abs); err == nil {
			size = fi.Size()
		}
	}
	r.mu.Lock()
	e := r.entries[spec.Name]
	var old *instance
	if e == nil {
		e = &entry{created: time.Now(), state: protocol.StateUnloaded}
		r.entries[spec.Name] = e
	} else if e.spec.Path != spec.Path && e.inst != nil {
		old = e.inst // the file changed: serve the new one from now on
		e.inst, e.state = nil, protocol.StateUnloaded
	}
	if e.spec.Path != spec.Path || spec.Digest != "" {
		e.digest = spec.Digest
	}
	e.spec, e.local, e.size = spec, local, size
	r.mu.Unlock()
	if old != nil {
		old.close()
	}
	if persist && r.store != nil {
		return r.store.putModel(storedModel{Name: spec.Name, Path: spec.Path, Digest: spec.Digest, Size: size, Spec: spec, Created: e.created})
	}
	return nil
}

// restore registers the models kept in the database.
func (r *registry) restore() error {
	ms, err := r.store.models()
	if err != nil {
		return err
	}
	for _, m := range ms {
		spec := m.Spec
		spec.Name, spec.Path = m.Name, m.Path
		if spec.Digest == "" {
			spec.Digest = m.Digest
		}
		if err := r.register(spec, false); err != nil {
			r.log.Warn("stored model skipped", "model", m.Name, "err", err)
		}
	}
	return nil
}

// acquire returns the loaded instance of name, loading it if needed, and
// a release function the caller must call when done with it.
func (r *registry) acquire(ctx context.Context, name string) (*instance, func(), error) {
	r.mu.Lock()
	for {
		e := r.entries[name]
		if e == nil {
			r.mu.Unlock()
			return nil, nil, modelNotFound(name)
		}
		switch e.state {
		case protocol.StateLoaded:
			e.users++
			inst := e.inst
			r.mu.Unlock()
			return inst, func() { r.release(e) }, nil
		case protocol.StateLoading:
			ready := e.ready
			r.mu.Unlock()
			select {
			case <-ready:
			case <-ctx.Done():
				return nil, nil, ctxError(ctx)
			}
			r.mu.Lock()
			if e.state == protocol.StateFailed {
				msg := e.err
				r.mu.Unlock()
				return nil, nil, protocol.Errorf(protocol.CodeModelLoad, "model %s: %s", name, msg)
			}
		default:
			e.state, e.ready = protocol.StateLoading, make(chan struct{})
			r.mu.Unlock()
			err := r.load(ctx, name, e)
			r.mu.Lock()
			close(e.ready)
			if err != nil {
				r.mu.Unlock()
				return nil, nil, err
			}
		}
	}
}

func (r *registry) release(e *entry) {
	r.mu.Lock()
	e.users--
	e.lastUsed = time.Now()
	r.mu.Unlock()
}

// load brings e from loading to loaded (or failed). Called without mu.
func (r *registry) load(ctx context.Context, name string, e *entry) (err error) {
	start := time.Now()
	var inst *instance
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil {
			e.state, e.err = protocol.StateFailed, protocol.AsError(err).Message
			r.log.Error("model load failed", "model", name, "err", err)
			r.emit("model_load_failed", name, e.err)
			return
		}
		e.state, e.err, e.inst, e.lastUsed = protocol.StateLoaded, "", inst, time.Now()
		r.metrics.loadSeconds.observe(name, time.Since(start).Seconds())
		r.log.Info("model loaded", "model", name, "path", inst.spec.Path, "backend", inst.backendNote(), "context", inst.ctxLen, "memory", inst.mem, "took", time.Since(start).Round(time.Millisecond))
		r.emit("model_loaded", name, "backend "+inst.backendNote())
	}()
	path, err := r.localPath(ctx, e)
	if err != nil {
		return err
	}
	r.mu.Lock()
	spec, eo, so, ao := e.spec, r.engine, r.sched, r.adapters
	r.mu.Unlock()

	f, err := model.Open(path)
	if err != nil {
		return protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", name, err)
	}
	mdl, err := model.Load(f)
	if err != nil {
		f.Close()
		return protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", name, err)
	}
	need := estimateMemory(mdl.Config, fileSize(f), eo, so, spec.Context)
	if err := r.reserve(ctx, name, need); err != nil {
		f.Close()
		return err
	}
	inst, err = buildInstance(name, spec, path, f, eo, so, ao.Cache, r.metrics)
	if err != nil {
		f.Close()
		r.unreserve(need)
		return protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", name, err)
	}
	if inst.mem != need {
		r.mu.Lock()
		r.used += inst.mem - need
		r.mu.Unlock()
	}
	go inst.run(func() { r.unreserve(inst.mem) })
	go r.digest(name, e, path)
	return nil
}

// localPath resolves e's path, fetching a remote reference once.
func (r *registry) localPath(ctx context.Context, e *entry) (string, error) {
	e.fetchMu.Lock()
	defer e.fetchMu.Unlock()
	r.mu.Lock()
	local, ref := e.local, e.spec.Path
	r.mu.Unlock()
	if local != "" {
		return local, nil
	}
	if r.fetch == nil {
		return "", protocol.Errorf(protocol.CodeModelLoad, "%s: downloads are not available in this daemon", ref)
	}
	path, digest, err := r.fetch(ctx, ref)
	if err != nil {
		return "", protocol.Errorf(protocol.CodeModelLoad, "fetching %s: %v", ref, err)
	}
	r.mu.Lock()
	if e.spec.Path == ref {
		e.local = path
		if digest != "" {
			e.digest = digest
		}
		if fi, err := os.Stat(path); err == nil {
			e.size = fi.Size()
		}
	}
	r.mu.Unlock()
	return path, nil
}

// prefetch starts fetching every remote model, so that downloads begin at
// start rather than at the first request.
func (r *registry) prefetch(ctx context.Context) {
	r.mu.Lock()
	var remote []*entry
	for _, e := range r.entries {
		if e.local == "" {
			remote = append(remote, e)
		}
	}
	r.mu.Unlock()
	for _, e := range remote {
		go func() {
			if _, err := r.localPath(ctx, e); err != nil {
				r.log.Error("model fetch failed", "err", err)
			}
		}()
	}
}

// digest computes the sha256 of the model's file at path when it is not
// known yet, and records it: after each load, and when the fleet asks
// (identity).
func (r *registry) digest(name string, e *entry, path string) {
	r.mu.Lock()
	known := e.digest != ""
	r.mu.Unlock()
	if known {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return
	}
	d := "sha256:" + hex.EncodeToString(h.Sum(nil))
	r.mu.Lock()
	e.digest = d
	spec, created, size := e.spec, e.created, e.size
	r.mu.Unlock()
	if r.store != nil {
		if err := r.store.putModel(storedModel{Name: name, Path: spec.Path, Digest: d, Size: size, Spec: spec, Created: created}); err != nil {
			r.log.Warn("recording digest", "model", name, "err", err)
		}
	}
}

// reserve counts need bytes against the budget, evicting idle models
// (least recently used first) when they do not fit. Called without mu.
func (r *registry) reserve(ctx context.Context, name string, need int64) error {
	for {
		r.mu.Lock()
		budget := r.models.MemoryBudget
		if budget <= 0 || r.used+need <= budget {
			r.used += need
			r.mu.Unlock()
			return nil
		}
		if need > budget {
			r.mu.Unlock()
			return protocol.Errorf(protocol.CodeInsufficientMemory, "model %s needs %s, more than the memory budget of %s", name, human(need), human(budget))
		}
		victim := r.lruIdleLocked(name)
		if victim == "" {
			used := r.used
			r.mu.Unlock()
			return protocol.Errorf(protocol.CodeInsufficientMemory, "model %s needs %s; %s of the %s budget is held by models in use", name, human(need), human(used), human(budget))
		}
		inst := r.unloadLocked(victim, "evicted for "+name)
		r.mu.Unlock()
		select { // idle: its scheduler exits at once and frees its share
		case <-inst.done:
		case <-ctx.Done():
			return ctxError(ctx)
		}
	}
}

// reserveFree counts need bytes of a background job (what) against the
// budget when they fit beside the loaded models. Unlike reserve it evicts
// nothing: a job must not push out a model that serving would load again
// at once.
func (r *registry) reserveFree(what string, need int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if budget := r.models.MemoryBudget; budget > 0 && r.used+need > budget {
		return protocol.Errorf(protocol.CodeInsufficientMemory, "%s needs %s; %s of the %s budget is in use (a job evicts no model)", what, human(need), human(r.used), human(budget))
	}
	r.used += need
	return nil
}

func (r *registry) unreserve(n int64) {
	r.mu.Lock()
	r.used -= n
	r.mu.Unlock()
}

// lruIdleLocked is the loaded model, other than except, unused longest
// and idle now. mu is held.
func (r *registry) lruIdleLocked(except string) string {
	best := ""
	var t time.Time
	for n, e := range r.entries {
		if n == except || e.state != protocol.StateLoaded || e.users > 0 || !e.inst.idle() {
			continue
		}
		if best == "" || e.lastUsed.Before(t) {
			best, t = n, e.lastUsed
		}
	}
	return best
}

// unloadLocked takes name's instance out of service; it frees its memory
// once its scheduler has finished what it accepted. mu is held.
func (r *registry) unloadLocked(name, why string) *instance {
	e := r.entries[name]
	if e == nil || e.inst == nil {
		return nil
	}
	inst := e.inst
	e.inst, e.state = nil, protocol.StateUnloaded
	inst.close()
	r.log.Info("model unloaded", "model", name, "why", why)
	r.emit("model_unloaded", name, why)
	return inst
}

// unload unloads name and waits until its memory is free or ctx ends.
func (r *registry) unload(ctx context.Context, name string) error {
	r.mu.Lock()
	e := r.entries[name]
	if e == nil {
		r.mu.Unlock()
		return modelNotFound(name)
	}
	inst := r.unloadLocked(name, "requested")
	r.mu.Unlock()
	if inst == nil {
		return nil
	}
	select {
	case <-inst.done:
		return nil
	case <-ctx.Done():
		return ctxError(ctx)
	}
}

// unloadIdle unloads the models unused for longer than the idle time.
func (r *registry) unloadIdle(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	idle := r.models.IdleUnload
	if idle <= 0 {
		return
	}
	for n, e := range r.entries {
		if e.state == protocol.StateLoaded && e.users == 0 && e.inst.idle() && now.Sub(e.lastUsed) >= idle {
			r.unloadLocked(n, "idle")
		}
	}
}

// closeAll unloads every model and waits for their schedulers.
func (r *registry) closeAll(ctx context.Context) {
	r.mu.Lock()
	var insts []*instance
	for n := range r.entries {
		if inst := r.unloadLocked(n, "shutdown"); inst != nil {
			insts = append(insts, inst)
		}
	}
	r.mu.Unlock()
	for _, inst := range insts {
		select {
		case <-inst.done:
		case <-ctx.Done():
			return
		}
	}
}

func (r *registry) emit(kind, model, msg string) {
	if r.events != nil {
		r.events(kind, model, msg)
	}
}

// baseFile returns the local file of the model name: what its adapters
// are checked against.
func (r *registry) baseFile(name string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[name]
	switch {
	case e == nil:
		return "", modelNotFound(name)
	case e.local == "":
		return "", protocol.Errorf(protocol.CodeModelLoad, "model %s is not downloaded yet (%s): load it first", name, e.spec.Path)
	}
	return e.local, nil
}

// identity identifies the model name's file to the fleet, whose nodes
// compare it with their own before taking an adapter made for it: its
// digest (computed now when not known yet, and recorded, so once per
// file) and its size.
func (r *registry) identity(name string) (protocol.BaseModel, error) {
	path, err := r.baseFile(name)
	if err != nil {
		return protocol.BaseModel{}, err
	}
	r.mu.Lock()
	e := r.entries[name]
	r.mu.Unlock()
	r.digest(name, e, path)
	r.mu.Lock()
	defer r.mu.Unlock()
	return protocol.BaseModel{Name: name, Digest: e.digest, SizeBytes: e.size}, nil
}

func modelNotFound(name string) error {
	return protocol.ParamErrorf(protocol.CodeModelNotFound, "model", "model %q is not registered (see GET /v1/models)", name)
}

// modelFile returns the local file of name (fetching a remote reference
// first) and its spec.
func (r *registry) modelFile(ctx context.Context, name string) (string, ModelSpec, error) {
	r.mu.Lock()
	e := r.entries[name]
	r.mu.Unlock()
	if e == nil {
		return "", ModelSpec{}, protocol.ParamErrorf(protocol.CodeModelNotFound, "model", "model %q is not registered (see GET /v1/models)", name)
	}
	path, err := r.localPath(ctx, e)
	r.mu.Lock()
	spec := e.spec
	r.mu.Unlock()
	return path, spec, err
}

// queued reports whether requests wait in the queue of a loaded model.
func (r *registry) queued() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.entries {
		if e.inst != nil && len(e.inst.queue) > 0 {
			return true
		}
	}
	return false
}

// has reports whether name is registered.
func (r *registry) has(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.entries[name] != nil
}

// names returns the registered names in order.
func (r *registry) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n := range r.entries {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
