package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/protocol"
)

// fakeBackend answers like the Service: model "m" echoes the prompt's
// words, one chunk each; the prompt "wait" emits one chunk and then waits
// for its context to end.
type fakeBackend struct {
	node string

	mu        sync.Mutex
	events    []func(Event)
	cancelled chan struct{} // closed when a "wait" generation ends
	jobFiles  bool          // the last job submission could name files
}

func newFakeBackend(node string) *fakeBackend {
	return &fakeBackend{node: node, cancelled: make(chan struct{})}
}

func (b *fakeBackend) Node() string { return b.node }

// The fake stores no edits: its list is empty and every id unknown.
func (b *fakeBackend) Edits(ctx context.Context, req *protocol.EditListRequest) (*protocol.EditList, error) {
	return &protocol.EditList{Version: protocol.Version, Object: protocol.ObjectList, Data: []protocol.EditRecord{}, Counts: map[string]int{}}, nil
}

func (b *fakeBackend) EditStatus(ctx context.Context, req *protocol.EditStatusRequest) (*protocol.EditRecord, error) {
	return nil, protocol.ParamErrorf(protocol.CodeEditNotFound, "id", "no edit %q", req.ID)
}

// The fake has no adapter versions either.
func (b *fakeBackend) Adapters(ctx context.Context, req *protocol.AdapterListRequest) (*protocol.AdapterList, error) {
	return &protocol.AdapterList{Version: protocol.Version, Object: protocol.ObjectList, Data: []protocol.AdapterRecord{}, Current: map[string]uint64{}}, nil
}

func (b *fakeBackend) RollbackAdapter(ctx context.Context, req *protocol.AdapterRollbackRequest) (*protocol.AdapterRollbackResponse, error) {
	return nil, protocol.ParamErrorf(protocol.CodeAdapterNotFound, "adapter_version", "no adapter version %d", req.AdapterVersion)
}

// The fake publishes nothing and finds nothing published.
func (b *fakeBackend) PublishAdapter(ctx context.Context, req *protocol.AdapterPublishRequest) (*protocol.AdapterPublishResponse, error) {
	return nil, protocol.ParamErrorf(protocol.CodeAdapterNotFound, "adapter_version", "no adapter version %d", req.AdapterVersion)
}

func (b *fakeBackend) PullAdapter(ctx context.Context, req *protocol.AdapterPullRequest) (*protocol.AdapterPullResponse, error) {
	return nil, protocol.Errorf(protocol.CodeNotPublished, "nothing published for %s", req.Model)
}

func (b *fakeBackend) useFleet(adapterFleet) {}

func (b *fakeBackend) IngestEdit(m EditMessage) (EditResult, error) {
	return EditResult{}, fmt.Errorf("the fake backend stores no edits")
}

func (b *fakeBackend) EditModels() []string { return []string{"m"} }

// The fake's jobs: a submission is job-1, queued, and records whether the
// front end let it name files; a control request answers with the state
// it asks for.
func (b *fakeBackend) SubmitJob(ctx context.Context, req *protocol.JobSubmitRequest, files bool) (*protocol.Job, error) {
	b.mu.Lock()
	b.jobFiles = files
	b.mu.Unlock()
	return &protocol.Job{ID: "job-1", Kind: req.Kind, Model: req.Model, State: protocol.JobQueued, Steps: req.Adapt.Steps}, nil
}

func (b *fakeBackend) Jobs(ctx context.Context, req *protocol.JobListRequest) (*protocol.JobList, error) {
	return &protocol.JobList{Version: protocol.Version, Object: protocol.ObjectList, Data: []protocol.Job{}}, nil
}

func (b *fakeBackend) JobStatus(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error) {
	return nil, protocol.ParamErrorf(protocol.CodeJobNotFound, "id", "no job %q", req.ID)
}

func (b *fakeBackend) PauseJob(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error) {
	return &protocol.Job{ID: req.ID, State: protocol.JobPaused}, nil
}

func (b *fakeBackend) ResumeJob(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error) {
	return &protocol.Job{ID: req.ID, State: protocol.JobQueued}, nil
}

func (b *fakeBackend) CancelJob(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error) {
	return &protocol.Job{ID: req.ID, State: protocol.JobCancelled}, nil
}

func (b *fakeBackend) OnEvent(fn func(Event)) {
	b.mu.Lock()
	b.events = append(b.events, fn)
	b.mu.Unlock()
}

func (b *fakeBackend) emit(ev Event) {
	b.mu.Lock()
	fns := b.events
	b.mu.Unlock()
	for _, fn := range fns {
		fn(ev)
	}
}

func (b *fakeBackend) WriteMetrics(w io.Writer) {
	fmt.Fprintln(w, "# HELP edged_requests_total Requests.")
	fmt.Fprintln(w, "# TYPE edged_requests_total counter")
	fmt.Fprintln(w, `edged_requests_total{endpoint="completions",model="m",code="ok"} 3`)
	fmt.Fprintln(w, "edged_requests_in_flight 1")
}

func (b *fakeBackend) Status(ctx context.Context) (*protocol.Status, error) {
	return &protocol.Status{Version: protocol.Version, Node: b.node, DaemonVersion: DaemonVersion, Models: []protocol.ModelStatus{{Name: "m", State: protocol.StateLoaded}}}, nil
}

func (b *fakeBackend) Models(ctx context.Context) (*protocol.ModelList, error) {
	return &protocol.ModelList{Version: protocol.Version, Object: protocol.ObjectList, Data: []protocol.Model{{ID: "m", Object: protocol.ObjectModel, State: protocol.StateLoaded}}}, nil
}

func (b *fakeBackend) Tokenize(ctx context.Context, req *protocol.TokenizeRequest) (*protocol.TokenizeResponse, error) {
	if req.Model != "m" {
		return nil, protocol.Errorf(protocol.CodeModelNotFound, "no model %q", req.Model)
	}
	res := &protocol.TokenizeResponse{Version: protocol.Version, Model: req.Model, Tokens: []int32{}}
	for _, w := range strings.Fields(req.Content) {
		res.Tokens = append(res.Tokens, int32(len(w)))
	}
	return res, nil
}

// words generates the prompt's words through emit, or waits.
func (b *fakeBackend) words(ctx context.Context, model, prompt string, emit func(text string, last bool) error) (string, error) {
	if model != "m" {
		return "", protocol.Errorf(protocol.CodeModelNotFound, "no model %q", model)
	}
	if prompt == "wait" {
		if emit != nil {
			if err := emit("waiting", false); err != nil {
				return "", err
			}
		}
		<-ctx.Done()
		close(b.cancelled)
		return "", ctxError(ctx)
	}
	var all strings.Builder
	for _, w := range strings.Fields(prompt) {
		all.WriteString(w + " ")
		if emit != nil {
			if err := emit(w+" ", false); err != nil {
				return "", err
			}
		}
	}
	if emit != nil {
		if err := emit("", true); err != nil {
			return "", err
		}
	}
	return all.String(), nil
}

func (b *fakeBackend) Complete(ctx context.Context, req *protocol.CompletionRequest, emit func(*protocol.CompletionChunk) error) (*protocol.CompletionResponse, error) {
	stop := protocol.FinishStop
	usage := &protocol.Usage{PromptTokens: 2, CompletionTokens: 3, TotalTokens: 5}
	chunk := func(text string, last bool) *protocol.CompletionChunk {
		c := &protocol.CompletionChunk{Version: protocol.Version, ID: "cmpl-1", Object: protocol.ObjectCompletion, Model: req.Model,
			Choices: []protocol.CompletionChoice{{Text: text}}}
		if last {
			c.Choices[0].FinishReason, c.Usage = &stop, usage
		}
		return c
	}
	var onText func(string, bool) error
	if emit != nil {
		onText = func(t string, last bool) error { return emit(chunk(t, last)) }
	}
	text, err := b.words(ctx, req.Model, req.Prompt.Text, onText)
	if err != nil {
		return nil, err
	}
	res := chunk(text, true)
	return res, nil
}

func (b *fakeBackend) Chat(ctx context.Context, req *protocol.ChatRequest, emit func(*protocol.ChatChunk) error) (*protocol.ChatResponse, error) {
	stop := protocol.FinishStop
	var onText func(string, bool) error
	if emit != nil {
		onText = func(t string, last bool) error {
			c := &protocol.ChatChunk{Version: protocol.Version, Object: protocol.ObjectChatChunk, Model: req.Model,
				Choices: []protocol.ChatChunkChoice{{Delta: protocol.ChatDelta{Content: t}}}}
			if last {
				c.Choices[0].FinishReason, c.Usage = &stop, &protocol.Usage{TotalTokens: 1}
			}
			return emit(c)
		}
	}
	prompt := ""
	if n := len(req.Messages); n > 0 {
		prompt = string(req.Messages[n-1].Content)
	}
	text, err := b.words(ctx, req.Model, prompt, onText)
	if err != nil {
		return nil, err
	}
	return &protocol.ChatResponse{Version: protocol.Version, Object: protocol.ObjectChat, Model: req.Model,
		Choices: []protocol.ChatChoice{{Message: protocol.ChatMessage{Role: "assistant", Content: text}, FinishReason: &stop}}}, nil
}

// startNATS starts a front end over be and returns it with a client
// connection (over TCP when o.Listen is set, else in-process).
func startNATS(t *testing.T, be natsBackend, o NATSOptions) (*NATS, *nats.Conn) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.JetStreamDir == "" {
		o.JetStreamDir = t.TempDir()
	}
	f := NewNATS(o, log)
	require.NoError(t, f.start(context.Background(), be))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.Shutdown(ctx)
	})
	var nc *nats.Conn
	var err error
	switch {
	case f.ClientURL() != "":
		nc, err = nats.Connect(f.ClientURL())
	case o.URL != "":
		nc, err = nats.Connect(o.URL)
	default:
		nc, err = nats.Connect("", nats.InProcessServer(f.conn.ns))
	}
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return f, nc
}

func request(t *testing.T, nc *nats.Conn, subject string, body any) *nats.Msg {
	t.Helper()
	var data []byte
	switch b := body.(type) {
	case nil:
	case string:
		data = []byte(b)
	default:
		var err error
		data, err = json.Marshal(b)
		require.NoError(t, err)
	}
	msg, err := nc.Request(subject, data, 5*time.Second)
	require.NoError(t, err, "request %s", subject)
	return msg
}

// errorCode returns the micro error code of msg, "" for a success.
func errorCode(t *testing.T, msg *nats.Msg) string {
	t.Helper()
	code := msg.Header.Get(micro.ErrorCodeHeader)
	if code != "" {
		var er protocol.ErrorResponse
		require.NoError(t, json.Unmarshal(msg.Data, &er), "error body %s", msg.Data)
		require.NotNil(t, er.Error)
		assert.Equal(t, code, string(er.Error.Code))
		assert.Equal(t, er.Error.Message, msg.Header.Get(micro.ErrorHeader))
	}
	return code
}

// collect reads a stream until its end or error message.
func collect(t *testing.T, sub *nats.Subscription) (msgs []*nats.Msg) {
	t.Helper()
	for {
		m, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err, "stream after %d messages", len(msgs))
		msgs = append(msgs, m)
		if m.Header.Get(HeaderStream) == "end" || m.Header.Get(micro.ErrorCodeHeader) != "" {
			return msgs
		}
	}
}

func TestNATSEndpoints(t *testing.T) {
	be := newFakeBackend("dev.example.com")
	f, nc := startNATS(t, be, NATSOptions{Listen: "127.0.0.1:0"})
	require.NotEmpty(t, f.ClientURL())
	node := "dev_example_com" // dots would split the subject

	// The micro service is discoverable, with both subject sets.
	var info micro.Info
	require.NoError(t, json.Unmarshal(request(t, nc, "$SRV.INFO.edged", nil).Data, &info))
	assert.Equal(t, "edged", info.Name)
	assert.Equal(t, node, info.Metadata["node"])
	var subjects []string
	for _, e := range info.Endpoints {
		subjects = append(subjects, e.Subject)
		assert.Equal(t, protocol.QueueGroup, e.QueueGroup)
	}
	for _, ep := range []string{"generate", "chat", "tokenize", "models", "status"} {
		assert.Contains(t, subjects, "edged."+node+"."+ep)
		assert.Contains(t, subjects, "edged."+ep)
	}
	// The edit and adapter endpoints are the node's only: edged.edits.… is
	// the stream's, and a node's versions are its own.
	for _, ep := range []string{"edits", "edits.status", "adapters", "adapters.rollback"} {
		assert.Contains(t, subjects, "edged."+node+"."+ep)
		assert.NotContains(t, subjects, "edged."+ep)
	}
	var edits protocol.EditList
	require.NoError(t, json.Unmarshal(request(t, nc, "edged."+node+".edits", nil).Data, &edits))
	assert.Equal(t, protocol.ObjectList, edits.Object)

	// So are the job endpoints; a submission over NATS names no files.
	for _, ep := range []string{"jobs", "jobs.status", "jobs.submit", "jobs.pause", "jobs.resume", "jobs.cancel"} {
		assert.Contains(t, subjects, "edged."+node+"."+ep)
		assert.NotContains(t, subjects, "edged."+ep)
	}
	var job protocol.Job
	be.mu.Lock()
	be.jobFiles = true
	be.mu.Unlock()
	msg := request(t, nc, "edged."+node+".jobs.submit", `{"kind":"adapt","model":"m","adapt":{"steps":3,"examples":[{"prompt":"a","completion":"b"}]}}`)
	require.NoError(t, json.Unmarshal(msg.Data, &job), "%s", msg.Data)
	assert.Equal(t, 3, job.Steps)
	be.mu.Lock()
	assert.False(t, be.jobFiles)
	be.mu.Unlock()
	for ep, state := range map[string]string{"pause": protocol.JobPaused, "resume": protocol.JobQueued, "cancel": protocol.JobCancelled} {
		msg := request(t, nc, "edged."+node+".jobs."+ep, `{"id":"job-1"}`)
		require.NoError(t, json.Unmarshal(msg.Data, &job), "%s", msg.Data)
		assert.Equal(t, state, job.State, ep)
	}
	assert.Equal(t, "job_not_found", errorCode(t, request(t, nc, "edged."+node+".jobs.status", `{"id":"job-9"}`)))
	assert.Equal(t, "invalid_value", errorCode(t, request(t, nc, "edged."+node+".jobs.pause", `{"id":"nine"}`)))
	var jobs protocol.JobList
	require.NoError(t, json.Unmarshal(request(t, nc, "edged."+node+".jobs", `{"state":"queued"}`).Data, &jobs))
	assert.Equal(t, protocol.ObjectList, jobs.Object)

	// generate, no stream: one reply, the completion.
	msg = request(t, nc, "edged."+node+".generate", `{"model":"m","prompt":"hello big world"}`)
	require.Empty(t, errorCode(t, msg), "%s", msg.Data)
	var cmpl protocol.CompletionResponse
	require.NoError(t, json.Unmarshal(msg.Data, &cmpl))
	assert.Equal(t, "hello big world ", cmpl.Choices[0].Text)
	assert.Equal(t, 5, cmpl.Usage.TotalTokens)

	// generate, stream: a message per chunk, then the end with usage.
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, nc.PublishRequest("edged.generate", inbox, []byte(`{"model":"m","prompt":"a b c","stream":true}`)))
	msgs := collect(t, sub)
	require.Len(t, msgs, 4)
	var text strings.Builder
	for i, m := range msgs {
		var c protocol.CompletionChunk
		require.NoError(t, json.Unmarshal(m.Data, &c))
		text.WriteString(c.Choices[0].Text)
		assert.True(t, strings.HasPrefix(m.Header.Get(HeaderCancel), "edged."+node+".cancel."))
		if i < 3 {
			assert.Equal(t, "chunk", m.Header.Get(HeaderStream))
			assert.Nil(t, c.Usage)
		} else {
			assert.Equal(t, "end", m.Header.Get(HeaderStream))
			require.NotNil(t, c.Usage)
			assert.Equal(t, protocol.FinishStop, *c.Choices[0].FinishReason)
		}
	}
	assert.Equal(t, "a b c ", text.String())
	sub.Unsubscribe()

	// chat, both ways.
	msg = request(t, nc, "edged."+node+".chat", `{"model":"m","messages":[{"role":"user","content":"hi there"}]}`)
	var chat protocol.ChatResponse
	require.NoError(t, json.Unmarshal(msg.Data, &chat))
	assert.Equal(t, "hi there ", chat.Choices[0].Message.Content)
	inbox = nats.NewInbox()
	sub, err = nc.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, nc.PublishRequest("edged.chat", inbox, []byte(`{"model":"m","messages":[{"role":"user","content":"x y"}],"stream":true}`)))
	msgs = collect(t, sub)
	require.Len(t, msgs, 3)
	var cc protocol.ChatChunk
	require.NoError(t, json.Unmarshal(msgs[2].Data, &cc))
	assert.Equal(t, protocol.ObjectChatChunk, cc.Object)
	assert.NotNil(t, cc.Usage)

	// tokenize, models, status.
	var tok protocol.TokenizeResponse
	require.NoError(t, json.Unmarshal(request(t, nc, "edged.tokenize", `{"model":"m","content":"one three"}`).Data, &tok))
	assert.Equal(t, []int32{3, 5}, tok.Tokens)
	var list protocol.ModelList
	require.NoError(t, json.Unmarshal(request(t, nc, "edged."+node+".models", nil).Data, &list))
	assert.Equal(t, "m", list.Data[0].ID)
	var st protocol.Status
	require.NoError(t, json.Unmarshal(request(t, nc, "edged.status", "{}").Data, &st))
	assert.Equal(t, "dev.example.com", st.Node)
}

func TestNATSErrors(t *testing.T) {
	_, nc := startNATS(t, newFakeBackend("n1"), NATSOptions{})
	for _, tc := range []struct {
		subject, body, code string
	}{
		{"edged.n1.generate", `{"model":"m","prompt":`, string(protocol.CodeInvalidJSON)},
		{"edged.n1.generate", `{"model":"m","prompt":"x","bogus":1}`, string(protocol.CodeUnknownField)},
		{"edged.n1.generate", `{"model":"m","prompt":"x","temperature":-1}`, string(protocol.CodeInvalidValue)},
		{"edged.n1.generate", "{\"model\":\"m\",\"prompt\":\"\xff\"}", string(protocol.CodeInvalidUTF8)},
		{"edged.n1.generate", `{"model":"nope","prompt":"x"}`, string(protocol.CodeModelNotFound)},
		{"edged.n1.generate", `{"model":"nope","prompt":"x","stream":true}`, string(protocol.CodeModelNotFound)},
		{"edged.n1.chat", `{"model":"m","messages":[{"role":"robot","content":"x"}]}`, string(protocol.CodeInvalidValue)},
		{"edged.n1.tokenize", `{"model":"nope","content":"x"}`, string(protocol.CodeModelNotFound)},
		{"edged.n1.models", `{"x":1}`, string(protocol.CodeInvalidJSON)},
		{"edged.n1.edits", `{"status":"done"}`, string(protocol.CodeInvalidValue)},
		{"edged.n1.edits.status", `{}`, string(protocol.CodeInvalidValue)},
		{"edged.n1.edits.status", `{"id":"e1"}`, string(protocol.CodeEditNotFound)},
		{"edged.status", `{"version":7}`, string(protocol.CodeUnsupportedVersion)},
	} {
		msg := request(t, nc, tc.subject, tc.body)
		assert.Equal(t, tc.code, errorCode(t, msg), "%s %s: %s", tc.subject, tc.body, msg.Data)
	}
	// Still serving.
	msg := request(t, nc, "edged.n1.generate", `{"model":"m","prompt":"ok"}`)
	assert.Empty(t, errorCode(t, msg))

	// The micro statistics count the rejected requests.
	var stats micro.Stats
	require.NoError(t, json.Unmarshal(request(t, nc, "$SRV.STATS.edged", nil).Data, &stats))
	errs := 0
	for _, e := range stats.Endpoints {
		errs += e.NumErrors
	}
	assert.GreaterOrEqual(t, errs, 5)
}

func TestNATSCancelStream(t *testing.T) {
	be := newFakeBackend("n1")
	_, nc := startNATS(t, be, NATSOptions{})
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, nc.PublishRequest("edged.n1.generate", inbox, []byte(`{"model":"m","prompt":"wait","stream":true}`)))
	first, err := sub.NextMsg(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "chunk", first.Header.Get(HeaderStream))
	require.NoError(t, nc.Publish(first.Header.Get(HeaderCancel), nil))
	select {
	case <-be.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the generation was not cancelled")
	}
	last, err := sub.NextMsg(5 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, string(protocol.CodeCancelled), errorCode(t, last))
}

func TestNATSQueueGroup(t *testing.T) {
	// Two daemons: a's embedded server listens, b joins it as an external
	// server. Un-addressed requests are shared, each answered once.
	a, nc := startNATS(t, newFakeBackend("a"), NATSOptions{Listen: "127.0.0.1:0"})
	startNATS(t, newFakeBackend("b"), NATSOptions{URL: a.ClientURL()})

	// b's subscriptions reach a's server before the first request.
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		msg, err := nc.Request("edged.b.status", nil, time.Second)
		if err != nil {
			return err
		}
		if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
			return fmt.Errorf("error %s", code)
		}
		return nil
	})
	seen := map[string]int{}
	for range 60 {
		var st protocol.Status
		require.NoError(t, json.Unmarshal(request(t, nc, "edged.status", nil).Data, &st))
		seen[st.Node]++
	}
	assert.Greater(t, seen["a"], 0, "%v", seen)
	assert.Greater(t, seen["b"], 0, "%v", seen)

	// One reply per request: a second reply would show up here.
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	require.NoError(t, err)
	for range 10 {
		require.NoError(t, nc.PublishRequest("edged.models", inbox, nil))
	}
	for range 10 {
		_, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err)
	}
	_, err = sub.NextMsg(200 * time.Millisecond)
	assert.ErrorIs(t, err, nats.ErrTimeout)

	// Addressed subjects reach that node only.
	for _, node := range []string{"a", "b"} {
		var st protocol.Status
		require.NoError(t, json.Unmarshal(request(t, nc, "edged."+node+".status", nil).Data, &st))
		assert.Equal(t, node, st.Node)
	}
}

func TestNATSMetricsAndEvents(t *testing.T) {
	be := newFakeBackend("n1")
	_, nc := startNATS(t, be, NATSOptions{MetricsInterval: 20 * time.Millisecond})
	metrics, err := nc.SubscribeSync("edged.n1.metrics")
	require.NoError(t, err)
	events, err := nc.SubscribeSync("edged.n1.events")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	msg, err := metrics.NextMsg(5 * time.Second)
	require.NoError(t, err)
	var m NATSMetrics
	require.NoError(t, json.Unmarshal(msg.Data, &m))
	assert.Equal(t, "n1", m.Node)
	require.NotNil(t, m.Status)
	assert.Equal(t, "m", m.Status.Models[0].Name)
	require.Len(t, m.Metrics["edged_requests_total"], 1)
	assert.Equal(t, 3.0, m.Metrics["edged_requests_total"][0].Value)
	assert.Equal(t, "completions", m.Metrics["edged_requests_total"][0].Labels["endpoint"])
	assert.Equal(t, 1.0, m.Metrics["edged_requests_in_flight"][0].Value)
	assert.Len(t, m.Endpoints, 22) // five on two scopes, the edit, adapter and job endpoints on the node's

	be.emit(Event{Kind: "model_loaded", Node: "n1", Model: "m"})
	msg, err = events.NextMsg(5 * time.Second)
	require.NoError(t, err)
	var ev Event
	require.NoError(t, json.Unmarshal(msg.Data, &ev))
	assert.Equal(t, "model_loaded", ev.Kind)
	assert.Equal(t, "m", ev.Model)
}

func TestNATSShutdown(t *testing.T) {
	be := newFakeBackend("n1")
	f, nc := startNATS(t, be, NATSOptions{Listen: "127.0.0.1:0"})
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, nc.PublishRequest("edged.n1.generate", inbox, []byte(`{"model":"m","prompt":"wait","stream":true}`)))
	_, err = sub.NextMsg(5 * time.Second)
	require.NoError(t, err)

	// The drain time is short: the waiting request ends with an error
	// reply before the connection closes, and Shutdown returns.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.NoError(t, f.Shutdown(ctx))
	assert.Less(t, time.Since(start), 5*time.Second)
	last, err := sub.NextMsg(5 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, string(protocol.CodeShuttingDown), errorCode(t, last))
	require.NoError(t, f.Shutdown(context.Background()), "a second Shutdown")
}

func TestNATSInProcessOnly(t *testing.T) {
	f, nc := startNATS(t, newFakeBackend("n1"), NATSOptions{})
	assert.Empty(t, f.ClientURL(), "no listener without Listen")
	assert.Nil(t, f.conn.ns.Addr(), "the embedded server has no TCP listener")
	msg := request(t, f.Conn(), "edged.n1.models", nil)
	assert.Empty(t, errorCode(t, msg))
	_ = nc
}

func TestParsePromText(t *testing.T) {
	text := `# HELP x A counter.
# TYPE x counter
x{a="1",b="q\"uo\\te"} 2.5
x{a="2"} 3
y 7
h_bucket{le="+Inf"} 4
bad line here
`
	m := parsePromText(strings.NewReader(text))
	require.Len(t, m["x"], 2)
	assert.Equal(t, map[string]string{"a": "1", "b": `q"uo\te`}, m["x"][0].Labels)
	assert.Equal(t, 3.0, m["x"][1].Value)
	assert.Equal(t, 7.0, m["y"][0].Value)
	assert.Equal(t, "+Inf", m["h_bucket"][0].Labels["le"])
	assert.NotContains(t, m, "bad")
}

// checkFor calls fn every interval until it returns nil or timeout passes.
func checkFor(t *testing.T, timeout, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

func TestNATSLeafNode(t *testing.T) {
	// A hub with a leaf-node port; the daemon's embedded server joins it
	// and serves the hub's clients, and its own while the hub is away.
	hubOpts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: server.RANDOM_PORT}}
	hub, err := server.NewServer(hubOpts)
	require.NoError(t, err)
	hub.Start()
	t.Cleanup(hub.Shutdown)
	require.True(t, hub.ReadyForConnections(5*time.Second))
	remote := fmt.Sprintf("nats://127.0.0.1:%d", hubOpts.LeafNode.Port)

	f, _ := startNATS(t, newFakeBackend("leaf1"), NATSOptions{LeafRemote: remote})
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if hub.NumLeafNodes() != 1 {
			return fmt.Errorf("%d leaf nodes", hub.NumLeafNodes())
		}
		return nil
	})
	hc, err := nats.Connect(hub.ClientURL())
	require.NoError(t, err)
	defer hc.Close()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		_, err := hc.Request("edged.leaf1.status", nil, time.Second)
		return err
	})
	var st protocol.Status
	require.NoError(t, json.Unmarshal(request(t, hc, "edged.status", nil).Data, &st))
	assert.Equal(t, "leaf1", st.Node)

	hub.Shutdown()
	msg := request(t, f.Conn(), "edged.leaf1.models", nil)
	assert.Empty(t, errorCode(t, msg), "local clients keep working without the hub")
}

func TestNATSLeafNodeHubDown(t *testing.T) {
	// A hub that is not there does not stop the daemon from starting.
	f, _ := startNATS(t, newFakeBackend("n1"), NATSOptions{LeafRemote: "nats://127.0.0.1:1"})
	msg := request(t, f.Conn(), "edged.n1.status", nil)
	assert.Empty(t, errorCode(t, msg))
}

func TestNATSExternalOptions(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, o := range []NATSOptions{
		{URL: "nats://127.0.0.1:1", NKey: "/nonexistent/seed.nk"},
		{URL: "nats://127.0.0.1:1", TLSCert: "/x.pem"},
		{Listen: "no-port"},
		{LeafRemote: "::bad"},
	} {
		err := NewNATS(o, log).start(context.Background(), newFakeBackend("n1"))
		assert.Error(t, err, "%+v", o)
	}
	// An external server that is down at start: the front end starts and
	// keeps trying in the background.
	f := NewNATS(NATSOptions{URL: "nats://127.0.0.1:1"}, log)
	require.NoError(t, f.start(context.Background(), newFakeBackend("n1")))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.NoError(t, f.Shutdown(ctx))
}
