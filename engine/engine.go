// Package engine runs the transformer forward pass over a batch of token
// rows drawn from many sequences at once, keeps each sequence's KV cache,
// and samples tokens.
package engine

import (
	"errors"
	"fmt"
	"math"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// Options configure an Engine. The zero value is usable: defaults fill in.
type Options struct {
	// Context is the most tokens (prefix rows included) one sequence holds;
	// 0: the model's training context, at most DefaultContext.
	Context int
	// BatchSize is the most rows one forward pass computes at once; larger
	// batches are split. 0: 512.
	BatchSize int
	// Cache is the storage type of the KV cache.
	Cache CacheType
	Hooks Hooks
	// Offload, when set, runs the last OffloadLayers layers and the output
	// (llama.cpp's -ngl) on a second backend, usually a GPU, while the
	// engine's backend keeps the token embedding and the layers before
	// them. The residual stream crosses between them once per forward pass.
	Offload       accel.Backend
	OffloadLayers int
}

// DefaultContext caps the default context: a model trained on 128k tokens
// would otherwise reserve gigabytes of cache per sequence.
const DefaultContext = 4096

// CacheType selects the storage of the KV cache.
type CacheType int

// Cache storage types. F16 halves the memory at a small cost in accuracy
// (llama.cpp's default); F32 is exact.
const (
	CacheF16 CacheType = iota
	CacheF32
)

func (c CacheType) quant() (quant.Type, error) {
	switch c {
	case CacheF16:
		return quant.F16, nil
	case CacheF32:
		return quant.F32, nil
	}
	return 0, fmt.Errorf("engine: unknown KV cache type %d", int(c))
}

// ParseCacheType maps "f16" or "f32" to a CacheType.
func ParseCacheType(s string) (CacheType, error) {
	switch s {
	case "f16":
		return CacheF16, nil
	case "f32":
		return CacheF32, nil
	}
	return 0, fmt.Errorf("KV cache type %q: want f16 or f32", s)
}

func (o Options) withDefaults(cfg *model.Config) Options {
	if o.Context <= 0 {
		o.Context = min(cfg.NCtxTrain, DefaultContext)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 512
	}
	return o
}

// Engine owns a model's weights on a backend and runs forward passes. One
// Step runs at a time: Step is not safe for concurrent use.
type Engine struct {
	cfg    model.Config
	stages []*stage      // the engine's backend first; the offload one last
	be     accel.Backend // the backend of the layer being run
	act    *activations  // its scratch buffers
	xfer   []float32     // the residual stream between stages
	opts   Options
	w      weights
	rope   accel.RoPE
	attn   accel.AttnShape
	stepID uint64 // counts Steps, for batch validation
	// cacheType is the storage type of KV cache buffers.
	cacheType quant.Type
	logitN    int // rows of logits computed per output matmul
}

// weights are the model's tensors as the backend holds them.
type weights struct {
	tokEmbd, output accel.Weight
	outputNorm      accel.Buffer
	layers          []layerWeights
}

type layerWeights struct {
	attnNorm, ffnNorm accel.Buffer
	wq, wk, wv, wo    accel.Weight
	bq, bk, bv        accel.Buffer // nil without biases
	gate, up, down    accel.Weight
}

// stage is the part of the model on one backend: the layers from its
// from up to the next stage's.
type stage struct {
	be   accel.Backend
	from int
	act  activations
}

// stageOf is the stage that runs layer l.
func (e *Engine) stageOf(l int) *stage { return e.stages[e.stageIndex(l)] }

// stageIndex is the index in e.stages of the stage that runs layer l.
func (e *Engine) stageIndex(l int) int {
	i := 0
	for j, t := range e.stages {
		if l >= t.from {
			i = j
		}
	}
	return i
}

// use makes s the stage the forward pass computes on.
func (e *Engine) use(s *stage) { e.be, e.act = s.be, &s.act }

// activations are the scratch buffers of one forward pass of BatchSize
// rows on one stage, allocated once (the output's on the last stage only).
type activations struct {
	x, xn     accel.Buffer // [rows × NEmbd]
	q, att    accel.Buffer // [rows × QDim]
	k, v      accel.Buffer // [rows × KVDim]
	gate, up  accel.Buffer // [rows × NFF]
	outX      accel.Buffer // [logitN × NEmbd]
	logits    accel.Buffer // [logitN × NVocab]
	probs     []float32    // attention probabilities (or scores) for an observer
	hidden    []float32    // the residual stream read back for a HiddenObserver
	keys      []float32    // key rows read back for a KeyObserver
	ids, pos  []int32
	rows      []Row
	seqs      []accel.AttnSeq
	seqOf     []*Sequence // the sequence of each entry of seqs
	logitRows []int32
	prods     [3]accel.Product // the products of one project call
}

// New places m's weights on be (and opts.Offload) and allocates the
// scratch memory of one batch.
func New(m *model.Model, be accel.Backend, opts Options) (*Engine, error) {
	cfg := m.Config
	opts = opts.withDefaults(&cfg)
	cacheType, err := opts.Cache.quant()
	if err != nil {
		return nil, err
	}
	stages := []*stage{{be: be}}
	if opts.Offload != nil {
		if opts.OffloadLayers < 1 || opts.OffloadLayers > cfg.NLayer {
			return nil, fmt.Errorf("engine: %d offloaded layers: want 1 to %d", opts.OffloadLayers, cfg.NLayer)
		}
		stages = append(stages, &stage{be: opts.Offload, from: cfg.NLayer - opts.OffloadLayers})
	}
	e := &Engine{
		cfg:       cfg,
		cacheType: cacheType,
		stages:    stages,
		opts:      opts,
		rope:      accel.NewRoPE(cfg.HeadDim, cfg.Rope.Dims, cfg.Rope.Theta, cfg.Rope.NeoX, cfg.Rope.FreqFactors),
		attn:      accel.AttnShape{NHead: cfg.NHead, NHeadKV: cfg.NHeadKV, HeadDim: cfg.HeadDim, Scale: float32(1 / math.Sqrt(float64(cfg.HeadDim)))},
		// Bounded so that the logits of a long prompt never need a
		// prompt-sized × vocabulary-sized buffer.
		logitN: min(opts.BatchSize, 32),
	}
	if err := e.loadWeights(m); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	for i, s := range e.stages {
		if err := e.allocActivations(s, i == len(e.stages)-1); err != nil {
			return nil, fmt.Errorf("engine: %s: %w", s.be.Name(), err)
		}
	}
	e.use(e.stages[0])
	return e, nil
}

// Config returns the model's hyper-parameters.
func (e *Engine) Config() model.Config { return e.cfg }

// Options returns the options in force, defaults filled in.
func (e *Engine) Options() Options { return e.opts }

// Backend returns the backend the engine was made with (which also runs
// everything when nothing is offloaded).
func (e *Engine) Backend() accel.Backend { return e.stages[0].be }

// Backends returns every backend the engine runs on, its own first.
func (e *Engine) Backends() []accel.Backend {
	bs := make([]accel.Backend, len(e.stages))
	for i, s := range e.stages {
		bs[i] = s.be
	}
	return bs
}

// Close closes the engine's backends. The engine and its sequences must
// not be used afterwards.
func (e *Engine) Close() error {
	var errs []error
	for _, s := range e.stages {
		errs = append(errs, s.be.Close())
	}
	return errors.Join(errs...)
}

// loader collects the first error of a series of backend uploads.
type loader struct {
	be  accel.Backend
	err error
}

func (l *loader) matrix(t *model.Tensor) accel.Weight {
	if l.err != nil {
		return nil
	}
	w, err := l.be.Load(accel.Matrix{Name: t.Name, Type: t.Type, Rows: t.Rows, Cols: t.Cols, Data: t.Data})
	l.err = err
	return w
}

// vector dequantizes a small tensor (a norm or a bias) to float32 and
// places it on the backend. A nil tensor gives a nil buffer.
func (l *loader) vector(t *model.Tensor) accel.Buffer {
	if l.err != nil || t == nil {
		return nil
	}
	v := make([]float32, t.Cols)
	if err := quant.Dequantize(t.Type, t.Data, v); err != nil {
		l.err = fmt.Errorf("%s: %w", t.Name, err)
		return nil
	}
	b, err := l.be.Alloc(len(v))
	if err != nil {
		l.err = err
		return nil
	}
	l.be.Write(b, 0, v)
	return b
}

func (e *Engine) loadWeights(m *model.Model) error {
	loaders := make([]loader, len(e.stages))
	for i, s := range e.stages {
		loaders[i] = loader{be: s.be}
	}
	first, last := &loaders[0], &loaders[len(loaders)-1]
	e.w.tokEmbd = first.matrix(m.TokenEmbd)
	e.w.output = e.w.tokEmbd
	if !m.Tied || last != first {
		// A tied embedding goes to the output's backend a second time.
		out := m.Output
		if m.Tied {
			out = m.TokenEmbd
		}
		e.w.output = last.matrix(out)
	}
	e.w.outputNorm = last.vector(m.OutputNorm)
	e.w.layers = make([]layerWeights, len(m.Layers))
	for i := range m.Layers {
		l := &loaders[e.stageIndex(i)]
		src, dst := &m.Layers[i], &e.w.layers[i]
		dst.attnNorm, dst.ffnNorm = l.vector(src.AttnNorm), l.vector(src.FFNNorm)
		dst.wq, dst.wk, dst.wv, dst.wo = l.matrix(src.Wq), l.matrix(src.Wk), l.matrix(src.Wv), l.matrix(src.Wo)
		dst.bq, dst.bk, dst.bv = l.vector(src.Bq), l.vector(src.Bk), l.vector(src.Bv)
		dst.gate, dst.up, dst.down = l.matrix(src.Gate), l.matrix(src.Up), l.matrix(src.Down)
	}
	var errs []error
	for _, l := range loaders {
		errs = append(errs, l.err)
	}
	return errors.Join(errs...)
}

func (e *Engine) allocActivations(s *stage, output bool) error {
	c, n := &e.cfg, e.opts.BatchSize
	var errs []error
	alloc := func(size int) accel.Buffer {
		b, err := s.be.Alloc(size)
		errs = append(errs, err)
		return b
	}
	a := &s.act
	a.x, a.xn = alloc(n*c.NEmbd), alloc(n*c.NEmbd)
	a.q, a.att = alloc(n*c.QDim()), alloc(n*c.QDim())
	a.k, a.v = alloc(n*c.KVDim()), alloc(n*c.KVDim())
	a.gate, a.up = alloc(n*c.NFF), alloc(n*c.NFF)
	if output {
		a.outX, a.logits = alloc(e.logitN*c.NEmbd), alloc(e.logitN*c.NVocab)
	}
	a.ids, a.pos = make([]int32, n), make([]int32, n)
	a.rows = make([]Row, n)
	a.logitRows = make([]int32, 0, n)
	return errors.Join(errs...)
}
