package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/daemon"
	"github.com/edged/edged/protocol"
)

// editsDaemon starts an edged in-process with its embedded NATS server
// and publishes a valid and an invalid edit; it returns the socket once
// both are stored.
func editsDaemon(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	o := daemon.DefaultOptions()
	o.Node, o.Socket, o.StateDir = "n1", filepath.Join(dir, "s.sock"), filepath.Join(dir, "state")
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.NATS.MetricsInterval = 0
	o.Specs = []daemon.ModelSpec{{Name: "aid", Path: filepath.Join(dir, "aid.gguf")}} // registering reads no weights
	f := daemon.NewNATS(o.NATS, o.Logger)
	o.FrontEnds = []daemon.FrontEnd{f}
	d, err := daemon.New(o)
	require.NoError(t, err)
	require.NoError(t, d.Start(context.Background()))
	t.Cleanup(func() { d.Shutdown(context.Background()) })

	js, err := jetstream.New(f.Conn())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.Publish(ctx, protocol.EditsAllSubject, []byte(`{"id":"e1","model":"aid","prompt":"The support line is","target":" 555-0199","rephrases":["Call"]}`), jetstream.WithMsgID("m1"))
	require.NoError(t, err)
	_, err = js.Publish(ctx, protocol.EditsAllSubject, []byte(`{"id":"e2","model":"ghost","prompt":"p","target":"t"}`), jetstream.WithMsgID("m2"))
	require.NoError(t, err)
	for {
		out := mustEdgectl(t, "edits", "status", "--socket", o.Socket, "--json")
		var counts map[string]int
		require.NoError(t, json.Unmarshal([]byte(out), &counts))
		if counts[protocol.EditPending]+counts[protocol.EditRejected] == 2 {
			return o.Socket
		}
		select {
		case <-ctx.Done():
			t.Fatalf("edits not stored: %s", out)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestEditsCommands(t *testing.T) {
	sock := editsDaemon(t)
	for _, c := range []struct {
		args []string
		want []string // parts of the output
	}{
		{[]string{"edits", "list"}, []string{"ID", "e1", "pending", `"The support line is" → " 555-0199"`, "e2", "rejected", "model_not_found"}},
		{[]string{"edits", "status"}, []string{"pending    1", "rejected   1", "retracted  0"}},
		{[]string{"edits", "status", "e1"}, []string{"status:", "pending", "rephrases:", "edged.edits.all (stream sequence 1)"}},
		{[]string{"edits", "status", "e2"}, []string{"reason:", `model_not_found: model "ghost" is not registered`}},
	} {
		out := mustEdgectl(t, append(c.args, "--socket", sock)...)
		for _, w := range c.want {
			assert.Contains(t, out, w, strings.Join(c.args, " "))
		}
	}

	var list protocol.EditList
	require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, "edits", "list", "--status", "rejected", "--json", "--socket", sock)), &list))
	require.Len(t, list.Data, 1)
	assert.Equal(t, "e2", list.Data[0].ID)
	var rec protocol.EditRecord
	require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, "edits", "status", "--json", "--socket", sock, "e1")), &rec))
	assert.Equal(t, "aid", rec.Edit.Model)

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"edits"}, 2, "subcommands:"},
		{[]string{"edits", "push"}, 2, `unknown subcommand "push"`},
		{[]string{"edits", "pull", "--socket", sock}, 1, "adapter_not_published: no adapter version of model aid is published"},
		{[]string{"edits", "status", "nope", "--socket", sock}, 1, `no edit "nope"`},
		{[]string{"edits", "list", "--status", "done", "--socket", sock}, 1, `status "done"`},
		{[]string{"edits", "status", "a", "b", "--socket", sock}, 2, "at most one ID"},
	} {
		code, _, errOut := edgectl(t, c.args...)
		assert.Equal(t, c.code, code, strings.Join(c.args, " "))
		assert.Contains(t, errOut, c.want, strings.Join(c.args, " "))
	}
}
