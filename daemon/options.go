package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/edged/edged/protocol"
)

// Options configure a Daemon. DefaultOptions returns the defaults; a config
// file, EDGED_* variables and flags override them in that order (see
// config.go, and edged.example.toml for every key documented).
type Options struct {
	// Node names this daemon in status replies and NATS subjects.
	Node string
	// Socket is the Unix socket path of the HTTP API.
	Socket string
	// SocketGroup, when set, owns the socket, and its members may connect
	// (besides the daemon's own user and root).
	SocketGroup string
	// StateDir holds the bbolt database.
	StateDir string
	// CacheDir holds downloaded models (used by pull).
	CacheDir string
	// LockTimeout bounds the wait for the database lock.
	LockTimeout time.Duration

	Engine    EngineOptions
	Scheduler SchedulerOptions
	Models    ModelOptions
	Adapters  AdapterOptions
	NATS      NATSOptions
	Jobs      JobsOptions
	EditJobs  EditJobOptions

	// Specs are the models registered at start (the config file's
	// [models.NAME] tables, then --model flags).
	Specs []ModelSpec

	// FrontEnds are started after the socket, before READY=1, and shut
	// down before the scheduler drains. The NATS front end is one.
	FrontEnds []FrontEnd
	// Fetch resolves a model reference that is not a local path (an
	// https:// or hf:// URL) to a local file, downloading it if needed.
	// nil: such references are refused.
	Fetch func(ctx context.Context, ref string) (path, digest string, err error)

	// Logger receives the daemon's logs; nil: slog.Default().
	Logger *slog.Logger
	// Notify sends systemd notifications; nil: from $NOTIFY_SOCKET.
	Notify *Notifier

	// source re-reads the configuration on Reload; nil: Reload keeps
	// these options.
	source *ConfigSource
}

// EngineOptions configure the engines of loaded models.
type EngineOptions struct {
	Threads   int    // CPU threads per model; 0: one per core
	Context   int    // tokens per sequence; 0: the model's, at most 4096
	BatchSize int    // rows per forward pass
	KVCache   string // f16 or f32
	Backend   string // one of backend.Names; "auto": a GPU when one opens, else the CPU
	GPULibDir string // searched first for the GPU libraries; "": the system's path
	GPULayers int    // layers on the GPU (the last ones and the output); -1: all
	// KernelCache holds compiled GPU kernels; "": "kernels" under StateDir
	// (see Options.engineOptions).
	KernelCache string
}

// SchedulerOptions configure the per-model schedulers.
type SchedulerOptions struct {
	MaxQueue       int           // requests waiting per model; more get "busy"
	MaxActive      int           // sequences decoding at once per model
	PrefillChunk   int           // prompt tokens per engine step, all sequences together
	RequestTimeout time.Duration // the longest one request may run, queue included
	DrainTimeout   time.Duration // how long SIGTERM waits for in-flight requests
	MaxTokens      int           // default max_tokens; 0: until an end token or a full context
	RetryAfter     time.Duration // the hint sent with "busy"
}

// ModelOptions configure the model registry.
type ModelOptions struct {
	IdleUnload   time.Duration // unload a model unused this long; 0: never
	MemoryBudget int64         // bytes all loaded models may use; 0: unlimited
}

// AdapterOptions configure the models' adapter versions (daemon/adapters*.go).
type AdapterOptions struct {
	// Keep is how many versions of each model are kept: a commit deletes
	// the older ones (never the current one).
	Keep int
	// Cache is how many versions each loaded model holds loaded, the
	// most recently used; the others are read from disk again when asked.
	Cache int
}

// JobsOptions configure the background jobs (daemon/jobs*.go): one runs
// at a time, beside serving and below it.
type JobsOptions struct {
	// Share is the share of the time a job computes while requests are
	// being served: after computing for t it waits t·(1−Share)/Share
	// before its next forward pass. Requests waiting in a model's queue
	// always go first, and with no request being served a job runs at
	// full speed. In (0, 1].
	Share float64
	// CheckpointEvery and CheckpointInterval bound the work a crash
	// loses: a job checkpoints after this many steps or this much time,
	// whichever comes first, besides when it is paused or the daemon
	// stops.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// ProgressInterval is the least time between two job_progress
	// events of a job; 0: none.
	ProgressInterval time.Duration
	// MaxQueued bounds the jobs not finished (queued, running, paused or
	// failed); a submission beyond it gets "busy".
	MaxQueued int
	// Threads are the CPU threads of a job's engine; 0: Engine.Threads.
	Threads int
}

// EditJobs configure the training of knowledge edits (daemon/edits_train.go,
// daemon/jobs_edits.go): when it starts, and the settings an "edits" job
// takes when its submission leaves them out.
type EditJobOptions struct {
	// Auto submits an edit job for a model once its edits changed (an
	// edit stored pending, or one in the current version retracted) and
	// Delay passed without another change, unless an edit job of the
	// model is unfinished.
	Auto  bool
	Delay time.Duration
	// Optimizer is one of protocol.EditOptimizers.
	Optimizer string
	// Layer is the layer whose MLP down-projection is adapted; -1: the
	// last (`edgectl edits locate` measures each).
	Layer int
	// Rank of the LoRA; 0: a full delta of the projection.
	Rank int
	// Steps bounds a run; LR is the learning rate (0: the optimizer's
	// default); a run stops once every edit's loss is below StopLoss.
	Steps    int
	LR       float64
	StopLoss float64
}

// NATSOptions configure the NATS front end (daemon/nats*.go).
type NATSOptions struct {
	Enabled         bool          // run the NATS front end
	URL             string        // join this server; "": embedded server
	Listen          string        // HOST:PORT where the embedded server listens; "": in-process only
	Credentials     string        // credentials file for URL
	NKey            string        // NKey seed file for URL
	TLSCert         string        // client certificate for URL
	TLSKey          string        // its key
	TLSCA           string        // CA bundle for URL
	LeafRemote      string        // leaf-node remote URL of a hub for the embedded server
	MetricsInterval time.Duration // publish metrics this often; 0: never

	// JetStream of the embedded server, which holds the edit stream and
	// the fleet's adapter versions (an external server's is the
	// operator's).
	JetStreamDir       string // its store; "": "jetstream" under the state directory (see NATS.Start)
	JetStreamMaxMemory int64  // bytes of memory storage it may use
	JetStreamMaxStore  int64  // bytes of file storage it may use

	Edits EditsOptions
	Fleet FleetOptions
}

// FleetOptions configure the sharing of adapter versions with the other
// nodes of the NATS server (daemon/nats_fleet.go); publishing and pulling
// on request need none of them.
type FleetOptions struct {
	// AutoPublish publishes every version committed here (not those
	// pulled from the fleet) as it is committed.
	AutoPublish bool
	// AutoPull pulls every version another node publishes for a model
	// registered here, as it is published (at start, the newest ones
	// published meanwhile).
	AutoPull bool
}

// EditsOptions configure the intake of knowledge edits from the edit stream
// (daemon/nats_edits.go).
type EditsOptions struct {
	Enabled bool // consume the edit stream (needs the NATS front end)
	// DuplicateWindow is how long the stream remembers a Nats-Msg-Id to
	// drop a message published again (only when edged owns the stream).
	DuplicateWindow time.Duration
	// AckWait is how long an edit delivered and not acknowledged (edged
	// died before storing it) waits before it is delivered again.
	AckWait time.Duration

	// poll bounds one fetch from the stream, and so how soon the
	// consumer's filter follows a change of the registered models; 0:
	// editsPoll. Tests shorten it.
	poll time.Duration
}

// engineOptions are the engine options loads use: o.Engine with the kernel
// cache defaulted to "kernels" under the state directory, because the
// hardened service (ProtectSystem=strict, ProtectHome=yes) can write only
// its own directories, not a user cache directory.
func (o *Options) engineOptions() EngineOptions {
	eo := o.Engine
	if eo.KernelCache == "" {
		eo.KernelCache = filepath.Join(o.StateDir, "kernels")
	}
	return eo
}

// ModelSpec registers a model under a name.
type ModelSpec struct {
	Name string
	// Path is a GGUF file, or a reference Options.Fetch resolves.
	Path   string
	Digest string // "sha256:…" when known
	// Context overrides EngineOptions.Context for this model.
	Context int
	// Defaults apply to requests that leave a sampling field out.
	Defaults protocol.Sampling
	// MaxTokens overrides SchedulerOptions.MaxTokens.
	MaxTokens int
	// Sparsity applies to requests that give none; nil: dense.
	Sparsity *protocol.Sparsity
}

// FrontEnd is an interface of the daemon to clients besides the Unix
// socket, started and stopped with it. Start must return once the front
// end serves (READY=1 waits for it) and must not block after that.
type FrontEnd interface {
	Name() string
	Start(ctx context.Context, s *Service) error
	Shutdown(ctx context.Context) error
}

// DefaultOptions returns the defaults, which need no config file. Paths
// follow systemd's $RUNTIME_DIRECTORY, $STATE_DIRECTORY and
// $CACHE_DIRECTORY when set, else the XDG directories of the user.
func DefaultOptions() Options {
	return defaultOptions(os.Getenv)
}

func defaultOptions(getenv func(string) string) Options {
	node, err := os.Hostname()
	if err != nil || node == "" {
		node = "edged"
	}
	return Options{
		Node:        node,
		Socket:      defaultSocket(getenv),
		StateDir:    defaultDir(getenv, "STATE_DIRECTORY", "XDG_STATE_HOME", filepath.Join(".local", "state")),
		CacheDir:    defaultDir(getenv, "CACHE_DIRECTORY", "XDG_CACHE_HOME", ".cache"),
		LockTimeout: time.Second,
		Engine:      EngineOptions{BatchSize: 512, KVCache: "f16", Backend: "auto", GPULayers: -1},
		Scheduler: SchedulerOptions{
			MaxQueue:       64,
			MaxActive:      16,
			PrefillChunk:   256,
			RequestTimeout: 10 * time.Minute,
			DrainTimeout:   30 * time.Second,
			RetryAfter:     time.Second,
		},
		Models:   ModelOptions{IdleUnload: 15 * time.Minute},
		Adapters: AdapterOptions{Keep: 5, Cache: defaultAdapterCache},
		Jobs:     JobsOptions{Share: 0.5, CheckpointEvery: 100, CheckpointInterval: time.Minute, ProgressInterval: 2 * time.Second, MaxQueued: 16},
		EditJobs: defaultEditJobs(),
		NATS: NATSOptions{
			Enabled: true, MetricsInterval: 10 * time.Second,
			JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30,
			Edits: EditsOptions{Enabled: true, DuplicateWindow: 24 * time.Hour, AckWait: 30 * time.Second},
		},
	}
}

// defaultSocket is $RUNTIME_DIRECTORY/edged.sock, else
// $XDG_RUNTIME_DIR/edged/edged.sock, else /run/edged/edged.sock.
func defaultSocket(getenv func(string) string) string {
	if d := firstDir(getenv("RUNTIME_DIRECTORY")); d != "" {
		return filepath.Join(d, "edged.sock")
	}
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "edged", "edged.sock")
	}
	return "/run/edged/edged.sock"
}

func defaultDir(getenv func(string) string, systemd, xdg, home string) string {
	if d := firstDir(getenv(systemd)); d != "" {
		return d
	}
	if d := getenv(xdg); d != "" {
		return filepath.Join(d, "edged")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, home, "edged")
	}
	return filepath.Join("/var/lib/edged")
}

// firstDir takes the first of systemd's colon-separated directories.
func firstDir(s string) string {
	if i := filepath.SplitList(s); len(i) > 0 {
		return i[0]
	}
	return ""
}
