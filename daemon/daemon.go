// Package daemon is edged's service core: configuration, the model
// registry and its bbolt store, the per-model schedulers that batch every
// running request into shared engine steps, the background jobs that run
// below them (jobs_runner.go), the Unix-socket HTTP API, metrics and the
// systemd notify protocol. Front ends call the Service
// (service.go); cmd/edged wires options, New, Start, signals and
// Shutdown.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edged/edged/protocol"
)

// DaemonVersion is reported by Status and `edged --version`.
const DaemonVersion = "0.1.0"

// Daemon is one running edged.
type Daemon struct {
	log     *slog.Logger
	store   *store
	files   *adapterFiles // the adapter versions' files
	reg     *registry
	jobs    *jobRunner
	svc     *Service
	metrics *metrics
	notify  *Notifier
	http    *httpServer
	started time.Time

	mu   sync.Mutex // guards opts, listeners, fleet and the fields below
	opts Options
	// listeners receive events.
	listeners []func(Event)
	running   bool
	stopped   bool
	stopBg    context.CancelFunc // stops the janitor and the watchdog
	bg        sync.WaitGroup

	// hard is cancelled when the drain time is over: every request still
	// running then ends with "shutting_down".
	hard       context.Context
	hardCancel context.CancelCauseFunc

	// adapterMu serializes adapter commits (commitAdapterData).
	adapterMu sync.Mutex
	// editsMu guards editsTimers, the pending looks at a model's edits
	// (scheduleEdits); editsLookMu serializes the looks.
	editsMu     sync.Mutex
	editsTimers map[string]*time.Timer
	editsLookMu sync.Mutex
	// pullMu serializes pulls from the fleet, so that two pulls of one
	// version commit it once (pullAdapter).
	pullMu sync.Mutex
	// fleet is where adapter versions are published and pulled; nil
	// without the NATS front end (guarded by mu).
	fleet adapterFleet

	// draining is set by Shutdown: new requests are refused.
	draining atomic.Bool
	// inflight counts requests between begin and done; idle is signalled
	// when it drops to zero while draining.
	inflightMu sync.Mutex
	inflight   int
	idle       chan struct{}
}

// New checks the options, opens the state database (failing fast with
// ErrAlreadyRunning when another edged holds it) and registers the
// models. It starts nothing.
func New(opts Options) (*Daemon, error) {
	if errs := opts.validate(); len(errs) > 0 {
		return nil, fmt.Errorf("%w: %v", ErrConfig, errs)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	notify := opts.Notify
	if notify == nil {
		notify = NotifierFromEnv()
	}
	st, err := openStore(opts.StateDir, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	files, err := openAdapterFiles(opts.StateDir, st, log)
	if err != nil {
		st.Close()
		return nil, err
	}
	d := &Daemon{log: log, store: st, files: files, metrics: newMetrics(), notify: notify, opts: opts, idle: make(chan struct{})}
	d.hard, d.hardCancel = context.WithCancelCause(context.Background())
	d.svc = &Service{d: d}
	d.reg = newRegistry(log, st, d.metrics, &opts)
	d.reg.events = func(kind, model, msg string) { d.event(kind, model, msg) }
	if err := d.reg.restore(); err != nil {
		st.Close()
		return nil, fmt.Errorf("state database: %w", err)
	}
	for _, spec := range opts.Specs {
		if err := d.reg.register(spec, true); err != nil {
			st.Close()
			return nil, fmt.Errorf("model %s: %w", spec.Name, err)
		}
	}
	d.jobs = newJobRunner(d)
	d.jobs.onDone = d.commitJobAdapter
	d.jobs.onFinished = d.jobFinished
	d.editsTimers = map[string]*time.Timer{}
	if err := d.jobs.recover(); err != nil {
		st.Close()
		return nil, fmt.Errorf("background jobs: %w", err)
	}
	return d, nil
}

// Service returns the daemon's internal API.
func (d *Daemon) Service() *Service { return d.svc }

// Start opens the socket, starts the front ends, then tells systemd
// READY=1 and starts the watchdog pings. A failure stops whatever had
// started.
func (d *Daemon) Start(ctx context.Context) error {
	d.mu.Lock()
	if d.running || d.stopped {
		d.mu.Unlock()
		return errors.New("daemon: Start called twice")
	}
	d.running = true
	opts := d.opts
	d.mu.Unlock()
	d.started = time.Now()

	h, err := startHTTP(d, opts)
	if err != nil {
		return err
	}
	d.http = h
	var started []FrontEnd
	for _, fe := range opts.FrontEnds {
		if err := fe.Start(ctx, d.svc); err != nil {
			for _, s := range started {
				s.Shutdown(context.Background())
			}
			h.close()
			return fmt.Errorf("front end %s: %w", fe.Name(), err)
		}
		started = append(started, fe)
	}
	bg, stop := context.WithCancel(context.Background())
	d.stopBg = stop
	d.bg.Add(1)
	go func() { defer d.bg.Done(); d.janitor(bg) }()
	d.reg.prefetch(d.hard)
	d.jobs.start() // after the front ends, which publish its events
	d.editsAtStart()
	status := fmt.Sprintf("serving on %s; %d models registered", opts.Socket, len(d.reg.names()))
	d.notify.Send("READY=1", "STATUS="+status)
	if iv := WatchdogInterval(); iv > 0 {
		d.bg.Add(1)
		go func() { defer d.bg.Done(); d.watchdog(bg, iv/2) }()
	}
	d.log.Info("edged started", "node", opts.Node, "socket", opts.Socket, "state", opts.StateDir)
	d.event("started", "", status)
	return nil
}

// janitor unloads idle models.
func (d *Daemon) janitor(ctx context.Context) {
	for {
		idle := d.options().Models.IdleUnload
		iv := min(max(idle/4, 10*time.Millisecond), 30*time.Second)
		if idle <= 0 {
			iv = 30 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case now := <-time.After(iv):
			d.reg.unloadIdle(now)
		}
	}
}

func (d *Daemon) watchdog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.notify.Send("WATCHDOG=1")
		}
	}
}

// Reload re-reads the configuration (SIGHUP): the registry takes the new
// models and settings; the socket, state directory and node name keep
// their values until a restart. On error the old configuration stays.
func (d *Daemon) Reload(ctx context.Context) error {
	d.notify.Send("RELOADING=1", monotonicUsec())
	defer d.notify.Send("READY=1", "STATUS=serving (configuration reloaded)")
	d.mu.Lock()
	old := d.opts
	d.mu.Unlock()
	if old.source == nil {
		return nil
	}
	next, err := old.source.Load()
	if err != nil {
		d.log.Error("reload failed; keeping the configuration", "err", err)
		d.notify.Send("STATUS=reload failed: " + firstLine(err.Error()))
		return err
	}
	for _, k := range []struct {
		name     string
		old, new string
	}{{"socket.path", old.Socket, next.Socket}, {"state.dir", old.StateDir, next.StateDir}, {"node", old.Node, next.Node}, {"socket.group", old.SocketGroup, next.SocketGroup}} {
		if k.old != k.new {
			d.log.Warn("setting changes only at restart", "key", k.name, "running", k.old, "configured", k.new)
		}
	}
	next.Socket, next.StateDir, next.Node, next.SocketGroup = old.Socket, old.StateDir, old.Node, old.SocketGroup
	next.FrontEnds, next.Fetch, next.Logger, next.Notify = old.FrontEnds, old.Fetch, old.Logger, old.Notify
	d.mu.Lock()
	d.opts = next
	d.mu.Unlock()
	r := d.reg
	r.mu.Lock()
	r.engine, r.sched, r.models, r.adapters = next.engineOptions(), next.Scheduler, next.Models, next.Adapters
	r.mu.Unlock()
	var errs []error
	for _, spec := range next.Specs {
		if err := r.register(spec, true); err != nil {
			errs = append(errs, fmt.Errorf("model %s: %w", spec.Name, err))
		}
	}
	r.prefetch(d.hard)
	d.log.Info("configuration reloaded")
	d.event("reloaded", "", "")
	return errors.Join(errs...)
}

// Shutdown stops accepting requests, lets the running ones finish for up
// to the drain timeout (or until ctx ends), ends the rest with
// "shutting_down", then stops the front ends, unloads the models and
// closes the database.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return nil
	}
	d.stopped = true
	drain := d.opts.Scheduler.DrainTimeout
	d.mu.Unlock()
	d.notify.Send("STOPPING=1", "STATUS=draining")
	d.event("draining", "", "")
	d.log.Info("draining", "timeout", drain)
	// The running job checkpoints at its next step and leaves the
	// machine to the requests that drain.
	d.stopEditTimers()
	d.jobs.shutdown()

	d.inflightMu.Lock()
	d.draining.Store(true)
	n := d.inflight
	d.inflightMu.Unlock()
	if n > 0 {
		t := time.NewTimer(drain)
		select {
		case <-d.idle:
		case <-t.C:
			d.log.Warn("drain timeout: ending the remaining requests")
		case <-ctx.Done():
		}
		t.Stop()
	}
	d.hardCancel(errShutdown)
	var errs []error
	// The requests end at their next engine step; wait for their replies.
	d.inflightMu.Lock()
	n = d.inflight
	d.inflightMu.Unlock()
	if n > 0 {
		select {
		case <-d.idle:
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
	d.mu.Lock()
	fes := d.opts.FrontEnds
	d.mu.Unlock()
	for _, fe := range fes {
		if err := fe.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("front end %s: %w", fe.Name(), err))
		}
	}
	if d.http != nil {
		errs = append(errs, d.http.shutdown(ctx))
	}
	if d.stopBg != nil {
		d.stopBg()
	}
	d.bg.Wait()
	d.reg.closeAll(ctx)
	errs = append(errs, d.store.Close())
	d.log.Info("edged stopped")
	return errors.Join(errs...)
}

// Close releases what New opened, for a daemon that was never started.
func (d *Daemon) Close() error {
	return d.Shutdown(context.Background())
}

// begin admits a request: it fails once draining. done must be called.
func (d *Daemon) begin() (done func(), err error) {
	d.inflightMu.Lock()
	defer d.inflightMu.Unlock()
	if d.draining.Load() {
		e := protocol.Errorf(protocol.CodeShuttingDown, "the daemon is shutting down")
		e.RetryAfter = 1
		return nil, e
	}
	d.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			d.inflightMu.Lock()
			defer d.inflightMu.Unlock()
			d.inflight--
			if d.inflight == 0 && d.draining.Load() {
				select {
				case <-d.idle:
				default:
					close(d.idle)
				}
			}
		})
	}, nil
}

// servingLoad reports whether requests wait in a model's queue, and
// whether any request is being served: background jobs yield to both.
func (d *Daemon) servingLoad() (waiting, running bool) {
	d.inflightMu.Lock()
	n := d.inflight
	d.inflightMu.Unlock()
	if n == 0 {
		return false, false
	}
	return d.reg.queued(), true
}

// requestContext bounds a request by the request timeout and by the end
// of the drain.
func (d *Daemon) requestContext(parent context.Context) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	ctx, cancelT := context.WithTimeout(ctx, d.options().Scheduler.RequestTimeout)
	stop := context.AfterFunc(d.hard, func() { cancel(errShutdown) })
	return ctx, func(cause error) {
		stop()
		cancelT()
		cancel(cause)
	}
}

func (d *Daemon) options() Options {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.opts
}

func (d *Daemon) onEvent(fn func(Event)) {
	d.mu.Lock()
	d.listeners = append(d.listeners, fn)
	d.mu.Unlock()
}

func (d *Daemon) event(kind, model, msg string) {
	d.emit(Event{Kind: kind, Model: model, Msg: msg})
}

// emit stamps ev with the time and the node and sends it to the listeners.
func (d *Daemon) emit(ev Event) {
	d.mu.Lock()
	ls := d.listeners
	ev.Time, ev.Node = time.Now(), d.opts.Node
	d.mu.Unlock()
	for _, fn := range ls {
		fn(ev)
	}
}

// writeMetrics writes the counters and the registry's gauges.
func (d *Daemon) writeMetrics(w io.Writer) {
	d.metrics.write(w)
	currents, err := d.store.currentAdapters()
	if err != nil {
		d.log.Warn("metrics: reading the current adapter versions", "err", err)
	}
	r := d.reg
	r.mu.Lock()
	var rows, stateRows, backendRows [][]string
	var queue, active, kvTok, kvBytes, mem, state, backend, adapter []float64
	for _, n := range sortedKeys(r.entries) {
		e := r.entries[n]
		adapter = append(adapter, float64(currents[n]))
		for _, s := range []string{protocol.StateUnloaded, protocol.StateLoading, protocol.StateLoaded, protocol.StateFailed} {
			stateRows = append(stateRows, []string{n, s})
			state = append(state, b2f(e.state == s))
		}
		rows = append(rows, []string{n})
		if in := e.inst; in != nil {
			a := in.active.Load()
			queue, active = append(queue, float64(len(in.queue))), append(active, float64(a))
			kvTok, kvBytes = append(kvTok, float64(in.kvTokens.Load())), append(kvBytes, float64(int64(a)*in.kvSeq))
			mem = append(mem, float64(in.mem))
			backendRows, backend = append(backendRows, []string{n, in.backend}), append(backend, 1)
		} else {
			queue, active, kvTok, kvBytes, mem = append(queue, 0), append(active, 0), append(kvTok, 0), append(kvBytes, 0), append(mem, 0)
		}
	}
	used, budget := r.used, r.models.MemoryBudget
	r.mu.Unlock()
	m := []string{"model"}
	gauge(w, "edged_queue_depth", "Requests waiting in the model's queue.", m, rows, queue)
	gauge(w, "edged_active_sequences", "Sequences running in the model's batch.", m, rows, active)
	gauge(w, "edged_kv_cache_tokens", "KV cache rows in use by running sequences.", m, rows, kvTok)
	gauge(w, "edged_kv_cache_bytes", "KV cache memory of running sequences.", m, rows, kvBytes)
	gauge(w, "edged_model_memory_bytes", "Memory the loaded model counts against the budget.", m, rows, mem)
	gauge(w, "edged_model_backend_info", "1 for the compute backend a loaded model runs on.", []string{"model", "backend"}, backendRows, backend)
	gauge(w, "edged_model_state", "1 for the model's state (unloaded, loading, loaded, failed).", []string{"model", "state"}, stateRows, state)
	gauge(w, "edged_adapter_version", "The model's current adapter version, which requests use unless they name another (0: the base model).", m, rows, adapter)
	gauge(w, "edged_memory_used_bytes", "Memory counted against the budget.", nil, [][]string{nil}, []float64{float64(used)})
	gauge(w, "edged_memory_budget_bytes", "The memory budget (0: unlimited).", nil, [][]string{nil}, []float64{float64(budget)})
	d.inflightMu.Lock()
	n := d.inflight
	d.inflightMu.Unlock()
	gauge(w, "edged_requests_in_flight", "Requests being served.", nil, [][]string{nil}, []float64{float64(n)})
	d.writeEditGauges(w)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
