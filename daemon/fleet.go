package daemon

// Fleet distribution of adapter versions (protocol/fleet.go): a node
// publishes one of its stored versions, and the other nodes of the fleet
// pull it instead of training it again. The logic is here, on the
// Service; the store is the NATS front end's JetStream object store and
// key-value bucket (nats_fleet.go), which it hands over when it starts.
//
// A pull trusts nothing it reads: the entry is validated like a request,
// the object is checked against the object store's digest as it arrives
// and against the entry's size, the decompressed GGUF against the entry's
// SHA-256, the base model's digest against this node's model file, and
// the adapter's tensors against the model (commitAdapterData), before a
// version is committed.

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edged/edged/protocol"
)

// adapterFleet is the store the fleet shares adapter versions through.
type adapterFleet interface {
	// put stores packed, the zstd-compressed GGUF of pub, as the object
	// named pub.Digest, then records pub as pub.Model's published
	// version, and returns the revision of that record.
	put(ctx context.Context, pub *protocol.PublishedAdapter, packed []byte) (revision uint64, err error)
	// latest returns model's published version and the revision of its
	// record; it fails with CodeNotPublished when none is.
	latest(ctx context.Context, model string) (*protocol.PublishedAdapter, uint64, error)
	// fetch returns the object of pub, checked against the store's own
	// digest and pub.CompressedBytes.
	fetch(ctx context.Context, pub *protocol.PublishedAdapter) ([]byte, error)
}

// setFleet makes f the fleet's store (nil: none, as before the NATS front
// end starts and after it stops).
func (d *Daemon) setFleet(f adapterFleet) {
	d.mu.Lock()
	d.fleet = f
	d.mu.Unlock()
}

func (s *Service) useFleet(f adapterFleet) { s.d.setFleet(f) }

func (d *Daemon) fleetStore() (adapterFleet, error) {
	d.mu.Lock()
	f := d.fleet
	d.mu.Unlock()
	if f == nil {
		return nil, protocol.Errorf(protocol.CodeFleetUnavailable, "publishing and pulling adapter versions need the NATS front end (nats.enabled), with its embedded server or a server with JetStream (nats.url)")
	}
	return f, nil
}

// PublishAdapter publishes a stored version of req.Model (its current one
// when req.AdapterVersion is 0) for the fleet: the version's compressed
// file, checked first, as an object named by its digest, and its
// description as the model's published version. Publishing a version
// again writes the entry again (a new revision), which auto_pull nodes
// take as news.
func (s *Service) PublishAdapter(ctx context.Context, req *protocol.AdapterPublishRequest) (*protocol.AdapterPublishResponse, error) {
	var res *protocol.AdapterPublishResponse
	err := s.fleetRequest(ctx, req.Model, func(ctx context.Context) (err error) {
		res, err = s.d.publishAdapter(ctx, req.Model, req.AdapterVersion)
		return err
	})
	return res, err
}

// PullAdapter fetches req.Model's published version and commits it as the
// model's newest version, current at once, unless a stored version holds
// the same adapter already: then it changes nothing and says which.
func (s *Service) PullAdapter(ctx context.Context, req *protocol.AdapterPullRequest) (*protocol.AdapterPullResponse, error) {
	var res *protocol.AdapterPullResponse
	err := s.fleetRequest(ctx, req.Model, func(ctx context.Context) (err error) {
		res, err = s.d.pullAdapter(ctx, req.Model, req.AnyBase)
		return err
	})
	return res, err
}

// fleetRequest runs fn for a request about model as other requests run:
// the model must be registered, a drain waits for it, and it is bounded
// by the request timeout. An error from a context that ended says why
// it ended.
func (s *Service) fleetRequest(ctx context.Context, model string, fn func(ctx context.Context) error) error {
	if !s.d.reg.has(model) {
		return modelNotFound(model)
	}
	done, err := s.d.begin()
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := s.d.requestContext(ctx)
	defer cancel(nil)
	if err := fn(ctx); err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx)
		}
		return protocol.AsError(err)
	}
	return nil
}

func (d *Daemon) publishAdapter(ctx context.Context, model string, version uint64) (*protocol.AdapterPublishResponse, error) {
	fleet, err := d.fleetStore()
	if err != nil {
		return nil, err
	}
	if version == 0 {
		currents, err := d.store.currentAdapters()
		if err != nil {
			return nil, fmt.Errorf("reading the current adapter versions: %w", err)
		}
		if version = currents[model]; version == 0 {
			return nil, protocol.ParamErrorf(protocol.CodeAdapterNotFound, "adapter_version", "model %s serves the base model: there is no current adapter version to publish (name one, see edgectl adapters list)", model)
		}
	}
	rec, packed, err := d.packedAdapter(model, version)
	if err != nil {
		return nil, err
	}
	base, err := d.reg.identity(model)
	if err != nil {
		return nil, err
	}
	if !protocol.ValidDigest(base.Digest) {
		// A digest configured in another form is no use to other nodes.
		base.Digest = ""
	}
	pub := &protocol.PublishedAdapter{
		Version: protocol.Version, Model: model, AdapterVersion: rec.AdapterVersion, Kind: rec.Kind,
		Digest: rec.Digest, SizeBytes: rec.SizeBytes, CompressedBytes: int64(len(packed)),
		Source: rec.Source, Metrics: rec.Metrics, Created: rec.Created, Base: base,
		PublishedBy: d.options().Node, PublishedAt: time.Now().UTC(),
	}
	rev, err := fleet.put(ctx, pub, packed)
	if err != nil {
		return nil, err
	}
	d.log.Info("adapter version published", "model", model, "version", version, "digest", rec.Digest, "revision", rev)
	d.emit(Event{Kind: "adapter_published", Model: model, AdapterVersion: version,
		Msg: fmt.Sprintf("version %d (%s) published for the fleet (revision %d)", version, rec.Digest, rev)})
	return &protocol.AdapterPublishResponse{Version: protocol.Version, Published: *pub, Revision: rev}, nil
}

// packedAdapter returns the record of a stored version and its file as
// stored, checked against the record: a damaged version is not sent to
// the fleet.
func (d *Daemon) packedAdapter(model string, version uint64) (*protocol.AdapterRecord, []byte, error) {
	// A commit deleting the version meanwhile removes its file only after
	// this read.
	d.files.mu.RLock()
	defer d.files.mu.RUnlock()
	rec, err := d.store.adapter(model, version)
	if err != nil {
		return nil, nil, err
	}
	packed, err := d.files.readPacked(rec)
	if err != nil {
		return nil, nil, err
	}
	return rec, packed, nil
}

func (d *Daemon) pullAdapter(ctx context.Context, model string, anyBase bool) (*protocol.AdapterPullResponse, error) {
	fleet, err := d.fleetStore()
	if err != nil {
		return nil, err
	}
	pub, rev, err := fleet.latest(ctx, model)
	if err != nil {
		return nil, err
	}
	if pub.Model != model {
		return nil, protocol.Errorf(protocol.CodeAdapterCorrupt, "the published entry of model %s (revision %d) is model %s's", model, rev, pub.Model)
	}
	res := &protocol.AdapterPullResponse{Version: protocol.Version, Model: model, Published: *pub, Revision: rev}
	d.pullMu.Lock()
	defer d.pullMu.Unlock()
	have, err := d.store.adapterWithDigest(model, pub.Digest)
	if err != nil {
		return nil, fmt.Errorf("reading the adapter versions of model %s: %w", model, err)
	}
	if have != nil {
		res.AdapterVersion = have.AdapterVersion
		return res, nil
	}
	if !anyBase {
		if err := d.checkBase(model, pub); err != nil {
			return nil, err
		}
	}
	packed, err := fleet.fetch(ctx, pub)
	if err != nil {
		return nil, err
	}
	data, err := unpack(bytes.NewReader(packed), pub.SizeBytes, pub.Digest)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeAdapterCorrupt, "the published adapter of model %s (object %s in %s, published by %s): %v; nothing was committed",
			model, pub.Digest, protocol.AdaptersBucket, pub.PublishedBy, err)
	}
	src := pub.Source
	src.Pulled = &protocol.AdapterOrigin{Node: pub.PublishedBy, AdapterVersion: pub.AdapterVersion, PublishedAt: pub.PublishedAt, Revision: rev}
	rec, err := d.commitAdapterData(model, data, AdapterMeta{Source: src, Metrics: pub.Metrics})
	if err != nil {
		return nil, err
	}
	res.AdapterVersion, res.Pulled = rec.AdapterVersion, true
	// The edits the version holds need no training here: those stored
	// here become active in it.
	if _, err := d.store.activateEdits(src.Edits, rec.AdapterVersion); err != nil {
		return nil, fmt.Errorf("marking the edits of the pulled version active: %w", err)
	}
	return res, nil
}

// checkBase refuses a published version made for another file of the
// model than this node's, when both digests are known: its tensors may
// fit and still serve other text than the publisher's.
func (d *Daemon) checkBase(model string, pub *protocol.PublishedAdapter) error {
	if pub.Base.Digest == "" {
		return nil
	}
	local, err := d.reg.identity(model)
	if err != nil {
		return err
	}
	if local.Digest == "" || strings.EqualFold(local.Digest, pub.Base.Digest) {
		return nil
	}
	return protocol.Errorf(protocol.CodeAdapterInvalid, "the published adapter of model %s was made for the model file %s (%s on node %s), and this node's is %s: pull with any_base (edgectl --any-base) to take it anyway",
		model, pub.Base.Digest, pub.Base.Name, pub.PublishedBy, local.Digest)
}
