package engine

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTestSampler(t *testing.T, cfg SamplerConfig) *Sampler {
	t.Helper()
	s, err := NewSampler(cfg)
	require.NoError(t, err)
	return s
}

// samplerLogits returns n logits from a fixed generator, with some repeated
// values so that ties occur.
func samplerLogits(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(r.NormFloat64() * 3)
		if i%7 == 3 {
			l[i] = float32(math.Round(float64(l[i])))
		}
	}
	return l
}

func refSoftmax(logits []float32, temp float64) []float64 {
	top := math.Inf(-1)
	for _, l := range logits {
		top = math.Max(top, float64(l))
	}
	p := make([]float64, len(logits))
	var z float64
	for i, l := range logits {
		p[i] = math.Exp((float64(l) - top) / temp)
		z += p[i]
	}
	for i := range p {
		p[i] /= z
	}
	return p
}

// logitsOfProbs returns logits whose softmax is probs.
func logitsOfProbs(probs ...float64) []float32 {
	l := make([]float32, len(probs))
	for i, p := range probs {
		l[i] = float32(math.Log(p))
	}
	return l
}

// keptIDs runs the chain without drawing and returns the surviving ids in
// ascending order.
func keptIDs(s *Sampler, logits []float32) []int32 {
	var ids []int32
	for _, c := range s.candidates(logits) {
		ids = append(ids, c.id)
	}
	slices.Sort(ids)
	return ids
}

func TestNewSamplerValidates(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	tests := []struct {
		name string
		cfg  SamplerConfig
		ok   bool
	}{
		{"zero value", SamplerConfig{}, true},
		{"typical", SamplerConfig{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1}, true},
		{"negative top-k is off", SamplerConfig{TopK: -5}, true},
		{"top-p above 1 is off", SamplerConfig{TopP: 1.5}, true},
		{"negative top-p is off", SamplerConfig{TopP: -1}, true},
		{"negative min-p is off", SamplerConfig{MinP: -0.1}, true},
		{"min-p 1", SamplerConfig{MinP: 1}, true},
		{"negative frequency and presence", SamplerConfig{FrequencyPenalty: -1, PresencePenalty: -2}, true},
		{"whole history window", SamplerConfig{PenaltyLastN: -1}, true},
		{"NaN temperature", SamplerConfig{Temperature: nan}, false},
		{"negative temperature", SamplerConfig{Temperature: -1}, false},
		{"infinite temperature", SamplerConfig{Temperature: inf}, false},
		{"NaN top-p", SamplerConfig{TopP: nan}, false},
		{"NaN min-p", SamplerConfig{MinP: nan}, false},
		{"min-p above 1", SamplerConfig{MinP: 1.5}, false},
		{"negative repeat penalty", SamplerConfig{RepeatPenalty: -1.1}, false},
		{"NaN repeat penalty", SamplerConfig{RepeatPenalty: nan}, false},
		{"infinite frequency penalty", SamplerConfig{FrequencyPenalty: inf}, false},
		{"NaN presence penalty", SamplerConfig{PresencePenalty: nan}, false},
		{"window below -1", SamplerConfig{PenaltyLastN: -2}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSampler(tc.cfg)
			if tc.ok {
				require.NoError(t, err)
				assert.NotNil(t, s)
				return
			}
			require.ErrorIs(t, err, ErrSamplerConfig)
			assert.Nil(t, s)
		})
	}

	_, err := NewSampler(SamplerConfig{Temperature: -1, MinP: 2})
	require.ErrorIs(t, err, ErrSamplerConfig)
	assert.Contains(t, err.Error(), "temperature")
	assert.Contains(t, err.Error(), "min-p", "all problems are reported at once")
}

func TestSampleGreedy(t *testing.T) {
	tests := []struct {
		name   string
		logits []float32
		want   int32
	}{
		{"single", []float32{0.5}, 0},
		{"argmax", []float32{1, 3, 2, -1}, 1},
		{"tie goes to lowest id", []float32{1, 3, 2, 3}, 1},
		{"all negative", []float32{-5, -2, -9}, 1},
		{"NaN is never chosen", []float32{1, float32(math.NaN()), 2}, 2},
		{"+Inf wins", []float32{1, float32(math.Inf(1)), 2}, 1},
		{"-Inf skipped", []float32{float32(math.Inf(-1)), -100}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSampler(t, SamplerConfig{})
			assert.Equal(t, tc.want, s.Sample(tc.logits))
		})
	}
}

func TestSampleTopK1IsGreedy(t *testing.T) {
	for _, temp := range []float32{0, 0.1, 1, 5, 100} {
		s := newTestSampler(t, SamplerConfig{Temperature: temp, TopK: 1, TopP: 0.5, Seed: 7})
		for i := range 50 {
			logits := samplerLogits(uint64(i), 500)
			assert.Equal(t, Argmax(logits), s.Sample(logits), "temperature %v, step %d", temp, i)
		}
	}
}

func TestSampleSameSeedReproduces(t *testing.T) {
	cfgs := map[string]SamplerConfig{
		"temperature only":    {Temperature: 1},
		"top-k top-p min-p":   {Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.02},
		"top-p without top-k": {Temperature: 1.2, TopP: 0.9},
		"with penalties":      {Temperature: 0.9, TopK: 50, RepeatPenalty: 1.3, FrequencyPenalty: 0.2, PresencePenalty: 0.3},
	}
	for name, cfg := range cfgs {
		t.Run(name, func(t *testing.T) {
			run := func(s *Sampler) []int32 {
				var out []int32
				for i := range 200 {
					out = append(out, s.Sample(samplerLogits(uint64(i%5), 300)))
				}
				return out
			}
			cfg.Seed = 42
			a := newTestSampler(t, cfg)
			b := newTestSampler(t, cfg)
			first := run(a)
			assert.Equal(t, first, run(b))

			a.Reset()
			assert.Equal(t, first, run(a), "Reset restarts the same stream")

			cfg.Seed = 43
			assert.NotEqual(t, first, run(newTestSampler(t, cfg)), "another seed gives another stream")
		})
	}
}

// TestSampleDistribution draws many tokens and compares the counts with the
// expected probabilities using Pearson's chi-square statistic. The seed is
// fixed, so the test is deterministic; the threshold is the 0.1% critical
// value, so a correct sampler passes for almost every seed.
func TestSampleDistribution(t *testing.T) {
	// Chi-square critical values at p = 0.001 by degrees of freedom.
	critical := map[int]float64{1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52}
	logits := []float32{1, 2, 0.5, 3, -1, 0}
	tests := []struct {
		name   string
		cfg    SamplerConfig
		expect []float64
	}{
		{"temperature 1", SamplerConfig{Temperature: 1}, refSoftmax(logits, 1)},
		{"temperature 0.5", SamplerConfig{Temperature: 0.5}, refSoftmax(logits, 0.5)},
		{"temperature 2", SamplerConfig{Temperature: 2}, refSoftmax(logits, 2)},
		{
			// Top 3 are ids 3, 1, 0; renormalized over them.
			"top-k 3", SamplerConfig{Temperature: 1, TopK: 3},
			func() []float64 {
				p := refSoftmax([]float32{1, 2, 3}, 1)
				return []float64{p[0], p[1], 0, p[2], 0, 0}
			}(),
		},
	}
	const draws = 40000
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Seed = 2024
			s := newTestSampler(t, tc.cfg)
			counts := make([]int, len(logits))
			for range draws {
				id := s.Sample(logits)
				require.GreaterOrEqual(t, id, int32(0))
				counts[id]++
			}
			var chi2 float64
			df := -1
			for i, p := range tc.expect {
				if p == 0 {
					assert.Zero(t, counts[i], "token %d must never be drawn", i)
					continue
				}
				e := p * draws
				d := float64(counts[i]) - e
				chi2 += d * d / e
				df++
			}
			assert.Less(t, chi2, critical[df], "counts %v, expected %v", counts, tc.expect)
		})
	}
}

func TestSamplerTopKKeepsTheKBest(t *testing.T) {
	logits := samplerLogits(3, 2000)
	want := make([]int32, len(logits))
	for i := range want {
		want[i] = int32(i)
	}
	// Reference order: higher logit first, lower id on ties.
	slices.SortStableFunc(want, func(a, b int32) int {
		switch {
		case logits[a] > logits[b]:
			return -1
		case logits[a] < logits[b]:
			return 1
		}
		return 0
	})
	for _, k := range []int{2, 7, 40, 1999} {
		s := newTestSampler(t, SamplerConfig{Temperature: 1, TopK: k})
		c := s.candidates(logits)
		require.Len(t, c, k)
		for i := range c {
			assert.Equal(t, want[i], c[i].id, "k=%d rank %d", k, i)
		}
	}
}

func TestSamplerTopPAndMinPExclude(t *testing.T) {
	probs := logitsOfProbs(0.5, 0.3, 0.15, 0.05)
	tests := []struct {
		name string
		cfg  SamplerConfig
		want []int32
	}{
		{"no filter", SamplerConfig{}, []int32{0, 1, 2, 3}},
		{"top-p 0.4 keeps the best", SamplerConfig{TopP: 0.4}, []int32{0}},
		{"top-p 0.7", SamplerConfig{TopP: 0.7}, []int32{0, 1}},
		{"top-p 0.9", SamplerConfig{TopP: 0.9}, []int32{0, 1, 2}},
		{"top-p 0.99", SamplerConfig{TopP: 0.99}, []int32{0, 1, 2, 3}},
		{"top-p 1 is off", SamplerConfig{TopP: 1}, []int32{0, 1, 2, 3}},
		{"top-p with top-k", SamplerConfig{TopK: 3, TopP: 0.7}, []int32{0, 1}},
		{"top-k then top-p renormalizes", SamplerConfig{TopK: 2, TopP: 0.7}, []int32{0, 1}},
		{"top-k 2 then top-p 0.6", SamplerConfig{TopK: 2, TopP: 0.6}, []int32{0}},
		{"min-p 0.25", SamplerConfig{MinP: 0.25}, []int32{0, 1, 2}},
		{"min-p 0.4", SamplerConfig{MinP: 0.4}, []int32{0, 1}},
		{"min-p 1", SamplerConfig{MinP: 1}, []int32{0}},
		{"min-p with top-k", SamplerConfig{TopK: 3, MinP: 0.25}, []int32{0, 1, 2}},
		{"top-p then min-p", SamplerConfig{TopP: 0.9, MinP: 0.4}, []int32{0, 1}},
		{"min-p ignores temperature", SamplerConfig{Temperature: 5, MinP: 0.4}, []int32{0, 1}},
		{"top-p ignores temperature", SamplerConfig{Temperature: 0.1, TopP: 0.7}, []int32{0, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Temperature == 0 {
				tc.cfg.Temperature = 1
			}
			// Shuffle ids so the partition path cannot rely on input order.
			perm := []int32{2, 0, 3, 1}
			logits := make([]float32, len(probs))
			for i, j := range perm {
				logits[j] = probs[i]
			}
			s := newTestSampler(t, tc.cfg)
			var got []int32
			for _, id := range keptIDs(s, logits) {
				got = append(got, int32(slices.Index(perm, id)))
			}
			slices.Sort(got)
			assert.Equal(t, tc.want, got)

			// Drawn tokens stay within the kept set.
			for range 500 {
				id := s.Sample(logits)
				assert.Contains(t, tc.want, int32(slices.Index(perm, id)))
			}
		})
	}
}

// TestSamplerTopPMatchesSort checks both top-p paths (partitioning when
// top-k is off, cutting a sorted list when it is on) against a full sort on
// random vocabularies large enough to exercise the partitioning.
func TestSamplerTopPMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for trial := range 300 {
		n := 33 + r.IntN(3000)
		logits := samplerLogits(uint64(trial), n)
		topP := float32(r.Float64())
		if trial%10 == 0 {
			topP = float32(math.Pow(10, -r.Float64()*4)) // tiny: often only the best
		}
		p := refSoftmax(logits, 1)
		order := make([]int32, n)
		for i := range order {
			order[i] = int32(i)
		}
		slices.SortStableFunc(order, func(a, b int32) int {
			switch {
			case logits[a] > logits[b]:
				return -1
			case logits[a] < logits[b]:
				return 1
			}
			return 0
		})
		var want []int32
		var cum float64
		for _, i := range order {
			want = append(want, i)
			if cum += p[i]; cum >= float64(topP) {
				break
			}
		}
		slices.Sort(want)
		s := newTestSampler(t, SamplerConfig{Temperature: 1, TopP: topP})
		require.Equal(t, want, keptIDs(s, logits), "partition path: trial %d, n %d, top-p %v", trial, n, topP)

		// With a -Inf logit appended, top-k = n keeps the same tokens but
		// takes the sorted path.
		s = newTestSampler(t, SamplerConfig{Temperature: 1, TopP: topP, TopK: n})
		withInf := append(slices.Clone(logits), float32(math.Inf(-1)))
		require.Equal(t, want, keptIDs(s, withInf), "sorted path: trial %d, n %d, top-p %v", trial, n, topP)
	}
}

func TestSamplerPenalties(t *testing.T) {
	logits := []float32{4, -4, 2, 0, 1, -1}
	tests := []struct {
		name    string
		cfg     SamplerConfig
		history []int32
		want    []float32
	}{
		{"off", SamplerConfig{}, []int32{0, 1, 2}, []float32{4, -4, 2, 0, 1, -1}},
		{"repeat 1 is off", SamplerConfig{RepeatPenalty: 1}, []int32{0, 1}, []float32{4, -4, 2, 0, 1, -1}},
		{
			"repeat divides positive, multiplies negative",
			SamplerConfig{RepeatPenalty: 2}, []int32{0, 1, 3, 0, 0},
			[]float32{2, -8, 2, 0, 1, -1},
		},
		{
			"repeat below 1 rewards",
			SamplerConfig{RepeatPenalty: 0.5}, []int32{0, 1},
			[]float32{8, -2, 2, 0, 1, -1},
		},
		{
			"frequency counts occurrences",
			SamplerConfig{FrequencyPenalty: 0.5}, []int32{0, 0, 0, 2, 5},
			[]float32{2.5, -4, 1.5, 0, 1, -1.5},
		},
		{
			"presence once per token",
			SamplerConfig{PresencePenalty: 1}, []int32{0, 0, 0, 2},
			[]float32{3, -4, 1, 0, 1, -1},
		},
		{
			"all three, repeat first",
			SamplerConfig{RepeatPenalty: 2, FrequencyPenalty: 0.25, PresencePenalty: 0.5}, []int32{0, 0, 1},
			[]float32{4.0/2 - 0.5 - 0.5, -8 - 0.25 - 0.5, 2, 0, 1, -1},
		},
		{
			"ids outside the vocabulary are ignored",
			SamplerConfig{PresencePenalty: 1}, []int32{-3, 6, 1000, 4},
			[]float32{4, -4, 2, 0, 0, -1},
		},
		{
			"window drops old tokens",
			SamplerConfig{PresencePenalty: 1, FrequencyPenalty: 1, PenaltyLastN: 3}, []int32{0, 0, 5, 2, 2, 4},
			[]float32{4, -4, -1, 0, -1, -1},
		},
		{
			"window keeps counts of repeats inside it",
			SamplerConfig{FrequencyPenalty: 1, PenaltyLastN: 4}, []int32{1, 2, 2, 2, 0},
			[]float32{3, -4, -1, 0, 1, -1},
		},
		{
			"whole history",
			SamplerConfig{FrequencyPenalty: 1, PenaltyLastN: -1}, []int32{0, 0, 0, 0, 0, 0, 0, 0, 3},
			[]float32{-4, -4, 2, -1, 1, -1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSampler(t, tc.cfg)
			for _, id := range tc.history {
				s.Accept(id)
			}
			assert.InDeltaSlice(t, tc.want, s.penalized(logits), 1e-6)
		})
	}
}

func TestSamplerPenaltyDefaultWindow(t *testing.T) {
	logits := make([]float32, 100)
	s := newTestSampler(t, SamplerConfig{PresencePenalty: 1})
	s.Accept(7)
	for range DefaultPenaltyLastN - 1 {
		s.Accept(50)
	}
	assert.Equal(t, float32(-1), s.penalized(logits)[7], "still inside the window")
	s.Accept(50)
	assert.Equal(t, float32(0), s.penalized(logits)[7], "pushed out by the 65th token")
	assert.Equal(t, float32(-1), s.penalized(logits)[50])

	s.Reset()
	assert.Equal(t, logits, s.penalized(logits), "Reset forgets the history")
}

func TestSamplerPenaltiesSteerSampling(t *testing.T) {
	logits := []float32{3, 2.9, 1}
	s := newTestSampler(t, SamplerConfig{RepeatPenalty: 1.5, PenaltyLastN: 1})
	// Sampled tokens enter the history too: the window of one alternates the
	// greedy choice between the top two.
	assert.Equal(t, []int32{0, 1, 0, 1}, []int32{s.Sample(logits), s.Sample(logits), s.Sample(logits), s.Sample(logits)})

	s.Reset()
	s.Accept(0) // a prompt token
	assert.Equal(t, int32(1), s.Sample(logits))
}

func TestSampleNaN(t *testing.T) {
	nan := float32(math.NaN())
	t.Run("never chosen", func(t *testing.T) {
		logits := []float32{nan, 0, nan, -1, nan, 0.5, nan}
		cfgs := []SamplerConfig{
			{}, {Temperature: 1}, {Temperature: 100}, {Temperature: 1, TopK: 3},
			{Temperature: 1, TopP: 0.99}, {Temperature: 1, MinP: 0.01}, {Temperature: 1, RepeatPenalty: 1.2},
		}
		for _, cfg := range cfgs {
			s := newTestSampler(t, cfg)
			for range 300 {
				id := s.Sample(logits)
				assert.Contains(t, []int32{1, 3, 5}, id, "config %+v", cfg)
			}
		}
	})
	t.Run("nothing to choose", func(t *testing.T) {
		inf := float32(math.Inf(-1))
		for _, cfg := range []SamplerConfig{{}, {Temperature: 1}, {Temperature: 1, TopK: 2, TopP: 0.5}} {
			s := newTestSampler(t, cfg)
			assert.Equal(t, int32(-1), s.Sample(nil))
			assert.Equal(t, int32(-1), s.Sample([]float32{nan, nan}))
			assert.Equal(t, int32(-1), s.Sample([]float32{inf, nan}))
		}
	})
	t.Run("penalty overflow", func(t *testing.T) {
		// A huge negative frequency penalty overflows to +Inf (and to NaN
		// on a -Inf logit); the token must still be drawable and NaN-free.
		s := newTestSampler(t, SamplerConfig{Temperature: 1, FrequencyPenalty: -3e38})
		s.Accept(1)
		s.Accept(1)
		s.Accept(2)
		s.Accept(2)
		logits := []float32{5, 0, float32(math.Inf(-1)), 4}
		for range 50 {
			assert.Equal(t, int32(1), s.Sample(logits))
		}
	})
	t.Run("+Inf", func(t *testing.T) {
		s := newTestSampler(t, SamplerConfig{Temperature: 1, TopP: 0.9})
		for range 100 {
			assert.Equal(t, int32(2), s.Sample([]float32{1, nan, float32(math.Inf(1)), 3}))
		}
	})
}

func TestSampleLeavesLogitsAlone(t *testing.T) {
	logits := samplerLogits(5, 1000)
	logits[10] = float32(math.NaN())
	logits[20] = float32(math.Inf(1))
	before := make([]uint32, len(logits))
	for i, l := range logits {
		before[i] = math.Float32bits(l)
	}
	s := newTestSampler(t, SamplerConfig{Temperature: 0.7, TopK: 20, TopP: 0.9, RepeatPenalty: 1.3, FrequencyPenalty: 0.5})
	for i := range 100 {
		s.Accept(int32(i))
		s.Sample(logits)
	}
	for i, l := range logits {
		require.Equal(t, before[i], math.Float32bits(l), "logit %d changed", i)
	}
}

func TestSampleDoesNotAllocate(t *testing.T) {
	const vocab = 32000
	logits := samplerLogits(9, vocab)
	cfgs := map[string]SamplerConfig{
		"top-k 40, top-p 0.95, temperature 0.8": {Temperature: 0.8, TopK: 40, TopP: 0.95, Seed: 1},
		"with penalties":                        {Temperature: 0.8, TopK: 40, TopP: 0.95, RepeatPenalty: 1.1, FrequencyPenalty: 0.1, PresencePenalty: 0.1},
		"top-p, min-p without top-k":            {Temperature: 0.8, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, PenaltyLastN: -1},
		"greedy":                                {RepeatPenalty: 1.1},
	}
	for name, cfg := range cfgs {
		t.Run(name, func(t *testing.T) {
			s := newTestSampler(t, cfg)
			for i := range 200 { // fill the penalty window and scratch buffers
				s.Accept(int32(i * 97 % vocab))
				s.Sample(logits)
			}
			allocs := testing.AllocsPerRun(100, func() { s.Sample(logits) })
			assert.Zero(t, allocs)
		})
	}
}

func BenchmarkSample(b *testing.B) {
	logits := samplerLogits(9, 151936)
	cfgs := map[string]SamplerConfig{
		"top-k40-top-p0.95-t0.8": {Temperature: 0.8, TopK: 40, TopP: 0.95, RepeatPenalty: 1.1},
		"top-p0.95-t0.8":         {Temperature: 0.8, TopP: 0.95},
		"greedy":                 {},
	}
	for name, cfg := range cfgs {
		b.Run(name, func(b *testing.B) {
			s, err := NewSampler(cfg)
			require.NoError(b, err)
			b.ReportAllocs()
			for b.Loop() {
				s.Sample(logits)
			}
		})
	}
}

func TestStopMatcher(t *testing.T) {
	tests := []struct {
		name    string
		stops   []string
		chunks  []string
		emitted []string // one per chunk
		stopAt  int      // index of the chunk that stops, -1 for none
		flush   string
	}{
		{
			name: "no stops passes through", stops: nil,
			chunks: []string{"a", "b"}, emitted: []string{"a", "b"}, stopAt: -1,
		},
		{
			name: "stop inside one chunk", stops: []string{"</s>"},
			chunks: []string{"hello", " world</s>tail"}, emitted: []string{"hello", " world"}, stopAt: 1,
		},
		{
			name: "stop across chunk boundaries", stops: []string{"<|end|>"},
			chunks:  []string{"hi <|", "en", "d|> more"},
			emitted: []string{"hi ", "", ""}, stopAt: 2,
		},
		{
			name: "partial prefix held then released", stops: []string{"###"},
			chunks:  []string{"a #", "#b", "c"},
			emitted: []string{"a ", "##b", "c"}, stopAt: -1,
		},
		{
			name: "held prefix released by flush", stops: []string{"STOP"},
			chunks:  []string{"the end ST"},
			emitted: []string{"the end "}, stopAt: -1, flush: "ST",
		},
		{
			name: "multiple stops, earliest wins", stops: []string{"world", "lo"},
			chunks:  []string{"hello world"},
			emitted: []string{"hel"}, stopAt: 0,
		},
		{
			name: "multiple stops, held for the longest possible", stops: []string{"\n\n", "User:"},
			chunks:  []string{"ok\nUs", "er:"},
			emitted: []string{"ok\n", ""}, stopAt: 1,
		},
		{
			name: "prefix of one stop completes another", stops: []string{"abc", "bx"},
			chunks:  []string{"zab", "x"},
			emitted: []string{"z", "a"}, stopAt: 1,
		},
		{
			name: "stop at the very start", stops: []string{"<eot>"},
			chunks: []string{"<eot>", "more"}, emitted: []string{"", ""}, stopAt: 0,
		},
		{
			name: "repeated stop characters", stops: []string{"aab"},
			chunks:  []string{"a", "a", "a", "b"},
			emitted: []string{"", "", "a", ""}, stopAt: 3,
		},
		{
			name: "multibyte stop", stops: []string{"→|"},
			chunks:  []string{"x→", "y→", "|"},
			emitted: []string{"x", "→y", ""}, stopAt: 2,
		},
		{
			name: "empty stop strings are ignored", stops: []string{"", "Q"},
			chunks: []string{"ab", "cQd"}, emitted: []string{"ab", "c"}, stopAt: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewStopMatcher(tc.stops)
			for i, chunk := range tc.chunks {
				emit, stopped := m.Push(chunk)
				if tc.stopAt >= 0 && i > tc.stopAt {
					assert.Empty(t, emit, "chunk %d after the stop", i)
					assert.True(t, stopped, "chunk %d after the stop", i)
					continue
				}
				assert.Equal(t, tc.emitted[i], emit, "chunk %d", i)
				assert.Equal(t, i == tc.stopAt, stopped, "chunk %d", i)
			}
			assert.Equal(t, tc.flush, m.Flush())
		})
	}
}

// TestStopMatcherNeverShowsAStop streams text one byte at a time and checks
// that the concatenated output equals the text before the first stop and
// that no emitted chunk ends inside a stop string.
func TestStopMatcherNeverShowsAStop(t *testing.T) {
	stops := []string{"<|im_end|>", "\n\nUser", "<|"}
	text := "a < b and <| is not a stop unless... <|im_end|> hidden"
	m := NewStopMatcher(stops)
	var out string
	stopped := false
	for i := 0; i < len(text) && !stopped; i++ {
		var emit string
		emit, stopped = m.Push(text[i : i+1])
		out += emit
		for _, st := range stops {
			assert.NotContains(t, out, st)
		}
	}
	assert.True(t, stopped)
	assert.Equal(t, "a < b and ", out, "<| itself is a stop")
	assert.Empty(t, m.Flush())
}
