package daemon

// Adapter versions: each model's adapters, numbered 1, 2, 3… as they are
// committed, each one current in turn. commitAdapter is how other daemon
// code (the training jobs) adds one; AddAdapter, Adapters and
// RollbackAdapter are the Service side of the socket and NATS endpoints.
// The records are in the adapters bucket (adapters_store.go), the files
// in the file store next to the database (adapter_files.go), and requests
// choose and load versions through adapters_serve.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
)

// AdapterMeta describes an adapter version being committed.
type AdapterMeta struct {
	// Source says where the version came from: the training job and the
	// edits it trained, or the file added.
	Source protocol.AdapterSource
	// Metrics is a JSON object kept with the version (nil: none yet;
	// setAdapterMetrics fills it in later).
	Metrics json.RawMessage
}

// commitAdapter commits the adapter GGUF file at ggufPath (a LoRA or
// prefix adapter file, as adapt.SaveLoRA and adapt.SavePrefix write
// them) as model's newest version and makes it current: requests that
// arrive from then on use it, running ones finish on theirs. The file is
// checked against the model first (an adapter that does not fit fails
// with CodeAdapterInvalid and changes nothing) and copied, so the caller
// may delete it afterwards. Versions older than the newest
// AdapterOptions.Keep are deleted.
//
// The commit is atomic: a crash at any point leaves either the state
// before it or the new version, current; a file written before a crash
// and never recorded is removed at the next start. Commits are
// serialized; it is safe to call from any goroutine while the daemon
// serves.
func (d *Daemon) commitAdapter(model, ggufPath string, meta AdapterMeta) (version uint64, err error) {
	data, err := os.ReadFile(ggufPath)
	if err != nil {
		return 0, fmt.Errorf("committing an adapter of model %s: %w", model, err)
	}
	rec, err := d.commitAdapterData(model, data, meta)
	if err != nil {
		return 0, err
	}
	return rec.AdapterVersion, nil
}

// commitJobAdapter is the job runner's completion hook: the adapter a
// finished job wrote becomes the newest version of its model; an edit
// job's version records its edits and metrics, and its edits become
// active (edits_train.go). After a crash between this commit and the
// job's record the hook runs again for the same job, so a version the job
// made already is not made twice.
func (d *Daemon) commitJobAdapter(_ context.Context, j protocol.Job) error {
	recs, _, err := d.store.adapters(j.Model)
	if err != nil {
		return fmt.Errorf("adapter versions of model %s: %w", j.Model, err)
	}
	var version uint64
	for _, r := range recs {
		if r.Source.Job == j.ID {
			version = r.AdapterVersion
		}
	}
	if version == 0 {
		meta := AdapterMeta{Source: protocol.AdapterSource{Job: j.ID}}
		if j.Edits != nil {
			meta.Source.Edits = j.Edits.Edits
			if meta.Metrics, err = readEditMetrics(filepath.Dir(j.Output)); err != nil {
				return fmt.Errorf("job %s: %w", j.ID, err)
			}
		}
		if version, err = d.commitAdapter(j.Model, j.Output, meta); err != nil {
			return err
		}
	}
	if j.Edits != nil {
		return d.editsTrained(j, version)
	}
	return nil
}

// commitAdapterData is commitAdapter on the file's content. It returns the
// new version's record.
func (d *Daemon) commitAdapterData(model string, data []byte, meta AdapterMeta) (*protocol.AdapterRecord, error) {
	if meta.Metrics != nil && !protocol.IsObject(meta.Metrics) {
		return nil, fmt.Errorf("committing an adapter of model %s: metrics %.40q is not a JSON object", model, meta.Metrics)
	}
	kind, err := d.checkAdapter(model, data)
	if err != nil {
		return nil, err
	}
	digest := digestOf(data)
	// One commit at a time: a failed commit removes its file only when
	// no record names it, which another commit's file would not be yet.
	d.adapterMu.Lock()
	defer d.adapterMu.Unlock()
	name, packed, err := d.files.put(digest, data)
	if err != nil {
		return nil, err
	}
	rec := protocol.AdapterRecord{
		Model: model, Created: time.Now().UTC(), Source: meta.Source, Kind: kind,
		File: name, SizeBytes: int64(len(data)), CompressedBytes: packed, Digest: digest, Metrics: meta.Metrics,
	}
	version, unused, err := d.store.addAdapter(rec, d.options().Adapters.Keep)
	if err != nil {
		// The file may be another version's as well (the same adapter
		// committed twice): it goes only when no record names it, and
		// otherwise start-up collects it.
		if used, uerr := d.store.usedAdapterDigests(); uerr == nil && !used[digest] {
			if rerr := d.files.remove([]string{digest}); rerr != nil {
				d.log.Warn("removing the file of a failed adapter commit", "model", model, "err", rerr)
			}
		}
		return nil, fmt.Errorf("committing an adapter of model %s: %w", model, err)
	}
	rec.AdapterVersion = version
	if err := d.files.remove(unused); err != nil {
		d.log.Warn("removing the files of deleted adapter versions", "model", model, "err", err)
	}
	ev := Event{Kind: "adapter_committed", Model: model, AdapterVersion: version,
		Msg: fmt.Sprintf("version %d (%s, %s, %s) is current", version, kind, human(rec.SizeBytes), digest)}
	if o := meta.Source.Pulled; o != nil {
		// Told apart so that auto_publish does not send a version back.
		ev.Kind = "adapter_pulled"
		ev.Msg += fmt.Sprintf(", pulled from node %s (its version %d)", o.Node, o.AdapterVersion)
	}
	d.log.Info("adapter version committed", "model", model, "version", version, "kind", kind, "bytes", rec.SizeBytes, "digest", digest, "pulled", meta.Source.Pulled != nil)
	d.emit(ev)
	return &rec, nil
}

// checkAdapter parses data as an adapter of model's base model and
// returns its kind.
func (d *Daemon) checkAdapter(name string, data []byte) (string, error) {
	path, err := d.reg.baseFile(name)
	if err != nil {
		return "", err
	}
	f, err := model.Open(path)
	if err != nil {
		return "", protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", name, err)
	}
	defer f.Close()
	m, err := model.Load(f)
	if err != nil {
		return "", protocol.Errorf(protocol.CodeModelLoad, "model %s: %v", name, err)
	}
	a, err := adapt.Parse(data, m)
	if err != nil {
		return "", protocol.Errorf(protocol.CodeAdapterInvalid, "model %s: %v", name, err)
	}
	return adapterKind(a), nil
}

func adapterKind(a adapt.Trainable) string {
	if _, ok := a.(*adapt.Prefix); ok {
		return protocol.AdapterPrefix
	}
	return protocol.AdapterLoRA
}

// setAdapterMetrics replaces the metrics kept with a version: the trainer
// measures a version once it is committed. metrics must be a JSON object.
func (d *Daemon) setAdapterMetrics(model string, version uint64, metrics json.RawMessage) error {
	if !protocol.IsObject(metrics) {
		return fmt.Errorf("adapter metrics of model %s version %d: %.40q is not a JSON object", model, version, metrics)
	}
	return d.store.setAdapterMetrics(model, version, metrics)
}

// AddAdapter commits an adapter file made offline (the GGUF read from
// body, at most protocol.MaxAdapterBytes) as req.Model's newest version,
// which becomes current, and returns its record.
func (s *Service) AddAdapter(ctx context.Context, req *protocol.AdapterAddRequest, body io.Reader) (*protocol.AdapterRecord, error) {
	if !s.d.reg.has(req.Model) {
		return nil, modelNotFound(req.Model)
	}
	data, err := io.ReadAll(io.LimitReader(body, protocol.MaxAdapterBytes+1))
	switch {
	case err != nil:
		return nil, protocol.Errorf(protocol.CodeInvalidValue, "reading the adapter file: %v", err)
	case len(data) > protocol.MaxAdapterBytes:
		return nil, protocol.Errorf(protocol.CodeTooLarge, "adapter file exceeds %d bytes", protocol.MaxAdapterBytes)
	case len(data) == 0:
		return nil, protocol.Errorf(protocol.CodeInvalidValue, "the body is empty: send the adapter GGUF file")
	}
	rec, err := s.d.commitAdapterData(req.Model, data, AdapterMeta{Source: protocol.AdapterSource{File: req.File}})
	if err != nil {
		return nil, protocol.AsError(err)
	}
	return rec, nil
}

// Adapters lists the stored adapter versions (those of req.Model when
// set) and the current version of every model listed: every registered
// model, and the unregistered ones that still have versions.
func (s *Service) Adapters(ctx context.Context, req *protocol.AdapterListRequest) (*protocol.AdapterList, error) {
	if req.Model != "" && !s.d.reg.has(req.Model) {
		return nil, modelNotFound(req.Model)
	}
	recs, currents, err := s.d.store.adapters(req.Model)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInternal, "reading the adapter versions: %v", err)
	}
	list := &protocol.AdapterList{Version: protocol.Version, Object: protocol.ObjectList, Data: recs, Current: map[string]uint64{}}
	if list.Data == nil {
		list.Data = []protocol.AdapterRecord{}
	}
	for _, n := range s.d.reg.names() {
		if req.Model == "" || req.Model == n {
			list.Current[n] = 0
		}
	}
	maps.Copy(list.Current, currents)
	return list, nil
}

// RollbackAdapter makes a stored version of req.Model current (0: the
// base model): requests that arrive from then on use it, running ones
// finish on theirs.
func (s *Service) RollbackAdapter(ctx context.Context, req *protocol.AdapterRollbackRequest) (*protocol.AdapterRollbackResponse, error) {
	if !s.d.reg.has(req.Model) {
		return nil, modelNotFound(req.Model)
	}
	prev, err := s.d.store.setCurrentAdapter(req.Model, req.AdapterVersion)
	if err != nil {
		return nil, protocol.AsError(err)
	}
	s.d.log.Info("adapter version made current", "model", req.Model, "version", req.AdapterVersion, "previous", prev)
	s.d.event("adapter_rolled_back", req.Model, fmt.Sprintf("version %d is current (was %d)", req.AdapterVersion, prev))
	return &protocol.AdapterRollbackResponse{Version: protocol.Version, Model: req.Model, AdapterVersion: req.AdapterVersion, Previous: prev}, nil
}
