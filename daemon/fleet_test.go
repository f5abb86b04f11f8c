package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/protocol"
)

// fleetNode is a started daemon serving the aidreams fixture as "aid",
// with its NATS front end and the events it emitted.
type fleetNode struct {
	*Daemon
	o    Options
	nats *NATS

	mu     sync.Mutex
	events []Event
}

// startFleetNode starts a daemon named node whose NATS front end runs the
// embedded server on a random loopback port (url "") or joins url.
func startFleetNode(t *testing.T, node, url string, fleet FleetOptions) *fleetNode {
	t.Helper()
	o := testOptions(t)
	o.Node = node
	o.NATS.Enabled, o.NATS.Edits.Enabled, o.NATS.MetricsInterval = true, false, 0
	o.NATS.Fleet = fleet
	if url == "" {
		o.NATS.Listen = "127.0.0.1:0"
	} else {
		o.NATS.URL = url
	}
	n := &fleetNode{o: o, nats: NewNATS(o.NATS, o.Logger)}
	n.o.FrontEnds = []FrontEnd{n.nats}
	n.Daemon = startDaemon(t, n.o)
	n.Service().OnEvent(func(ev Event) {
		if strings.HasPrefix(ev.Kind, "adapter_") {
			n.mu.Lock()
			n.events = append(n.events, ev)
			n.mu.Unlock()
		}
	})
	return n
}

// eventKinds lists the kinds of the adapter events so far.
func (n *fleetNode) eventKinds() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var kinds []string
	for _, ev := range n.events {
		kinds = append(kinds, fmt.Sprintf("%s %d", ev.Kind, ev.AdapterVersion))
	}
	return kinds
}

// startFleet starts two nodes on one NATS server: n1 runs it (embedded,
// listening on loopback), n2 joins it with nats.url. It returns them and
// a JetStream client of the server. n2 stops first.
func startFleet(t *testing.T, fleet FleetOptions) (n1, n2 *fleetNode, js jetstream.JetStream) {
	t.Helper()
	n1 = startFleetNode(t, "n1", "", fleet)
	require.NotEmpty(t, n1.nats.ClientURL())
	n2 = startFleetNode(t, "n2", n1.nats.ClientURL(), fleet)
	nc, err := nats.Connect(n1.nats.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err = jetstream.New(nc)
	require.NoError(t, err)
	return n1, n2, js
}

func publishVersion(t *testing.T, n *fleetNode, version uint64) *protocol.AdapterPublishResponse {
	t.Helper()
	res, err := n.Service().PublishAdapter(context.Background(), &protocol.AdapterPublishRequest{Model: "aid", AdapterVersion: version})
	require.NoError(t, err)
	return res
}

func pull(n *fleetNode, anyBase bool) (*protocol.AdapterPullResponse, error) {
	return n.Service().PullAdapter(context.Background(), &protocol.AdapterPullRequest{Model: "aid", AnyBase: anyBase})
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// The acceptance: a second edged joined to the first's NATS
// server pulls the version the first published and serves the same
// greedy tokens; a second pull changes nothing.
func TestFleetPublishPull(t *testing.T) {
	n1, n2, js := startFleet(t, FleetOptions{})
	ctx := context.Background()

	_, err := pull(n2, false)
	assert.Equal(t, protocol.CodeNotPublished, protocol.CodeOf(err), "nothing published: %v", err)
	_, err = n1.Service().PublishAdapter(ctx, &protocol.AdapterPublishRequest{Model: "aid"})
	assert.Equal(t, protocol.CodeAdapterNotFound, protocol.CodeOf(err), "the base model is current: %v", err)
	_, err = n1.Service().PublishAdapter(ctx, &protocol.AdapterPublishRequest{Model: "ghost"})
	assert.Equal(t, protocol.CodeModelNotFound, protocol.CodeOf(err))

	lora := loraFile(t, aidreams(t), 1)
	v := commit(t, n1.Daemon, lora)
	require.NoError(t, n1.setAdapterMetrics("aid", v, json.RawMessage(`{"reliability":1}`)))
	pub := publishVersion(t, n1, 0)
	p := pub.Published
	assert.Equal(t, "aid", p.Model)
	assert.Equal(t, v, p.AdapterVersion)
	assert.Equal(t, fileDigest(t, lora), p.Digest)
	assert.Equal(t, testSource, p.Source)
	assert.JSONEq(t, `{"reliability":1}`, string(p.Metrics))
	assert.Equal(t, "n1", p.PublishedBy)
	assert.Equal(t, protocol.BaseModel{Name: "aid", Digest: fileDigest(t, aidreams(t)), SizeBytes: p.Base.SizeBytes}, p.Base)
	assert.Positive(t, p.Base.SizeBytes)

	// What other tools see on the server: the entry under the model's key
	// and the object named by the digest.
	kv, err := js.KeyValue(ctx, protocol.AdapterVersionsBucket)
	require.NoError(t, err)
	entry, err := kv.Get(ctx, protocol.AdapterKey("aid"))
	require.NoError(t, err)
	assert.Equal(t, pub.Revision, entry.Revision())
	stored, err := protocol.DecodePublishedAdapter(entry.Value())
	require.NoError(t, err)
	assert.Equal(t, p.Digest, stored.Digest)
	objs, err := js.ObjectStore(ctx, protocol.AdaptersBucket)
	require.NoError(t, err)
	info, err := objs.GetInfo(ctx, p.Digest)
	require.NoError(t, err)
	assert.Equal(t, uint64(p.CompressedBytes), info.Size)

	// n2 holds edit e1 of the version, pending: the pull makes it active
	// there without training.
	var seq uint64
	ingest(t, n2.Daemon, &seq, trainEdit("e1", "Zorb", " is red."))
	res, err := pull(n2, false)
	require.NoError(t, err)
	assert.True(t, res.Pulled)
	assert.Equal(t, uint64(1), res.AdapterVersion)
	e1, err := n2.Service().EditStatus(ctx, &protocol.EditStatusRequest{ID: "e1"})
	require.NoError(t, err)
	assert.Equal(t, protocol.EditActive, e1.Status)
	assert.Equal(t, uint64(1), e1.AdapterVersion)
	assert.Equal(t, pub.Revision, res.Revision)
	list, err := n2.Service().Adapters(ctx, &protocol.AdapterListRequest{Model: "aid"})
	require.NoError(t, err)
	require.Len(t, list.Data, 1)
	rec := list.Data[0]
	assert.Equal(t, p.Digest, rec.Digest)
	assert.Equal(t, uint64(1), list.Current["aid"])
	assert.Equal(t, testSource.Job, rec.Source.Job)
	assert.Equal(t, testSource.Edits, rec.Source.Edits)
	assert.Equal(t, &protocol.AdapterOrigin{Node: "n1", AdapterVersion: v, PublishedAt: p.PublishedAt, Revision: pub.Revision}, rec.Source.Pulled)
	assert.JSONEq(t, `{"reliability":1}`, string(rec.Metrics))

	changed := false
	for _, prompt := range []string{"The robot", "Once upon a time", "The support line is"} {
		want, v1 := completeWith(t, n1.Daemon, prompt, 24, nil)
		got, v2 := completeWith(t, n2.Daemon, prompt, 24, nil)
		assert.Equal(t, want, got, prompt)
		assert.Equal(t, uint64(1), v1)
		assert.Equal(t, uint64(1), v2)
		base, _ := completeWith(t, n2.Daemon, prompt, 24, ptr(int64(protocol.AdapterBase)))
		changed = changed || base != got
	}
	assert.True(t, changed, "the adapter must change some text for the comparison to mean anything")

	// The same digest again: nothing changes, not even after a rollback.
	_, err = n2.Service().RollbackAdapter(ctx, &protocol.AdapterRollbackRequest{Model: "aid"})
	require.NoError(t, err)
	res, err = pull(n2, false)
	require.NoError(t, err)
	assert.False(t, res.Pulled)
	assert.Equal(t, uint64(1), res.AdapterVersion)
	vs, cur := listAdapters(t, n2.Daemon)
	assert.Equal(t, []uint64{1}, vs)
	assert.Zero(t, cur, "a pull of a version held already moves nothing")

	assert.Equal(t, []string{"adapter_committed 1", "adapter_published 1"}, n1.eventKinds())
	assert.Equal(t, []string{"adapter_pulled 1", "adapter_rolled_back 0"}, n2.eventKinds())
}

// The socket and NATS endpoints answer as the Service does.
func TestFleetEndpoints(t *testing.T) {
	n1, n2, _ := startFleet(t, FleetOptions{})
	commit(t, n1.Daemon, loraFile(t, aidreams(t), 1))
	c := socketClient(n1.o.Socket)
	resp, body := post(t, c, "/v1/adapters/publish", `{"model":"aid","adapter_version":1}`)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	var pub protocol.AdapterPublishResponse
	require.NoError(t, json.Unmarshal(body, &pub))
	assert.Equal(t, uint64(1), pub.Published.AdapterVersion)
	for body, code := range map[string]protocol.Code{
		`{"model":"aid","adapter_version":7}`: protocol.CodeAdapterNotFound,
		`{"model":"ghost"}`:                   protocol.CodeModelNotFound,
		`{"model":"aid","force":true}`:        protocol.CodeUnknownField,
	} {
		resp, data := post(t, c, "/v1/adapters/publish", body)
		var er protocol.ErrorResponse
		require.NoError(t, json.Unmarshal(data, &er), "%s", data)
		assert.Equal(t, code, er.Error.Code, body)
		assert.Equal(t, code.HTTPStatus(), resp.StatusCode, body)
	}

	nc, err := nats.Connect(n1.nats.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	msg := request(t, nc, "edged.n2.adapters.pull", `{"model":"aid"}`)
	require.Empty(t, errorCode(t, msg), "%s", msg.Data)
	var res protocol.AdapterPullResponse
	require.NoError(t, json.Unmarshal(msg.Data, &res))
	assert.True(t, res.Pulled)
	resp, body = post(t, socketClient(n2.o.Socket), "/v1/adapters/pull", `{"model":"aid"}`)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	assert.Contains(t, string(body), `"pulled":false`)
	msg = request(t, nc, "edged.n1.adapters.publish", `{"model":"aid","adapter_version":5}`)
	assert.Equal(t, string(protocol.CodeAdapterNotFound), errorCode(t, msg))
	msg = request(t, nc, "edged.n2.adapters.pull", `{"model":"aid","any_base":1}`)
	assert.Equal(t, string(protocol.CodeInvalidValue), errorCode(t, msg))
}

// A pull checks everything it reads: an object whose chunks fail the
// object store's digest, an object that decompresses to another adapter,
// a missing object, an entry that is not valid and a base model of
// another file are refused with a clear error, and nothing is committed.
// Publishing again repairs the object.
func TestFleetPullRefused(t *testing.T) {
	n1, n2, js := startFleet(t, FleetOptions{})
	ctx := context.Background()
	commit(t, n1.Daemon, loraFile(t, aidreams(t), 1))
	other, err := os.ReadFile(loraFile(t, aidreams(t), 2))
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, protocol.AdapterVersionsBucket)
	require.NoError(t, err)
	objs, err := js.ObjectStore(ctx, protocol.AdaptersBucket)
	require.NoError(t, err)
	// rewrite changes the published entry.
	rewrite := func(t *testing.T, edit func(p *protocol.PublishedAdapter)) {
		entry, err := kv.Get(ctx, protocol.AdapterKey("aid"))
		require.NoError(t, err)
		p, err := protocol.DecodePublishedAdapter(entry.Value())
		require.NoError(t, err)
		edit(p)
		data, err := json.Marshal(p)
		require.NoError(t, err)
		_, err = kv.Put(ctx, protocol.AdapterKey("aid"), data)
		require.NoError(t, err)
	}

	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, pub *protocol.PublishedAdapter)
		code   protocol.Code
		msg    string
	}{
		{"chunks altered", func(t *testing.T, pub *protocol.PublishedAdapter) {
			// Replace the object's chunks with bytes of the same length:
			// its metadata, and digest, stay.
			info, err := objs.GetInfo(ctx, pub.Digest)
			require.NoError(t, err)
			data, err := objs.GetBytes(ctx, pub.Digest)
			require.NoError(t, err)
			data[len(data)/2] ^= 0xff
			stream, err := js.Stream(ctx, "OBJ_"+protocol.AdaptersBucket)
			require.NoError(t, err)
			subject := "$O." + protocol.AdaptersBucket + ".C." + info.NUID
			require.NoError(t, stream.Purge(ctx, jetstream.WithPurgeSubject(subject)))
			_, err = js.Publish(ctx, subject, data)
			require.NoError(t, err)
		}, protocol.CodeAdapterCorrupt, "fail the object store's digest check"},
		{"another adapter", func(t *testing.T, pub *protocol.PublishedAdapter) {
			// A sound object, and an entry that agrees with its size: only
			// the GGUF's digest tells.
			enc, err := zstd.NewWriter(nil)
			require.NoError(t, err)
			packed := enc.EncodeAll(other, nil)
			_, err = objs.PutBytes(ctx, pub.Digest, packed)
			require.NoError(t, err)
			rewrite(t, func(p *protocol.PublishedAdapter) { p.CompressedBytes = int64(len(packed)) })
		}, protocol.CodeAdapterCorrupt, "digest " + digestOf(other) + ", want "},
		{"object missing", func(t *testing.T, pub *protocol.PublishedAdapter) {
			require.NoError(t, objs.Delete(ctx, pub.Digest))
		}, protocol.CodeAdapterCorrupt, "the object is missing"},
		{"entry not valid", func(t *testing.T, pub *protocol.PublishedAdapter) {
			rewrite(t, func(p *protocol.PublishedAdapter) { p.Kind = "ia3" })
		}, protocol.CodeAdapterCorrupt, `kind "ia3"`},
		{"another base", func(t *testing.T, pub *protocol.PublishedAdapter) {
			rewrite(t, func(p *protocol.PublishedAdapter) { p.Base.Digest = "sha256:" + strings.Repeat("0", 64) })
		}, protocol.CodeAdapterInvalid, "was made for the model file sha256:000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pub := publishVersion(t, n1, 1).Published
			c.tamper(t, &pub)
			_, err := pull(n2, false)
			require.Error(t, err)
			assert.Equal(t, c.code, protocol.CodeOf(err), "%v", err)
			assert.ErrorContains(t, err, c.msg)
			vs, cur := listAdapters(t, n2.Daemon)
			assert.Empty(t, vs, "nothing committed")
			assert.Zero(t, cur)
		})
	}

	// any_base takes a version made for another file of the model.
	publishVersion(t, n1, 1)
	rewrite(t, func(p *protocol.PublishedAdapter) { p.Base.Digest = "sha256:" + strings.Repeat("0", 64) })
	res, err := pull(n2, true)
	require.NoError(t, err)
	assert.True(t, res.Pulled)
	assert.Equal(t, []string{"adapter_pulled 1"}, n2.eventKinds())
}

// With an external server without the buckets, a pull finds nothing
// published and a publication creates them; a server without JetStream
// is reported as such, and so is a daemon without NATS.
func TestFleetExternalServer(t *testing.T) {
	start := func(t *testing.T, jetStream bool) string {
		opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true, JetStream: jetStream, StoreDir: t.TempDir()}
		ns, err := server.NewServer(opts)
		require.NoError(t, err)
		ns.Start()
		t.Cleanup(ns.Shutdown)
		require.True(t, ns.ReadyForConnections(5*time.Second))
		return ns.ClientURL()
	}
	n := startFleetNode(t, "n1", start(t, true), FleetOptions{})
	_, err := pull(n, false)
	assert.Equal(t, protocol.CodeNotPublished, protocol.CodeOf(err))
	assert.ErrorContains(t, err, "has no bucket EDGED_ADAPTER_VERSIONS yet")
	commit(t, n.Daemon, loraFile(t, aidreams(t), 1))
	publishVersion(t, n, 0)
	res, err := pull(n, false)
	require.NoError(t, err)
	assert.False(t, res.Pulled, "its own version")

	n = startFleetNode(t, "n2", start(t, false), FleetOptions{})
	commit(t, n.Daemon, loraFile(t, aidreams(t), 1))
	_, err = n.Service().PublishAdapter(context.Background(), &protocol.AdapterPublishRequest{Model: "aid"})
	assert.Equal(t, protocol.CodeFleetUnavailable, protocol.CodeOf(err), "%v", err)
	assert.ErrorContains(t, err, "the NATS server has no JetStream")

	d := startDaemon(t, testOptions(t))
	_, err = d.Service().PullAdapter(context.Background(), &protocol.AdapterPullRequest{Model: "aid"})
	assert.Equal(t, protocol.CodeFleetUnavailable, protocol.CodeOf(err))
	assert.ErrorContains(t, err, "nats.enabled")
}

// auto_publish and auto_pull on both nodes: a version committed on one
// reaches the other and becomes current there; a pulled version is not
// published back, and a node does not pull its own.
func TestFleetAuto(t *testing.T) {
	auto := FleetOptions{AutoPublish: true, AutoPull: true}
	n1, n2, js := startFleet(t, auto)
	kv, err := js.KeyValue(context.Background(), protocol.AdapterVersionsBucket)
	require.NoError(t, err)
	has := func(n *fleetNode, digest string, version uint64) func() error {
		return func() error {
			list, err := n.Service().Adapters(context.Background(), &protocol.AdapterListRequest{Model: "aid"})
			if err != nil {
				return err
			}
			for _, r := range list.Data {
				if r.Digest == digest && r.AdapterVersion == version && list.Current["aid"] == version {
					return nil
				}
			}
			return fmt.Errorf("%s: no current version %d with %s in %+v", n.o.Node, version, digest, list)
		}
	}
	first, second := loraFile(t, aidreams(t), 1), loraFile(t, aidreams(t), 2)
	commit(t, n1.Daemon, first)
	checkFor(t, 10*time.Second, 10*time.Millisecond, has(n2, fileDigest(t, first), 1))
	commit(t, n2.Daemon, second)
	checkFor(t, 10*time.Second, 10*time.Millisecond, has(n1, fileDigest(t, second), 2))

	history, err := kv.History(context.Background(), protocol.AdapterKey("aid"))
	require.NoError(t, err)
	var by []string
	for _, e := range history {
		p, err := protocol.DecodePublishedAdapter(e.Value())
		require.NoError(t, err)
		by = append(by, p.PublishedBy)
	}
	assert.Equal(t, []string{"n1", "n2"}, by, "each version published once, by the node that made it")
	// A publication's event follows its entry, which the other node may
	// have pulled already.
	for n, want := range map[*fleetNode][]string{
		n1: {"adapter_committed 1", "adapter_published 1", "adapter_pulled 2"},
		n2: {"adapter_pulled 1", "adapter_committed 2", "adapter_published 2"},
	} {
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if got := n.eventKinds(); !slices.Equal(got, want) {
				return fmt.Errorf("%s: events %v, want %v", n.o.Node, got, want)
			}
			return nil
		})
	}
}

// Issue 9's fleet acceptance with an edit version: a node trains edits
// into a version and publishes it; a second node, holding the same edits
// pending, pulls it instead of training, marks them active and gives the
// same greedy continuations of the edit prompts.
func TestFleetPullsEditVersion(t *testing.T) {
	n1, n2, _ := startFleet(t, FleetOptions{})
	edits := []protocol.Edit{trainEdit("e1", "Zorb", " is red."), trainEdit("e2", "Kivo", " can fly."), trainEdit("e3", "Plox", " will sing.")}
	var seq1, seq2 uint64
	ingest(t, n1.Daemon, &seq1, edits...)
	ingest(t, n2.Daemon, &seq2, edits...)
	j := submit(t, n1.Daemon, &protocol.JobSubmitRequest{Kind: protocol.JobKindEdits, Model: "aid", Edits: &protocol.EditsJob{Optimizer: "grad", Steps: 8, LR: 3e-2, Layer: ptr(3)}})
	waitJob(t, n1.Daemon, j.ID, protocol.JobDone, 0)
	publishVersion(t, n1, 0)
	res, err := pull(n2, false)
	require.NoError(t, err)
	require.True(t, res.Pulled)
	changed := false
	for _, e := range edits {
		rec, err := n2.Service().EditStatus(context.Background(), &protocol.EditStatusRequest{ID: e.ID})
		require.NoError(t, err)
		assert.Equal(t, protocol.EditActive, rec.Status, e.ID)
		want, _ := completeWith(t, n1.Daemon, e.Prompt, 8, nil)
		got, v := completeWith(t, n2.Daemon, e.Prompt, 8, nil)
		assert.Equal(t, want, got, e.Prompt)
		assert.Equal(t, res.AdapterVersion, v)
		base, _ := completeWith(t, n2.Daemon, e.Prompt, 8, ptr(int64(protocol.AdapterBase)))
		changed = changed || base != got
	}
	assert.True(t, changed, "the edits change some continuation, or the comparison means nothing")
	jobs, err := n2.Service().Jobs(context.Background(), &protocol.JobListRequest{})
	require.NoError(t, err)
	assert.Empty(t, jobs.Data, "the puller trained nothing")
}
