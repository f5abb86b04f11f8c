package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/protocol"
	"github.com/edged/edged/prune"
)

// resolveSparsity picks the sparsity of a request: the request's own, else
// the model's default. It returns nil for a dense prefill (neither asks, or
// the method is "none") and a CodeInvalidValue error naming the field when
// the method or a setting is not valid for a model of nLayer layers
// (nLayer < 1: not checked against the model).
func resolveSparsity(req, def *protocol.Sparsity, nLayer int) (*prune.Spec, error) {
	s := req
	if s == nil {
		s = def
	}
	if s == nil {
		return nil, nil
	}
	spec := prune.Spec{Method: s.Method, Layers: s.Layers}
	if spec.Off() {
		return nil, nil
	}
	// A zero given explicitly would read as "the default" in a prune.Spec
	// (a zero similarity share is a setting: no similarity stage).
	if (s.Keep != nil && *s.Keep == 0) || (s.Window != nil && *s.Window == 0) || (s.Block != nil && *s.Block == 0) {
		return nil, protocol.ParamErrorf(protocol.CodeInvalidValue, "sparsity", "sparsity: keep, window and block must be positive when given")
	}
	if s.Keep != nil {
		spec.Keep = *s.Keep
	}
	if s.Window != nil {
		spec.Window = *s.Window
	}
	if s.Similarity != nil {
		share := *s.Similarity // the spec outlives the request
		spec.Similarity = &share
	}
	if s.Block != nil {
		spec.Block = *s.Block
	}
	if err := spec.Validate(nLayer); err != nil {
		// prune joins its problems with newlines; a wire message is one line.
		return nil, protocol.ParamErrorf(protocol.CodeInvalidValue, "sparsity", "sparsity: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return &spec, nil
}

// validSparsity checks a model's configured default as far as it can be
// checked without the model (its layers are checked when it loads).
func validSparsity(s *protocol.Sparsity) error {
	if err := s.Validate(); err != nil {
		return err
	}
	_, err := resolveSparsity(nil, s, 0)
	return err
}

// sparsity is the engine hook of one model that routes each sequence to
// the token-sparsity policy its request asked for. An engine takes its
// hooks once, when it is built, while every request may ask for another
// method, keep ratio or set of layers; so the instance installs one
// sparsity, which holds one prune.Policy per distinct Spec among the
// sequences reading a prompt (made when the first asks for it, dropped
// with the last) and enables each sequence on its own.
//
// The engine asks its one observer for scores, hidden states and keys
// (the optional interfaces of engine.Hooks.Observer), so sparsity
// implements them all and forwards each to the policies in use that want
// it.
//
// A sequence on no policy runs dense, bit for bit: with no policy in use
// every hook answers "nothing", and a policy keeps every row of the
// sequences it was not enabled on.
//
// A sparsity belongs to the scheduler goroutine: the engine calls the
// hooks from Step, the scheduler enables sequences between steps.
type sparsity struct {
	nLayer int
	pred   *prune.Predictor         // the model's LeMo predictor, or nil
	byKey  map[string]*sparsePolicy // by prune.Spec.String()
	bySeq  map[*engine.Sequence]*sparsePolicy
	step   []stepSeq // the sequences on a policy in the step being run
	probs  []float32 // scratch: probabilities computed from scores (see Observe)
}

// The engine finds the optional observers by type assertion: one left
// out would be skipped without a word.
var (
	_ engine.ScoreObserver  = (*sparsity)(nil)
	_ engine.HiddenObserver = (*sparsity)(nil)
	_ engine.KeyObserver    = (*sparsity)(nil)
	_ engine.TokenSelector  = (*sparsity)(nil)
)

// sparsePolicy is one policy in use, with the optional engine interfaces
// it implements (each nil when it does not).
type sparsePolicy struct {
	key    string
	p      prune.Policy
	obs    engine.AttentionObserver
	score  engine.ScoreObserver
	hidden engine.HiddenObserver
	keys   engine.KeyObserver
	seqs   int // sequences enabled on it
}

// newSparsePolicy wraps p, known by key.
func newSparsePolicy(key string, p prune.Policy) *sparsePolicy {
	sp := &sparsePolicy{key: key, p: p}
	sp.obs, _ = p.(engine.AttentionObserver)
	sp.score, _ = p.(engine.ScoreObserver)
	sp.hidden, _ = p.(engine.HiddenObserver)
	sp.keys, _ = p.(engine.KeyObserver)
	return sp
}

// wants reports whether sp ranks rows from layer's attention.
func (sp *sparsePolicy) wants(layer int) bool { return sp.obs != nil && sp.obs.Wants(layer) }

// wantsScores reports whether sp ranks rows from layer's scores rather
// than its probabilities.
func (sp *sparsePolicy) wantsScores(layer int) bool {
	return sp.score != nil && sp.score.Wants(layer) && sp.score.WantsScores(layer)
}

// wantsHidden reports whether sp reads the residual stream entering layer.
func (sp *sparsePolicy) wantsHidden(layer int) bool {
	return sp.hidden != nil && sp.hidden.WantsHidden(layer)
}

// wantsKeys reports whether sp reads layer's keys.
func (sp *sparsePolicy) wantsKeys(layer int) bool { return sp.keys != nil && sp.keys.WantsKeys(layer) }

// anyWants reports whether wants holds at layer for a policy in use.
func (s *sparsity) anyWants(wants func(*sparsePolicy, int) bool, layer int) bool {
	for _, sp := range s.byKey {
		if wants(sp, layer) {
			return true
		}
	}
	return false
}

// newSparsity returns the dispatcher of a model of nLayer layers; pred,
// when not nil, is the model's LeMo pattern predictor.
func newSparsity(nLayer int, pred *prune.Predictor) *sparsity {
	return &sparsity{nLayer: nLayer, pred: pred, byKey: map[string]*sparsePolicy{}, bySeq: map[*engine.Sequence]*sparsePolicy{}}
}

// enable puts seq on the policy of spec, making the policy if no running
// sequence uses it yet. A lemo spec whose layers the model's predictor
// covers, and that asks for no other block size than the predictor's,
// scores blocks with the predictor (at the block size it was trained for)
// instead of q·k.
func (s *sparsity) enable(seq *engine.Sequence, spec prune.Spec) error {
	if spec.Method == prune.MethodLeMo && s.pred != nil && (spec.Block == 0 || spec.Block == s.pred.Block) {
		ps := spec
		ps.Block = s.pred.Block
		cfg := ps.Config()
		if s.pred.Covers(cfg) == nil {
			return s.enableOn(seq, ps.String()+" predictor", func() (prune.Policy, error) {
				return prune.NewLeMo(cfg, s.pred)
			})
		}
	}
	return s.enableOn(seq, spec.String(), spec.New)
}

// loadPredictor loads the LeMo pattern predictor stored next to the model
// at modelPath (prune.PredictorPath), or returns nil when there is none.
func loadPredictor(modelPath string, nEmbd int) (*prune.Predictor, error) {
	path := prune.PredictorPath(modelPath)
	p, err := prune.LoadPredictor(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, err
	}
	if p.Dim != nEmbd {
		return nil, fmt.Errorf("%s: a predictor for hidden states of %d values, the model's have %d", path, p.Dim, nEmbd)
	}
	return p, nil
}

// enableOn puts seq on the policy known by key, making it with build if no
// running sequence uses it yet.
func (s *sparsity) enableOn(seq *engine.Sequence, key string, build func() (prune.Policy, error)) error {
	sp := s.byKey[key]
	if sp == nil {
		p, err := build()
		if err != nil {
			return fmt.Errorf("sparsity %s: %w", key, err)
		}
		sp = newSparsePolicy(key, p)
		s.byKey[key] = sp
	}
	sp.p.Enable(seq)
	sp.seqs++
	s.bySeq[seq] = sp
	return nil
}

// disable takes seq off its policy, if it is on one, and drops the policy
// when no sequence uses it any more. Call it before freeing seq.
func (s *sparsity) disable(seq *engine.Sequence) {
	sp := s.bySeq[seq]
	if sp == nil {
		return
	}
	sp.p.Disable(seq)
	delete(s.bySeq, seq)
	if sp.seqs--; sp.seqs == 0 {
		delete(s.byKey, sp.key)
	}
}

// Wants implements engine.AttentionObserver: the layers any policy in use
// ranks rows at. With none in use the attention kernel writes no
// probabilities.
func (s *sparsity) Wants(layer int) bool { return s.anyWants((*sparsePolicy).wants, layer) }

// WantsScores implements engine.ScoreObserver. The engine hands over
// either scores or probabilities at a layer, for the whole batch: scores
// when any policy in use ranks from them there (Observe turns them into
// probabilities for the others).
func (s *sparsity) WantsScores(layer int) bool {
	return s.anyWants((*sparsePolicy).wantsScores, layer)
}

// Observe implements engine.AttentionObserver: seq's attention goes to its
// own policy only, at the layers that policy wants, as scores or as
// probabilities, whichever it ranks from.
func (s *sparsity) Observe(layer int, seq *engine.Sequence, past, rows, heads int, m []float32) {
	sp := s.bySeq[seq]
	if sp == nil || !sp.wants(layer) {
		return
	}
	if !sp.wantsScores(layer) && s.WantsScores(layer) {
		m = s.softmaxRows(past, rows, heads, m)
	}
	sp.obs.Observe(layer, seq, past, rows, heads, m)
}

// softmaxRows returns the attention probabilities of one sequence's
// scores, laid out [head][row][past+rows] (see accel.AttnSeq): row i's
// softmax over its first past+i+1 entries, the others zero, the mask the
// attention kernel applies. They are computed in float64 with math.Exp,
// where the kernel uses its own e^x, so they may differ from the kernel's
// probabilities in the last bits. The result is s's scratch, valid until
// the next call; it is empty when scores is too short for its layout, and
// the policy then ranks nothing, as it does with too few probabilities.
func (s *sparsity) softmaxRows(past, rows, heads int, scores []float32) []float32 {
	width := past + rows
	size := heads * rows * width
	if len(scores) < size {
		return nil
	}
	if cap(s.probs) < size {
		s.probs = make([]float32, size)
	}
	probs := s.probs[:size]
	for r := range heads * rows {
		n := past + r%rows + 1
		softmaxInto(probs[r*width:][:width], scores[r*width:][:n])
	}
	return probs
}

// softmaxInto writes the softmax of x into the start of dst and zeros
// the rest.
func softmaxInto(dst, x []float32) {
	m := float32(math.Inf(-1))
	for _, v := range x {
		m = max(m, v)
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v - m))
		dst[i], sum = float32(e), sum+e
	}
	for i := range x {
		dst[i] = float32(float64(dst[i]) / sum)
	}
	clear(dst[len(x):])
}

// WantsHidden implements engine.HiddenObserver: the layers any policy in
// use reads the residual stream at.
func (s *sparsity) WantsHidden(layer int) bool {
	return s.anyWants((*sparsePolicy).wantsHidden, layer)
}

// ObserveHidden implements engine.HiddenObserver. Every policy that wants
// layer gets the whole batch: it reads the rows of its own sequences and
// passes over the others.
func (s *sparsity) ObserveHidden(layer int, rows []engine.Row, x []float32) {
	for _, sp := range s.byKey {
		if sp.wantsHidden(layer) {
			sp.hidden.ObserveHidden(layer, rows, x)
		}
	}
}

// WantsKeys implements engine.KeyObserver: the layers any policy in use
// reads the keys at.
func (s *sparsity) WantsKeys(layer int) bool { return s.anyWants((*sparsePolicy).wantsKeys, layer) }

// ObserveKeys implements engine.KeyObserver, as ObserveHidden does for
// the residual stream.
func (s *sparsity) ObserveKeys(layer int, rows []engine.Row, k []float32) {
	for _, sp := range s.byKey {
		if sp.wantsKeys(layer) {
			sp.keys.ObserveKeys(layer, rows, k)
		}
	}
}

// Select implements engine.TokenSelector. Each policy drops rows of its
// own sequences only, so the rows kept are those every policy keeps.
func (s *sparsity) Select(layer int, rows []engine.Row) []int32 {
	var keep []int32 // nil: every row so far
	for _, sp := range s.byKey {
		k := sp.p.Select(layer, rows)
		switch {
		case k == nil:
		case keep == nil:
			keep = k
		default:
			keep = intersectSorted(keep, k)
		}
	}
	return keep
}

// intersectSorted returns the values in both increasing lists, in a.
func intersectSorted(a, b []int32) []int32 {
	out, j := a[:0], 0
	for _, v := range a {
		for j < len(b) && b[j] < v {
			j++
		}
		if j < len(b) && b[j] == v {
			out = append(out, v)
		}
	}
	return out
}

// stepSeq is a sequence on a policy with rows in the step being run.
type stepSeq struct {
	seq    *engine.Sequence
	rows   int   // its rows in the batch
	cached []int // per layer: its cache rows before the step
}

// sparseStats is what token sparsity did in one step.
type sparseStats struct {
	promptRows int   // rows of the sequences on a policy
	kept       []int // per layer: of those, the rows the layer computed
	computed   int   // (row, layer) pairs computed, all sequences together
	skipped    int   // (row, layer) pairs dropped rows did not compute
}

// mark records, before a step, the rows and cache lengths of the
// sequences of batch that are on a policy.
func (s *sparsity) mark(batch []engine.Entry) {
	s.step = s.step[:0]
	for _, e := range batch {
		if s.bySeq[e.Seq] == nil {
			continue
		}
		if n := len(s.step); n > 0 && s.step[n-1].seq == e.Seq {
			s.step[n-1].rows++
			continue
		}
		cached := make([]int, s.nLayer)
		for l := range cached {
			cached[l] = e.Seq.CacheLen(l)
		}
		s.step = append(s.step, stepSeq{seq: e.Seq, rows: 1, cached: cached})
	}
}

// measure compares, after a step of batchRows rows, the marked sequences'
// cache lengths with those before: a layer caches exactly the rows it
// computed.
func (s *sparsity) measure(batchRows int) sparseStats {
	if len(s.step) == 0 {
		return sparseStats{} // the usual step: nothing to count, nothing allocated
	}
	st := sparseStats{kept: make([]int, s.nLayer)}
	for _, q := range s.step {
		st.promptRows += q.rows
		for l, before := range q.cached {
			k := q.seq.CacheLen(l) - before
			st.kept[l] += k
			st.computed += k
			st.skipped += q.rows - k
		}
	}
	st.computed += (batchRows - st.promptRows) * s.nLayer
	return st
}

// stepMeasured runs one step and counts what token sparsity saved in it.
func (in *instance) stepMeasured(batch []engine.Entry, logits []float32) error {
	in.sparse.mark(batch)
	start := time.Now()
	if err := in.step(batch, logits); err != nil {
		return err
	}
	in.countSparsity(in.sparse.measure(len(batch)), time.Since(start))
	return nil
}

// countSparsity adds one step's figures to the metrics. The time saved is
// an estimate, linear in rows: the step's time per (row, layer) computed,
// times the pairs skipped.
func (in *instance) countSparsity(st sparseStats, elapsed time.Duration) {
	if st.promptRows == 0 {
		return
	}
	m := in.m
	m.sparsePromptTokens.add(float64(st.promptRows), in.name)
	for l, k := range st.kept {
		m.sparseKeptTokens.add(float64(k), in.name, strconv.Itoa(l))
	}
	if st.computed > 0 {
		m.sparseSecondsSaved.add(elapsed.Seconds()*float64(st.skipped)/float64(st.computed), in.name)
	}
	m.sparseKVBytesSaved.add(float64(int64(st.skipped)*in.kvRow), in.name)
}
