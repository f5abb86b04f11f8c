package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/protocol"
)

// editsOptions are options for a daemon on state (a state directory that
// a test may reuse) with the NATS front end on an in-process embedded
// server, edits enabled and two registered models. Registering reads no
// weights, so the model files need not exist.
func editsOptions(t *testing.T, state string) Options {
	t.Helper()
	o := defaultOptions(func(string) string { return "" })
	o.Node = "n1"
	o.Socket = filepath.Join(t.TempDir(), "s.sock")
	o.StateDir = state
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.NATS.MetricsInterval = 0
	o.NATS.Edits.poll = 100 * time.Millisecond
	o.Specs = []ModelSpec{{Name: "aid", Path: "/nonexistent/aid.gguf"}, {Name: "qwen2.5", Path: "/nonexistent/qwen.gguf"}}
	return o
}

// editsDaemon is a started daemon with its NATS front end, the events it
// emitted and a JetStream client of its embedded server.
type editsDaemon struct {
	*Daemon
	nats *NATS
	js   jetstream.JetStream

	mu     sync.Mutex
	events []Event
}

// startEdits starts a daemon with o; prepare, when set, runs between New
// and Start (to set test hooks before any goroutine reads them).
func startEdits(t *testing.T, o Options, prepare func(d *Daemon)) *editsDaemon {
	t.Helper()
	f := NewNATS(o.NATS, o.Logger)
	o.FrontEnds = []FrontEnd{f}
	d, err := New(o)
	require.NoError(t, err)
	if prepare != nil {
		prepare(d)
	}
	ed := &editsDaemon{Daemon: d, nats: f}
	d.Service().OnEvent(func(ev Event) {
		if strings.HasPrefix(ev.Kind, "edit_") {
			ed.mu.Lock()
			ed.events = append(ed.events, ev)
			ed.mu.Unlock()
		}
	})
	require.NoError(t, d.Start(context.Background()))
	t.Cleanup(func() { ed.stop(t) })
	if f.conn.ns != nil {
		nc, err := nats.Connect("", nats.InProcessServer(f.conn.ns))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		ed.js, err = jetstream.New(nc)
		require.NoError(t, err)
	}
	return ed
}

func (ed *editsDaemon) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	assert.NoError(t, ed.Shutdown(ctx))
}

func (ed *editsDaemon) editEvents() []Event {
	ed.mu.Lock()
	defer ed.mu.Unlock()
	return append([]Event(nil), ed.events...)
}

// publish publishes data on subject with a message id and returns the
// stream's acknowledgement.
func publish(t *testing.T, js jetstream.JetStream, subject, msgID string, data []byte) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, subject, data, jetstream.WithMsgID(msgID))
	require.NoError(t, err, "publish %s", msgID)
	return ack
}

func editJSON(t *testing.T, e protocol.Edit) []byte {
	t.Helper()
	data, err := json.Marshal(e)
	require.NoError(t, err)
	return data
}

// waitConsumed waits until the node's consumer has acknowledged or
// terminated every message up to the stream sequence seq.
func waitConsumed(t *testing.T, js jetstream.JetStream, seq uint64) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		cons, err := js.Consumer(context.Background(), protocol.EditsStream, protocol.EditsConsumer("n1"))
		if err != nil {
			return err
		}
		info = cons.CachedInfo()
		if info.AckFloor.Stream < seq || info.NumAckPending > 0 {
			return fmt.Errorf("ack floor %d of %d, %d pending", info.AckFloor.Stream, seq, info.NumAckPending)
		}
		return nil
	})
	return info
}

func editRecord(t *testing.T, d *Daemon, id string) *protocol.EditRecord {
	t.Helper()
	rec, err := d.Service().EditStatus(context.Background(), &protocol.EditStatusRequest{ID: id})
	require.NoError(t, err, "edit %s", id)
	return rec
}

// An edit is stored once, pending, whether its message is published twice
// under one message id (the stream drops the second) or its id is
// published again under another message id (the daemon keeps the first).
func TestEditStoredOnce(t *testing.T) {
	ed := startEdits(t, editsOptions(t, t.TempDir()), nil)
	e := protocol.Edit{ID: "e1", Model: "aid", Prompt: "The support line is", Target: " 555-0199", Rephrases: []string{"Call support at"}}
	a1 := publish(t, ed.js, protocol.EditsAllSubject, "m1", editJSON(t, e))
	a2 := publish(t, ed.js, protocol.EditsAllSubject, "m1", editJSON(t, e))
	assert.False(t, a1.Duplicate)
	assert.True(t, a2.Duplicate, "the stream drops a message id it has seen")
	assert.Equal(t, a1.Sequence, a2.Sequence)
	changed := e
	changed.Target = " 555-0100"
	a3 := publish(t, ed.js, protocol.EditsAllSubject, "m2", editJSON(t, changed))
	require.Equal(t, uint64(2), a3.Sequence)
	waitConsumed(t, ed.js, a3.Sequence)

	rec := editRecord(t, ed.Daemon, "e1")
	assert.Equal(t, protocol.EditPending, rec.Status)
	assert.Equal(t, &e, rec.Edit, "the first message stays")
	assert.Equal(t, uint64(1), rec.StreamSeq)
	assert.Equal(t, protocol.EditsAllSubject, rec.Subject)
	list, err := ed.Service().Edits(context.Background(), &protocol.EditListRequest{})
	require.NoError(t, err)
	assert.Len(t, list.Data, 1)
	assert.Equal(t, map[string]int{protocol.EditPending: 1}, list.Counts)
	evs := ed.editEvents()
	require.Len(t, evs, 1)
	assert.Equal(t, Event{Time: evs[0].Time, Node: "n1", Kind: "edit_accepted", Model: "aid", Edit: "e1"}, evs[0])
}

// Edits addressed to this node, or to a model it serves (by the model
// subject's escaped name), are stored; those for other nodes and models
// never reach it; the consumer follows models registered later.
func TestEditAddressing(t *testing.T) {
	ed := startEdits(t, editsOptions(t, t.TempDir()), nil)
	pub := func(subject, id, model string) *jetstream.PubAck {
		return publish(t, ed.js, subject, id, editJSON(t, protocol.Edit{ID: id, Model: model, Prompt: "p", Target: "t"}))
	}
	pub(protocol.EditsNodeSubject("n1"), "node", "aid")
	pub(protocol.EditsModelSubject("qwen2.5"), "model", "qwen2.5")
	pub(protocol.EditsNodeSubject("n2"), "other-node", "aid")
	pub(protocol.EditsModelSubject("ghost"), "other-model", "ghost")
	last := pub(protocol.EditsAllSubject, "all", "aid")
	waitConsumed(t, ed.js, last.Sequence)
	list, err := ed.Service().Edits(context.Background(), &protocol.EditListRequest{})
	require.NoError(t, err)
	var ids []string
	for _, r := range list.Data {
		ids = append(ids, r.ID)
	}
	assert.Equal(t, []string{"node", "model", "all"}, ids, "in stream order, others' edits not delivered")
	assert.Equal(t, "edged.edits.model.qwen2_5", editRecord(t, ed.Daemon, "model").Subject)

	require.NoError(t, ed.Service().Register(ModelSpec{Name: "late", Path: "/nonexistent/late.gguf"}))
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		info, err := ed.js.Consumer(context.Background(), protocol.EditsStream, protocol.EditsConsumer("n1"))
		if err != nil {
			return err
		}
		if subj := info.CachedInfo().Config.FilterSubjects; !slices.Equal(subj, editFilter("n1", []string{"aid", "late", "qwen2.5"})) {
			return fmt.Errorf("filter %v", subj)
		}
		return nil
	})
	last = pub(protocol.EditsModelSubject("late"), "late-1", "late")
	waitConsumed(t, ed.js, last.Sequence)
	assert.Equal(t, protocol.EditPending, editRecord(t, ed.Daemon, "late-1").Status)
}

// Invalid messages are recorded as rejected with the reason, under their
// id when one can be read, else under their stream sequence, terminated
// and never delivered again; the read side shows them.
func TestEditRejected(t *testing.T) {
	o := editsOptions(t, t.TempDir())
	ed := startEdits(t, o, nil)
	ok := `"model":"aid","prompt":"p","target":"t"`
	cases := []struct {
		name, subject, body string
		key                 string // the record's id; "#" for the stream sequence
		code                protocol.Code
	}{
		{"malformed", protocol.EditsAllSubject, `{"id":"x1",` + ok, "#", protocol.CodeInvalidJSON},
		{"bad utf-8", protocol.EditsAllSubject, "{\"id\":\"u1\",\"model\":\"aid\",\"prompt\":\"\xff\",\"target\":\"t\"}", "u1", protocol.CodeInvalidUTF8},
		{"unknown model", protocol.EditsAllSubject, `{"id":"g1","model":"ghost","prompt":"p","target":"t"}`, "g1", protocol.CodeModelNotFound},
		{"oversize", protocol.EditsAllSubject, `{"id":"o1",` + ok[:len(ok)-len(`"t"`)] + `"` + strings.Repeat("t", protocol.MaxEditTextBytes+1) + `"}`, "o1", protocol.CodeTooLarge},
		{"bad id", protocol.EditsAllSubject, `{"id":"no/slash",` + ok + `}`, "#", protocol.CodeInvalidValue},
		{"unknown field", protocol.EditsAllSubject, `{"id":"f1",` + ok + `,"weight":3}`, "f1", protocol.CodeUnknownField},
		{"model not the subject's", protocol.EditsModelSubject("qwen2.5"), `{"id":"s1",` + ok + `}`, "s1", protocol.CodeInvalidValue},
		{"bad retraction", protocol.EditsRetractSubject, `{"id":"r1","why":"x"}`, "#", protocol.CodeUnknownField},
	}
	var last uint64
	for i, c := range cases {
		last = publish(t, ed.js, c.subject, fmt.Sprint("bad-", i), []byte(c.body)).Sequence
		if c.key == "#" {
			cases[i].key = protocol.RejectedKey(last)
		}
	}
	info := waitConsumed(t, ed.js, last)
	assert.Zero(t, info.NumRedelivered, "terminated, not redelivered")

	c := socketClient(o.Socket)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rec protocol.EditRecord
			status := getJSON(t, c, "/v1/edits/status?id="+strings.ReplaceAll(tc.key, "#", "%23"), &rec)
			require.Equal(t, http.StatusOK, status)
			assert.Equal(t, protocol.EditRejected, rec.Status)
			require.NotNil(t, rec.Error)
			assert.Equal(t, tc.code, rec.Error.Code, rec.Error.Message)
			assert.Equal(t, tc.subject, rec.Subject)
		})
	}
	var list protocol.EditList
	require.Equal(t, http.StatusOK, getJSON(t, c, "/v1/edits?status=rejected", &list))
	assert.Len(t, list.Data, len(cases))
	assert.Equal(t, map[string]int{protocol.EditRejected: len(cases)}, list.Counts)
	assert.Len(t, ed.editEvents(), len(cases))

	// A rejected id may be published again, corrected.
	last = publish(t, ed.js, protocol.EditsAllSubject, "fixed", []byte(`{"id":"g1",`+ok+`}`)).Sequence
	waitConsumed(t, ed.js, last)
	assert.Equal(t, protocol.EditPending, editRecord(t, ed.Daemon, "g1").Status)
	// An invalid message never replaces a stored edit: it is recorded
	// under its sequence.
	last = publish(t, ed.js, protocol.EditsAllSubject, "spoil", []byte(`{"id":"g1","model":"ghost","prompt":"p","target":"t"}`)).Sequence
	waitConsumed(t, ed.js, last)
	assert.Equal(t, protocol.EditPending, editRecord(t, ed.Daemon, "g1").Status)
	assert.Equal(t, protocol.CodeModelNotFound, editRecord(t, ed.Daemon, protocol.RejectedKey(last)).Error.Code)
}

// A commit that fails leaves the message unacknowledged: it is delivered
// again after the ack wait and stored once.
func TestEditCommitFailureRedelivers(t *testing.T) {
	o := editsOptions(t, t.TempDir())
	o.NATS.Edits.AckWait = 300 * time.Millisecond
	var tries atomic.Int32
	ed := startEdits(t, o, func(d *Daemon) {
		d.store.editFault = func() error {
			if tries.Add(1) == 1 {
				return errors.New("disk on fire")
			}
			return nil
		}
	})
	ack := publish(t, ed.js, protocol.EditsAllSubject, "m1", editJSON(t, protocol.Edit{ID: "e1", Model: "aid", Prompt: "p", Target: "t"}))
	waitConsumed(t, ed.js, ack.Sequence)
	assert.Equal(t, int32(2), tries.Load(), "one failed commit, one good one")
	rec := editRecord(t, ed.Daemon, "e1")
	assert.Equal(t, protocol.EditPending, rec.Status)
	assert.Equal(t, ack.Sequence, rec.StreamSeq)
	assert.Len(t, ed.editEvents(), 1, "accepted once")
}

// A retraction marks its edit retracted and keeps it; one that comes
// before its edit holds the id, so that the edit stays retracted.
func TestEditRetraction(t *testing.T) {
	ed := startEdits(t, editsOptions(t, t.TempDir()), nil)
	e := protocol.Edit{ID: "e1", Model: "aid", Prompt: "p", Target: "t"}
	publish(t, ed.js, protocol.EditsAllSubject, "e1", editJSON(t, e))
	r1 := publish(t, ed.js, protocol.EditsRetractSubject, "r1", []byte(`{"id":"e1"}`))
	publish(t, ed.js, protocol.EditsRetractSubject, "r1-again", []byte(`{"id":"e1"}`))
	publish(t, ed.js, protocol.EditsRetractSubject, "r9", []byte(`{"id":"e9"}`))
	last := publish(t, ed.js, protocol.EditsAllSubject, "e9", editJSON(t, protocol.Edit{ID: "e9", Model: "aid", Prompt: "p", Target: "t"}))
	waitConsumed(t, ed.js, last.Sequence)

	rec := editRecord(t, ed.Daemon, "e1")
	assert.Equal(t, protocol.EditRetracted, rec.Status)
	assert.Equal(t, &e, rec.Edit, "kept for history")
	assert.Equal(t, r1.Sequence, rec.RetractSeq, "the second retraction changed nothing")
	assert.False(t, rec.RetractedAt.IsZero())
	rec = editRecord(t, ed.Daemon, "e9")
	assert.Equal(t, protocol.EditRetracted, rec.Status)
	assert.Nil(t, rec.Edit, "retracted before it arrived")
	var kinds []string
	for _, ev := range ed.editEvents() {
		kinds = append(kinds, ev.Kind+":"+ev.Edit)
	}
	assert.Equal(t, []string{"edit_accepted:e1", "edit_retracted:e1", "edit_retracted:e9"}, kinds)
}

// A daemon started again on the same state directory keeps every edit
// and reprocesses none; the stream and the consumer carry on.
func TestEditRestart(t *testing.T) {
	state := t.TempDir()
	o := editsOptions(t, state)
	ed := startEdits(t, o, nil)
	for i := range 3 {
		publish(t, ed.js, protocol.EditsAllSubject, fmt.Sprint("m", i), editJSON(t, protocol.Edit{ID: fmt.Sprint("e", i), Model: "aid", Prompt: "p", Target: "t"}))
	}
	last := publish(t, ed.js, protocol.EditsAllSubject, "bad", []byte(`{"id":"b1"}`))
	waitConsumed(t, ed.js, last.Sequence)
	before, err := ed.Service().Edits(context.Background(), &protocol.EditListRequest{})
	require.NoError(t, err)
	require.Len(t, before.Data, 4)
	ed.stop(t)

	o.Specs = nil // the registry is restored from the database
	ed = startEdits(t, o, nil)
	last = publish(t, ed.js, protocol.EditsAllSubject, "m9", editJSON(t, protocol.Edit{ID: "e9", Model: "aid", Prompt: "p", Target: "t"}))
	require.Equal(t, uint64(5), last.Sequence, "the stream survived")
	info := waitConsumed(t, ed.js, last.Sequence)
	assert.Equal(t, uint64(5), info.Delivered.Stream)
	assert.Zero(t, info.NumRedelivered)
	after, err := ed.Service().Edits(context.Background(), &protocol.EditListRequest{})
	require.NoError(t, err)
	assert.Equal(t, before.Data, after.Data[:4], "unchanged, received times included")
	evs := ed.editEvents()
	require.Len(t, evs, 1, "only the new edit was processed: %+v", evs)
	assert.Equal(t, "e9", evs[0].Edit)
}

// The socket's read side: the list filters by status, one edit by id,
// and bad queries are refused like bad bodies.
func TestEditsHTTP(t *testing.T) {
	o := editsOptions(t, t.TempDir())
	ed := startEdits(t, o, nil)
	publish(t, ed.js, protocol.EditsAllSubject, "m1", editJSON(t, protocol.Edit{ID: "e1", Model: "aid", Prompt: "p", Target: "t"}))
	last := publish(t, ed.js, protocol.EditsAllSubject, "m2", []byte(`{"id":"e2"}`))
	waitConsumed(t, ed.js, last.Sequence)
	c := socketClient(o.Socket)
	for _, tc := range []struct {
		path   string
		status int
		code   protocol.Code
		ids    []string
	}{
		{"/v1/edits", 200, "", []string{"e1", "e2"}},
		{"/v1/edits?status=pending", 200, "", []string{"e1"}},
		{"/v1/edits?status=active", 200, "", nil},
		{"/v1/edits?status=done", 400, protocol.CodeInvalidValue, nil},
		{"/v1/edits?model=aid", 400, protocol.CodeUnknownField, nil},
		{"/v1/edits?status=pending&status=rejected", 400, protocol.CodeInvalidValue, nil},
		{"/v1/edits/status?id=e2", 200, "", []string{"e2"}},
		{"/v1/edits/status?id=e3", 404, protocol.CodeEditNotFound, nil},
		{"/v1/edits/status", 400, protocol.CodeInvalidValue, nil},
		{"/v1/edits/status?id=a/b", 400, protocol.CodeInvalidValue, nil},
	} {
		var raw json.RawMessage
		status := getJSON(t, c, tc.path, &raw)
		require.Equal(t, tc.status, status, "%s: %s", tc.path, raw)
		if tc.code != "" {
			var er protocol.ErrorResponse
			require.NoError(t, json.Unmarshal(raw, &er))
			assert.Equal(t, tc.code, er.Error.Code, tc.path)
			continue
		}
		var ids []string
		if strings.HasPrefix(tc.path, "/v1/edits/status") {
			var rec protocol.EditRecord
			require.NoError(t, json.Unmarshal(raw, &rec))
			ids = append(ids, rec.ID)
		} else {
			var list protocol.EditList
			require.NoError(t, json.Unmarshal(raw, &list))
			for _, r := range list.Data {
				ids = append(ids, r.ID)
			}
			assert.Equal(t, map[string]int{protocol.EditPending: 1, protocol.EditRejected: 1}, list.Counts)
		}
		assert.Equal(t, tc.ids, ids, tc.path)
	}

	// The NATS endpoints answer the same.
	nc, err := nats.Connect("", nats.InProcessServer(ed.nats.conn.ns))
	require.NoError(t, err)
	defer nc.Close()
	var rec protocol.EditRecord
	require.NoError(t, json.Unmarshal(request(t, nc, "edged.n1.edits.status", `{"id":"e1"}`).Data, &rec))
	assert.Equal(t, protocol.EditPending, rec.Status)
	var list protocol.EditList
	require.NoError(t, json.Unmarshal(request(t, nc, "edged.n1.edits", `{"status":"rejected"}`).Data, &list))
	require.Len(t, list.Data, 1)
	assert.Equal(t, "e2", list.Data[0].ID)
}

// getJSON GETs path on the socket and decodes the body into out.
func getJSON(t *testing.T, c *http.Client, path string, out any) int {
	t.Helper()
	resp, err := c.Get("http://edged" + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, out), "%s", data)
	return resp.StatusCode
}

// With an external server the stream is the operator's: while it is
// missing the intake says so in the log and tries again; once it exists
// the edits flow.
func TestEditsExternalServer(t *testing.T) {
	sopts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true, JetStream: true, StoreDir: t.TempDir()}
	ns, err := server.NewServer(sopts)
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(ns.Shutdown)
	require.True(t, ns.ReadyForConnections(5*time.Second))

	o := editsOptions(t, t.TempDir())
	o.NATS.URL = ns.ClientURL()
	var logs syncBuffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	ed := startEdits(t, o, nil)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "the NATS server has no edit stream EDGED_EDITS") {
			return fmt.Errorf("log: %s", logs.String())
		}
		return nil
	})

	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: protocol.EditsStream, Subjects: []string{protocol.EditsSubjects}, Duplicates: time.Hour})
	require.NoError(t, err)
	ack := publish(t, js, protocol.EditsAllSubject, "m1", editJSON(t, protocol.Edit{ID: "e1", Model: "aid", Prompt: "p", Target: "t"}))
	waitConsumed(t, js, ack.Sequence)
	assert.Equal(t, protocol.EditPending, editRecord(t, ed.Daemon, "e1").Status)
}

// Behind a leaf-node remote the node keeps its own JetStream, and edits
// published on the hub (without JetStream there) reach its stream.
func TestEditsThroughLeafNode(t *testing.T) {
	hubOpts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: server.RANDOM_PORT}}
	hub, err := server.NewServer(hubOpts)
	require.NoError(t, err)
	hub.Start()
	t.Cleanup(hub.Shutdown)
	require.True(t, hub.ReadyForConnections(5*time.Second))

	o := editsOptions(t, t.TempDir())
	o.NATS.LeafRemote = fmt.Sprintf("nats://127.0.0.1:%d", hubOpts.LeafNode.Port)
	ed := startEdits(t, o, nil)
	hc, err := nats.Connect(hub.ClientURL())
	require.NoError(t, err)
	defer hc.Close()
	msg := nats.NewMsg(protocol.EditsAllSubject)
	msg.Header.Set(jetstream.MsgIDHeader, "m1")
	msg.Data = editJSON(t, protocol.Edit{ID: "e1", Model: "aid", Prompt: "p", Target: "t"})
	// Until the leaf's interest reaches the hub, a publish there is lost:
	// publish until the edit is stored (the message id keeps one copy).
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if err := hc.PublishMsg(msg); err != nil {
			return err
		}
		_, err := ed.Service().EditStatus(context.Background(), &protocol.EditStatusRequest{ID: "e1"})
		return err
	})
	info, err := ed.js.Stream(context.Background(), protocol.EditsStream)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.CachedInfo().State.Msgs, "one copy, de-duplicated by message id")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
