package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/edged/edged/protocol"
)

// streamWriteTimeout bounds each write of a streamed reply: a client that
// stops reading loses its request after this long; nobody else waits.
const streamWriteTimeout = 10 * time.Second

// httpServer is the Unix-socket front end: HTTP/1.1, OpenAI-compatible.
type httpServer struct {
	d      *Daemon
	svc    *Service
	log    *slog.Logger
	srv    *http.Server
	ln     net.Listener
	served chan struct{}
}

// route is one endpoint.
type route struct {
	method string
	h      func(w http.ResponseWriter, r *http.Request)
}

// startHTTP creates the socket (mode 0660, group SocketGroup when set),
// checks each peer's credentials and serves.
func startHTTP(d *Daemon, o Options) (*httpServer, error) {
	gid := -1
	if o.SocketGroup != "" {
		g, err := user.LookupGroup(o.SocketGroup)
		if err != nil {
			return nil, fmt.Errorf("socket.group %q: %w", o.SocketGroup, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("socket.group %q: gid %q", o.SocketGroup, g.Gid)
		}
	}
	ln, err := listenUnix(o.Socket, gid)
	if err != nil {
		return nil, err
	}
	h := &httpServer{d: d, svc: d.svc, log: d.log, served: make(chan struct{})}
	routes := map[string]route{
		"/v1/completions":       {http.MethodPost, h.completions},
		"/v1/chat/completions":  {http.MethodPost, h.chat},
		"/v1/models":            {http.MethodGet, h.models},
		"/v1/models/load":       {http.MethodPost, h.load},
		"/v1/models/unload":     {http.MethodPost, h.unload},
		"/v1/tokenize":          {http.MethodPost, h.tokenize},
		"/v1/edits":             {http.MethodGet, h.edits},
		"/v1/edits/status":      {http.MethodGet, h.editStatus},
		"/v1/adapters":          {http.MethodGet, h.adapters},
		"/v1/adapters/rollback": {http.MethodPost, h.adapterRollback},
		"/v1/adapters/add":      {http.MethodPost, h.adapterAdd},
		"/v1/jobs":              {http.MethodGet, h.jobs},
		"/v1/jobs/status":       {http.MethodGet, h.jobStatus},
		"/v1/jobs/submit":       {http.MethodPost, h.jobSubmit},
		"/v1/jobs/pause":        {http.MethodPost, h.jobControl(h.svc.PauseJob)},
		"/v1/jobs/resume":       {http.MethodPost, h.jobControl(h.svc.ResumeJob)},
		"/v1/jobs/cancel":       {http.MethodPost, h.jobControl(h.svc.CancelJob)},
		"/v1/adapters/publish":  {http.MethodPost, h.adapterPublish},
		"/v1/adapters/pull":     {http.MethodPost, h.adapterPull},
		"/v1/status":            {http.MethodGet, h.status},
		"/status":               {http.MethodGet, h.status},
		"/health":               {http.MethodGet, h.health},
		"/metrics":              {http.MethodGet, h.metrics},
	}
	h.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rt, ok := routes[r.URL.Path]
			switch {
			case !ok:
				writeError(w, protocol.Errorf(protocol.CodeNotFound, "no endpoint %s", r.URL.Path))
			case r.Method != rt.method && !(rt.method == http.MethodGet && r.Method == http.MethodHead):
				w.Header().Set("Allow", rt.method)
				writeError(w, protocol.Errorf(protocol.CodeMethodNotAllowed, "%s wants %s, not %s", r.URL.Path, rt.method, r.Method))
			default:
				rt.h(w, r)
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	h.ln = &peerListener{Listener: ln, gid: gid, log: d.log}
	go func() {
		defer close(h.served)
		if err := h.srv.Serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("socket server", "err", err)
		}
	}()
	return h, nil
}

// listenUnix creates the socket at path, replacing a stale one but not a
// live one.
func listenUnix(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s answers; is edged already running?", ErrSocketInUse, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket group: %w", err)
		}
	}
	return ln, nil
}

func (h *httpServer) close() {
	h.srv.Close()
	<-h.served
}

func (h *httpServer) shutdown(ctx context.Context) error {
	err := h.srv.Shutdown(ctx)
	if err != nil {
		h.srv.Close()
	}
	<-h.served
	return err
}

// peerListener serves only the daemon's user, root and members of the
// socket group; others get a 403 and the connection closes.
type peerListener struct {
	net.Listener
	gid int
	log *slog.Logger
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ok, who := peerAllowed(c, l.gid)
		if ok {
			return c, nil
		}
		l.log.Warn("connection refused", "peer", who)
		go refuse(c, who)
	}
}

func refuse(c net.Conn, who string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	body, _ := json.Marshal(protocol.ErrorResponse{Version: protocol.Version, Error: protocol.Errorf(protocol.CodeForbidden, "%s may not use this daemon: connect as its user, root or a member of its socket group", who)})
	fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	e := protocol.AsError(err)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, e.Code.HTTPStatus(), protocol.ErrorResponse{Version: protocol.Version, Error: e})
}

func readBody(r *http.Request) ([]byte, error) {
	return protocol.ReadBody(r.Body)
}

func (h *httpServer) completions(w http.ResponseWriter, r *http.Request) {
	serveGeneration(h, w, r, "completions", protocol.DecodeCompletion,
		func(req *protocol.CompletionRequest) bool { return req.Stream }, h.svc.Complete)
}

func (h *httpServer) chat(w http.ResponseWriter, r *http.Request) {
	serveGeneration(h, w, r, "chat", protocol.DecodeChat,
		func(req *protocol.ChatRequest) bool { return req.Stream }, h.svc.Chat)
}

// serveGeneration answers a completion or chat request: decode it, then
// reply with the whole response or, when it asks to stream, with
// server-sent events.
func serveGeneration[Req, Res, Chunk any](h *httpServer, w http.ResponseWriter, r *http.Request, endpoint string,
	decode func([]byte) (Req, error), streaming func(Req) bool,
	call func(context.Context, Req, func(Chunk) error) (Res, error)) {
	body, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := decode(body)
	if err != nil {
		h.d.metrics.requests.add(1, endpoint, "", string(protocol.CodeOf(err)))
		writeError(w, err)
		return
	}
	if !streaming(req) {
		res, err := call(r.Context(), req, nil)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
		return
	}
	s := newSSE(w)
	_, err = call(r.Context(), req, func(c Chunk) error { return s.send(c) })
	s.end(err)
}

func (h *httpServer) tokenize(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := protocol.DecodeTokenize(body)
	if err != nil {
		writeError(w, err)
		return
	}
	res, err := h.svc.Tokenize(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (h *httpServer) models(w http.ResponseWriter, r *http.Request) {
	res, err := h.svc.Models(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (h *httpServer) load(w http.ResponseWriter, r *http.Request) {
	var req protocol.LoadRequest
	body, err := readBody(r)
	if err == nil {
		err = protocol.Decode(body, &req)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	res, err := h.svc.Load(r.Context(), &req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (h *httpServer) unload(w http.ResponseWriter, r *http.Request) {
	var req protocol.UnloadRequest
	body, err := readBody(r)
	if err == nil {
		err = protocol.Decode(body, &req)
	}
	if err == nil {
		err = h.svc.Unload(r.Context(), &req)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	res, _ := h.svc.Models(r.Context())
	for _, m := range res.Data {
		if m.ID == req.Model {
			writeJSON(w, http.StatusOK, m)
			return
		}
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (h *httpServer) status(w http.ResponseWriter, r *http.Request) {
	res, err := h.svc.Status(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// edits answers GET /v1/edits[?status=S].
func (h *httpServer) edits(w http.ResponseWriter, r *http.Request) {
	serveQuery(w, r, func(q map[string]string) *protocol.EditListRequest {
		return &protocol.EditListRequest{Status: q["status"]}
	}, h.svc.Edits, "status")
}

// editStatus answers GET /v1/edits/status?id=ID.
func (h *httpServer) editStatus(w http.ResponseWriter, r *http.Request) {
	serveQuery(w, r, func(q map[string]string) *protocol.EditStatusRequest {
		return &protocol.EditStatusRequest{ID: q["id"]}
	}, h.svc.EditStatus, "id")
}

// adapters answers GET /v1/adapters[?model=M].
func (h *httpServer) adapters(w http.ResponseWriter, r *http.Request) {
	serveQuery(w, r, func(q map[string]string) *protocol.AdapterListRequest {
		return &protocol.AdapterListRequest{Model: q["model"]}
	}, h.svc.Adapters, "model")
}

// adapterRollback answers POST /v1/adapters/rollback.
func (h *httpServer) adapterRollback(w http.ResponseWriter, r *http.Request) {
	serveJSON(w, r, protocol.DecodeAdapterRollback, h.svc.RollbackAdapter)
}

// adapterPublish answers POST /v1/adapters/publish.
func (h *httpServer) adapterPublish(w http.ResponseWriter, r *http.Request) {
	serveJSON(w, r, protocol.DecodeAdapterPublish, h.svc.PublishAdapter)
}

// adapterPull answers POST /v1/adapters/pull.
func (h *httpServer) adapterPull(w http.ResponseWriter, r *http.Request) {
	serveJSON(w, r, protocol.DecodeAdapterPull, h.svc.PullAdapter)
}

// serveJSON answers a POST whose body is one request object and whose
// reply is one response object.
func serveJSON[Req, Res any](w http.ResponseWriter, r *http.Request, decode func([]byte) (Req, error), call func(context.Context, Req) (Res, error)) {
	body, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := decode(body)
	if err != nil {
		writeError(w, err)
		return
	}
	respond(w, r, req, call)
}

// serveQuery answers a GET whose request is made of the query parameters
// keys (build makes it from them) and whose reply is one response object.
func serveQuery[Req interface{ Validate() error }, Res any](w http.ResponseWriter, r *http.Request, build func(q map[string]string) Req, call func(context.Context, Req) (Res, error), keys ...string) {
	q, err := query(r, keys...)
	if err != nil {
		writeError(w, err)
		return
	}
	req := build(q)
	if err := req.Validate(); err != nil {
		writeError(w, err)
		return
	}
	respond(w, r, req, call)
}

// respond calls the daemon with req and writes its reply or its error.
func respond[Req, Res any](w http.ResponseWriter, r *http.Request, req Req, call func(context.Context, Req) (Res, error)) {
	res, err := call(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// adapterAdd answers POST /v1/adapters/add?model=M[&file=NAME], whose body
// is the adapter GGUF file itself: uploaded rather than named by path,
// because the hardened service cannot read its users' files
// (ProtectHome=yes), and so that a socket client cannot make the daemon
// read a file it could not.
func (h *httpServer) adapterAdd(w http.ResponseWriter, r *http.Request) {
	serveQuery(w, r, func(q map[string]string) *protocol.AdapterAddRequest {
		return &protocol.AdapterAddRequest{Model: q["model"], File: q["file"]}
	}, func(ctx context.Context, req *protocol.AdapterAddRequest) (*protocol.AdapterRecord, error) {
		return h.svc.AddAdapter(ctx, req, r.Body)
	}, "model", "file")
}

// jobs answers GET /v1/jobs[?state=S].
func (h *httpServer) jobs(w http.ResponseWriter, r *http.Request) {
	serveQuery(w, r, func(q map[string]string) *protocol.JobListRequest {
		return &protocol.JobListRequest{State: q["state"]}
	}, h.svc.Jobs, "state")
}

// jobStatus answers GET /v1/jobs/status?id=ID.
func (h *httpServer) jobStatus(w http.ResponseWriter, r *http.Request) {
	serveQuery(w, r, func(q map[string]string) *protocol.JobRequest {
		return &protocol.JobRequest{ID: q["id"]}
	}, h.svc.JobStatus, "id")
}

// jobSubmit answers POST /v1/jobs/submit. The socket's peers may name a
// data file of this machine.
func (h *httpServer) jobSubmit(w http.ResponseWriter, r *http.Request) {
	serveJSON(w, r, protocol.DecodeJobSubmit, func(ctx context.Context, req *protocol.JobSubmitRequest) (*protocol.Job, error) {
		return h.svc.SubmitJob(ctx, req, true)
	})
}

// jobControl answers POST /v1/jobs/pause, resume and cancel, whose body
// names the job.
func (h *httpServer) jobControl(call func(context.Context, *protocol.JobRequest) (*protocol.Job, error)) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		serveJSON(w, r, protocol.DecodeJobRequest, call)
	}
}

// query returns the query parameters, which must be among keys and given
// once each: the socket's GET endpoints are as strict as the bodies.
func query(r *http.Request, keys ...string) (map[string]string, error) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInvalidValue, "query: %v", err)
	}
	out := map[string]string{}
	for k, v := range vals {
		switch {
		case !slices.Contains(keys, k):
			return nil, protocol.ParamErrorf(protocol.CodeUnknownField, k, "unknown query parameter %q", k)
		case len(v) > 1:
			return nil, protocol.ParamErrorf(protocol.CodeInvalidValue, k, "query parameter %q given %d times", k, len(v))
		}
		out[k] = v[0]
	}
	return out, nil
}

func (h *httpServer) health(w http.ResponseWriter, r *http.Request) {
	if h.d.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, protocol.Health{Status: "draining"})
		return
	}
	writeJSON(w, http.StatusOK, protocol.Health{Status: "ok"})
}

func (h *httpServer) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	h.svc.WriteMetrics(w)
}

// sse writes a server-sent event stream. The headers go out with the
// first event, so that an error before any text is a plain JSON error
// with its status.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func newSSE(w http.ResponseWriter) *sse { return &sse{w: w, rc: http.NewResponseController(w)} }

func (s *sse) send(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if !s.started {
		s.started = true
		h := s.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		s.w.WriteHeader(http.StatusOK)
	}
	s.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := fmt.Fprintf(s.w, "data: %s\n\n", data); err != nil {
		return err
	}
	return s.rc.Flush()
}

// end finishes the stream: an error event when err is set, then [DONE].
func (s *sse) end(err error) {
	if err != nil && !s.started {
		writeError(s.w, err)
		return
	}
	if err != nil {
		if s.send(protocol.ErrorResponse{Version: protocol.Version, Error: protocol.AsError(err)}) != nil {
			return
		}
	}
	s.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	fmt.Fprint(s.w, "data: [DONE]\n\n")
	s.rc.Flush()
}
