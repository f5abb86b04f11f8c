package daemon

import (
	"fmt"
	"slices"
	"sync"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/protocol"
)

// Serving with adapter versions. Each request chooses its version before
// it is queued (adapterFor), on its own goroutine: reading and checking a
// version that is not loaded yet never holds up the scheduler. The job
// carries the loaded adapter to the scheduler, which attaches it to the
// job's sequence only (a LoRA through the instance's adapt.Set, a prefix
// when the sequence is made), so that sequences of different versions,
// and of none, share every engine step.

// defaultAdapterCache is AdapterOptions.Cache's default.
const defaultAdapterCache = 4

// servedAdapter is an adapter version loaded for one instance.
type servedAdapter struct {
	version uint64
	lora    *adapt.LoRA // one of lora and prefix is set
	prefix  *adapt.Prefix
}

// versionOf is the version a serves; 0 for nil, the base model.
func versionOf(a *servedAdapter) uint64 {
	if a == nil {
		return 0
	}
	return a.version
}

// prefixLen is the number of cache rows a's prefix takes in a sequence.
func prefixLen(a *servedAdapter) int {
	if a == nil || a.prefix == nil {
		return 0
	}
	return a.prefix.Len
}

// prefixNote says, in a context length error, what a's prefix takes.
func prefixNote(a *servedAdapter) string {
	if n := prefixLen(a); n > 0 {
		return fmt.Sprintf(" (besides the %d rows of adapter version %d's prefix)", n, a.version)
	}
	return ""
}

// adapterFor returns the adapter a request for inst's model runs with
// (nil: the base model): the version want names, none for
// protocol.AdapterBase, else (nil or 0) the model's current version. A
// current version that does not load (its file damaged, or a base model
// that changed under it) is passed over for the newest older kept
// version that loads, else the base model, so that the model keeps
// serving; the failure is logged and emitted once per loaded model, and
// the response's adapter_version says which version served. A version
// named by the request that does not load is the request's error.
func (d *Daemon) adapterFor(inst *instance, want *int64) (*servedAdapter, error) {
	if want != nil && *want == protocol.AdapterBase {
		return nil, nil
	}
	// A commit deleting the chosen version removes its file only after
	// this read.
	d.files.mu.RLock()
	defer d.files.mu.RUnlock()
	if want != nil && *want > 0 {
		rec, err := d.store.adapter(inst.name, uint64(*want))
		if err != nil {
			return nil, protocol.AsError(err)
		}
		return d.loadAdapter(inst, rec)
	}
	recs, err := d.store.servingAdapters(inst.name)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInternal, "reading the adapter versions of model %s: %v", inst.name, err)
	}
	for i := range recs {
		a, err := d.loadAdapter(inst, &recs[i])
		switch protocol.CodeOf(err) {
		case protocol.CodeAdapterCorrupt, protocol.CodeAdapterInvalid:
			continue
		}
		return a, err
	}
	return nil, nil
}

// loadAdapter returns rec's version loaded for inst: from inst's cache,
// else read from the file store (its digest checked) and parsed against
// inst's model. The caller holds d.files.mu for reading.
func (d *Daemon) loadAdapter(inst *instance, rec *protocol.AdapterRecord) (*servedAdapter, error) {
	return inst.adapters.get(rec.AdapterVersion, func() (*servedAdapter, error) {
		data, err := d.files.read(rec)
		if err != nil {
			d.adapterFailed(rec, err)
			return nil, err
		}
		a, err := adapt.Parse(data, inst.mdl)
		if err != nil {
			err = protocol.Errorf(protocol.CodeAdapterInvalid, "model %s adapter version %d does not fit the model: %v", rec.Model, rec.AdapterVersion, err)
			d.adapterFailed(rec, err)
			return nil, err
		}
		s := &servedAdapter{version: rec.AdapterVersion}
		s.lora, _ = a.(*adapt.LoRA)
		s.prefix, _ = a.(*adapt.Prefix)
		return s, nil
	})
}

func (d *Daemon) adapterFailed(rec *protocol.AdapterRecord, err error) {
	d.log.Error("adapter version not served", "model", rec.Model, "version", rec.AdapterVersion, "err", err)
	d.event("adapter_failed", rec.Model, protocol.AsError(err).Message)
}

// adapterCache holds the versions loaded for one instance, at most size
// of them, the most recently used first.
type adapterCache struct {
	size int
	mu   sync.Mutex // guards slots
	// slots are most recently used first.
	slots []*adapterSlot
}

// adapterSlot is one version, loaded or being loaded.
type adapterSlot struct {
	version uint64
	ready   chan struct{} // closed once a and err are set
	a       *servedAdapter
	err     error
}

func newAdapterCache(size int) *adapterCache { return &adapterCache{size: size} }

// get returns version, calling load once however many requests ask for it
// at the same time. A failure that will not pass (a damaged file, an
// adapter that does not fit) is kept like an adapter, so that every
// request does not read the file again; any other is forgotten.
func (c *adapterCache) get(version uint64, load func() (*servedAdapter, error)) (*servedAdapter, error) {
	c.mu.Lock()
	i := slices.IndexFunc(c.slots, func(s *adapterSlot) bool { return s.version == version })
	if i >= 0 {
		s := c.slots[i]
		copy(c.slots[1:i+1], c.slots[:i])
		c.slots[0] = s
		c.mu.Unlock()
		<-s.ready
		return s.a, s.err
	}
	s := &adapterSlot{version: version, ready: make(chan struct{})}
	c.slots = slices.Insert(c.slots, 0, s)
	if len(c.slots) > c.size {
		// Jobs that run with an evicted version keep it until they end.
		c.slots = slices.Delete(c.slots, c.size, len(c.slots))
	}
	c.mu.Unlock()
	s.a, s.err = load()
	if s.err != nil {
		switch protocol.CodeOf(s.err) {
		case protocol.CodeAdapterCorrupt, protocol.CodeAdapterInvalid:
		default:
			c.mu.Lock()
			c.slots = slices.DeleteFunc(c.slots, func(x *adapterSlot) bool { return x == s })
			c.mu.Unlock()
		}
	}
	close(s.ready)
	return s.a, s.err
}

// newSequence returns a new sequence of in's engine that runs with a
// (nil: the base model). Only run calls it.
func (in *instance) newSequence(a *servedAdapter) (*engine.Sequence, error) {
	var p engine.PrefixProvider
	if a != nil && a.prefix != nil {
		p = a.prefix
	}
	seq, err := in.eng.NewSequence(p)
	if err != nil {
		return nil, err
	}
	if a != nil && a.lora != nil {
		in.set.Use(seq, adapt.Applied{LoRA: a.lora, Scale: 1})
	}
	return seq, nil
}

// freeSequence detaches seq's adapter and frees it. Only run calls it.
func (in *instance) freeSequence(seq *engine.Sequence) {
	in.set.Forget(seq)
	seq.Free()
}
