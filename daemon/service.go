package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"math"
	rand2 "math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/edged/edged/engine"
	"github.com/edged/edged/protocol"
)

// Service is the daemon's one internal API. Every front end — the
// Unix-socket HTTP server and the NATS micro service alike — decodes a
// request with protocol.Decode*, calls a Service method and encodes what
// it returns, so that every transport answers the same objects.
//
// Errors returned by Service methods are *protocol.Error values (use
// protocol.AsError): their Code says what the client did wrong or what
// failed, and maps to an HTTP status or a NATS micro error code.
//
// Streaming: Complete and Chat take an emit function. When it is not nil,
// it receives each chunk as soon as the text is ready, the last chunk with
// its finish_reason and usage; when emit returns an error the generation
// stops (the client went away) and that error is returned. Whether emit is
// nil or not, the full response is returned at the end. emit is called
// from the calling goroutine only, never concurrently, and a slow emit
// delays nobody else's request.
//
// Cancellation: ctx bounds the request. Cancel it when the client goes
// away: its sequence stops at the next engine step.
//
// All methods are safe for concurrent use.
type Service struct {
	d *Daemon
}

// Complete runs a text completion.
func (s *Service) Complete(ctx context.Context, req *protocol.CompletionRequest, emit func(*protocol.CompletionChunk) error) (*protocol.CompletionResponse, error) {
	id, created := newID("cmpl-"), time.Now().Unix()
	g := genRequest{endpoint: "completions", model: req.Model, sampling: req.Sampling, maxTokens: req.MaxTokens, stop: req.Stop, sparsity: req.Sparsity, adapter: req.AdapterVersion}
	chunk := func(text string, finish *string, usage *protocol.Usage) *protocol.CompletionChunk {
		return &protocol.CompletionChunk{
			Version: protocol.Version, ID: id, Object: protocol.ObjectCompletion, Created: created, Model: req.Model,
			Choices: []protocol.CompletionChoice{{Text: text, FinishReason: finish}}, Usage: usage, AdapterVersion: g.served,
		}
	}
	if req.Prompt.IsTokens {
		g.ids = req.Prompt.Tokens
	} else {
		g.text = req.Prompt.Text
	}
	var onText func(string) error
	if emit != nil {
		onText = func(t string) error { return emit(chunk(t, nil, nil)) }
	}
	res, err := s.generate(ctx, &g, onText)
	if err != nil {
		return nil, err
	}
	if emit != nil {
		if err := emit(chunk("", &res.finish, &res.usage)); err != nil {
			return nil, err
		}
	}
	return chunk(res.text, &res.finish, &res.usage), nil
}

// Chat runs a chat completion: the messages are rendered with the model's
// chat template (DefaultChatTemplate when it has none).
func (s *Service) Chat(ctx context.Context, req *protocol.ChatRequest, emit func(*protocol.ChatChunk) error) (*protocol.ChatResponse, error) {
	id, created := newID("chatcmpl-"), time.Now().Unix()
	g := genRequest{endpoint: "chat", model: req.Model, sampling: req.Sampling, maxTokens: req.Limit(), stop: req.Stop, messages: req.Messages, sparsity: req.Sparsity, adapter: req.AdapterVersion}
	chunk := func(d protocol.ChatDelta, finish *string, usage *protocol.Usage) *protocol.ChatChunk {
		return &protocol.ChatChunk{
			Version: protocol.Version, ID: id, Object: protocol.ObjectChatChunk, Created: created, Model: req.Model,
			Choices: []protocol.ChatChunkChoice{{Delta: d, FinishReason: finish}}, Usage: usage, AdapterVersion: g.served,
		}
	}
	var onText func(string) error
	if emit != nil {
		first := true
		onText = func(t string) error {
			d := protocol.ChatDelta{Content: t}
			if first {
				d.Role, first = "assistant", false
			}
			return emit(chunk(d, nil, nil))
		}
	}
	res, err := s.generate(ctx, &g, onText)
	if err != nil {
		return nil, err
	}
	if emit != nil {
		if err := emit(chunk(protocol.ChatDelta{}, &res.finish, &res.usage)); err != nil {
			return nil, err
		}
	}
	return &protocol.ChatResponse{
		Version: protocol.Version, ID: id, Object: protocol.ObjectChat, Created: created, Model: req.Model,
		Choices: []protocol.ChatChoice{{Message: protocol.ChatMessage{Role: "assistant", Content: res.text}, FinishReason: &res.finish}},
		Usage:   &res.usage, AdapterVersion: g.served,
	}, nil
}

// Tokenize returns the token ids of a text (loading the model if needed).
func (s *Service) Tokenize(ctx context.Context, req *protocol.TokenizeRequest) (*protocol.TokenizeResponse, error) {
	res, err := s.tokenize(ctx, req)
	s.d.metrics.requests.add(1, "tokenize", req.Model, resultCode(err))
	return res, err
}

func (s *Service) tokenize(ctx context.Context, req *protocol.TokenizeRequest) (*protocol.TokenizeResponse, error) {
	done, err := s.d.begin()
	if err != nil {
		return nil, err
	}
	defer done()
	inst, release, err := s.d.reg.acquire(ctx, req.Model)
	if err != nil {
		return nil, err
	}
	defer release()
	add, parse := true, true
	if req.AddSpecial != nil {
		add = *req.AddSpecial
	}
	if req.ParseSpecial != nil {
		parse = *req.ParseSpecial
	}
	ids := inst.tok.Encode(req.Content, add, parse)
	res := &protocol.TokenizeResponse{Version: protocol.Version, Model: req.Model, Tokens: ids}
	if res.Tokens == nil {
		res.Tokens = []int32{}
	}
	if req.WithPieces {
		for _, id := range ids {
			res.Pieces = append(res.Pieces, inst.tok.DecodeSpecial([]int32{id}))
		}
	}
	return res, nil
}

// Models lists the registered models.
func (s *Service) Models(ctx context.Context) (*protocol.ModelList, error) {
	r := s.d.reg
	list := &protocol.ModelList{Version: protocol.Version, Object: protocol.ObjectList, Data: []protocol.Model{}}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range sortedKeys(r.entries) {
		e := r.entries[n]
		m := protocol.Model{
			ID: n, Object: protocol.ObjectModel, Created: e.created.Unix(), OwnedBy: "edged",
			Path: e.spec.Path, Digest: e.digest, SizeBytes: e.size, State: e.state, Error: e.err,
		}
		if e.inst != nil {
			m.Context, m.MemoryBytes = e.inst.ctxLen, e.inst.mem
		}
		list.Data = append(list.Data, m)
	}
	return list, nil
}

// Load registers req.Path under req.Model (or the file's base name) when
// a path is given, persistently, then loads the model.
func (s *Service) Load(ctx context.Context, req *protocol.LoadRequest) (*protocol.Model, error) {
	done, err := s.d.begin()
	if err != nil {
		return nil, err
	}
	defer done()
	name := req.Model
	if req.Path != "" {
		if name == "" {
			name = baseName(req.Path)
		}
		if err := s.d.reg.register(ModelSpec{Name: name, Path: req.Path}, true); err != nil {
			return nil, protocol.AsError(err)
		}
	}
	_, release, err := s.d.reg.acquire(ctx, name)
	if err != nil {
		return nil, err
	}
	release()
	list, _ := s.Models(ctx)
	for _, m := range list.Data {
		if m.ID == name {
			return &m, nil
		}
	}
	return nil, protocol.Errorf(protocol.CodeModelNotFound, "model %q vanished", name)
}

// Unload unloads a model; it returns once the model's memory is free (the
// requests it had accepted finish first) or ctx ends.
func (s *Service) Unload(ctx context.Context, req *protocol.UnloadRequest) error {
	return s.d.reg.unload(ctx, req.Model)
}

// Register adds a model to the registry (and the database) without
// loading it: what `edgectl pull` does once the file is in place.
func (s *Service) Register(spec ModelSpec) error {
	return s.d.reg.register(spec, true)
}

// Status reports the daemon's state.
func (s *Service) Status(ctx context.Context) (*protocol.Status, error) {
	d := s.d
	st := &protocol.Status{
		Version: protocol.Version, Node: d.options().Node, DaemonVersion: DaemonVersion,
		StartedAt: d.started.Unix(), UptimeSeconds: int64(time.Since(d.started).Seconds()),
		Draining: d.draining.Load(), Models: []protocol.ModelStatus{},
	}
	r := d.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	st.MemoryBudget, st.MemoryUsed = r.models.MemoryBudget, r.used
	for _, n := range sortedKeys(r.entries) {
		e := r.entries[n]
		ms := protocol.ModelStatus{Name: n, State: e.state}
		if in := e.inst; in != nil {
			ms.QueueDepth, ms.Active = len(in.queue), int(in.active.Load())
			ms.KVCacheBytes, ms.KVTokens = int64(ms.Active)*in.kvSeq, int(in.kvTokens.Load())
			ms.MemoryBytes, ms.Backend = in.mem, in.backend
			if e.users == 0 && in.idle() {
				ms.IdleSeconds = int64(time.Since(e.lastUsed).Seconds())
			}
		}
		st.Models = append(st.Models, ms)
	}
	return st, nil
}

// WriteMetrics writes every metric in the Prometheus text format.
func (s *Service) WriteMetrics(w io.Writer) { s.d.writeMetrics(w) }

// Node is the daemon's node name.
func (s *Service) Node() string { return s.d.options().Node }

// Options returns the options in force (after the last reload).
func (s *Service) Options() Options { return s.d.options() }

// OnEvent registers fn to receive lifecycle events (model loaded,
// unloaded, load failed, reloaded, draining; edits accepted, rejected,
// retracted; adapter versions committed, pulled, published, rolled back,
// failed to load; jobs queued, started, progressing, paused, resumed,
// cancelled, done, failed). fn must not block.
func (s *Service) OnEvent(fn func(Event)) { s.d.onEvent(fn) }

// Event is a lifecycle event.
type Event struct {
	Time time.Time `json:"time"`
	Node string    `json:"node"`
	// Kind is one of started, model_loaded, model_unloaded,
	// model_load_failed, reloaded, draining, edit_accepted, edit_rejected,
	// edit_retracted, edits_trained (an edit job's version holds its
	// edits, now active), adapter_committed, adapter_pulled (a version pulled
	// from the fleet is committed), adapter_published, adapter_rolled_back
	// (another version made current), adapter_failed (a stored version did
	// not load: its file is damaged or it no longer fits the model),
	// job_queued, job_started, job_progress (at most every
	// jobs.progress_interval), job_paused, job_resumed, job_cancelled,
	// job_done and job_failed.
	Kind  string `json:"kind"`
	Model string `json:"model,omitempty"`
	// Edit is the record id of an edit event (see Service.EditStatus).
	Edit string `json:"edit,omitempty"`
	// AdapterVersion is the version an adapter_committed, adapter_pulled
	// or adapter_published event is about.
	AdapterVersion uint64 `json:"adapter_version,omitempty"`
	// Job is the id of a job event, Progress where the job stands.
	Job      string       `json:"job,omitempty"`
	Progress *JobProgress `json:"progress,omitempty"`
	Msg      string       `json:"message,omitempty"`
}

// genRequest is what completions and chats have in common.
type genRequest struct {
	endpoint  string
	model     string
	text      string // a prompt to encode, or
	ids       []int32
	messages  []protocol.Message // a chat to render
	sampling  protocol.Sampling
	maxTokens *int
	stop      []string
	sparsity  *protocol.Sparsity
	adapter   *int64 // the request's adapter_version
	// served is the adapter version serving the request (0: the base
	// model), set by generate before any text.
	served uint64
}

type genResult struct {
	text   string
	finish string
	usage  protocol.Usage
}

// generate runs one request through the model's scheduler.
func (s *Service) generate(ctx context.Context, g *genRequest, onText func(string) error) (res genResult, err error) {
	defer func() { s.d.metrics.requests.add(1, g.endpoint, g.model, resultCode(err)) }()
	done, err := s.d.begin()
	if err != nil {
		return res, err
	}
	defer done()
	ctx, cancel := s.d.requestContext(ctx)
	defer cancel(nil)

	var inst *instance
	var release func()
	var out *output
	for try := 0; ; try++ {
		inst, release, err = s.d.reg.acquire(ctx, g.model)
		if err != nil {
			return res, err
		}
		ad, err := s.d.adapterFor(inst, g.adapter)
		if err != nil {
			release()
			return res, err
		}
		j, err := s.prepare(inst, g, ad)
		if err != nil {
			release()
			return res, err
		}
		g.served = versionOf(ad)
		j.ctx = ctx
		res.usage.PromptTokens = len(j.prompt)
		if err = inst.submit(j); err == nil {
			out = j.out
			break
		}
		release()
		if err != errUnloading || try > 2 {
			return res, err
		}
	}
	defer release()

	var text strings.Builder
	for {
		select {
		case <-out.wake:
		case <-ctx.Done():
			return res, ctxError(ctx)
		}
		pieces, finished := out.take()
		for _, p := range pieces {
			text.WriteString(p)
			if onText != nil {
				if err := onText(p); err != nil {
					cancel(err)
					return res, protocol.Errorf(protocol.CodeCancelled, "the client stopped reading: %v", err)
				}
			}
		}
		if finished {
			out.mu.Lock()
			reason, jobErr, n := out.reason, out.err, out.completion
			out.mu.Unlock()
			if jobErr != nil {
				return res, jobErr
			}
			res.text, res.finish = text.String(), reason
			res.usage.CompletionTokens = n
			res.usage.TotalTokens = res.usage.PromptTokens + n
			return res, nil
		}
	}
}

// prepare tokenizes and checks a request against inst and builds its job,
// which runs with the adapter ad (nil: the base model).
func (s *Service) prepare(inst *instance, g *genRequest, ad *servedAdapter) (*job, error) {
	j := &job{out: newOutput(), enqueued: time.Now(), stops: slices.Clone(g.stop), adapter: ad}
	switch {
	case g.messages != nil:
		text, err := inst.tmpl.render(g.messages)
		if err != nil {
			return nil, err
		}
		j.prompt = encodeChat(inst.tok, inst.tmpl, text)
		j.stops = append(j.stops, inst.tmpl.stops()...)
	case g.ids != nil:
		nv := inst.eng.Config().NVocab
		for i, id := range g.ids {
			if int(id) >= nv {
				return nil, protocol.ParamErrorf(protocol.CodeInvalidValue, "prompt", "prompt[%d]: token %d is outside the vocabulary of %d", i, id, nv)
			}
		}
		j.prompt = g.ids
	default:
		j.prompt = inst.tok.Encode(g.text, true, true)
	}
	if len(j.prompt) == 0 {
		return nil, protocol.ParamErrorf(protocol.CodeInvalidValue, "prompt", "the prompt encodes to no tokens")
	}
	// A prefix adapter's rows take their share of the context.
	room := inst.ctxLen - prefixLen(ad)
	if len(j.prompt) >= room {
		return nil, protocol.ParamErrorf(protocol.CodeContextLength, "prompt", "the prompt has %d tokens; model %s holds %d in its context%s, and one is needed for the answer", len(j.prompt), inst.name, room, prefixNote(ad))
	}
	switch {
	case g.maxTokens != nil:
		j.maxTokens = *g.maxTokens
		if len(j.prompt)+j.maxTokens > room {
			return nil, protocol.ParamErrorf(protocol.CodeContextLength, "max_tokens", "the prompt's %d tokens plus max_tokens %d exceed the context of %d tokens of model %s%s", len(j.prompt), j.maxTokens, room, inst.name, prefixNote(ad))
		}
	case inst.spec.MaxTokens > 0:
		j.maxTokens = inst.spec.MaxTokens
	default:
		j.maxTokens = s.d.options().Scheduler.MaxTokens
	}
	j.sampler = samplerConfig(g.sampling, inst.spec.Defaults)
	var err error
	if j.sparsity, err = resolveSparsity(g.sparsity, inst.spec.Sparsity, inst.eng.Config().NLayer); err != nil {
		return nil, err
	}
	return j, nil
}

// samplerConfig resolves the request's sampling fields over the model's
// defaults over llama.cpp's defaults.
func samplerConfig(req, model protocol.Sampling) engine.SamplerConfig {
	f := func(r, m *float64, def float64) float32 {
		switch {
		case r != nil:
			return float32(*r)
		case m != nil:
			return float32(*m)
		}
		return float32(def)
	}
	n := func(r, m *int, def int) int {
		switch {
		case r != nil:
			return *r
		case m != nil:
			return *m
		}
		return def
	}
	c := engine.SamplerConfig{
		Temperature:      f(req.Temperature, model.Temperature, 0.8),
		TopK:             n(req.TopK, model.TopK, 40),
		TopP:             f(req.TopP, model.TopP, 0.95),
		MinP:             f(req.MinP, model.MinP, 0.05),
		RepeatPenalty:    f(req.RepeatPenalty, model.RepeatPenalty, 1),
		PresencePenalty:  f(req.PresencePenalty, model.PresencePenalty, 0),
		FrequencyPenalty: f(req.FrequencyPenalty, model.FrequencyPenalty, 0),
		PenaltyLastN:     n(req.RepeatLastN, model.RepeatLastN, engine.DefaultPenaltyLastN),
	}
	if req.Seed != nil {
		c.Seed = uint64(*req.Seed)
	} else {
		c.Seed = rand2.Uint64()
	}
	if math.IsNaN(float64(c.Temperature)) {
		c.Temperature = 0
	}
	return c
}

func resultCode(err error) string {
	if err == nil {
		return "ok"
	}
	return string(protocol.CodeOf(err))
}

func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func baseName(path string) string {
	i := strings.LastIndexAny(path, `/\`)
	name := path[i+1:]
	return strings.TrimSuffix(name, ".gguf")
}
