package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/daemon"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/protocol"
)

// fleetDaemons starts two edged in-process on one NATS server (n1's
// embedded one, which n2 joins) and returns their sockets.
func fleetDaemons(t *testing.T) (sock1, sock2 string) {
	t.Helper()
	o1 := adaptersOptions(t, "n1")
	o1.NATS.Enabled, o1.NATS.Edits.Enabled, o1.NATS.MetricsInterval, o1.NATS.Listen = true, false, 0, "127.0.0.1:0"
	f := daemon.NewNATS(o1.NATS, o1.Logger)
	o1.FrontEnds = []daemon.FrontEnd{f}
	startInProcess(t, o1)
	o2 := adaptersOptions(t, "n2")
	o2.NATS.Enabled, o2.NATS.Edits.Enabled, o2.NATS.MetricsInterval, o2.NATS.URL = true, false, 0, f.ClientURL()
	o2.FrontEnds = []daemon.FrontEnd{daemon.NewNATS(o2.NATS, o2.Logger)}
	startInProcess(t, o2)
	return o1.Socket, o2.Socket
}

// adapters publish on one node, edits pull on the other: the second
// serves the first's greedy text; a second pull changes nothing.
func TestFleetCommands(t *testing.T) {
	sock1, sock2 := fleetDaemons(t)
	lora := saveLoRA(t, loadFixtureModel(t, fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")), trainedB)
	mustEdgectl(t, "adapters", "add", "--model", "aid", lora, "--socket", sock1)

	out := mustEdgectl(t, "adapters", "publish", "--socket", sock1)
	assert.Regexp(t, `^model aid: adapter version 1 \(lora, [\d.]+ KiB, sha256:[0-9a-f]{64}\) published \(revision 1 of EDGED_ADAPTER_VERSIONS\)\n$`, out)
	out = mustEdgectl(t, "edits", "pull", "--socket", sock2)
	assert.Regexp(t, `^model aid: adapter version 1 \(lora, [\d.]+ KiB, sha256:[0-9a-f]{64}\) pulled from node n1 \(its version 1\) is current\n$`, out)
	out = mustEdgectl(t, "adapters", "pull", "--model", "aid", "--socket", sock2)
	assert.Regexp(t, `^model aid: adapter version 1 holds the published adapter \(sha256:[0-9a-f]{64}\) already; nothing changed\n$`, out)
	assert.Contains(t, mustEdgectl(t, "adapters", "list", "--socket", sock2), "file lora.gguf, pulled from n1 v1")
	var res protocol.AdapterPullResponse
	require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, "edits", "pull", "--json", "--socket", sock2)), &res))
	assert.False(t, res.Pulled)
	assert.Equal(t, "n1", res.Published.PublishedBy)

	generate := func(sock string) string {
		return mustEdgectl(t, "generate", "--model", "aid", "--prompt", "The robot", "-n", "24", "--temp", "0", "--socket", sock)
	}
	assert.Equal(t, generate(sock1), generate(sock2))

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"adapters", "publish", "0", "--socket", sock1}, 2, `VERSION "0"`},
		{[]string{"adapters", "publish", "1", "2", "--socket", sock1}, 2, "give at most one VERSION"},
		{[]string{"adapters", "publish", "7", "--socket", sock1}, 1, "adapter_not_found"},
		{[]string{"adapters", "publish", "--model", "ghost", "--socket", sock1}, 1, "model_not_found"},
		{[]string{"edits", "pull", "extra", "--socket", sock2}, 2, `unexpected argument "extra"`},
	} {
		code, _, errOut := edgectl(t, c.args...)
		assert.Equal(t, c.code, code, strings.Join(c.args, " "))
		assert.Contains(t, errOut, c.want, strings.Join(c.args, " "))
	}
}
