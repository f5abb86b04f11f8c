package daemon

// The fleet's store of adapter versions on JetStream (see fleet.go and
// protocol/fleet.go): the object store protocol.AdaptersBucket holds each
// published adapter's compressed GGUF, named by digest; the key-value
// bucket protocol.AdapterVersionsBucket holds each model's published
// version under protocol.AdapterKey(model), keeping the last
// fleetHistory publications (nats kv history).
//
// Buckets. With the embedded server edged creates both at start. With an
// external server (nats.url) a publication creates those missing, which
// needs the permission to create streams; without it the publication
// fails with fleet_unavailable and says which bucket to create. A pull
// never creates one: a missing bucket means that nothing was published.
//
// A leaf node's embedded server keeps JetStream to itself (see
// embeddedServerOptions), so nodes behind leaf-node remotes publish to
// and pull from their own stores, not the hub's: share adapter versions
// between nodes that join one server or cluster with nats.url.
//
// Besides the requests, two optional workers: auto_publish publishes each
// version committed here (not those pulled), and auto_pull watches the
// key-value bucket and pulls each version that another node publishes
// for a registered model, at start the ones published while this node
// was away.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edged/edged/protocol"
)

// fleetHistory is how many publications of each model the key-value
// bucket keeps.
const fleetHistory = 5

// autoPublishQueue bounds the commits waiting for auto_publish.
const autoPublishQueue = 64

// natsFleet is the adapterFleet of the NATS front end.
type natsFleet struct {
	js jetstream.JetStream
}

var _ adapterFleet = (*natsFleet)(nil)

// objectsConfig is the object store's configuration.
func objectsConfig() jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      protocol.AdaptersBucket,
		Description: "edged adapter versions published for the fleet: zstd-compressed adapter GGUF files, named by the GGUF's digest",
		Storage:     jetstream.FileStorage,
	}
}

// versionsConfig is the key-value bucket's configuration.
func versionsConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:       protocol.AdapterVersionsBucket,
		Description:  "edged: each model's published adapter version (protocol.PublishedAdapter as JSON)",
		History:      fleetHistory,
		Storage:      jetstream.FileStorage,
		MaxValueSize: protocol.MaxBodyBytes,
	}
}

// create creates or updates both buckets, for the embedded server.
func (fl *natsFleet) create(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, editsAPITimeout)
	defer cancel()
	if _, err := fl.js.CreateOrUpdateObjectStore(ctx, objectsConfig()); err != nil {
		return fmt.Errorf("creating the object store %s: %w", protocol.AdaptersBucket, err)
	}
	if _, err := fl.js.CreateOrUpdateKeyValue(ctx, versionsConfig()); err != nil {
		return fmt.Errorf("creating the key-value bucket %s: %w", protocol.AdapterVersionsBucket, err)
	}
	return nil
}

// objects opens the object store, creating it when create is set; a
// missing one is jetstream.ErrBucketNotFound otherwise.
func (fl *natsFleet) objects(ctx context.Context, create bool) (jetstream.ObjectStore, error) {
	return openBucket(ctx, protocol.AdaptersBucket, create, fl.js.ObjectStore,
		func(ctx context.Context) (jetstream.ObjectStore, error) {
			return fl.js.CreateObjectStore(ctx, objectsConfig())
		})
}

// versions opens the key-value bucket as objects opens the object store.
func (fl *natsFleet) versions(ctx context.Context, create bool) (jetstream.KeyValue, error) {
	return openBucket(ctx, protocol.AdapterVersionsBucket, create, fl.js.KeyValue,
		func(ctx context.Context) (jetstream.KeyValue, error) {
			return fl.js.CreateKeyValue(ctx, versionsConfig())
		})
}

// openBucket looks a bucket up and, when it is missing and mayCreate is
// set, creates it (another node may create it at the same moment: then
// it is looked up again). Any failure but a missing bucket is
// fleet_unavailable.
func openBucket[B any](ctx context.Context, name string, mayCreate bool,
	lookup func(context.Context, string) (B, error), create func(context.Context) (B, error)) (B, error) {
	b, err := lookup(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) && mayCreate {
		var cerr error
		if b, cerr = create(ctx); cerr == nil {
			return b, nil
		}
		if b, err = lookup(ctx, name); err != nil {
			return b, unavailable(fmt.Errorf("the NATS server has no bucket %s, and creating it failed: %w (create it on the server, or allow edged's user to)", name, cerr))
		}
	}
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return b, err
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return b, unavailable(fmt.Errorf("bucket %s: the NATS server has no JetStream for this account (%w); adapter versions are shared through JetStream", name, err))
	case err != nil:
		return b, unavailable(fmt.Errorf("bucket %s: %w", name, err))
	}
	return b, nil
}

func unavailable(err error) error {
	return protocol.Errorf(protocol.CodeFleetUnavailable, "%v", err)
}

func (fl *natsFleet) put(ctx context.Context, pub *protocol.PublishedAdapter, packed []byte) (uint64, error) {
	value, err := json.Marshal(pub)
	if err != nil {
		return 0, err
	}
	objs, err := fl.objects(ctx, true)
	if err != nil {
		return 0, err
	}
	vers, err := fl.versions(ctx, true)
	if err != nil {
		return 0, err
	}
	// The object first: an entry never names an object that is not
	// there yet. Putting it again replaces the chunks of an earlier copy,
	// which repairs a damaged one.
	meta := jetstream.ObjectMeta{Name: pub.Digest, Description: "edged " + pub.Kind + " adapter GGUF, zstd-compressed"}
	if _, err := objs.Put(ctx, meta, bytes.NewReader(packed)); err != nil {
		return 0, unavailable(fmt.Errorf("storing the adapter in %s: %w", protocol.AdaptersBucket, err))
	}
	rev, err := vers.Put(ctx, protocol.AdapterKey(pub.Model), value)
	if err != nil {
		return 0, unavailable(fmt.Errorf("writing the entry of model %s in %s: %w", pub.Model, protocol.AdapterVersionsBucket, err))
	}
	return rev, nil
}

func (fl *natsFleet) latest(ctx context.Context, model string) (*protocol.PublishedAdapter, uint64, error) {
	vers, err := fl.versions(ctx, false)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, 0, protocol.ParamErrorf(protocol.CodeNotPublished, "model", "no adapter version of model %s is published: the NATS server has no bucket %s yet", model, protocol.AdapterVersionsBucket)
	}
	if err != nil {
		return nil, 0, err
	}
	key := protocol.AdapterKey(model)
	entry, err := vers.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, protocol.ParamErrorf(protocol.CodeNotPublished, "model", "no adapter version of model %s is published (no key %s in %s)", model, key, protocol.AdapterVersionsBucket)
	case err != nil:
		return nil, 0, unavailable(fmt.Errorf("reading key %s of %s: %w", key, protocol.AdapterVersionsBucket, err))
	}
	pub, err := protocol.DecodePublishedAdapter(entry.Value())
	if err != nil {
		return nil, 0, protocol.Errorf(protocol.CodeAdapterCorrupt, "the published entry of model %s (key %s, revision %d of %s) is not valid: %s",
			model, key, entry.Revision(), protocol.AdapterVersionsBucket, protocol.AsError(err).Message)
	}
	return pub, entry.Revision(), nil
}

func (fl *natsFleet) fetch(ctx context.Context, pub *protocol.PublishedAdapter) ([]byte, error) {
	corrupt := func(format string, args ...any) error {
		return protocol.Errorf(protocol.CodeAdapterCorrupt, "the published adapter of model %s (object %s in %s, published by %s): %s; nothing was committed",
			pub.Model, pub.Digest, protocol.AdaptersBucket, pub.PublishedBy, fmt.Sprintf(format, args...))
	}
	objs, err := fl.objects(ctx, false)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, corrupt("the object store is missing")
	}
	if err != nil {
		return nil, err
	}
	obj, err := objs.Get(ctx, pub.Digest)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return nil, corrupt("the object is missing")
	case err != nil:
		return nil, unavailable(fmt.Errorf("fetching object %s of %s: %w", pub.Digest, protocol.AdaptersBucket, err))
	}
	defer obj.Close()
	info, err := obj.Info()
	if err != nil {
		return nil, unavailable(fmt.Errorf("fetching object %s of %s: %w", pub.Digest, protocol.AdaptersBucket, err))
	}
	if info.Size != uint64(pub.CompressedBytes) {
		return nil, corrupt("the object holds %d bytes, the entry says %d", info.Size, pub.CompressedBytes)
	}
	// The object store checks its digest once the last chunk is read; the
	// limit keeps a store that sends more than it said from filling the
	// memory.
	packed, err := io.ReadAll(io.LimitReader(obj, pub.CompressedBytes+1))
	switch {
	case errors.Is(err, jetstream.ErrDigestMismatch):
		return nil, corrupt("its chunks fail the object store's digest check (%s)", info.Digest)
	case err != nil:
		return nil, unavailable(fmt.Errorf("fetching object %s of %s: %w", pub.Digest, protocol.AdaptersBucket, err))
	case int64(len(packed)) != pub.CompressedBytes:
		return nil, corrupt("read %d bytes, the entry says %d", len(packed), pub.CompressedBytes)
	}
	return packed, nil
}

// startFleet hands the fleet's store to the daemon and starts the workers
// the options ask for; owned creates the buckets on the embedded server.
func (f *NATS) startFleet(ctx context.Context, be natsBackend, js jetstream.JetStream, owned bool) error {
	fl := &natsFleet{js: js}
	if owned {
		if err := fl.create(ctx); err != nil {
			return fmt.Errorf("nats: %w", err)
		}
	}
	be.useFleet(fl)
	ctx, cancel := context.WithCancel(context.Background())
	f.stopFleet = cancel
	if f.opts.Fleet.AutoPublish {
		f.autoPublish(ctx, be)
	}
	if f.opts.Fleet.AutoPull {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			keepTrying(ctx, f.log, "auto_pull: retrying", func(ctx context.Context) error { return f.autoPull(ctx, be, fl) })
		}()
	}
	return nil
}

// autoPublish publishes each version committed here, one at a time, in
// the order they were committed; the versions pulled from the fleet are
// committed with another event, and are not sent back.
func (f *NATS) autoPublish(ctx context.Context, be natsBackend) {
	queue := make(chan Event, autoPublishQueue)
	be.OnEvent(func(ev Event) {
		if ev.Kind != "adapter_committed" {
			return
		}
		select {
		case queue <- ev:
		default: // a listener must not block the commit
			f.log.Error("auto_publish: too many versions waiting; this one is not published", "model", ev.Model, "version", ev.AdapterVersion)
		}
	})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-queue:
				_, err := be.PublishAdapter(ctx, &protocol.AdapterPublishRequest{Model: ev.Model, AdapterVersion: ev.AdapterVersion})
				if err != nil && ctx.Err() == nil {
					f.log.Error("auto_publish: version not published", "model", ev.Model, "version", ev.AdapterVersion, "err", err)
				}
			}
		}
	}()
}

// autoPull watches the published versions until ctx ends or the watch
// fails, and pulls those of registered models that other nodes publish.
// A pull that fails is logged and not tried again until the model's
// next publication or the next start.
func (f *NATS) autoPull(ctx context.Context, be natsBackend, fl *natsFleet) error {
	vers, err := fl.versions(ctx, false)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("waiting for the first publication: the NATS server has no bucket %s yet", protocol.AdapterVersionsBucket)
	}
	if err != nil {
		return err
	}
	w, err := vers.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watching %s: %w", protocol.AdapterVersionsBucket, err)
	}
	defer w.Stop()
	f.log.Info("auto_pull: watching the published adapter versions", "bucket", protocol.AdapterVersionsBucket)
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return fmt.Errorf("the watch of %s ended", protocol.AdapterVersionsBucket)
			case e == nil, e.Operation() != jetstream.KeyValuePut:
				// nil marks the end of the values published before.
				continue
			}
			f.pullPublished(ctx, be, e)
		}
	}
}

// pullPublished pulls the version of one entry when it is another node's
// publication for a model registered here.
func (f *NATS) pullPublished(ctx context.Context, be natsBackend, e jetstream.KeyValueEntry) {
	pub, err := protocol.DecodePublishedAdapter(e.Value())
	if err != nil {
		f.log.Warn("auto_pull: an entry that is not valid", "key", e.Key(), "revision", e.Revision(), "err", err)
		return
	}
	if pub.PublishedBy == be.Node() || e.Key() != protocol.AdapterKey(pub.Model) || !slices.Contains(be.EditModels(), pub.Model) {
		return
	}
	res, err := be.PullAdapter(ctx, &protocol.AdapterPullRequest{Model: pub.Model})
	switch {
	case err != nil && ctx.Err() == nil:
		f.log.Error("auto_pull: version not pulled", "model", pub.Model, "published_by", pub.PublishedBy, "digest", pub.Digest, "err", err)
	case err == nil && res.Pulled:
		f.log.Info("auto_pull: version pulled", "model", pub.Model, "version", res.AdapterVersion, "published_by", pub.PublishedBy, "digest", pub.Digest)
	}
}
