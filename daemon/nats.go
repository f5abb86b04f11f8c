package daemon

// The NATS front end: a micro service named "edged" (nats micro ls, info,
// stats) whose endpoints call the Service, as the Unix-socket API does.
//
// Subjects (protocol.Subject): edged.<node>.{generate,chat,tokenize,models,
// status,edits,edits.status,adapters,adapters.rollback,adapters.publish,
// adapters.pull,jobs,jobs.status,jobs.submit,jobs.pause,jobs.resume,
// jobs.cancel} reach this daemon; edged.{generate,…} reach any daemon of
// the fleet (queue group protocol.QueueGroup), except the edit, adapter
// and job endpoints, which are each node's own (and edged.edits.… is the
// edit stream's). Bodies are the JSON of /v1/completions,
// /v1/chat/completions and /v1/tokenize; models and status take no body;
// edits takes an optional protocol.EditListRequest, edits.status a
// protocol.EditStatusRequest, adapters an optional
// protocol.AdapterListRequest, adapters.rollback a
// protocol.AdapterRollbackRequest, adapters.publish a
// protocol.AdapterPublishRequest, adapters.pull a
// protocol.AdapterPullRequest; jobs an optional protocol.JobListRequest,
// jobs.submit a protocol.JobSubmitRequest (with its data inline: NATS
// clients cannot name files of the node), the other job endpoints a
// protocol.JobRequest. Adding an adapter file is the socket's alone (POST
// /v1/adapters/add): a file can exceed a NATS message.
//
// Replies. Without "stream": one message, the response object. With
// "stream": true, one message per chunk (the same chunk objects as the
// server-sent events of the socket API), in order, each with the header
// Edged-Stream: chunk, and last the chunk with finish_reason and usage,
// with Edged-Stream: end. Every streamed message carries Edged-Cancel: a
// subject to publish anything to in order to stop the generation (its
// sequence ends at the next engine step and an error with code
// "cancelled" ends the stream). A streaming client subscribes to an inbox
// and publishes the request with that inbox as reply subject; a plain
// request (nats req) sees the first chunk only.
//
// Errors are micro errors: headers Nats-Service-Error (the message) and
// Nats-Service-Error-Code (the protocol code, such as "busy" or
// "model_not_found"), and the body {"error": {...}} of the socket API. An
// error also ends a stream.
//
// Published: metrics as JSON every NATSOptions.MetricsInterval, and at
// once after an edit job's version (its edit metrics are gauges of
// /metrics), on edged.<node>.metrics (the Status, the counters and gauges
// of /metrics and the service's per-endpoint statistics), lifecycle
// events (Event) on edged.<node>.events.
//
// Subject tokens cannot hold '.', '*', '>' or spaces, so a node name such
// as a host's FQDN is used with those characters replaced by '_'
// (protocol.SubjectToken).
//
// Edits: with NATSOptions.Edits enabled, the front end also runs the
// intake of the edit stream (nats_edits.go). Fleet: it gives the daemon
// the JetStream store through which nodes share adapter versions, and
// runs auto_publish and auto_pull (nats_fleet.go).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/edged/edged/protocol"
)

// Headers of streamed replies.
const (
	HeaderStream = "Edged-Stream" // "chunk" or "end"
	HeaderCancel = "Edged-Cancel" // subject that cancels the generation
)

// natsMaxInFlight bounds the requests the front end serves at once; more
// get "busy" at once (the schedulers bound generation further).
const natsMaxInFlight = 1024

// natsBackend is what the NATS front end needs of the daemon; *Service
// implements it.
type natsBackend interface {
	Complete(ctx context.Context, req *protocol.CompletionRequest, emit func(*protocol.CompletionChunk) error) (*protocol.CompletionResponse, error)
	Chat(ctx context.Context, req *protocol.ChatRequest, emit func(*protocol.ChatChunk) error) (*protocol.ChatResponse, error)
	Tokenize(ctx context.Context, req *protocol.TokenizeRequest) (*protocol.TokenizeResponse, error)
	Models(ctx context.Context) (*protocol.ModelList, error)
	Status(ctx context.Context) (*protocol.Status, error)
	WriteMetrics(w io.Writer)
	OnEvent(fn func(Event))
	Node() string
	Edits(ctx context.Context, req *protocol.EditListRequest) (*protocol.EditList, error)
	EditStatus(ctx context.Context, req *protocol.EditStatusRequest) (*protocol.EditRecord, error)
	Adapters(ctx context.Context, req *protocol.AdapterListRequest) (*protocol.AdapterList, error)
	RollbackAdapter(ctx context.Context, req *protocol.AdapterRollbackRequest) (*protocol.AdapterRollbackResponse, error)
	Jobs(ctx context.Context, req *protocol.JobListRequest) (*protocol.JobList, error)
	JobStatus(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error)
	SubmitJob(ctx context.Context, req *protocol.JobSubmitRequest, files bool) (*protocol.Job, error)
	PauseJob(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error)
	ResumeJob(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error)
	CancelJob(ctx context.Context, req *protocol.JobRequest) (*protocol.Job, error)
	PublishAdapter(ctx context.Context, req *protocol.AdapterPublishRequest) (*protocol.AdapterPublishResponse, error)
	PullAdapter(ctx context.Context, req *protocol.AdapterPullRequest) (*protocol.AdapterPullResponse, error)
	// useFleet hands over the store of the fleet's adapter versions (nil:
	// none any more).
	useFleet(f adapterFleet)
	editSink
}

var _ natsBackend = (*Service)(nil)

// NATS is the NATS front end. Add it to Options.FrontEnds; the daemon
// starts it before READY=1 and shuts it down after the drain.
type NATS struct {
	opts NATSOptions
	log  *slog.Logger

	// Set by Start, read-only after it.
	conn *natsConn
	svc  micro.Service
	be   natsBackend
	node string // as a subject token

	inflight chan struct{} // a slot per request being served
	wg       sync.WaitGroup
	ctx      context.Context // cancelled by Shutdown once the wait is over
	cancel   context.CancelFunc
	stopBg   chan struct{}
	// metricsNow asks publishMetrics to publish at once (a new edit
	// version's metrics do not wait for the interval).
	metricsNow chan struct{}
	stopEdits  context.CancelFunc // stops the edit intake; nil without it
	stopFleet  context.CancelFunc // stops auto_publish and auto_pull

	mu      sync.Mutex // guards the fields below
	streams map[string]context.CancelFunc
	closed  bool
}

// NewNATS returns the NATS front end for o; log nil means slog.Default().
func NewNATS(o NATSOptions, log *slog.Logger) *NATS {
	if log == nil {
		log = slog.Default()
	}
	return &NATS{opts: o, log: log.With("component", "nats")}
}

// Name implements FrontEnd.
func (f *NATS) Name() string { return "nats" }

// Start implements FrontEnd: it starts the embedded server or connects,
// adds the micro service and starts the edit intake. The embedded
// server's JetStream store defaults to "jetstream" under the state
// directory, which the hardened service can write.
func (f *NATS) Start(ctx context.Context, s *Service) error {
	if f.opts.JetStreamDir == "" {
		f.opts.JetStreamDir = filepath.Join(s.Options().StateDir, "jetstream")
	}
	return f.start(ctx, s)
}

// ClientURL is the URL of the embedded server's listener ("" when it has
// none), for other processes to connect to.
func (f *NATS) ClientURL() string {
	if f.conn == nil || f.conn.ns == nil || f.opts.Listen == "" {
		return ""
	}
	return f.conn.ns.ClientURL()
}

// Conn is the front end's connection (in-process with the embedded
// server), for publishing from the daemon; nil before Start.
func (f *NATS) Conn() *nats.Conn {
	if f.conn == nil {
		return nil
	}
	return f.conn.nc
}

func (f *NATS) start(ctx context.Context, be natsBackend) error {
	f.be = be
	f.node = protocol.SubjectToken(be.Node())
	f.inflight = make(chan struct{}, natsMaxInFlight)
	f.streams = map[string]context.CancelFunc{}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.stopBg, f.metricsNow = make(chan struct{}), make(chan struct{}, 1)

	conn, err := dialNATS(ctx, f.opts, f.node, f.log)
	if err != nil {
		return err
	}
	f.conn = conn
	if err := f.addService(); err != nil {
		conn.close(ctx)
		return err
	}
	if _, err := conn.nc.Subscribe(f.cancelSubject("*"), f.onCancel); err != nil {
		f.svc.Stop()
		conn.close(ctx)
		return fmt.Errorf("nats: subscribe: %w", err)
	}
	// The server has the subscriptions before READY=1 (skipped while an
	// external server is still unreachable).
	if conn.nc.IsConnected() {
		if err := conn.nc.FlushTimeout(natsReadyTimeout); err != nil {
			f.log.Warn("nats: flush", "err", err)
		}
	}
	if err := f.startJetStream(ctx, be, conn.ns != nil); err != nil {
		f.stop()
		f.wg.Wait()
		f.svc.Stop()
		conn.close(ctx)
		return err
	}
	be.OnEvent(f.publishEvent)
	f.wg.Add(1)
	go f.publishMetrics(f.opts.MetricsInterval)
	f.log.Info("nats front end started", "service", protocol.ServiceName, "subjects", protocol.Subject(f.node, "*"), "embedded", conn.ns != nil)
	return nil
}

// startJetStream starts what runs on JetStream: the edit intake, when
// enabled, and the fleet's store of adapter versions. owned says that
// edged runs the server, and so creates the stream and the buckets.
func (f *NATS) startJetStream(ctx context.Context, be natsBackend, owned bool) error {
	js, err := jetstream.New(f.conn.nc)
	if err != nil {
		return fmt.Errorf("nats: jetstream: %w", err)
	}
	if f.opts.Edits.Enabled {
		if err := f.startEdits(ctx, be, js, owned); err != nil {
			return err
		}
	}
	return f.startFleet(ctx, be, js, owned)
}

// addService registers the micro service and its endpoints on both the
// node's subjects and the fleet's.
func (f *NATS) addService() error {
	svc, err := micro.AddService(f.conn.nc, micro.Config{
		Name:        protocol.ServiceName,
		Version:     DaemonVersion,
		Description: "edged on-device LLM inference",
		Metadata:    map[string]string{"node": f.node, "protocol_version": strconv.Itoa(protocol.Version)},
		QueueGroup:  protocol.QueueGroup,
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			f.log.Warn("nats: service error", "subject", e.Subject, "err", e.Description)
		},
	})
	if err != nil {
		return fmt.Errorf("nats: micro service: %w", err)
	}
	f.svc = svc
	handlers := []struct {
		name string
		h    micro.HandlerFunc
	}{
		{protocol.EndpointGenerate, f.handleGenerate},
		{protocol.EndpointChat, f.handleChat},
		{protocol.EndpointTokenize, f.handleTokenize},
		{protocol.EndpointModels, f.handleModels},
		{protocol.EndpointStatus, f.handleStatus},
	}
	node, fleet := scope{f.node, "node"}, scope{"", "fleet"}
	for _, h := range handlers {
		if err := f.addEndpoint(h.name, h.h, node, fleet); err != nil {
			return err
		}
	}
	// A node's edits, adapter versions and jobs are its own, and
	// edged.edits.… is the edit stream's.
	for _, h := range []struct {
		name string
		h    micro.HandlerFunc
	}{
		{protocol.EndpointEdits, nodeCall(f, optionalBody[protocol.EditListRequest], f.be.Edits)},
		{protocol.EndpointEditStatus, nodeCall(f, body[protocol.EditStatusRequest], f.be.EditStatus)},
		{protocol.EndpointAdapters, nodeCall(f, optionalBody[protocol.AdapterListRequest], f.be.Adapters)},
		{protocol.EndpointAdapterRollback, nodeCall(f, protocol.DecodeAdapterRollback, f.be.RollbackAdapter)},
		{protocol.EndpointAdapterPublish, nodeCall(f, protocol.DecodeAdapterPublish, f.be.PublishAdapter)},
		{protocol.EndpointAdapterPull, nodeCall(f, protocol.DecodeAdapterPull, f.be.PullAdapter)},
		{protocol.EndpointJobs, nodeCall(f, optionalBody[protocol.JobListRequest], f.be.Jobs)},
		{protocol.EndpointJobStatus, nodeCall(f, protocol.DecodeJobRequest, f.be.JobStatus)},
		{protocol.EndpointJobSubmit, nodeCall(f, protocol.DecodeJobSubmit, f.submitInline)},
		{protocol.EndpointJobPause, nodeCall(f, protocol.DecodeJobRequest, f.be.PauseJob)},
		{protocol.EndpointJobResume, nodeCall(f, protocol.DecodeJobRequest, f.be.ResumeJob)},
		{protocol.EndpointJobCancel, nodeCall(f, protocol.DecodeJobRequest, f.be.CancelJob)},
	} {
		if err := f.addEndpoint(h.name, h.h, node); err != nil {
			return err
		}
	}
	return nil
}

// scope is where an endpoint listens: on the node's subjects, or on the
// fleet's (node "").
type scope struct{ node, name string }

// addEndpoint adds endpoint on each scope's subject, stopping the service
// on failure. Endpoint names cannot hold dots: "edits.status" is named
// "edits_status".
func (f *NATS) addEndpoint(endpoint string, h micro.HandlerFunc, scopes ...scope) error {
	for _, sc := range scopes {
		subject := protocol.Subject(sc.node, endpoint)
		err := f.svc.AddEndpoint(strings.ReplaceAll(endpoint, ".", "_"), h,
			micro.WithEndpointSubject(subject),
			micro.WithEndpointMetadata(map[string]string{"scope": sc.name}))
		if err != nil {
			f.svc.Stop()
			return fmt.Errorf("nats: endpoint %s: %w", subject, err)
		}
	}
	return nil
}

// Shutdown implements FrontEnd: no new requests, then a wait (until ctx
// ends) for those being served, whose replies are flushed; then the
// connection and the embedded server close.
func (f *NATS) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	if f.closed || f.conn == nil {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	var err error
	if f.svc != nil {
		err = f.svc.Stop()
	}
	close(f.stopBg)
	f.stop()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		f.cancel() // the rest end with "cancelled" replies
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			f.log.Warn("nats: requests still running at shutdown")
		}
	}
	f.cancel()
	f.be.useFleet(nil) // before the connection closes under it
	f.conn.close(ctx)
	f.log.Info("nats front end stopped")
	return err
}

// stop stops the edit intake (an edit being stored is finished and
// acknowledged first), auto_publish and auto_pull.
func (f *NATS) stop() {
	if f.stopEdits != nil {
		f.stopEdits()
	}
	if f.stopFleet != nil {
		f.stopFleet()
	}
}

// begin takes a slot for a request, or says why not.
func (f *NATS) begin() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		e := protocol.Errorf(protocol.CodeShuttingDown, "the daemon is shutting down")
		e.RetryAfter = 1
		return e
	}
	select {
	case f.inflight <- struct{}{}:
		f.wg.Add(1) // under mu: never after Shutdown's Wait began
		return nil
	default:
		e := protocol.Errorf(protocol.CodeBusy, "too many NATS requests in flight (%d); retry", natsMaxInFlight)
		e.RetryAfter = 1
		return e
	}
}

func (f *NATS) end() {
	<-f.inflight
	f.wg.Done()
}

// serve runs fn on its own goroutine (the subscription's goroutine must
// stay free for the next request), or answers busy.
func (f *NATS) serve(r micro.Request, fn func(ctx context.Context)) {
	if err := f.begin(); err != nil {
		respondError(r, err)
		return
	}
	go func() {
		defer f.end()
		fn(f.ctx)
	}()
}

func (f *NATS) handleGenerate(r micro.Request) {
	natsGeneration(f, r, protocol.DecodeCompletion,
		func(req *protocol.CompletionRequest) bool { return req.Stream },
		func(c *protocol.CompletionChunk) bool { return c.Usage != nil }, f.be.Complete)
}

func (f *NATS) handleChat(r micro.Request) {
	natsGeneration(f, r, protocol.DecodeChat,
		func(req *protocol.ChatRequest) bool { return req.Stream },
		func(c *protocol.ChatChunk) bool { return c.Usage != nil }, f.be.Chat)
}

// natsGeneration answers a completion or chat request with one message, or
// streams its chunks when it asks to; last tells the final chunk (the one
// with usage).
func natsGeneration[Req, Res, Chunk any](f *NATS, r micro.Request, decode func([]byte) (Req, error),
	streaming func(Req) bool, last func(Chunk) bool,
	call func(context.Context, Req, func(Chunk) error) (Res, error)) {
	req, err := decode(r.Data())
	if err != nil {
		respondError(r, err)
		return
	}
	reply := r.Reply()
	f.serve(r, func(ctx context.Context) {
		if !streaming(req) {
			res, err := call(ctx, req, nil)
			f.reply(reply, res, err)
			return
		}
		f.stream(ctx, reply, func(ctx context.Context, send func(v any, last bool) error) error {
			_, err := call(ctx, req, func(c Chunk) error { return send(c, last(c)) })
			return err
		})
	})
}

func (f *NATS) handleTokenize(r micro.Request) {
	req, err := protocol.DecodeTokenize(r.Data())
	if err != nil {
		respondError(r, err)
		return
	}
	reply := r.Reply()
	f.serve(r, func(ctx context.Context) {
		res, err := f.be.Tokenize(ctx, req)
		f.reply(reply, res, err)
	})
}

func (f *NATS) handleModels(r micro.Request) {
	if err := noBody(r.Data()); err != nil {
		respondError(r, err)
		return
	}
	reply := r.Reply()
	f.serve(r, func(ctx context.Context) {
		res, err := f.be.Models(ctx)
		f.reply(reply, res, err)
	})
}

func (f *NATS) handleStatus(r micro.Request) {
	if err := noBody(r.Data()); err != nil {
		respondError(r, err)
		return
	}
	reply := r.Reply()
	f.serve(r, func(ctx context.Context) {
		res, err := f.be.Status(ctx)
		f.reply(reply, res, err)
	})
}

// nodeCall answers a node-only endpoint: it decodes the body, then calls
// the daemon with it and replies with the result.
func nodeCall[Req, Res any](f *NATS, decode func([]byte) (*Req, error), call func(context.Context, *Req) (Res, error)) micro.HandlerFunc {
	return func(r micro.Request) {
		req, err := decode(r.Data())
		if err != nil {
			respondError(r, err)
			return
		}
		reply := r.Reply()
		f.serve(r, func(ctx context.Context) {
			res, err := call(ctx, req)
			f.reply(reply, res, err)
		})
	}
}

// body decodes a request that must have a body.
func body[Req any, P interface {
	*Req
	protocol.Validator
}](data []byte) (*Req, error) {
	req := new(Req)
	if err := protocol.Decode(data, P(req)); err != nil {
		return nil, err
	}
	return req, nil
}

// optionalBody decodes a request whose body may be left out (the zero
// request).
func optionalBody[Req any, P interface {
	*Req
	protocol.Validator
}](data []byte) (*Req, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return new(Req), nil
	}
	return body[Req, P](data)
}

// submitInline queues a job from NATS: its data must be inline (a NATS
// client cannot name files of the node).
func (f *NATS) submitInline(ctx context.Context, req *protocol.JobSubmitRequest) (*protocol.Job, error) {
	return f.be.SubmitJob(ctx, req, false)
}

// noBody accepts an empty body or an empty JSON object (with an optional
// version), for the endpoints that take no arguments.
func noBody(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil
	}
	var v struct {
		Version int `json:"version"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return protocol.Errorf(protocol.CodeInvalidJSON, "this endpoint takes no body, or {}: %v", err)
	}
	if v.Version != 0 && v.Version != protocol.Version {
		return protocol.ParamErrorf(protocol.CodeUnsupportedVersion, "version", "version %d is not supported (want %d)", v.Version, protocol.Version)
	}
	return nil
}

// reply publishes a response object or an error to the reply subject.
func (f *NATS) reply(reply string, v any, err error) {
	if reply == "" {
		return
	}
	var msg *nats.Msg
	if err != nil {
		if f.ctx.Err() != nil && protocol.CodeOf(err) == protocol.CodeCancelled {
			err = protocol.Errorf(protocol.CodeShuttingDown, "the daemon is shutting down")
		}
		msg = errorMsg(reply, err)
	} else {
		data, merr := json.Marshal(v)
		if merr != nil {
			msg = errorMsg(reply, merr)
		} else {
			msg = &nats.Msg{Subject: reply, Data: data}
		}
	}
	if err := f.conn.nc.PublishMsg(msg); err != nil {
		f.log.Debug("nats: reply not sent", "err", err)
	}
}

// stream runs a streaming generation: gen calls send for each chunk, last
// true for the chunk with the usage. The stream can be cancelled through
// its Edged-Cancel subject; an error ends it with an error message.
func (f *NATS) stream(ctx context.Context, reply string, gen func(ctx context.Context, send func(v any, last bool) error) error) {
	if reply == "" {
		return // nobody would read it
	}
	id := randomToken()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.mu.Lock()
	f.streams[id] = cancel
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.streams, id)
		f.mu.Unlock()
	}()
	cancelSubj := f.cancelSubject(id)
	send := func(v any, last bool) error {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		kind := "chunk"
		if last {
			kind = "end"
		}
		msg := &nats.Msg{Subject: reply, Data: data, Header: nats.Header{}}
		msg.Header.Set(HeaderStream, kind)
		msg.Header.Set(HeaderCancel, cancelSubj)
		return f.conn.nc.PublishMsg(msg)
	}
	err := gen(ctx, send)
	if err == nil {
		return
	}
	switch {
	case f.ctx.Err() != nil:
		err = protocol.Errorf(protocol.CodeShuttingDown, "the daemon is shutting down")
	case ctx.Err() != nil:
		err = protocol.Errorf(protocol.CodeCancelled, "cancelled by the client")
	}
	msg := errorMsg(reply, err)
	msg.Header.Set(HeaderCancel, cancelSubj)
	if err := f.conn.nc.PublishMsg(msg); err != nil {
		f.log.Debug("nats: error reply not sent", "err", err)
	}
}

func (f *NATS) cancelSubject(id string) string {
	return protocol.ServiceName + "." + f.node + ".cancel." + id
}

// onCancel handles a message on edged.<node>.cancel.<id>.
func (f *NATS) onCancel(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	f.mu.Lock()
	cancel := f.streams[id]
	f.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if m.Reply != "" {
		m.Respond(nil)
	}
}

// errorMsg is a micro error reply carrying err's protocol code.
func errorMsg(reply string, err error) *nats.Msg {
	e := protocol.AsError(err)
	body, _ := json.Marshal(protocol.ErrorResponse{Version: protocol.Version, Error: e})
	msg := &nats.Msg{Subject: reply, Data: body, Header: nats.Header{}}
	msg.Header.Set(micro.ErrorHeader, e.Message)
	msg.Header.Set(micro.ErrorCodeHeader, string(e.Code))
	return msg
}

// respondError answers through micro (so that its statistics count the
// error).
func respondError(r micro.Request, err error) {
	e := protocol.AsError(err)
	body, _ := json.Marshal(protocol.ErrorResponse{Version: protocol.Version, Error: e})
	msg := e.Message
	if msg == "" {
		msg = string(e.Code)
	}
	_ = r.Error(string(e.Code), msg, body)
}

// publishEvent publishes a lifecycle event; it never blocks.
func (f *NATS) publishEvent(ev Event) {
	f.mu.Lock()
	closed := f.closed && ev.Kind != "draining"
	f.mu.Unlock()
	if closed {
		return
	}
	if ev.Kind == "edits_trained" {
		select {
		case f.metricsNow <- struct{}{}:
		default: // a publication is pending already
		}
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if err := f.conn.nc.Publish(protocol.EventsSubject(f.node), data); err != nil {
		f.log.Debug("nats: event not published", "kind", ev.Kind, "err", err)
	}
}

// NATSMetrics is the JSON published on edged.<node>.metrics.
type NATSMetrics struct {
	Version int       `json:"version"`
	Node    string    `json:"node"`
	Time    time.Time `json:"time"`
	// Status is what the status endpoint answers.
	Status *protocol.Status `json:"status"`
	// Metrics holds every sample of the Prometheus /metrics text by
	// metric name (histograms as their _bucket, _sum and _count series).
	Metrics map[string][]Sample `json:"metrics"`
	// Endpoints are the micro service's statistics per endpoint.
	Endpoints []*micro.EndpointStats `json:"endpoints"`
}

// Sample is one labelled value of a metric.
type Sample struct {
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"`
}

// publishMetrics publishes the metrics every interval (0: never) and
// when metricsNow asks.
func (f *NATS) publishMetrics(every time.Duration) {
	defer f.wg.Done()
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-f.stopBg:
			return
		case <-tick:
		case <-f.metricsNow:
		}
		m, err := f.metrics()
		if err != nil {
			f.log.Warn("nats: metrics", "err", err)
			continue
		}
		data, err := json.Marshal(m)
		if err == nil {
			err = f.conn.nc.Publish(protocol.MetricsSubject(f.node), data)
		}
		if err != nil {
			f.log.Debug("nats: metrics not published", "err", err)
		}
	}
}

func (f *NATS) metrics() (*NATSMetrics, error) {
	st, err := f.be.Status(f.ctx)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	f.be.WriteMetrics(&buf)
	return &NATSMetrics{
		Version: protocol.Version, Node: f.node, Time: time.Now().UTC(),
		Status: st, Metrics: parsePromText(&buf), Endpoints: f.svc.Stats().Endpoints,
	}, nil
}

// parsePromText reads the samples of the Prometheus text format, skipping
// comments and lines it cannot parse.
func parsePromText(r io.Reader) map[string][]Sample {
	out := map[string][]Sample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, rest := line, "", ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, labels, rest = line[:i], line[i+1:j], line[j+1:]
		} else if i := strings.IndexAny(line, " \t"); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		s := Sample{Value: v}
		if labels != "" {
			s.Labels = parsePromLabels(labels)
		}
		out[name] = append(out[name], s)
	}
	return out
}

// parsePromLabels parses `a="x",b="y\"z"`.
func parsePromLabels(s string) map[string]string {
	m := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			break
		}
		key := strings.TrimSpace(s[:eq])
		var val strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[i])
				}
				continue
			}
			val.WriteByte(s[i])
		}
		m[key] = val.String()
		s = strings.TrimLeft(s[min(i+1, len(s)):], ", ")
	}
	return m
}

// keepTrying runs fn until ctx ends: the loops of the edit intake and of
// auto_pull, whose fn returns when ctx ends or something fails. A failure is logged (as msg) when it
// differs from the last one, and fn runs again after a pause that doubles
// up to editsMaxPause (and starts again from a second after a long good
// run).
func keepTrying(ctx context.Context, log *slog.Logger, msg string, fn func(context.Context) error) {
	pause, last := time.Second, ""
	for {
		began := time.Now()
		err := fn(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > editsMaxPause {
			pause = time.Second
		}
		if err != nil && err.Error() != last {
			log.Error(msg, "err", err, "pause", pause)
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, editsMaxPause)
	}
}

func randomToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
