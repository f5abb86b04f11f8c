package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/adapt"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
	"github.com/edged/edged/quant"
)

// loadModel opens the model at path for making adapters of it.
func loadModel(t *testing.T, path string) *model.Model {
	t.Helper()
	f, err := model.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	m, err := model.Load(f)
	require.NoError(t, err)
	return m
}

// loraFile writes a LoRA of the model at path, on q and v of every layer,
// whose B stands in for training (seed makes it differ from another's).
func loraFile(t *testing.T, path string, seed uint64) string {
	t.Helper()
	lo, err := adapt.NewLoRA(loadModel(t, path), adapt.LoRAOptions{Rank: 4, Seed: seed})
	require.NoError(t, err)
	for _, p := range lo.Pairs {
		for i := range p.B {
			p.B[i] = 0.3 * float32(math.Sin(float64(i)+float64(seed)))
		}
	}
	out := filepath.Join(t.TempDir(), fmt.Sprintf("lora-%d.gguf", seed))
	require.NoError(t, adapt.SaveLoRA(out, lo, quant.F32))
	return out
}

// prefixFile writes a prefix adapter of the model at path, initialised
// from the K/V of tokens.
func prefixFile(t *testing.T, path string, tokens ...int32) string {
	t.Helper()
	p, err := adapt.NewPrefix(loadModel(t, path), cpu.New(1), tokens)
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "prefix.gguf")
	require.NoError(t, adapt.SavePrefix(out, p, quant.F32))
	return out
}

// newDaemon makes a daemon that is not started, closed when the test ends
// unless the test closed it.
func newDaemon(t *testing.T, o Options) *Daemon {
	t.Helper()
	d, err := New(o)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// testSource is the source of the versions commit makes.
var testSource = protocol.AdapterSource{Job: "job-1", Edits: []string{"e1", "e2"}}

func commit(t *testing.T, d *Daemon, path string) uint64 {
	t.Helper()
	v, err := d.commitAdapter("aid", path, AdapterMeta{Source: testSource})
	require.NoError(t, err)
	return v
}

// listAdapters returns the versions stored for aid and its current one.
func listAdapters(t *testing.T, d *Daemon) ([]uint64, uint64) {
	t.Helper()
	list, err := d.Service().Adapters(context.Background(), &protocol.AdapterListRequest{Model: "aid"})
	require.NoError(t, err)
	var vs []uint64
	for _, r := range list.Data {
		vs = append(vs, r.AdapterVersion)
	}
	return vs, list.Current["aid"]
}

// storedFiles lists the adapter file store.
func storedFiles(t *testing.T, o Options) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(o.StateDir, adapterSubdir))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// fileOf is the name in the file store of the adapter file at path.
func fileOf(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return fileName(digestOf(data))
}

// Commits number the versions, keep the newest adapters.keep, share the
// file of an adapter committed twice; rollbacks move "current" among the
// kept versions; a restart keeps all of it.
func TestAdapterVersions(t *testing.T) {
	o := testOptions(t)
	o.Adapters.Keep = 3
	d := newDaemon(t, o)
	loras := make([]string, 6)
	for i := range loras {
		loras[i] = loraFile(t, aidreams(t), uint64(i+1))
	}
	vs, cur := listAdapters(t, d)
	assert.Empty(t, vs)
	assert.Zero(t, cur, "no version: the base model")

	for i := range 5 {
		assert.Equal(t, uint64(i+1), commit(t, d, loras[i]))
	}
	vs, cur = listAdapters(t, d)
	assert.Equal(t, []uint64{3, 4, 5}, vs)
	assert.Equal(t, uint64(5), cur)
	assert.ElementsMatch(t, []string{fileOf(t, loras[2]), fileOf(t, loras[3]), fileOf(t, loras[4])}, storedFiles(t, o))

	list, err := d.Service().Adapters(context.Background(), &protocol.AdapterListRequest{})
	require.NoError(t, err)
	rec := list.Data[2]
	data, err := os.ReadFile(loras[4])
	require.NoError(t, err)
	assert.Equal(t, protocol.AdapterRecord{
		Model: "aid", AdapterVersion: 5, Created: rec.Created, Source: testSource,
		Kind: protocol.AdapterLoRA, File: fileName(digestOf(data)), SizeBytes: int64(len(data)),
		CompressedBytes: rec.CompressedBytes, Digest: digestOf(data),
	}, rec)
	assert.WithinDuration(t, time.Now(), rec.Created, time.Minute)
	assert.Positive(t, rec.CompressedBytes)

	for _, c := range []struct {
		model   string
		version uint64
		code    protocol.Code
		current uint64
	}{
		{"aid", 4, "", 4},
		{"aid", 1, protocol.CodeAdapterNotFound, 4}, // deleted
		{"aid", 9, protocol.CodeAdapterNotFound, 4}, // never committed
		{"ghost", 1, protocol.CodeModelNotFound, 4},
		{"aid", 0, "", 0}, // the base model
		{"aid", 3, "", 3},
	} {
		res, err := d.Service().RollbackAdapter(context.Background(), &protocol.AdapterRollbackRequest{Model: c.model, AdapterVersion: c.version})
		if c.code != "" {
			assert.Equal(t, c.code, protocol.CodeOf(err), "%s %d", c.model, c.version)
		} else if assert.NoError(t, err, "%s %d", c.model, c.version) {
			assert.Equal(t, c.version, res.AdapterVersion)
		}
		_, cur = listAdapters(t, d)
		assert.Equal(t, c.current, cur, "after %s %d", c.model, c.version)
	}

	// A commit makes the new version current wherever "current" was, and
	// numbers are never given twice. The same adapter twice is one file,
	// kept while a version names it.
	assert.Equal(t, uint64(6), commit(t, d, loras[5]))
	assert.Equal(t, uint64(7), commit(t, d, loras[5]))
	assert.Equal(t, uint64(8), commit(t, d, loras[0]))
	assert.Equal(t, uint64(9), commit(t, d, loras[1]))
	vs, cur = listAdapters(t, d)
	assert.Equal(t, []uint64{7, 8, 9}, vs)
	assert.Equal(t, uint64(9), cur)
	assert.ElementsMatch(t, []string{fileOf(t, loras[5]), fileOf(t, loras[0]), fileOf(t, loras[1])}, storedFiles(t, o))

	// The trainer fills in the metrics later.
	require.NoError(t, d.setAdapterMetrics("aid", 8, json.RawMessage(`{"reliability":0.97}`)))
	assert.Error(t, d.setAdapterMetrics("aid", 8, json.RawMessage(`[1]`)))
	assert.Equal(t, protocol.CodeAdapterNotFound, protocol.CodeOf(d.setAdapterMetrics("aid", 1, json.RawMessage(`{}`))))
	require.NoError(t, d.Close())

	d = newDaemon(t, o)
	list, err = d.Service().Adapters(context.Background(), &protocol.AdapterListRequest{})
	require.NoError(t, err)
	assert.Equal(t, map[string]uint64{"aid": 9}, list.Current)
	require.Len(t, list.Data, 3)
	assert.JSONEq(t, `{"reliability":0.97}`, string(list.Data[1].Metrics))
	assert.ElementsMatch(t, []string{fileOf(t, loras[5]), fileOf(t, loras[0]), fileOf(t, loras[1])}, storedFiles(t, o))
}

// What is not an adapter of the model is refused and changes nothing.
func TestAdapterCommitRefused(t *testing.T) {
	o := testOptions(t)
	d := newDaemon(t, o)
	lora := loraFile(t, aidreams(t), 1)
	commit(t, d, lora)
	other := loraFile(t, fixture.Path(t, "gguf", "tiny-llama-f16.gguf"), 1)
	for _, c := range []struct {
		name, model, path string
		meta              AdapterMeta
		code              protocol.Code // "" for an error without a wire code
		msg               string
	}{
		{"a model, not an adapter", "aid", aidreams(t), AdapterMeta{}, protocol.CodeAdapterInvalid, "not an adapter file"},
		{"another model's LoRA", "aid", other, AdapterMeta{}, protocol.CodeAdapterInvalid, "does not match the base model"},
		{"unregistered model", "ghost", lora, AdapterMeta{}, protocol.CodeModelNotFound, "not registered"},
		{"missing file", "aid", filepath.Join(t.TempDir(), "none.gguf"), AdapterMeta{}, "", "no such file"},
		{"metrics not an object", "aid", lora, AdapterMeta{Metrics: json.RawMessage(`3`)}, "", "not a JSON object"},
	} {
		_, err := d.commitAdapter(c.model, c.path, c.meta)
		require.Error(t, err, c.name)
		assert.ErrorContains(t, err, c.msg, c.name)
		if c.code != "" {
			assert.Equal(t, c.code, protocol.CodeOf(err), c.name)
		}
	}
	vs, cur := listAdapters(t, d)
	assert.Equal(t, []uint64{1}, vs)
	assert.Equal(t, uint64(1), cur)
	assert.Equal(t, []string{fileOf(t, lora)}, storedFiles(t, o))
}

// A commit whose transaction fails leaves the old state and removes its
// file; a crash between the file and the transaction leaves the old state
// too, and the next start removes the file no record names.
func TestAdapterCommitCrash(t *testing.T) {
	o := testOptions(t)
	d := newDaemon(t, o)
	first, second := loraFile(t, aidreams(t), 1), loraFile(t, aidreams(t), 2)
	commit(t, d, first)

	d.store.adapterFault = func() error { return errors.New("injected commit failure") }
	_, err := d.commitAdapter("aid", second, AdapterMeta{})
	assert.ErrorContains(t, err, "injected commit failure")
	d.store.adapterFault = nil
	vs, cur := listAdapters(t, d)
	assert.Equal(t, []uint64{1}, vs)
	assert.Equal(t, uint64(1), cur)
	assert.Equal(t, []string{fileOf(t, first)}, storedFiles(t, o))

	// The crash: the file is put as a commit puts it, and no transaction
	// follows; another write left its temporary file.
	data, err := os.ReadFile(second)
	require.NoError(t, err)
	_, _, err = d.files.put(digestOf(data), data)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(o.StateDir, adapterSubdir, adapterTemp+"123"), data[:10], 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(o.StateDir, adapterSubdir, "README"), nil, 0o600))
	assert.Len(t, storedFiles(t, o), 4)
	require.NoError(t, d.Close())

	d = newDaemon(t, o)
	vs, cur = listAdapters(t, d)
	assert.Equal(t, []uint64{1}, vs)
	assert.Equal(t, uint64(1), cur)
	assert.ElementsMatch(t, []string{fileOf(t, first), "README"}, storedFiles(t, o), "files of no version are collected, others left alone")
}

// completeWith runs a greedy completion of n tokens with an adapter
// version (nil: the current one) and returns its text and the version
// that served it.
func completeWith(t *testing.T, d *Daemon, prompt string, n int, version *int64) (string, uint64) {
	t.Helper()
	req := greedy("aid", prompt, n)
	req.AdapterVersion = version
	var streamed []uint64
	res, err := d.Service().Complete(context.Background(), req, func(c *protocol.CompletionChunk) error {
		streamed = append(streamed, c.AdapterVersion)
		return nil
	})
	require.NoError(t, err)
	for _, v := range streamed {
		require.Equal(t, res.AdapterVersion, v, "every chunk names the version")
	}
	return res.Choices[0].Text, res.AdapterVersion
}

// Requests run with the current version, the one they name or none, and
// get the tokens of `edgectl run --adapter FILE` (or of no adapter) on the
// same model; chat responses name the version too.
func TestAdapterServing(t *testing.T) {
	o := testOptions(t)
	d := startDaemon(t, o)
	const prompt, n = "The robot", 30
	lora, prefix := loraFile(t, aidreams(t), 1), prefixFile(t, aidreams(t), 1, 300, 301, 302)
	base := reference(t, aidreams(t), prompt, n)
	withLoRA := referenceWith(t, aidreams(t), lora, prompt, n)
	withPrefix := referenceWith(t, aidreams(t), prefix, prompt, n)
	require.NotEqual(t, base, withLoRA, "the LoRA must change the text for the test to mean anything")
	require.NotEqual(t, base, withPrefix, "the prefix must change the text for the test to mean anything")

	text, v := completeWith(t, d, prompt, n, nil)
	assert.Equal(t, base, text, "no version yet: the base model")
	assert.Zero(t, v)

	commit(t, d, lora)
	commit(t, d, prefix)
	for _, c := range []struct {
		version *int64
		want    string
		served  uint64
	}{
		{nil, withPrefix, 2},
		{ptr(int64(0)), withPrefix, 2},
		{ptr(int64(1)), withLoRA, 1},
		{ptr(int64(2)), withPrefix, 2},
		{ptr(int64(protocol.AdapterBase)), base, 0},
	} {
		text, v := completeWith(t, d, prompt, n, c.version)
		assert.Equal(t, c.want, text, "adapter_version %v", c.version)
		assert.Equal(t, c.served, v, "adapter_version %v", c.version)
	}
	_, err := d.Service().Complete(context.Background(), &protocol.CompletionRequest{Model: "aid", Prompt: protocol.Prompt{Text: prompt}, AdapterVersion: ptr(int64(7))}, nil)
	assert.Equal(t, protocol.CodeAdapterNotFound, protocol.CodeOf(err))

	chat := &protocol.ChatRequest{Model: "aid", Messages: []protocol.Message{{Role: "user", Content: "Hi"}}, MaxTokens: ptr(5)}
	res, err := d.Service().Chat(context.Background(), chat, func(c *protocol.ChatChunk) error {
		assert.Equal(t, uint64(2), c.AdapterVersion)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, uint64(2), res.AdapterVersion)
	chat.AdapterVersion = ptr(int64(protocol.AdapterBase))
	res, err = d.Service().Chat(context.Background(), chat, nil)
	require.NoError(t, err)
	assert.Zero(t, res.AdapterVersion)
}

// A prefix adapter's rows count against the context.
func TestAdapterPrefixContext(t *testing.T) {
	o := testOptions(t)
	o.Engine.Context = 16
	d := startDaemon(t, o)
	commit(t, d, prefixFile(t, aidreams(t), 1, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309))
	_, err := d.Service().Complete(context.Background(), greedy("aid", "Once upon a time", 2), nil)
	assert.Equal(t, protocol.CodeContextLength, protocol.CodeOf(err))
	assert.ErrorContains(t, err, "the 11 rows of adapter version 1's prefix")
	req := greedy("aid", "Once upon a time", 2)
	req.AdapterVersion = ptr(int64(protocol.AdapterBase))
	_, err = d.Service().Complete(context.Background(), req, nil)
	assert.NoError(t, err, "the base model has the room")
}

// Sequences with different versions and with none share the engine
// steps, and each gets the text it gets alone.
func TestAdapterVersionsShareBatch(t *testing.T) {
	o := testOptions(t)
	inst, err := openInstance("aid", o.Specs[0], aidreams(t), o.Engine, o.Scheduler, newMetrics())
	require.NoError(t, err)
	lora1, lora2, prefix := loraFile(t, aidreams(t), 1), loraFile(t, aidreams(t), 2), prefixFile(t, aidreams(t), 1, 300, 301)
	served := func(version uint64, path string) *servedAdapter {
		a, err := adapt.Load(path, inst.mdl)
		require.NoError(t, err)
		s := &servedAdapter{version: version}
		s.lora, _ = a.(*adapt.LoRA)
		s.prefix, _ = a.(*adapt.Prefix)
		return s
	}
	cases := []struct {
		prompt, adapter string
		a               *servedAdapter
	}{
		{"The robot", "", nil},
		{"The robot", lora1, served(1, lora1)},
		{"The robot", lora2, served(2, lora2)},
		{"Once upon a time", prefix, served(3, prefix)},
		{"Once upon a time", lora1, served(1, lora1)},
		{"Once upon a time", "", nil},
	}
	require.LessOrEqual(t, len(cases), o.Scheduler.MaxActive)
	var jobs []*job
	for _, c := range cases {
		j := &job{
			ctx: context.Background(), out: newOutput(), enqueued: time.Now(), maxTokens: 25, adapter: c.a,
			prompt:  inst.tok.Encode(c.prompt, true, true),
			sampler: samplerConfig(protocol.Sampling{Temperature: ptr(0.0)}, protocol.Sampling{}),
		}
		// Queued before the scheduler starts: it admits them all before
		// its first step.
		require.NoError(t, inst.submit(j))
		jobs = append(jobs, j)
	}
	go inst.run(func() {})
	t.Cleanup(func() { inst.close(); <-inst.done })
	texts := map[string]bool{}
	for i, c := range cases {
		got := wait(t, jobs[i].out)
		assert.Equal(t, referenceWith(t, aidreams(t), c.adapter, c.prompt, 25), got, "%q with %q", c.prompt, c.adapter)
		texts[got] = true
	}
	assert.Len(t, texts, len(cases), "each version gives its own text")
}

// Many requests at once, of different versions, through the Service.
func TestAdapterConcurrentRequests(t *testing.T) {
	o := testOptions(t)
	o.Scheduler.MaxActive = 8
	o.Scheduler.PrefillChunk = 5
	d := startDaemon(t, o)
	lora, prefix := loraFile(t, aidreams(t), 1), prefixFile(t, aidreams(t), 1, 300, 301)
	commit(t, d, lora)
	commit(t, d, prefix)
	const prompt, n = "In the garden there was", 20
	want := map[uint64]string{
		0: reference(t, aidreams(t), prompt, n),
		1: referenceWith(t, aidreams(t), lora, prompt, n),
		2: referenceWith(t, aidreams(t), prefix, prompt, n),
	}
	versions := []*int64{nil, ptr(int64(1)), ptr(int64(protocol.AdapterBase)), ptr(int64(2))}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			req := greedy("aid", prompt, n)
			req.AdapterVersion = versions[i%len(versions)]
			res, err := d.Service().Complete(context.Background(), req, nil)
			if !assert.NoError(t, err) {
				return
			}
			assert.Equal(t, want[res.AdapterVersion], res.Choices[0].Text, "version %d", res.AdapterVersion)
		})
	}
	wg.Wait()
}

// A rollback switches new requests at once; a running one finishes on its
// version.
func TestAdapterRollbackWhileRunning(t *testing.T) {
	o := testOptions(t)
	d := startDaemon(t, o)
	lora, prefix := loraFile(t, aidreams(t), 1), prefixFile(t, aidreams(t), 1, 300, 301)
	commit(t, d, lora)
	commit(t, d, prefix)
	const prompt = "Once upon a time"
	started, resume := make(chan struct{}), make(chan struct{})
	type result struct {
		res *protocol.CompletionResponse
		err error
	}
	running := make(chan result, 1)
	go func() {
		var once sync.Once
		res, err := d.Service().Complete(context.Background(), greedy("aid", prompt, 60), func(*protocol.CompletionChunk) error {
			once.Do(func() { close(started); <-resume })
			return nil
		})
		running <- result{res, err}
	}()
	<-started
	_, err := d.Service().RollbackAdapter(context.Background(), &protocol.AdapterRollbackRequest{Model: "aid", AdapterVersion: 1})
	require.NoError(t, err)
	text, v := completeWith(t, d, prompt, 20, nil)
	assert.Equal(t, uint64(1), v)
	assert.Equal(t, referenceWith(t, aidreams(t), lora, prompt, 20), text)
	close(resume)
	r := <-running
	require.NoError(t, r.err)
	assert.Equal(t, uint64(2), r.res.AdapterVersion)
	assert.Equal(t, referenceWith(t, aidreams(t), prefix, prompt, 60), r.res.Choices[0].Text)
}

// A damaged version is refused with a clear error when named, and passed
// over for the previous version (then the base model) when current, so
// that the model keeps serving.
func TestAdapterCorrupt(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(t *testing.T, path string)
		msg    string
	}{
		{"altered", func(t *testing.T, path string) {
			// A well-formed file of other content of the same size.
			dec, err := zstd.NewReader(nil)
			require.NoError(t, err)
			defer dec.Close()
			packed, err := os.ReadFile(path)
			require.NoError(t, err)
			data, err := dec.DecodeAll(packed, nil)
			require.NoError(t, err)
			data[len(data)-1] ^= 1
			enc, err := zstd.NewWriter(nil)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, enc.EncodeAll(data, nil), 0o600))
		}, "digest sha256:"},
		{"truncated", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(path, fi.Size()/2))
		}, "does not decompress"},
		{"missing", func(t *testing.T, path string) { require.NoError(t, os.Remove(path)) }, "the file is missing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := testOptions(t)
			d := startDaemon(t, o)
			var failed []Event
			var mu sync.Mutex
			d.Service().OnEvent(func(ev Event) {
				if ev.Kind == "adapter_failed" {
					mu.Lock()
					failed = append(failed, ev)
					mu.Unlock()
				}
			})
			first, second := loraFile(t, aidreams(t), 1), loraFile(t, aidreams(t), 2)
			commit(t, d, first)
			commit(t, d, second)
			dir := filepath.Join(o.StateDir, adapterSubdir)
			c.damage(t, filepath.Join(dir, fileOf(t, second)))
			const prompt, n = "The robot", 20

			text, v := completeWith(t, d, prompt, n, nil)
			assert.Equal(t, uint64(1), v, "the previous version serves")
			assert.Equal(t, referenceWith(t, aidreams(t), first, prompt, n), text)
			_, err := d.Service().Complete(context.Background(), &protocol.CompletionRequest{Model: "aid", Prompt: protocol.Prompt{Text: prompt}, AdapterVersion: ptr(int64(2))}, nil)
			assert.Equal(t, protocol.CodeAdapterCorrupt, protocol.CodeOf(err))
			assert.ErrorContains(t, err, "model aid adapter version 2")
			assert.ErrorContains(t, err, c.msg)
			mu.Lock()
			assert.Len(t, failed, 1, "reported once: the failure is remembered")
			mu.Unlock()

			// With the previous version damaged as well (read again once
			// the model is loaded again), the base model serves.
			c.damage(t, filepath.Join(dir, fileOf(t, first)))
			require.NoError(t, d.Service().Unload(context.Background(), &protocol.UnloadRequest{Model: "aid"}))
			text, v = completeWith(t, d, prompt, n, nil)
			assert.Zero(t, v)
			assert.Equal(t, reference(t, aidreams(t), prompt, n), text)
			vs, cur := listAdapters(t, d)
			assert.Equal(t, []uint64{1, 2}, vs, "the records stay for the operator to see")
			assert.Equal(t, uint64(2), cur)
		})
	}
}

// The cache loads a version once for concurrent requests, keeps the most
// recently used, remembers failures that will not pass and forgets others.
func TestAdapterCache(t *testing.T) {
	c := newAdapterCache(2)
	loads := map[uint64]int{}
	var mu sync.Mutex
	load := func(v uint64, err error) func() (*servedAdapter, error) {
		return func() (*servedAdapter, error) {
			mu.Lock()
			loads[v]++
			mu.Unlock()
			time.Sleep(time.Millisecond)
			if err != nil {
				return nil, err
			}
			return &servedAdapter{version: v}, nil
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			a, err := c.get(1, load(1, nil))
			assert.NoError(t, err)
			assert.Equal(t, uint64(1), versionOf(a))
		})
	}
	wg.Wait()
	c.get(2, load(2, nil))
	c.get(1, load(1, nil)) // 1 is the most recent now
	c.get(3, load(3, nil)) // evicts 2
	c.get(2, load(2, nil))
	assert.Equal(t, map[uint64]int{1: 1, 2: 2, 3: 1}, loads)

	corrupt := protocol.Errorf(protocol.CodeAdapterCorrupt, "damaged")
	for range 2 {
		_, err := c.get(4, load(4, corrupt))
		assert.Equal(t, corrupt, err)
		_, err = c.get(5, load(5, errors.New("disk busy")))
		assert.ErrorContains(t, err, "disk busy")
	}
	assert.Equal(t, 1, loads[4], "a damaged file is read once")
	assert.Equal(t, 2, loads[5], "a passing failure is tried again")
}

// The socket and NATS endpoints, and the gauge in /metrics.
func TestAdapterEndpoints(t *testing.T) {
	o := testOptions(t)
	o.NATS.Enabled, o.NATS.Edits.Enabled, o.NATS.MetricsInterval = true, false, 0
	f := NewNATS(o.NATS, o.Logger)
	o.FrontEnds = []FrontEnd{f}
	startDaemon(t, o)
	c := socketClient(o.Socket)
	lora, err := os.ReadFile(loraFile(t, aidreams(t), 1))
	require.NoError(t, err)
	model, err := os.ReadFile(aidreams(t))
	require.NoError(t, err)

	add := func(query string, body []byte) (int, []byte) {
		resp, err := c.Post("http://edged/v1/adapters/add?"+query, "application/octet-stream", strings.NewReader(string(body)))
		require.NoError(t, err)
		defer resp.Body.Close()
		var raw json.RawMessage
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&raw))
		return resp.StatusCode, raw
	}
	for _, tc := range []struct {
		query  string
		body   []byte
		status int
		code   protocol.Code
	}{
		{"model=aid&file=lora.gguf", lora, 200, ""},
		{"model=aid", lora, 200, ""},
		{"model=ghost", lora, 404, protocol.CodeModelNotFound},
		{"model=aid&file=a/b.gguf", lora, 400, protocol.CodeInvalidValue},
		{"model=aid&scale=2", lora, 400, protocol.CodeUnknownField},
		{"file=a.gguf", lora, 400, protocol.CodeInvalidValue},
		{"model=aid", model, 400, protocol.CodeAdapterInvalid},
		{"model=aid", nil, 400, protocol.CodeInvalidValue},
	} {
		status, raw := add(tc.query, tc.body)
		require.Equal(t, tc.status, status, "%s: %s", tc.query, raw)
		if tc.code != "" {
			var er protocol.ErrorResponse
			require.NoError(t, json.Unmarshal(raw, &er))
			assert.Equal(t, tc.code, er.Error.Code, tc.query)
		}
	}
	var list protocol.AdapterList
	require.Equal(t, 200, getJSON(t, c, "/v1/adapters?model=aid", &list))
	require.Len(t, list.Data, 2)
	assert.Equal(t, "lora.gguf", list.Data[0].Source.File)
	assert.Equal(t, list.Data[0].Digest, list.Data[1].Digest, "one adapter added twice")
	assert.Equal(t, map[string]uint64{"aid": 2}, list.Current)
	var er protocol.ErrorResponse
	assert.Equal(t, 404, getJSON(t, c, "/v1/adapters?model=ghost", &er))
	assert.Equal(t, 400, getJSON(t, c, "/v1/adapters?version=2", &er))

	resp, body := post(t, c, "/v1/adapters/rollback", `{"model":"aid","adapter_version":1}`)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	var rb protocol.AdapterRollbackResponse
	require.NoError(t, json.Unmarshal(body, &rb))
	assert.Equal(t, protocol.AdapterRollbackResponse{Version: protocol.Version, Model: "aid", AdapterVersion: 1, Previous: 2}, rb)
	for body, code := range map[string]protocol.Code{
		`{"model":"aid","adapter_version":5}`:  protocol.CodeAdapterNotFound,
		`{"model":"aid","adapter_version":-1}`: protocol.CodeInvalidValue,
		`{"model":"aid"`:                       protocol.CodeInvalidJSON,
	} {
		resp, data := post(t, c, "/v1/adapters/rollback", body)
		require.NoError(t, json.Unmarshal(data, &er))
		assert.Equal(t, code, er.Error.Code, body)
		assert.Equal(t, code.HTTPStatus(), resp.StatusCode, body)
	}

	resp, body = post(t, c, "/v1/completions", `{"model":"aid","prompt":"The robot","max_tokens":3}`)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	assert.Contains(t, string(body), `"adapter_version":1`)

	mresp, err := c.Get("http://edged/metrics")
	require.NoError(t, err)
	metrics, err := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	require.NoError(t, err)
	assert.Contains(t, string(metrics), "# TYPE edged_adapter_version gauge\nedged_adapter_version{model=\"aid\"} 1\n")

	// NATS: the node's endpoints answer the same.
	nc, err := nats.Connect("", nats.InProcessServer(f.conn.ns))
	require.NoError(t, err)
	defer nc.Close()
	msg := request(t, nc, "edged.test.adapters", nil)
	require.Empty(t, errorCode(t, msg), "%s", msg.Data)
	require.NoError(t, json.Unmarshal(msg.Data, &list))
	assert.Len(t, list.Data, 2)
	msg = request(t, nc, "edged.test.adapters.rollback", `{"model":"aid","adapter_version":0}`)
	require.Empty(t, errorCode(t, msg), "%s", msg.Data)
	require.NoError(t, json.Unmarshal(msg.Data, &rb))
	assert.Equal(t, uint64(1), rb.Previous)
	assert.Equal(t, string(protocol.CodeAdapterNotFound), errorCode(t, request(t, nc, "edged.test.adapters.rollback", `{"model":"aid","adapter_version":9}`)))
	assert.Equal(t, string(protocol.CodeModelNotFound), errorCode(t, request(t, nc, "edged.test.adapters", `{"model":"ghost"}`)))
	var cmpl protocol.CompletionResponse
	msg = request(t, nc, "edged.test.generate", `{"model":"aid","prompt":"The robot","max_tokens":3}`)
	require.NoError(t, json.Unmarshal(msg.Data, &cmpl))
	assert.Zero(t, cmpl.AdapterVersion, "rolled back to the base model")
	msg = request(t, nc, "edged.test.generate", `{"model":"aid","prompt":"The robot","max_tokens":3,"adapter_version":2}`)
	require.NoError(t, json.Unmarshal(msg.Data, &cmpl))
	assert.Equal(t, uint64(2), cmpl.AdapterVersion)
}

// A restarted daemon serves the version that was current.
func TestAdapterRestartServes(t *testing.T) {
	o := testOptions(t)
	d := startDaemon(t, o)
	lora := loraFile(t, aidreams(t), 1)
	commit(t, d, lora)
	commit(t, d, loraFile(t, aidreams(t), 2))
	_, err := d.Service().RollbackAdapter(context.Background(), &protocol.AdapterRollbackRequest{Model: "aid", AdapterVersion: 1})
	require.NoError(t, err)
	require.NoError(t, d.Shutdown(context.Background()))

	d = startDaemon(t, o)
	const prompt, n = "The robot", 20
	text, v := completeWith(t, d, prompt, n, nil)
	assert.Equal(t, uint64(1), v)
	assert.Equal(t, referenceWith(t, aidreams(t), lora, prompt, n), text)
	vs, cur := listAdapters(t, d)
	assert.Equal(t, []uint64{1, 2}, vs)
	assert.Equal(t, uint64(1), cur)
}
