package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
	"github.com/edged/edged/prune"
)

// job is one generation request as the scheduler sees it.
type job struct {
	ctx       context.Context
	prompt    []int32
	sampler   engine.SamplerConfig
	stops     []string
	maxTokens int         // 0: until an end token or a full context
	sparsity  *prune.Spec // token sparsity of the prompt; nil: dense
	// adapter is the adapter version the sequence runs with; nil: the
	// base model.
	adapter  *servedAdapter
	enqueued time.Time
	out      *output
}

// output carries a job's text from the scheduler goroutine to the
// requester. The scheduler never blocks on it: a client that reads slowly
// (or never) holds up only its own requester goroutine, and the pending
// text is bounded by the job's token limit.
type output struct {
	wake chan struct{} // capacity 1: "something changed"

	mu         sync.Mutex // guards the fields below
	pending    []string
	done       bool
	reason     string // protocol.FinishStop or FinishLength
	err        error
	completion int // tokens generated
	firstToken time.Time
}

func newOutput() *output { return &output{wake: make(chan struct{}, 1)} }

func (o *output) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *output) push(text string, tokens int) {
	o.mu.Lock()
	if text != "" {
		o.pending = append(o.pending, text)
	}
	if o.completion == 0 && tokens > 0 {
		o.firstToken = time.Now()
	}
	o.completion += tokens
	o.mu.Unlock()
	o.signal()
}

func (o *output) finish(reason string, err error) {
	o.mu.Lock()
	if !o.done {
		o.done, o.reason, o.err = true, reason, err
	}
	o.mu.Unlock()
	o.signal()
}

// take returns the pending text and whether the job has finished.
func (o *output) take() (text []string, done bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	text, o.pending = o.pending, nil
	return text, o.done
}

// seqState is a running job: its sequence, sampler and progress. It
// belongs to the scheduler goroutine.
type seqState struct {
	j       *job
	seq     *engine.Sequence
	sampler *engine.Sampler
	stream  *model.StreamDecoder
	stops   *engine.StopMatcher
	fed     int   // prompt tokens fed so far
	next    int32 // the token to feed in the next decode row
	decode  bool  // the prompt is fed: one row per step
	lastTok time.Time
}

// run is the scheduler: the only goroutine that uses the engine. Each
// step it admits queued jobs up to MaxActive, then builds one batch from
// every active sequence: a decode row for each sequence past its prompt,
// and prompt rows of the others, shortest remaining prompt first, at most
// PrefillChunk of them per step so that running streams keep their pace
// while a long prompt is read.
func (in *instance) run(free func()) {
	defer close(in.done)
	defer free()
	defer in.file.Close()
	defer in.eng.Close()
	var active []*seqState
	nv := in.eng.Config().NVocab
	logits := make([]float32, in.sched.MaxActive*nv)
	batch := make([]engine.Entry, 0, in.sched.PrefillChunk+in.sched.MaxActive)
	owners := make([]*seqState, 0, in.sched.MaxActive)
	closed := false // in.closing seen: no job arrives any more
	defer func() {
		for _, st := range active {
			in.end(st, "", protocol.Errorf(protocol.CodeInternal, "scheduler stopped"))
		}
	}()
	for {
		// Admit: wait for work when there is none.
		for len(active) < in.sched.MaxActive {
			var j *job
			if len(active) == 0 && !closed {
				select {
				case j = <-in.queue:
				case <-in.closing:
					closed = true
					continue
				}
			} else {
				select {
				case j = <-in.queue:
				default:
				}
			}
			if j == nil {
				break
			}
			if st := in.start(j); st != nil {
				active = append(active, st)
			}
		}
		if len(active) == 0 {
			in.active.Store(0)
			in.kvTokens.Store(0)
			if closed && len(in.queue) == 0 {
				return
			}
			continue
		}
		// Drop jobs whose client left or whose deadline passed.
		active = slices.DeleteFunc(active, func(st *seqState) bool {
			if st.j.ctx.Err() != nil {
				in.end(st, "", ctxError(st.j.ctx))
				return true
			}
			return false
		})
		in.active.Store(int32(len(active)))
		if len(active) == 0 {
			continue
		}
		batch, owners = in.buildBatch(active, batch[:0], owners[:0])
		var tokens int64
		for _, st := range active {
			tokens += int64(st.seq.Len())
		}
		in.kvTokens.Store(tokens)
		if err := in.stepMeasured(batch, logits[:len(owners)*nv]); err != nil {
			for _, st := range active {
				in.end(st, "", protocol.Errorf(protocol.CodeInternal, "model %s: %v", in.name, err))
			}
			active = active[:0]
			continue
		}
		for i, st := range owners {
			if in.sample(st, logits[i*nv:(i+1)*nv]) {
				active = slices.DeleteFunc(active, func(s *seqState) bool { return s == st })
			}
		}
		in.active.Store(int32(len(active)))
	}
}

// step runs the engine, turning a panic into an error so that one bad
// batch fails its requests rather than the daemon.
func (in *instance) step(batch []engine.Entry, logits []float32) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("engine panic: %v", r)
		}
	}()
	return in.eng.Step(batch, logits)
}

// start prepares a job; it returns nil when the job ended already.
func (in *instance) start(j *job) *seqState {
	if err := j.ctx.Err(); err != nil {
		j.out.finish("", ctxError(j.ctx))
		return nil
	}
	in.m.queueWait.observe(in.name, time.Since(j.enqueued).Seconds())
	sampler, err := engine.NewSampler(j.sampler)
	if err != nil {
		j.out.finish("", protocol.Errorf(protocol.CodeInvalidValue, "%v", err))
		return nil
	}
	seq, err := in.newSequence(j.adapter)
	if err != nil {
		j.out.finish("", protocol.Errorf(protocol.CodeInsufficientMemory, "model %s: %v", in.name, err))
		return nil
	}
	if j.sparsity != nil {
		if err := in.sparse.enable(seq, *j.sparsity); err != nil {
			in.freeSequence(seq)
			j.out.finish("", protocol.Errorf(protocol.CodeInternal, "model %s: %v", in.name, err))
			return nil
		}
		in.m.sparseRequests.add(1, in.name, j.sparsity.Method)
	}
	for _, id := range j.prompt {
		sampler.Accept(id)
	}
	in.m.tokensIn.add(float64(len(j.prompt)), in.name)
	return &seqState{j: j, seq: seq, sampler: sampler, stream: in.tok.NewStreamDecoder(), stops: engine.NewStopMatcher(j.stops)}
}

// buildBatch lays out one step: decode rows first, then prompt rows.
func (in *instance) buildBatch(active []*seqState, batch []engine.Entry, owners []*seqState) ([]engine.Entry, []*seqState) {
	var prefill []*seqState
	for _, st := range active {
		if st.decode {
			batch = append(batch, engine.Entry{Seq: st.seq, Token: st.next, Pos: int32(st.seq.Len()), Logits: true})
			owners = append(owners, st)
		} else {
			prefill = append(prefill, st)
		}
	}
	slices.SortStableFunc(prefill, func(a, b *seqState) int {
		return cmp.Compare(len(a.j.prompt)-a.fed, len(b.j.prompt)-b.fed)
	})
	budget := in.sched.PrefillChunk
	for _, st := range prefill {
		n := min(len(st.j.prompt)-st.fed, budget)
		if n <= 0 {
			break
		}
		for i := range n {
			k := st.fed + i
			last := k == len(st.j.prompt)-1
			batch = append(batch, engine.Entry{Seq: st.seq, Token: st.j.prompt[k], Pos: int32(k), Logits: last})
			if last {
				owners = append(owners, st)
			}
		}
		st.fed += n
		budget -= n
	}
	return batch, owners
}

// sample handles one sequence's logits; it reports whether the job ended.
func (in *instance) sample(st *seqState, logits []float32) bool {
	id := st.sampler.Sample(logits)
	if id < 0 {
		in.end(st, "", protocol.Errorf(protocol.CodeInternal, "nothing to sample: every logit is NaN or -Inf"))
		return true
	}
	now := time.Now()
	if st.decode {
		in.m.tokenLatency.observe(in.name, now.Sub(st.lastTok).Seconds())
	} else {
		in.m.ttft.observe(in.name, now.Sub(st.j.enqueued).Seconds())
		// The prompt is read: generated tokens are never dropped, and
		// off its policy the sequence costs the others' steps nothing.
		in.sparse.disable(st.seq)
	}
	st.decode, st.lastTok = true, now
	if in.tok.IsEOG(id) || id == in.tok.BOS() {
		in.end(st, protocol.FinishStop, nil)
		return true
	}
	in.m.tokensOut.add(1, in.name)
	text, stopped := st.stops.Push(st.stream.Push(id))
	st.j.out.push(text, 1)
	if stopped {
		in.end(st, protocol.FinishStop, nil)
		return true
	}
	n := st.j.out.count()
	// A prefix adapter's rows take their share of the context.
	if n == st.j.maxTokens || st.seq.Len()+prefixLen(st.j.adapter) >= in.ctxLen {
		in.end(st, protocol.FinishLength, nil)
		return true
	}
	st.next = id
	return false
}

// end flushes the decoders, frees the sequence and finishes the job.
func (in *instance) end(st *seqState, reason string, err error) {
	if err == nil {
		text, stopped := st.stops.Push(st.stream.Flush())
		if stopped {
			reason = protocol.FinishStop
		} else {
			text += st.stops.Flush()
		}
		st.j.out.push(text, 0)
	}
	in.sparse.disable(st.seq)
	in.freeSequence(st.seq)
	st.j.out.finish(reason, err)
}

func (o *output) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.completion
}

// errShutdown is the cause given to requests cut off by a shutdown.
var errShutdown = errors.New("shutdown")

// ctxError maps a job context's end to a wire error.
func ctxError(ctx context.Context) error {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errShutdown):
		return protocol.Errorf(protocol.CodeShuttingDown, "the daemon is shutting down")
	case errors.Is(cause, context.DeadlineExceeded):
		return protocol.Errorf(protocol.CodeTimeout, "the request's deadline passed")
	default:
		return protocol.Errorf(protocol.CodeCancelled, "the request was cancelled")
	}
}
