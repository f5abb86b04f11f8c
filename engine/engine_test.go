package engine

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/internal/fixture"
)

var testIDs = []int32{1, 429, 491, 433, 295, 429, 444, 445, 265, 262, 263, 342, 430, 446}

// Feeding a prompt one token at a time (decode), in uneven slices, or in
// one batch gives the same logits.
func TestDecodeMatchesPrefill(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-q4_k_m.gguf")
	for _, tc := range []struct {
		name  string
		batch int
		step  int
	}{{"one token per step", 0, 1}, {"three per step", 0, 3}, {"batch size 4", 4, len(testIDs)}} {
		t.Run(tc.name, func(t *testing.T) {
			ref := promptLogits(t, openEngine(t, path, Options{Cache: CacheF32}), testIDs)
			e := openEngine(t, path, Options{Cache: CacheF32, BatchSize: tc.batch})
			nv := e.Config().NVocab
			seq, err := e.NewSequence(nil)
			require.NoError(t, err)
			got := make([]float32, len(testIDs)*nv)
			for i := 0; i < len(testIDs); i += tc.step {
				end := min(i+tc.step, len(testIDs))
				var batch []Entry
				for j := i; j < end; j++ {
					batch = append(batch, Entry{Seq: seq, Token: testIDs[j], Pos: int32(j), Logits: true})
				}
				require.NoError(t, e.Step(batch, got[i*nv:end*nv]))
			}
			assert.Equal(t, len(testIDs), seq.Len())
			assert.Less(t, fixture.RelL2(got, ref), 1e-5)
		})
	}
}

// Sequences batched together compute what they compute alone.
func TestMultiSequenceBatch(t *testing.T) {
	e := openEngine(t, fixture.Path(t, "gguf", "tiny-qwen2-q8_0.gguf"), Options{Cache: CacheF32})
	nv := e.Config().NVocab
	a, b := testIDs[:9], testIDs[4:]
	refA, refB := promptLogits(t, e, a), promptLogits(t, e, b)

	sa, err := e.NewSequence(nil)
	require.NoError(t, err)
	sb, err := e.NewSequence(nil)
	require.NoError(t, err)
	// First step: a's prompt except its last token, all of b's but two.
	var batch []Entry
	for i, id := range a[:len(a)-1] {
		batch = append(batch, Entry{Seq: sa, Token: id, Pos: int32(i)})
	}
	for i, id := range b[:len(b)-2] {
		batch = append(batch, Entry{Seq: sb, Token: id, Pos: int32(i), Logits: i == len(b)-3})
	}
	out := make([]float32, nv)
	require.NoError(t, e.Step(batch, out))
	assert.Less(t, fixture.RelL2(out, refB[(len(b)-3)*nv:(len(b)-2)*nv]), 1e-5)
	// Second step: one row of b, then a's last, then b's last.
	batch = []Entry{
		{Seq: sb, Token: b[len(b)-2], Pos: int32(len(b) - 2), Logits: true},
		{Seq: sb, Token: b[len(b)-1], Pos: int32(len(b) - 1), Logits: true},
		{Seq: sa, Token: a[len(a)-1], Pos: int32(len(a) - 1), Logits: true},
	}
	out = make([]float32, 3*nv)
	require.NoError(t, e.Step(batch, out))
	assert.Less(t, fixture.RelL2(out[:2*nv], refB[(len(b)-2)*nv:]), 1e-5)
	assert.Less(t, fixture.RelL2(out[2*nv:], refA[(len(a)-1)*nv:]), 1e-5)
}

// An f16 cache stays within llama.cpp's own distance of the reference.
func TestF16Cache(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-f16.gguf")
	ref := promptLogits(t, openEngine(t, path, Options{Cache: CacheF32}), testIDs)
	got := promptLogits(t, openEngine(t, path, Options{}), testIDs)
	l2 := fixture.RelL2(got, ref)
	assert.Less(t, l2, 3e-3)
	assert.Greater(t, l2, 0.0, "the f16 cache rounds")
}

func TestStepRejectsBadBatches(t *testing.T) {
	e := openEngine(t, fixture.Path(t, "gguf", "tiny-llama-tied-q8_0.gguf"), Options{Context: 4})
	other := openEngine(t, fixture.Path(t, "gguf", "tiny-llama-tied-q8_0.gguf"), Options{Context: 4})
	s1, err := e.NewSequence(nil)
	require.NoError(t, err)
	s2, err := e.NewSequence(nil)
	require.NoError(t, err)
	foreign, err := other.NewSequence(nil)
	require.NoError(t, err)
	freed, err := e.NewSequence(nil)
	require.NoError(t, err)
	freed.Free()
	nv := e.Config().NVocab
	tests := []struct {
		name   string
		batch  []Entry
		logits int
		want   string
	}{
		{"nil sequence", []Entry{{Token: 1}}, 0, "nil"},
		{"freed", []Entry{{Seq: freed, Token: 1}}, 0, "freed"},
		{"foreign", []Entry{{Seq: foreign, Token: 1}}, 0, "another engine"},
		{"token out of range", []Entry{{Seq: s1, Token: int32(nv)}}, 0, "vocabulary"},
		{"negative token", []Entry{{Seq: s1, Token: -1}}, 0, "vocabulary"},
		{"negative position", []Entry{{Seq: s1, Token: 1, Pos: -1}}, 0, "position"},
		{"interleaved", []Entry{{Seq: s1, Token: 1}, {Seq: s2, Token: 1}, {Seq: s1, Token: 1, Pos: 1}}, 0, "consecutive"},
		{"context full", []Entry{{Seq: s1, Token: 1}, {Seq: s1, Token: 1}, {Seq: s1, Token: 1}, {Seq: s1, Token: 1}, {Seq: s1, Token: 1}}, 0, "full"},
		{"no room for logits", []Entry{{Seq: s1, Token: 1, Logits: true}}, nv - 1, "room"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := e.Step(tc.batch, make([]float32, tc.logits))
			require.ErrorIs(t, err, ErrBatch)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	assert.Equal(t, 0, s1.Len(), "a rejected batch changes nothing")
}

// keepSelector drops every row of a sequence but BOS and the rows that
// want logits after layer 0, and records what the observer saw.
type keepSelector struct {
	observed int
}

func (k *keepSelector) Select(layer int, rows []Row) []int32 {
	if layer != 0 {
		return nil
	}
	var keep []int32
	for i, r := range rows {
		if r.Pos == 0 || r.Logits {
			keep = append(keep, int32(i))
		}
	}
	return keep
}

func (k *keepSelector) Wants(layer int) bool { return layer == 1 }

func (k *keepSelector) Observe(layer int, seq *Sequence, past, rows, heads int, probs []float32) {
	// Each row's probabilities sum to one over what it may see.
	for h := 0; h < heads; h++ {
		for r := 0; r < rows; r++ {
			var sum float32
			for _, p := range probs[(h*rows+r)*(past+rows):][:past+rows] {
				sum += p
			}
			if sum > 0.999 && sum < 1.001 {
				k.observed++
			}
		}
	}
}

func TestSelectorAndObserver(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-q8_0.gguf")
	hook := &keepSelector{}
	e := openEngine(t, path, Options{Cache: CacheF32, Hooks: Hooks{Selector: hook, Observer: hook}})
	seq, err := e.NewSequence(nil)
	require.NoError(t, err)
	var batch []Entry
	for i, id := range testIDs {
		batch = append(batch, Entry{Seq: seq, Token: id, Pos: int32(i), Logits: i == len(testIDs)-1})
	}
	out := make([]float32, e.Config().NVocab)
	require.NoError(t, e.Step(batch, out))
	assert.Equal(t, len(testIDs), seq.CacheLen(0), "layer 0 caches every token")
	assert.Equal(t, 2, seq.CacheLen(1), "later layers cache the kept rows only")
	assert.Equal(t, 2*e.Config().NHead, hook.observed, "the observer saw normalised rows of the kept tokens")
	assert.Error(t, seq.Truncate(1), "a pruned sequence cannot be truncated")
}

type fixedPrefix struct{ k, v []float32 }

func (p fixedPrefix) PrefixLen() int                    { return 1 }
func (p fixedPrefix) Prefix(layer int) (k, v []float32) { return p.k, p.v }

// A prefix row acts like an extra token seen by every position; a zero
// key with a zero value only dilutes attention, so it changes the logits.
func TestPrefixProvider(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-tied-f32.gguf")
	e := openEngine(t, path, Options{Cache: CacheF32})
	kv := e.Config().KVDim()
	seq, err := e.NewSequence(fixedPrefix{make([]float32, kv), make([]float32, kv)})
	require.NoError(t, err)
	assert.Equal(t, 1, seq.CacheLen(0))
	out := make([]float32, e.Config().NVocab)
	require.NoError(t, e.Step([]Entry{{Seq: seq, Token: 1, Pos: 0, Logits: true}}, out))
	ref := promptLogits(t, e, []int32{1})
	assert.Greater(t, fixture.RelL2(out, ref), 1e-3)
	assert.Equal(t, 1, seq.Len())
	_, err = e.NewSequence(fixedPrefix{make([]float32, 3), nil})
	assert.Error(t, err)
}

// countDelta counts the calls for one projection of one layer.
type countDelta struct{ calls int }

func (d *countDelta) Apply(b accel.Backend, layer int, p Proj, x, y accel.Buffer, rows []Row) error {
	if p == ProjDown && layer == 0 {
		d.calls++
	}
	return nil
}

func TestDeltaProviderIsCalled(t *testing.T) {
	d := &countDelta{}
	e := openEngine(t, fixture.Path(t, "gguf", "tiny-llama-tied-q4_0.gguf"), Options{Hooks: Hooks{Delta: d}})
	promptLogits(t, e, testIDs[:3])
	assert.Equal(t, 1, d.calls)
}

func TestTruncate(t *testing.T) {
	path := fixture.Path(t, "gguf", "tiny-llama-tied-q8_0.gguf")
	e := openEngine(t, path, Options{Cache: CacheF32})
	nv := e.Config().NVocab
	ref := promptLogits(t, e, testIDs[:4])
	seq, err := e.NewSequence(nil)
	require.NoError(t, err)
	step := func(ids []int32, from int) []float32 {
		var batch []Entry
		for i, id := range ids {
			batch = append(batch, Entry{Seq: seq, Token: id, Pos: int32(from + i), Logits: i == len(ids)-1})
		}
		out := make([]float32, nv)
		require.NoError(t, e.Step(batch, out))
		return out
	}
	step([]int32{1, 2, 3, 4, 5}, 0)
	require.NoError(t, seq.Truncate(3))
	require.NoError(t, seq.Truncate(0))
	got := step(testIDs[:4], 0)
	assert.Less(t, fixture.RelL2(got, ref[3*nv:]), 1e-5)
	assert.Error(t, seq.Truncate(5))
}

// StepTo then StepFrom at any layer computes what one Step does, bit for
// bit, and StepFrom runs again from the same residual stream on a
// truncated sequence (what an adapter's trainer does with frozen layers).
func TestStepToStepFrom(t *testing.T) {
	e := openEngine(t, fixture.Path(t, "gguf", "tiny-qwen2-q8_0.gguf"), Options{Cache: CacheF32, BatchSize: 5})
	c := e.Config()
	ref := promptLogits(t, e, testIDs)
	for layer := 1; layer < c.NLayer; layer++ {
		seq, err := e.NewSequence(nil)
		require.NoError(t, err)
		batch := promptBatch(seq, testIDs)
		x := make([]float32, len(batch)*c.NEmbd)
		require.NoError(t, e.StepTo(batch, layer, x))
		for again := range 2 {
			got := make([]float32, len(testIDs)*c.NVocab)
			require.NoError(t, e.StepFrom(batch, layer, x, got))
			assert.Equal(t, ref, got, "layer %d", layer)
			assert.Equal(t, len(testIDs), seq.Len())
			if again == 1 {
				assert.Error(t, seq.Truncate(1), "layers below %d hold no rows", layer)
			}
			require.NoError(t, seq.Truncate(0))
		}
		seq.Free()
	}
	seq, err := e.NewSequence(nil)
	require.NoError(t, err)
	batch := []Entry{{Seq: seq, Token: 1}}
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"StepTo layer 0", func() error { return e.StepTo(batch, 0, make([]float32, c.NEmbd)) }},
		{"StepTo past the last layer", func() error { return e.StepTo(batch, c.NLayer+1, make([]float32, c.NEmbd)) }},
		{"StepFrom the output", func() error { return e.StepFrom(batch, c.NLayer, make([]float32, c.NEmbd), nil) }},
		{"StepTo short residual", func() error { return e.StepTo(batch, 1, make([]float32, c.NEmbd-1)) }},
		{"StepFrom short residual", func() error { return e.StepFrom(batch, 1, make([]float32, 1), nil) }},
	} {
		assert.ErrorIs(t, tc.run(), ErrBatch, tc.name)
	}
}
