package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
	"github.com/edged/edged/prune"
	"github.com/edged/edged/quant"
)

// longPrompt is about 60 tokens of the aidreams model: long enough that
// keeping half of it after layer 1 changes what later layers see.
const longPrompt = "Once upon a time there was a robot who dreamed of the sea. Every night it dreamed of waves and of fish and of a small boat, and in the morning it told the other machines"

func sparse(method string, keep float64, layers ...int) *protocol.Sparsity {
	return &protocol.Sparsity{Method: method, Keep: &keep, Layers: layers, Window: ptr(4)}
}

func completeText(t *testing.T, d *Daemon, req *protocol.CompletionRequest) string {
	t.Helper()
	res, err := d.Service().Complete(context.Background(), req, nil)
	require.NoError(t, err)
	return res.Choices[0].Text
}

// metricValue sums the samples of name whose labels include want.
func metricValue(d *Daemon, name string, want map[string]string) float64 {
	var buf bytes.Buffer
	d.Service().WriteMetrics(&buf)
	var sum float64
	for _, s := range parsePromText(&buf)[name] {
		match := true
		for k, v := range want {
			match = match && s.Labels[k] == v
		}
		if match {
			sum += s.Value
		}
	}
	return sum
}

// Sparsity off, whether left out, "none" or keeping every token, gives the
// text of a request without the field; a model's default applies when the
// request says nothing and "none" turns it off.
func TestSparsityOffIsDense(t *testing.T) {
	o := testOptions(t)
	d := startDaemon(t, o)
	req := func(s *protocol.Sparsity) *protocol.CompletionRequest {
		r := greedy("aid", longPrompt, 30)
		r.Sparsity = s
		return r
	}
	dense := completeText(t, d, req(nil))
	assert.Equal(t, dense, completeText(t, d, req(&protocol.Sparsity{Method: "none"})))
	assert.Equal(t, dense, completeText(t, d, req(sparse("zerotprune", 1, 0, 1, 2))))
	assert.Zero(t, metricValue(d, "edged_sparsity_kv_bytes_saved_total", nil))

	o2 := testOptions(t)
	o2.Specs[0].Sparsity = sparse("recent", 0.25, 0)
	d2 := startDaemon(t, o2)
	assert.Equal(t, dense, completeText(t, d2, req(&protocol.Sparsity{Method: "none"})))
	assert.Zero(t, metricValue(d2, "edged_sparsity_requests_total", nil))
	completeText(t, d2, req(nil))
	assert.Equal(t, 1.0, metricValue(d2, "edged_sparsity_requests_total", map[string]string{"model": "aid", "method": "recent"}))
	assert.Positive(t, metricValue(d2, "edged_sparsity_kv_bytes_saved_total", nil))
}

// A sparse and a dense request read their prompts in the same engine step;
// the dense one gets the text it gets alone, the sparse one's later layers
// compute on fewer tokens, and the metrics say how many.
func TestSparseBesideDenseInOneBatch(t *testing.T) {
	o := testOptions(t)
	m := newMetrics()
	inst, err := openInstance("aid", o.Specs[0], o.Specs[0].Path, o.Engine, o.Scheduler, m)
	require.NoError(t, err)
	spec, err := resolveSparsity(sparse("zerotprune", 0.5, 1), nil, inst.eng.Config().NLayer)
	require.NoError(t, err)
	mk := func(s *prune.Spec) *job {
		return &job{
			ctx: context.Background(), out: newOutput(), enqueued: time.Now(), maxTokens: 30, sparsity: s,
			prompt:  inst.tok.Encode(longPrompt, true, true),
			sampler: samplerConfig(protocol.Sampling{Temperature: ptr(0.0)}, protocol.Sampling{}),
		}
	}
	// Both are queued before the scheduler starts: it admits both before
	// its first step, and both prompts fit one step's prefill chunk.
	sparseJob, denseJob := mk(spec), mk(nil)
	require.Less(t, 2*len(denseJob.prompt), o.Scheduler.PrefillChunk)
	require.NoError(t, inst.submit(sparseJob))
	require.NoError(t, inst.submit(denseJob))
	go inst.run(func() {})
	t.Cleanup(func() { inst.close(); <-inst.done })

	assert.Equal(t, reference(t, o.Specs[0].Path, longPrompt, 30), wait(t, denseJob.out))
	wait(t, sparseJob.out)
	n := float64(len(sparseJob.prompt))
	val := func(c *counterVec, labels ...string) float64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.values[labelSet(c.labels, labels)]
	}
	kept := func(layer string) float64 { return val(m.sparseKeptTokens, "aid", layer) }
	assert.Equal(t, n, val(m.sparsePromptTokens, "aid"))
	assert.Equal(t, n, kept("0"))
	assert.Equal(t, n, kept("1"))
	assert.Equal(t, float64(int(n+1)/2), kept("2"), "half the prompt after layer 1")
	assert.Equal(t, kept("2"), kept("3"))
	assert.Equal(t, 2*(n-kept("2"))*float64(inst.kvRow), val(m.sparseKVBytesSaved, "aid"), "two layers skip the dropped tokens")
	assert.Positive(t, val(m.sparseSecondsSaved, "aid"))
	assert.Empty(t, inst.sparse.bySeq, "sequences leave their policy when the prompt is read")
	assert.Empty(t, inst.sparse.byKey)
}

// wait returns a job's text once it has finished.
func wait(t *testing.T, o *output) string {
	t.Helper()
	var text strings.Builder
	timeout := time.After(30 * time.Second)
	for {
		select {
		case <-o.wake:
		case <-timeout:
			t.Fatal("the job did not finish")
		}
		pieces, done := o.take()
		for _, p := range pieces {
			text.WriteString(p)
		}
		if done {
			require.NoError(t, o.err)
			return text.String()
		}
	}
}

// Requests of different settings share the engine, each on its own
// policy; each gets what it gets alone.
func TestSparsitySettingsPerRequest(t *testing.T) {
	o := testOptions(t)
	o.Scheduler.MaxActive = 4
	d := startDaemon(t, o)
	specs := []*protocol.Sparsity{nil, sparse("zerotprune", 0.5, 1), sparse("zerotprune", 0.3, 0, 2), sparse("random", 0.6, 1)}
	alone := make([]string, len(specs))
	for i, s := range specs {
		r := greedy("aid", longPrompt, 20)
		r.Sparsity = s
		alone[i] = completeText(t, d, r)
	}
	got := make([]string, len(specs))
	done := make(chan struct{})
	for i, s := range specs {
		go func() {
			defer func() { done <- struct{}{} }()
			r := greedy("aid", longPrompt, 20)
			r.Sparsity = s
			res, err := d.Service().Complete(context.Background(), r, nil)
			if assert.NoError(t, err) {
				got[i] = res.Choices[0].Text
			}
		}()
	}
	for range specs {
		<-done
	}
	assert.Equal(t, alone[0], got[0], "dense")
	// A sparse prompt read in one step alone may be read in slices beside
	// the others (prefill_chunk is shared), and each slice is pruned on
	// its own: only the dense text must match exactly.
	assert.Equal(t, 4.0, metricValue(d, "edged_sparsity_requests_total", map[string]string{"method": "zerotprune"}))
}

// Bad specs are refused with invalid_value naming the field, over the
// socket and over NATS; the model's layer count is checked.
func TestSparsityBadSpecs(t *testing.T) {
	o := testOptions(t)
	d := startDaemon(t, o)
	c := socketClient(o.Socket)
	_, nc := startNATS(t, d.Service(), NATSOptions{})
	for _, tc := range []struct{ sparsity, want string }{
		{`{"method":"magic"}`, `method "magic": want one of lemo, none, random, recent, zerotprune`},
		{`{"method":"zerotprune","keep":1.5}`, "keep 1.5"},
		{`{"method":"zerotprune","keep":0}`, "keep, window and block must be positive"},
		{`{"method":"recent","layers":[4]}`, "the model has layers 0 to 3"},
		{`{"method":"recent","layers":[2,1]}`, "increasing"},
		{`{"method":"random","window":-3}`, "window -3"},
		{`{"keep":0.5}`, "sparsity.method is required"},
		{`{"method":"lemo","similarity":0.5}`, "only zerotprune has a similarity stage"},
		{`{"method":"zerotprune","block":4}`, "only lemo scores blocks"},
		{`{"method":"zerotprune","similarity":1.5}`, "similarity share 1.5"},
		{`{"method":"lemo","block":0}`, "block must be positive"},
		{`{"method":"lemo","block":-4}`, "block -4"},
	} {
		body := `{"model":"aid","prompt":"x","max_tokens":2,"sparsity":` + tc.sparsity + `}`
		resp, data := post(t, c, "/v1/completions", body)
		var er protocol.ErrorResponse
		require.NoError(t, json.Unmarshal(data, &er), "%s", data)
		assert.Equal(t, 400, resp.StatusCode, tc.sparsity)
		if assert.NotNil(t, er.Error, tc.sparsity) {
			assert.Equal(t, protocol.CodeInvalidValue, er.Error.Code)
			assert.Equal(t, "sparsity", er.Error.Param)
			assert.Contains(t, er.Error.Message, tc.want)
		}
		msg := request(t, nc, "edged.test.generate", body)
		assert.Equal(t, string(protocol.CodeInvalidValue), errorCode(t, msg), tc.sparsity)
		require.NoError(t, json.Unmarshal(msg.Data, &er))
		assert.Contains(t, er.Error.Message, tc.want)
	}
	chat := `{"model":"aid","messages":[{"role":"user","content":"hi"}],"sparsity":{"method":"magic"}}`
	resp, data := post(t, c, "/v1/chat/completions", chat)
	assert.Equal(t, 400, resp.StatusCode, "%s", data)
	assert.Equal(t, string(protocol.CodeInvalidValue), errorCode(t, request(t, nc, "edged.test.chat", chat)))
}

// A sparse request over NATS works, and the metrics published on NATS
// carry the sparsity counters.
func TestSparsityNATSAndMetrics(t *testing.T) {
	o := testOptions(t)
	d := startDaemon(t, o)
	f, nc := startNATS(t, d.Service(), NATSOptions{})
	msg := request(t, nc, "edged.test.chat", `{"model":"aid","messages":[{"role":"user","content":"Once upon a time there was a robot who dreamed of the sea."}],"max_tokens":5,"sparsity":{"method":"zerotprune","keep":0.5,"layers":[1],"window":4}}`)
	require.Empty(t, errorCode(t, msg), "%s", msg.Data)
	pub, err := f.metrics()
	require.NoError(t, err)
	for _, name := range []string{
		"edged_sparsity_requests_total", "edged_sparsity_prompt_tokens_total", "edged_sparsity_kept_tokens_total",
		"edged_sparsity_prefill_seconds_saved_total", "edged_sparsity_kv_bytes_saved_total",
	} {
		assert.NotEmpty(t, pub.Metrics[name], name)
	}
	assert.Len(t, pub.Metrics["edged_sparsity_kept_tokens_total"], 4, "one series per layer")
}

func TestSparsityConfig(t *testing.T) {
	file := `[[model]]
name = "a"
path = "/m/a.gguf"
sparsity = { method = "zerotprune", keep = 0.7, layers = [1, 2] }
[[model]]
name = "b"
path = "/m/b.gguf"
sparsity.method = "recent"
sparsity.window = 8
[[model]]
name = "c"
path = "/m/c.gguf"
sparsity = { method = "zerotprune", similarity = 0.5 }
[[model]]
name = "d"
path = "/m/d.gguf"
sparsity.method = "lemo"
sparsity.block = 16
`
	o, err := load(t, file, nil)
	require.NoError(t, err)
	assert.Equal(t, &protocol.Sparsity{Method: "zerotprune", Keep: ptr(0.7), Layers: []int{1, 2}}, o.Specs[0].Sparsity)
	assert.Equal(t, &protocol.Sparsity{Method: "recent", Window: ptr(8)}, o.Specs[1].Sparsity)
	assert.Equal(t, &protocol.Sparsity{Method: "zerotprune", Similarity: ptr(0.5)}, o.Specs[2].Sparsity)
	assert.Equal(t, &protocol.Sparsity{Method: "lemo", Block: ptr(16)}, o.Specs[3].Sparsity)

	bad := `[[model]]
name = "a"
path = "/m/a.gguf"
sparsity = { method = "magic", keep = "most" }
[[model]]
name = "b"
path = "/m/b.gguf"
sparsity.method = "recent"
sparsity.keep = 3
sparsity.depth = 1
[[model]]
name = "c"
path = "/m/c.gguf"
sparsity = { method = "recent", block = 8 }
`
	_, err = load(t, bad, nil)
	require.ErrorIs(t, err, ErrConfig)
	for _, want := range []string{"edged.toml:4: model.sparsity: keep: want a number", "edged.toml:10: model.sparsity.depth: unknown key", `model "b": default sparsity: prune: invalid config: keep 3`, `model "c": default sparsity: prune: invalid config: block 8: only lemo scores blocks`} {
		assert.Contains(t, err.Error(), want)
	}

	// Layers are checked against the model when it loads.
	so := testOptions(t)
	so.Specs[0].Sparsity = sparse("recent", 0.5, 9)
	_, err = openInstance("aid", so.Specs[0], so.Specs[0].Path, so.Engine, so.Scheduler, newMetrics())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model aid: default sparsity")
	assert.Contains(t, err.Error(), "layers 0 to 3")
}

// In one engine step, sequences on different settings each keep the rows
// they keep alone on their own policy, and get its logits bit for bit,
// and a dense one the dense engine's: the dispatcher hands each policy its
// own sequences only, and every kernel computes a row the same way
// whatever else is in the batch.
func TestSparsityDispatchPerSequence(t *testing.T) {
	mdl, newEngine := aidreamsEngines(t)
	specs := []*prune.Spec{
		{Method: "zerotprune", Keep: 0.5, Layers: []int{1}, Window: 4},
		{Method: "recent", Keep: 0.3, Layers: []int{0, 2}, Window: 4},
		nil,
		{Method: "zerotprune", Keep: 0.5, Layers: []int{1}, Window: 4}, // shares the first's policy
	}
	prompts := make([][]int32, len(specs))
	for i := range prompts {
		prompts[i] = testPrompt(i, 70-9*i)
	}
	disp := newSparsity(mdl.Config.NLayer, nil)
	rec := recordKept(disp)
	together, seqs := stepSeqs(t, newEngine(engine.Hooks{Observer: disp, Selector: rec}), prompts, func(i int, s *engine.Sequence) {
		if specs[i] != nil {
			require.NoError(t, disp.enable(s, *specs[i]))
		}
	})
	assert.Len(t, disp.byKey, 2, "one policy per distinct spec")
	for i, spec := range specs {
		if spec == nil {
			alone, _ := stepSeqs(t, newEngine(engine.Hooks{}), prompts[i:i+1], func(int, *engine.Sequence) {})
			assert.Equal(t, alone[0], together[i], "sequence %d (dense): logits", i)
			continue
		}
		p, err := spec.New()
		require.NoError(t, err)
		alone, kept := stepAlone(t, newEngine, p, prompts[i])
		assert.Equal(t, kept, rec.pos[seqs[i]], "sequence %d (%v): kept rows", i, spec)
		assert.Equal(t, alone, together[i], "sequence %d (%v): logits", i, spec)
	}
	dense, _ := stepSeqs(t, newEngine(engine.Hooks{}), prompts[:1], func(int, *engine.Sequence) {})
	assert.NotEqual(t, dense[0], together[0], "the first sequence is pruned")
	assert.Equal(t, (len(prompts[0])+1)/2, seqs[0].CacheLen(2), "zerotprune keeps half after layer 1")
	assert.Equal(t, len(prompts[2]), seqs[2].CacheLen(3), "the dense sequence caches every row")
	for _, s := range seqs {
		disp.disable(s)
	}
	assert.Empty(t, disp.byKey)
	assert.Empty(t, disp.bySeq)
}

// stepSeqs prefills one new sequence per prompt in a single step, calling
// setup on each first, and returns each prompt's last-row logits.
func stepSeqs(t *testing.T, e *engine.Engine, prompts [][]int32, setup func(int, *engine.Sequence)) ([][]float32, []*engine.Sequence) {
	t.Helper()
	nv := e.Config().NVocab
	var batch []engine.Entry
	seqs := make([]*engine.Sequence, len(prompts))
	for i, ids := range prompts {
		s, err := e.NewSequence(nil)
		require.NoError(t, err)
		t.Cleanup(s.Free)
		setup(i, s)
		seqs[i] = s
		for k, id := range ids {
			batch = append(batch, engine.Entry{Seq: s, Token: id, Pos: int32(k), Logits: k == len(ids)-1})
		}
	}
	logits := make([]float32, len(prompts)*nv)
	require.NoError(t, e.Step(batch, logits))
	out := make([][]float32, len(prompts))
	for i := range out {
		out[i] = logits[i*nv : (i+1)*nv]
	}
	return out, seqs
}

// aidreamsEngines loads the aidreams model and returns it with a function
// that builds an engine on one thread with the given hooks. Its context
// is four times the model's 128, so that a prompt holds several of LeMo's
// 64-row blocks: the numbers stay finite, which is all these tests need.
func aidreamsEngines(t *testing.T) (*model.Model, func(engine.Hooks) *engine.Engine) {
	t.Helper()
	f, err := model.Open(aidreams(t))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	mdl, err := model.Load(f)
	require.NoError(t, err)
	return mdl, func(h engine.Hooks) *engine.Engine {
		e, err := engine.New(mdl, cpu.New(1), engine.Options{Context: 512, Cache: engine.CacheF32, Hooks: h})
		require.NoError(t, err)
		return e
	}
}

// testPrompt is BOS and n-1 tokens of a sequence that varies with i.
func testPrompt(i, n int) []int32 {
	p := []int32{1}
	for k := 1; k < n; k++ {
		p = append(p, int32(3+(k*37+i*11)%500))
	}
	return p
}

// keptRows is a selector that records, per sequence and layer, the
// positions the selector it wraps keeps.
type keptRows struct {
	engine.TokenSelector
	pos map[*engine.Sequence]map[int][]int32
}

func recordKept(sel engine.TokenSelector) *keptRows {
	return &keptRows{TokenSelector: sel, pos: map[*engine.Sequence]map[int][]int32{}}
}

func (k *keptRows) Select(layer int, rows []engine.Row) []int32 {
	keep := k.TokenSelector.Select(layer, rows)
	for i, r := range rows {
		if keep == nil || slices.Contains(keep, int32(i)) {
			if k.pos[r.Seq] == nil {
				k.pos[r.Seq] = map[int][]int32{}
			}
			k.pos[r.Seq][layer] = append(k.pos[r.Seq][layer], r.Pos)
		}
	}
	return keep
}

// stepAlone prefills prompt with p installed directly as the engine's
// hooks and returns its logits and the positions it kept after each layer.
func stepAlone(t *testing.T, newEngine func(engine.Hooks) *engine.Engine, p prune.Policy, prompt []int32) ([]float32, map[int][]int32) {
	t.Helper()
	obs, _ := p.(engine.AttentionObserver)
	rec := recordKept(p)
	logits, seqs := stepSeqs(t, newEngine(engine.Hooks{Observer: obs, Selector: rec}), [][]int32{prompt}, func(_ int, s *engine.Sequence) { p.Enable(s) })
	return logits[0], rec.pos[seqs[0]]
}

// lemoSpec prunes half the rows after layer 1. LeMo ranks blocks of 64
// positions, so its prompts are a few blocks long.
var lemoSpec = prune.Spec{Method: "lemo", Keep: 0.5, Layers: []int{1}, Window: 4}

// observedLeMo is a LeMo that keeps a copy of what Observe is handed.
type observedLeMo struct {
	*prune.LeMo
	got [][]float32
}

func newObservedLeMo(t *testing.T) *observedLeMo {
	t.Helper()
	p, err := prune.NewLeMo(lemoSpec.Config(), nil)
	require.NoError(t, err)
	return &observedLeMo{LeMo: p}
}

func (o *observedLeMo) Observe(layer int, seq *engine.Sequence, past, rows, heads int, m []float32) {
	o.got = append(o.got, slices.Clone(m))
	o.LeMo.Observe(layer, seq, past, rows, heads, m)
}

// A "lemo" request through the dispatcher gets what LeMo installed alone
// gets, bit for bit: the pre-softmax scores (some negative, which no
// probability is), the same kept rows and the same logits.
func TestSparsityLeMoGetsScores(t *testing.T) {
	mdl, newEngine := aidreamsEngines(t)
	prompt := testPrompt(0, 250)
	disp := newSparsity(mdl.Config.NLayer, nil)
	rec := recordKept(disp)
	got, seqs := stepSeqs(t, newEngine(engine.Hooks{Observer: disp, Selector: rec}), [][]int32{prompt}, func(_ int, s *engine.Sequence) {
		require.NoError(t, disp.enable(s, lemoSpec))
	})
	p, err := lemoSpec.New()
	require.NoError(t, err)
	want, wantKept := stepAlone(t, newEngine, p, prompt)
	assert.Equal(t, want, got[0])
	assert.Equal(t, wantKept, rec.pos[seqs[0]])
	assert.Equal(t, (len(prompt)+1)/2, seqs[0].CacheLen(2), "half the prompt after layer 1")

	// LeMo's ranking of 64-row blocks of a short prompt may keep the same
	// blocks whether it reads scores or probabilities, so the kept rows
	// above need not tell them apart: look at what it is handed.
	alone, via := newObservedLeMo(t), newObservedLeMo(t)
	stepAlone(t, newEngine, alone, prompt)
	disp = newSparsity(mdl.Config.NLayer, nil)
	stepSeqs(t, newEngine(engine.Hooks{Observer: disp, Selector: disp}), [][]int32{prompt}, func(_ int, s *engine.Sequence) {
		require.NoError(t, disp.enableOn(s, "observed", func() (prune.Policy, error) { return via, nil }))
	})
	require.Len(t, alone.got, 1, "layer 1 only")
	assert.Equal(t, alone.got, via.got)
	assert.Less(t, slices.Min(via.got[0]), float32(0), "scores, not probabilities")
}

// A zerotprune and a lemo sequence pruning after the same layer in one
// step: the engine hands the dispatcher scores for the whole batch, and
// Zero-TPrune ranks from the probabilities the dispatcher computes from
// them (the kernel's up to rounding). Each keeps the rows it keeps alone,
// and so gets the logits it gets alone.
func TestSparsityScoresAndProbabilitiesInOneStep(t *testing.T) {
	mdl, newEngine := aidreamsEngines(t)
	zt := prune.Spec{Method: "zerotprune", Keep: 0.5, Layers: []int{1}, Window: 4}
	specs := []prune.Spec{zt, lemoSpec}
	prompts := [][]int32{testPrompt(1, 250), testPrompt(2, 230)}
	disp := newSparsity(mdl.Config.NLayer, nil)
	rec := recordKept(disp)
	together, seqs := stepSeqs(t, newEngine(engine.Hooks{Observer: disp, Selector: rec}), prompts, func(i int, s *engine.Sequence) {
		require.NoError(t, disp.enable(s, specs[i]))
	})
	require.True(t, disp.WantsScores(1))
	for i, spec := range specs {
		p, err := spec.New()
		require.NoError(t, err)
		alone, kept := stepAlone(t, newEngine, p, prompts[i])
		assert.Equal(t, kept, rec.pos[seqs[i]], "%s: kept rows", spec.Method)
		assert.Equal(t, (len(prompts[i])+1)/2, len(kept[1]), "%s: half the prompt after layer 1", spec.Method)
		assert.Equal(t, alone, together[i], "%s: logits", spec.Method)
	}
}

// The probabilities the dispatcher computes from scores are the attention
// kernel's up to rounding: same mask, same layout.
func TestSparsitySoftmaxMatchesKernel(t *testing.T) {
	const past, rows, heads, kvHeads, dim = 5, 11, 4, 2, 8
	b := cpu.New(1)
	t.Cleanup(func() { b.Close() })
	r := rand.New(rand.NewPCG(1, 2))
	random := func(n int, scale float32) []float32 { return randomVec(r, n, scale) }
	buffer := func(v []float32) accel.Buffer {
		buf, err := b.Alloc(len(v))
		require.NoError(t, err)
		b.Write(buf, 0, v)
		return buf
	}
	kvDim := kvHeads * dim
	kc, err := b.AllocCache((past+rows)*kvDim, quant.F32)
	require.NoError(t, err)
	vc, err := b.AllocCache((past+rows)*kvDim, quant.F32)
	require.NoError(t, err)
	// Spread-out scores, so that the probabilities are far from uniform.
	b.WriteCache(kc, vc, kvDim, 0, random(past*kvDim, 3), random(past*kvDim, 1))
	n := heads * rows * (past + rows)
	seq := accel.AttnSeq{K: kc, V: vc, Past: past, Rows: rows, Probs: make([]float32, n), Scores: make([]float32, n)}
	out, err := b.Alloc(rows * heads * dim)
	require.NoError(t, err)
	q, k, v := random(rows*heads*dim, 3), random(rows*kvDim, 3), random(rows*kvDim, 1)
	b.Attention(out, buffer(q), buffer(k), buffer(v), []accel.AttnSeq{seq}, accel.AttnShape{NHead: heads, NHeadKV: kvHeads, HeadDim: dim, Scale: 1 / float32(math.Sqrt(dim))})

	got := newSparsity(1, nil).softmaxRows(past, rows, heads, seq.Scores)
	// Probabilities are at most 1, where float32 values are 6e-8 apart:
	// 1e-6 is about 16 units in the last place.
	assert.InDeltaSlice(t, seq.Probs, got, 1e-6)
}

// Policies the daemon cannot build from a request yet reach the engine
// through the dispatcher as well: Zero-TPrune's similarity stage gets the
// keys, LeMo's predictor the hidden states. Each keeps the rows, and gives
// the logits, it gives installed alone (the same batch: bit for bit).
// Without its keys the similarity stage is left out, and keeps other rows
// here; without its hidden states LeMo keeps every row.
func TestSparsityKeysAndHiddenStates(t *testing.T) {
	mdl, newEngine := aidreamsEngines(t)
	// A quarter dropped: the similarity stage picks them among the less
	// important half of the rows, rather than from its bottom.
	cfg := prune.Config{Keep: 0.75, Layers: []int{1}, Window: 4}
	similar := cfg
	similar.Similarity = 1
	pred := &prune.Predictor{Block: prune.DefaultBlock, Dim: mdl.Config.NEmbd, Layers: map[int]*prune.MLP{1: randomMLP(mdl.Config.NEmbd)}}
	for _, tc := range []struct {
		name   string
		prompt []int32
		build  func() (prune.Policy, error)
		keep   int // rows after layer 1
	}{
		{"similarity", testPrompt(3, 120), func() (prune.Policy, error) { return prune.NewZeroTPrune(similar) }, 90},
		{"predictor", testPrompt(4, 250), func() (prune.Policy, error) { return prune.NewLeMo(lemoSpec.Config(), pred) }, 125},
	} {
		disp := newSparsity(mdl.Config.NLayer, nil)
		rec := recordKept(disp)
		got, seqs := stepSeqs(t, newEngine(engine.Hooks{Observer: disp, Selector: rec}), [][]int32{tc.prompt}, func(_ int, s *engine.Sequence) {
			require.NoError(t, disp.enableOn(s, tc.name, tc.build))
		})
		p, err := tc.build()
		require.NoError(t, err)
		want, wantKept := stepAlone(t, newEngine, p, tc.prompt)
		assert.Equal(t, want, got[0], tc.name)
		assert.Equal(t, wantKept, rec.pos[seqs[0]], tc.name)
		assert.Len(t, wantKept[1], tc.keep, tc.name)
	}
	var kept [2][]int32
	for i, c := range []prune.Config{cfg, similar} {
		p, err := prune.NewZeroTPrune(c)
		require.NoError(t, err)
		_, k := stepAlone(t, newEngine, p, testPrompt(3, 120))
		kept[i] = k[1]
	}
	assert.NotEqual(t, kept[0], kept[1], "the similarity stage decides")
}

// randomMLP is a predictor for one layer with fixed pseudo-random weights:
// its scores mean nothing, but they are not those of attention.
func randomMLP(dim int) *prune.MLP {
	const hidden = 4
	r := rand.New(rand.NewPCG(5, 6))
	return &prune.MLP{Hidden: hidden, W1: randomVec(r, hidden*dim, 1), B1: randomVec(r, hidden, 1), W2: randomVec(r, hidden, 1)}
}

// randomVec is n normal values times scale.
func randomVec(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = scale * float32(r.NormFloat64())
	}
	return v
}

// A LeMo predictor stored next to the model (prune.PredictorPath) is
// loaded with it, and a lemo request whose layers it covers scores blocks
// with it: the dispatcher then asks for hidden states, not for attention.
// A predictor for another model is refused with the model.
func TestSparsityPredictorNextToModel(t *testing.T) {
	o := testOptions(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "aid.gguf")
	require.NoError(t, os.Symlink(o.Specs[0].Path, path))
	mlp := func(dim int) *prune.MLP {
		return &prune.MLP{Hidden: 2, W1: make([]float32, 2*dim), B1: make([]float32, 2), W2: make([]float32, 2)}
	}
	pred := &prune.Predictor{Block: 4, Dim: 64, Layers: map[int]*prune.MLP{1: mlp(64)}}
	require.NoError(t, prune.SavePredictor(prune.PredictorPath(path), pred))

	inst, err := openInstance("aid", o.Specs[0], path, o.Engine, o.Scheduler, newMetrics())
	require.NoError(t, err)
	go inst.run(func() {})
	t.Cleanup(func() { inst.close(); <-inst.done })
	require.NotNil(t, inst.sparse.pred)
	for _, c := range []struct {
		layers         []int
		hidden, scores bool
	}{
		{[]int{1}, true, false}, // covered: the predictor
		{[]int{2}, false, true}, // not covered: q·k
	} {
		s := newSparsity(inst.eng.Config().NLayer, inst.sparse.pred)
		seq, err := inst.eng.NewSequence(nil)
		require.NoError(t, err)
		require.NoError(t, s.enable(seq, prune.Spec{Method: "lemo", Keep: 0.5, Layers: c.layers}))
		l := c.layers[0]
		assert.Equal(t, c.hidden, s.WantsHidden(l), "layers %v", c.layers)
		assert.Equal(t, c.scores, s.WantsScores(l), "layers %v", c.layers)
		s.disable(seq)
		seq.Free()
	}

	pred.Dim, pred.Layers[1] = 32, mlp(32)
	require.NoError(t, prune.SavePredictor(prune.PredictorPath(path), pred))
	_, err = openInstance("aid", o.Specs[0], path, o.Engine, o.Scheduler, newMetrics())
	require.ErrorContains(t, err, "hidden states of 32 values, the model's have 64")
}

// A request's similarity and block reach the policy it runs on: the
// similarity stage (on by default, off with a zero share) asks for the
// layer's keys, a block size other than the predictor's is scored by q·k
// at that size, and the predictor's own (or none) by the predictor.
func TestSparsitySimilarityAndBlockReachPolicy(t *testing.T) {
	mdl, newEngine := aidreamsEngines(t)
	e := newEngine(engine.Hooks{})
	pred := &prune.Predictor{Block: 4, Dim: mdl.Config.NEmbd, Layers: map[int]*prune.MLP{1: randomMLP(mdl.Config.NEmbd)}}
	for _, tc := range []struct {
		req       string
		want      prune.Spec // the policy's settings
		keys      bool       // WantsKeys(1): the similarity stage
		predicted bool       // WantsHidden(1): the predictor scores
	}{
		{`{"method":"zerotprune","keep":0.5}`, prune.Spec{Method: "zerotprune", Keep: 0.5, Similarity: ptr(prune.DefaultSimilarity)}, true, false},
		{`{"method":"zerotprune","keep":0.5,"similarity":0.25}`, prune.Spec{Method: "zerotprune", Keep: 0.5, Similarity: ptr(0.25)}, true, false},
		{`{"method":"zerotprune","keep":0.5,"similarity":0}`, prune.Spec{Method: "zerotprune", Keep: 0.5, Similarity: ptr(0.0)}, false, false},
		{`{"method":"lemo","keep":0.5}`, prune.Spec{Method: "lemo", Keep: 0.5, Block: 4}, false, true},
		{`{"method":"lemo","keep":0.5,"block":4}`, prune.Spec{Method: "lemo", Keep: 0.5, Block: 4}, false, true},
		{`{"method":"lemo","keep":0.5,"block":8}`, prune.Spec{Method: "lemo", Keep: 0.5, Block: 8}, false, false},
	} {
		var req protocol.Sparsity
		require.NoError(t, json.Unmarshal([]byte(tc.req), &req), tc.req)
		spec, err := resolveSparsity(&req, nil, mdl.Config.NLayer)
		require.NoError(t, err, tc.req)
		s := newSparsity(mdl.Config.NLayer, pred)
		seq, err := e.NewSequence(nil)
		require.NoError(t, err)
		require.NoError(t, s.enable(seq, *spec), tc.req)
		key := tc.want.String()
		if tc.predicted {
			key += " predictor"
		}
		if assert.Contains(t, s.byKey, key, tc.req) {
			got := s.byKey[key].p.(interface{ Config() prune.Config }).Config()
			assert.Equal(t, tc.want.Config(), got, tc.req)
		}
		assert.Equal(t, tc.keys, s.WantsKeys(1), tc.req)
		assert.Equal(t, tc.predicted, s.WantsHidden(1), tc.req)
		s.disable(seq)
		seq.Free()
	}
}
