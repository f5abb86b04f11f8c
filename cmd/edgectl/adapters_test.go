package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/adapt"
	"github.com/edged/edged/daemon"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/protocol"
)

// adaptersOptions are the options of an edged in-process named node,
// serving the aidreams fixture as "aid" on the CPU, without NATS.
func adaptersOptions(t *testing.T, node string) daemon.Options {
	t.Helper()
	dir := t.TempDir()
	o := daemon.DefaultOptions()
	o.Node, o.Socket, o.StateDir = node, filepath.Join(dir, "s.sock"), filepath.Join(dir, "state")
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.NATS.Enabled = false
	o.Engine.Backend, o.Engine.Threads = "cpu", 1
	o.Specs = []daemon.ModelSpec{{Name: "aid", Path: fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")}}
	return o
}

// startInProcess starts an edged with o, shut down when the test ends.
func startInProcess(t *testing.T, o daemon.Options) {
	t.Helper()
	d, err := daemon.New(o)
	require.NoError(t, err)
	require.NoError(t, d.Start(context.Background()))
	t.Cleanup(func() { d.Shutdown(context.Background()) })
}

// adaptersDaemon starts an edged in-process as adaptersOptions says and
// returns its socket.
func adaptersDaemon(t *testing.T) string {
	t.Helper()
	o := adaptersOptions(t, "n1")
	startInProcess(t, o)
	return o.Socket
}

// An adapter made offline, added with `adapters add`, serves the greedy
// tokens `run --adapter` gives; rollbacks (adapters and edits) switch the
// daemon between versions and the base model.
func TestAdaptersCommands(t *testing.T) {
	sock := adaptersDaemon(t)
	aid := fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
	m := loadFixtureModel(t, aid)
	first := saveLoRA(t, m, trainedB)
	second := saveLoRA(t, m, func(lo *adapt.LoRA) {
		for _, p := range lo.Pairs {
			for i := range p.B {
				p.B[i] = 0.2 * float32(math.Cos(float64(i)))
			}
		}
	})
	const prompt = "The robot"
	run := func(adapter ...string) string {
		args := append([]string{"run", "--model", aid, "--prompt", prompt, "-n", "30", "--temp", "0", "-t", "1", "--json"}, adapter...)
		var res struct{ Text string }
		require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, args...)), &res))
		return res.Text
	}
	generate := func(extra ...string) string {
		args := append([]string{"generate", "--model", "aid", "--prompt", prompt, "-n", "30", "--temp", "0", "--socket", sock}, extra...)
		return strings.TrimSuffix(mustEdgectl(t, args...), "\n")
	}
	base, withFirst, withSecond := run(), run("--adapter", first), run("--adapter", second)
	require.NotEqual(t, base, withFirst, "the adapter must change the text for the test to mean anything")
	require.NotEqual(t, withFirst, withSecond)

	out := mustEdgectl(t, "adapters", "add", "--model", "aid", first, "--socket", sock)
	assert.Contains(t, out, "model aid: adapter version 1 (lora, ")
	assert.Equal(t, withFirst, generate())
	assert.Equal(t, base, generate("--adapter-version", "-1"))
	mustEdgectl(t, "adapters", "add", second, "--model", "aid", "--socket", sock)
	assert.Equal(t, withSecond, generate())
	assert.Equal(t, withFirst, generate("--adapter-version", "1"))

	out = mustEdgectl(t, "adapters", "list", "--socket", sock)
	for _, want := range []string{"MODEL", "aid    1", "aid    2        *        lora", "file lora.gguf", "sha256:"} {
		assert.Contains(t, out, want)
	}
	var list protocol.AdapterList
	require.NoError(t, json.Unmarshal([]byte(mustEdgectl(t, "adapters", "list", "--model", "aid", "--json", "--socket", sock)), &list))
	assert.Len(t, list.Data, 2)
	assert.Equal(t, uint64(2), list.Current["aid"])

	// edits rollback is the same action; with one model --model can go.
	out = mustEdgectl(t, "edits", "rollback", "1", "--socket", sock)
	assert.Equal(t, "model aid: adapter version 1 is current (was 2)\n", out)
	assert.Equal(t, withFirst, generate())
	out = mustEdgectl(t, "adapters", "rollback", "--model", "aid", "0", "--socket", sock)
	assert.Equal(t, "model aid: the base model is current (was 1)\n", out)
	assert.Equal(t, base, generate())
	assert.Contains(t, mustEdgectl(t, "adapters", "list", "--socket", sock), "aid    0        *        base model")

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"adapters"}, 2, "subcommands:"},
		{[]string{"adapters", "push"}, 2, `unknown subcommand "push"`},
		{[]string{"adapters", "pull", "--socket", sock}, 1, "fleet_unavailable"},
		{[]string{"adapters", "rollback", "9", "--socket", sock}, 1, "model aid has no adapter version 9"},
		{[]string{"adapters", "rollback", "--model", "ghost", "1", "--socket", sock}, 1, `model "ghost" is not registered`},
		{[]string{"adapters", "rollback", "latest", "--socket", sock}, 2, `VERSION "latest"`},
		{[]string{"adapters", "rollback", "--socket", sock}, 2, "give one VERSION"},
		{[]string{"adapters", "add", first, "--socket", sock}, 2, "--model and FILE are required"},
		{[]string{"adapters", "add", "--model", "aid", aid, "--socket", sock}, 1, "adapter_invalid"},
		{[]string{"adapters", "add", "--model", "aid", filepath.Join(t.TempDir(), "none.gguf"), "--socket", sock}, 1, "none.gguf"},
		{[]string{"adapters", "list", "--model", "ghost", "--socket", sock}, 1, "model_not_found"},
		{[]string{"generate", "--model", "aid", "--prompt", "x", "--adapter-version", "5", "--socket", sock}, 1, "adapter_not_found"},
	} {
		code, _, errOut := edgectl(t, c.args...)
		assert.Equal(t, c.code, code, strings.Join(c.args, " "))
		assert.Contains(t, errOut, c.want, strings.Join(c.args, " "))
	}
}

func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		pos  []string
		n    int
	}{
		{nil, nil, 0},
		{[]string{"a"}, []string{"a"}, 0},
		{[]string{"-n", "3", "a"}, []string{"a"}, 3},
		{[]string{"a", "-n", "3", "b"}, []string{"a", "b"}, 3},
		{[]string{"a", "--", "-n", "3"}, []string{"a", "-n", "3"}, 0},
	} {
		fs := newFlags("x", "", io.Discard)
		n := fs.Int("n", 0, "")
		pos, err := parseArgs(fs, c.args)
		require.NoError(t, err, c.args)
		assert.Equal(t, c.pos, pos, c.args)
		assert.Equal(t, c.n, *n, c.args)
	}
	_, err := parseArgs(newFlags("x", "", io.Discard), []string{"a", "-bogus"})
	assert.ErrorIs(t, err, errUsage)
}
