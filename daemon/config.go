package daemon

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/edged/edged/accel/backend"
	"github.com/edged/edged/protocol"
)

// DefaultConfigFile is read when neither --config nor EDGED_CONFIG names
// a file; its absence is not an error.
const DefaultConfigFile = "/etc/edged/edged.toml"

// setting is one configuration key: its TOML key, which is also its flag
// name, its EDGED_* variable and where its value goes.
type setting struct {
	key string
	doc string
	ptr any // *string, *int, *int64 (bytes), *float64, *time.Duration or *bool
}

// env is the setting's environment variable: EDGED_ and the key in upper
// case with dots as underscores.
func (s setting) env() string {
	return "EDGED_" + strings.ToUpper(strings.ReplaceAll(s.key, ".", "_"))
}

// settings lists every key of o. The example config file documents each
// (a test checks that).
func (o *Options) settings() []setting {
	return []setting{
		{"node", "name of this daemon (status, NATS subjects)", &o.Node},
		{"socket.path", "Unix socket of the HTTP API", &o.Socket},
		{"socket.group", "group that owns the socket; its members may connect", &o.SocketGroup},
		{"state.dir", "directory of the state database", &o.StateDir},
		{"state.lock_timeout", "how long to wait for the database lock", &o.LockTimeout},
		{"cache.dir", "directory of downloaded models", &o.CacheDir},
		{"engine.threads", "CPU threads per model (0: one per core)", &o.Engine.Threads},
		{"engine.context", "context length in tokens (0: the model's, at most 4096)", &o.Engine.Context},
		{"engine.batch_size", "most token rows per forward pass", &o.Engine.BatchSize},
		{"engine.kv_cache", "KV cache storage: f16 or f32", &o.Engine.KVCache},
		{"engine.backend", "compute backend: " + strings.Join(backend.Names, ", ") + " (auto: a GPU when one opens, else the CPU)", &o.Engine.Backend},
		{"engine.gpu_lib_dir", "directory searched first for the GPU libraries (empty: the system's)", &o.Engine.GPULibDir},
		{"engine.gpu_layers", "layers on the GPU, the last ones and the output; the rest run on the CPU (-1: all)", &o.Engine.GPULayers},
		{"engine.kernel_cache", "directory of compiled GPU kernels (empty: kernels under state.dir)", &o.Engine.KernelCache},
		{"scheduler.max_queue", "requests waiting per model before \"busy\"", &o.Scheduler.MaxQueue},
		{"scheduler.max_active", "sequences decoding at once per model", &o.Scheduler.MaxActive},
		{"scheduler.prefill_chunk", "prompt tokens per engine step", &o.Scheduler.PrefillChunk},
		{"scheduler.request_timeout", "longest time one request may take", &o.Scheduler.RequestTimeout},
		{"scheduler.drain_timeout", "how long shutdown waits for in-flight requests", &o.Scheduler.DrainTimeout},
		{"scheduler.max_tokens", "default max_tokens (0: until an end token or a full context)", &o.Scheduler.MaxTokens},
		{"scheduler.retry_after", "retry hint sent with \"busy\"", &o.Scheduler.RetryAfter},
		{"models.idle_unload", "unload a model unused this long (0: never)", &o.Models.IdleUnload},
		{"models.memory_budget", "bytes all loaded models may use (0: unlimited)", &o.Models.MemoryBudget},
		{"adapters.keep", "adapter versions kept per model (the newest; the current one always)", &o.Adapters.Keep},
		{"adapters.cache", "adapter versions held loaded per loaded model", &o.Adapters.Cache},
		{"adapters.auto_publish", "publish every version committed here for the fleet (needs nats.enabled)", &o.NATS.Fleet.AutoPublish},
		{"adapters.auto_pull", "pull every version another node publishes for a registered model (needs nats.enabled)", &o.NATS.Fleet.AutoPull},
		{"nats.enabled", "run the NATS front end", &o.NATS.Enabled},
		{"nats.url", "NATS server to join (empty: embedded server)", &o.NATS.URL},
		{"nats.listen", "HOST:PORT for the embedded server (empty: in-process only)", &o.NATS.Listen},
		{"nats.credentials", "credentials file for nats.url", &o.NATS.Credentials},
		{"nats.nkey", "NKey seed file for nats.url", &o.NATS.NKey},
		{"nats.tls_cert", "TLS client certificate for nats.url", &o.NATS.TLSCert},
		{"nats.tls_key", "TLS client key for nats.url", &o.NATS.TLSKey},
		{"nats.tls_ca", "TLS CA bundle for nats.url", &o.NATS.TLSCA},
		{"nats.leaf_remote", "hub URL the embedded server joins as a leaf node", &o.NATS.LeafRemote},
		{"nats.metrics_interval", "publish metrics this often (0: never)", &o.NATS.MetricsInterval},
		{"nats.jetstream_dir", "JetStream store of the embedded server (empty: jetstream under state.dir)", &o.NATS.JetStreamDir},
		{"nats.jetstream_max_memory", "memory the embedded server's JetStream may use", &o.NATS.JetStreamMaxMemory},
		{"nats.jetstream_max_store", "disk the embedded server's JetStream may use", &o.NATS.JetStreamMaxStore},
		{"edits.enabled", "consume the knowledge edit stream into the state database", &o.NATS.Edits.Enabled},
		{"edits.duplicate_window", "how long the edit stream drops a message id seen before", &o.NATS.Edits.DuplicateWindow},
		{"edits.ack_wait", "how long an unacknowledged edit waits before redelivery", &o.NATS.Edits.AckWait},
		{"edits.train", "train a model's edits in a background job once they change", &o.EditJobs.Auto},
		{"edits.train_delay", "how long edits.train waits for more changes before it submits the job", &o.EditJobs.Delay},
		{"edits.optimizer", "optimizer of edit jobs: " + strings.Join(protocol.EditOptimizers, " or "), &o.EditJobs.Optimizer},
		{"edits.layer", "layer whose MLP down-projection edit jobs adapt (-1: the last)", &o.EditJobs.Layer},
		{"edits.rank", "rank of the edits' LoRA (0: a full delta of the projection)", &o.EditJobs.Rank},
		{"edits.steps", "most optimizer steps of an edit job", &o.EditJobs.Steps},
		{"edits.lr", "learning rate of edit jobs (0: the optimizer's default)", &o.EditJobs.LR},
		{"edits.stop_loss", "an edit job stops once every edit's loss is below this (nats)", &o.EditJobs.StopLoss},
		{"jobs.share", "share of the time a background job computes while requests are served, in (0, 1]", &o.Jobs.Share},
		{"jobs.checkpoint_every", "steps between a job's checkpoints", &o.Jobs.CheckpointEvery},
		{"jobs.checkpoint_interval", "longest time between a job's checkpoints", &o.Jobs.CheckpointInterval},
		{"jobs.progress_interval", "least time between a job's progress events (0: none)", &o.Jobs.ProgressInterval},
		{"jobs.max_queued", "unfinished jobs (queued, running, paused, failed) before \"busy\"", &o.Jobs.MaxQueued},
		{"jobs.threads", "CPU threads of a job's engine (0: engine.threads)", &o.Jobs.Threads},
	}
}

// set parses s into the setting's value.
func (s setting) set(v string) error {
	switch p := s.ptr.(type) {
	case *string:
		*p = v
	case *int:
		n, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		*p = n
	case *int64:
		n, err := parseBytes(v)
		if err != nil {
			return err
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(strings.ReplaceAll(v, "_", ""), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		*p = f
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (such as 30s, 10m, 1h)", v)
		}
		*p = d
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p = b
	}
	return nil
}

// setTOML sets the value from a TOML value node: strings for every type
// (parsed as set does), integers for numbers and byte sizes, booleans.
func (s setting) setTOML(n *unstable.Node) error {
	switch n.Kind {
	case unstable.String:
		if _, ok := s.ptr.(*int); ok {
			return fmt.Errorf("want an integer, got a string")
		}
		if _, ok := s.ptr.(*bool); ok {
			return fmt.Errorf("want true or false, got a string")
		}
		if _, ok := s.ptr.(*float64); ok {
			return fmt.Errorf("want a number, got a string")
		}
		return s.set(string(n.Data))
	case unstable.Float:
		if _, ok := s.ptr.(*float64); ok {
			return s.set(string(n.Data))
		}
	case unstable.Integer:
		switch s.ptr.(type) {
		case *int, *int64, *float64:
			return s.set(string(n.Data))
		case *time.Duration:
			return fmt.Errorf("want a duration string such as \"30s\", got an integer")
		}
	case unstable.Bool:
		if _, ok := s.ptr.(*bool); ok {
			return s.set(string(n.Data))
		}
	}
	return fmt.Errorf("want %s, got %s", s.kind(), kindName(n.Kind))
}

func (s setting) kind() string {
	switch s.ptr.(type) {
	case *int:
		return "an integer"
	case *int64:
		return "a size (an integer or a string such as \"4GiB\")"
	case *float64:
		return "a number"
	case *time.Duration:
		return "a duration string"
	case *bool:
		return "true or false"
	}
	return "a string"
}

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "a table"
	case unstable.Float:
		return "a float"
	case unstable.Integer:
		return "an integer"
	case unstable.Bool:
		return "a boolean"
	case unstable.String:
		return "a string"
	}
	return "a date or time"
}

// parseBytes reads "1024", "512MiB", "4GiB", "1.5G" (powers of 1024).
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if v, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(t, "_", ""), 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%q is not a size (such as 4GiB, 512MiB or a number of bytes)", s)
	}
	return int64(f * float64(mult)), nil
}

// ConfigSource is where the options come from: command-line arguments and
// the environment. Load can be called again to reload (SIGHUP).
type ConfigSource struct {
	Args   []string
	Getenv func(string) string
	// Stderr receives flag usage; nil: io.Discard.
	Stderr io.Writer
}

// flagValue is a setting given on the command line, applied after the
// file and the environment.
type flagValue struct {
	key, value string
}

// collector records flags in order.
type collector struct {
	key  string
	list *[]flagValue
}

func (c collector) String() string     { return "" }
func (c collector) Set(v string) error { *c.list = append(*c.list, flagValue{c.key, v}); return nil }

// ErrHelp is returned by Load for -h and --help, after the usage.
var ErrHelp = flag.ErrHelp

// Load builds the options: defaults, then the config file, then EDGED_*
// variables, then flags. Every problem found is reported in one error
// wrapping ErrConfig.
func (c *ConfigSource) Load() (Options, error) {
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	o := defaultOptions(getenv)
	o.source = c

	var flags []flagValue
	var modelFlags []string
	configPath := ""
	fs := flag.NewFlagSet("edged", flag.ContinueOnError)
	stderr := c.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	fs.SetOutput(stderr)
	fs.StringVar(&configPath, "config", "", "config `file` (default "+DefaultConfigFile+" when present; also EDGED_CONFIG)")
	for _, s := range o.settings() {
		fs.Var(collector{s.key, &flags}, s.key, s.doc+" (also "+s.env()+")")
	}
	for alias, key := range map[string]string{"socket": "socket.path", "state-dir": "state.dir", "nats-url": "nats.url", "nats-listen": "nats.listen", "backend": "engine.backend"} {
		fs.Var(collector{key, &flags}, alias, "same as --"+key)
	}
	fs.Func("model", "register and serve a model: `NAME=PATH` (repeatable; also EDGED_MODEL, comma-separated)", func(v string) error {
		modelFlags = append(modelFlags, v)
		return nil
	})
	if err := fs.Parse(c.Args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, ErrHelp
		}
		return o, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", ErrConfig, fs.Arg(0))
	}

	var errs []string
	explicit := configPath != ""
	if !explicit {
		configPath = getenv("EDGED_CONFIG")
		explicit = configPath != ""
	}
	if !explicit {
		configPath = DefaultConfigFile
	}
	data, err := os.ReadFile(configPath)
	switch {
	case err == nil:
		errs = append(errs, o.applyTOML(configPath, data)...)
	case explicit || !errors.Is(err, iofs.ErrNotExist):
		errs = append(errs, fmt.Sprintf("config file: %v", err))
	}
	byKey := map[string]setting{}
	for _, s := range o.settings() {
		byKey[s.key] = s
		if v := getenv(s.env()); v != "" {
			if err := s.set(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", s.env(), err))
			}
		}
	}
	if v := getenv("EDGED_SOCKET"); v != "" && getenv("EDGED_SOCKET_PATH") == "" {
		o.Socket = v
	}
	for _, f := range flags {
		if err := byKey[f.key].set(f.value); err != nil {
			errs = append(errs, fmt.Sprintf("--%s: %v", f.key, err))
		}
	}
	var refs []string
	if v := getenv("EDGED_MODEL"); v != "" {
		for _, r := range strings.Split(v, ",") {
			refs = append(refs, "EDGED_MODEL\x00"+r)
		}
	}
	for _, r := range modelFlags {
		refs = append(refs, "--model\x00"+r)
	}
	for _, r := range refs {
		where, ref, _ := strings.Cut(r, "\x00")
		name, path, ok := strings.Cut(ref, "=")
		if !ok || name == "" || path == "" {
			errs = append(errs, fmt.Sprintf("%s %q: want NAME=PATH", where, ref))
			continue
		}
		o.addSpec(ModelSpec{Name: name, Path: path})
	}
	errs = append(errs, o.validate()...)
	if len(errs) > 0 {
		return o, fmt.Errorf("%w:\n  %s", ErrConfig, strings.Join(errs, "\n  "))
	}
	return o, nil
}

// addSpec registers spec, replacing an earlier one of the same name.
func (o *Options) addSpec(spec ModelSpec) {
	for i := range o.Specs {
		if o.Specs[i].Name == spec.Name {
			o.Specs[i] = spec
			return
		}
	}
	o.Specs = append(o.Specs, spec)
}

// validate lists the problems of o.
func (o *Options) validate() []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if o.Node == "" || strings.ContainsAny(o.Node, ".*> \t\r\n") {
		bad("node %q: want a non-empty name without dots, spaces, * or >", o.Node)
	}
	if protocol.NodeReserved(o.Node) {
		bad("node %q: reserved (edged.%s.… is the edit stream's); choose another name", o.Node, o.Node)
	}
	if o.Socket == "" || len(o.Socket) > 100 {
		bad("socket.path %q: want a path of 1 to 100 bytes", o.Socket)
	}
	if o.StateDir == "" {
		bad("state.dir is empty")
	}
	if o.Engine.KVCache != "f16" && o.Engine.KVCache != "f32" {
		bad("engine.kv_cache %q: want f16 or f32", o.Engine.KVCache)
	}
	if !slices.Contains(backend.Names, o.Engine.Backend) {
		bad("engine.backend %q: want one of %s", o.Engine.Backend, strings.Join(backend.Names, ", "))
	}
	for _, c := range []struct {
		name  string
		v, lo int
	}{
		{"engine.threads", o.Engine.Threads, 0}, {"engine.context", o.Engine.Context, 0}, {"engine.gpu_layers", o.Engine.GPULayers, -1},
		{"engine.batch_size", o.Engine.BatchSize, 1}, {"scheduler.max_queue", o.Scheduler.MaxQueue, 1},
		{"scheduler.max_active", o.Scheduler.MaxActive, 1}, {"scheduler.prefill_chunk", o.Scheduler.PrefillChunk, 1},
		{"scheduler.max_tokens", o.Scheduler.MaxTokens, 0},
		{"adapters.keep", o.Adapters.Keep, 1}, {"adapters.cache", o.Adapters.Cache, 1},
		{"jobs.checkpoint_every", o.Jobs.CheckpointEvery, 1}, {"jobs.max_queued", o.Jobs.MaxQueued, 1}, {"jobs.threads", o.Jobs.Threads, 0},
		{"edits.layer", o.EditJobs.Layer, -1}, {"edits.rank", o.EditJobs.Rank, 0}, {"edits.steps", o.EditJobs.Steps, 1},
	} {
		if c.v < c.lo {
			bad("%s %d: want at least %d", c.name, c.v, c.lo)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"state.lock_timeout", o.LockTimeout}, {"scheduler.request_timeout", o.Scheduler.RequestTimeout},
		{"scheduler.drain_timeout", o.Scheduler.DrainTimeout}, {"scheduler.retry_after", o.Scheduler.RetryAfter},
		{"models.idle_unload", o.Models.IdleUnload}, {"nats.metrics_interval", o.NATS.MetricsInterval},
		{"jobs.progress_interval", o.Jobs.ProgressInterval}, {"edits.train_delay", o.EditJobs.Delay},
	} {
		if d.v < 0 {
			bad("%s %v: must not be negative", d.name, d.v)
		}
	}
	errs = append(errs, o.NATS.validate()...)
	if !(o.Jobs.Share > 0 && o.Jobs.Share <= 1) {
		bad("jobs.share %v: want a share in (0, 1]", o.Jobs.Share)
	}
	if !slices.Contains(protocol.EditOptimizers, o.EditJobs.Optimizer) {
		bad("edits.optimizer %q: want one of %s", o.EditJobs.Optimizer, strings.Join(protocol.EditOptimizers, ", "))
	}
	if !(o.EditJobs.LR >= 0) || !(o.EditJobs.StopLoss > 0) {
		bad("edits.lr %v, edits.stop_loss %v: want ≥ 0 and > 0", o.EditJobs.LR, o.EditJobs.StopLoss)
	}
	if o.Jobs.CheckpointInterval <= 0 {
		bad("jobs.checkpoint_interval must be positive")
	}
	if o.Scheduler.RequestTimeout == 0 {
		bad("scheduler.request_timeout must be positive")
	}
	for _, m := range o.Specs {
		if err := protocol.ValidateName(m.Name); err != nil {
			bad("model %q: %v", m.Name, protocol.AsError(err).Message)
		}
		if m.Path == "" {
			bad("model %q: path is empty", m.Name)
		}
		if err := m.Defaults.Validate(); err != nil {
			bad("model %q: %v", m.Name, protocol.AsError(err).Message)
		}
		if err := validSparsity(m.Sparsity); err != nil {
			bad("model %q: default %v", m.Name, protocol.AsError(err).Message)
		}
		if m.Context < 0 || m.MaxTokens < 0 {
			bad("model %q: context and max_tokens must not be negative", m.Name)
		}
	}
	return errs
}

// validate lists the problems of the JetStream and edit settings. Zero
// would mean the server's own default for each, which is not what the
// example file documents, so they must be positive.
func (o *NATSOptions) validate() []string {
	var errs []string
	for _, c := range []struct {
		name string
		v    int64
		used bool
	}{
		{"nats.jetstream_max_memory", o.JetStreamMaxMemory, o.Enabled}, {"nats.jetstream_max_store", o.JetStreamMaxStore, o.Enabled},
		{"edits.duplicate_window", int64(o.Edits.DuplicateWindow), o.Edits.Enabled}, {"edits.ack_wait", int64(o.Edits.AckWait), o.Edits.Enabled},
	} {
		if c.v <= 0 && c.used {
			errs = append(errs, fmt.Sprintf("%s must be positive", c.name))
		}
	}
	return errs
}

// applyTOML applies a config file. It returns every problem found, each
// prefixed with file:line.
func (o *Options) applyTOML(file string, data []byte) []string {
	var errs []string
	var p unstable.Parser
	p.Reset(data)
	line := func(n *unstable.Node) int {
		if n == nil || n.Raw.Length == 0 && n.Raw.Offset == 0 {
			return 0
		}
		return p.Shape(n.Raw).Start.Line
	}
	at := func(l int, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("%s:%d: %s", file, l, fmt.Sprintf(format, args...)))
	}
	byKey := map[string]setting{}
	for _, s := range o.settings() {
		byKey[s.key] = s
	}
	seen := map[string]int{}
	var table []string
	var spec *ModelSpec
	var specs []*ModelSpec
	specLine := map[*ModelSpec]int{}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			table, spec = keyOf(e.Key()), nil
			if strings.Join(table, ".") == "model" {
				at(line(e.Child()), "[model] must be an array of tables: write [[model]]")
			}
		case unstable.ArrayTable:
			table, spec = keyOf(e.Key()), nil
			if strings.Join(table, ".") != "model" {
				at(line(e.Child()), "unknown array of tables [[%s]] (only [[model]])", strings.Join(table, "."))
				continue
			}
			spec = &ModelSpec{}
			specs = append(specs, spec)
			specLine[spec] = line(e.Child())
		case unstable.KeyValue:
			k := keyOf(e.Key())
			kit := e.Key()
			kit.Next()
			l := line(kit.Node())
			v := e.Value()
			if spec != nil {
				if err := spec.setTOML(strings.Join(k, "."), v); err != nil {
					at(l, "model.%s: %v", strings.Join(k, "."), err)
				}
				continue
			}
			full := strings.Join(append(append([]string{}, table...), k...), ".")
			s, ok := byKey[full]
			if !ok {
				at(l, "unknown key %q", full)
				continue
			}
			if first, dup := seen[full]; dup {
				at(l, "%s is set twice (first on line %d)", full, first)
				continue
			}
			seen[full] = l
			if err := s.setTOML(v); err != nil {
				at(l, "%s: %v", full, err)
			}
		}
	}
	if err := p.Error(); err != nil {
		l := 0
		var pe *unstable.ParserError
		if errors.As(err, &pe) && len(pe.Highlight) > 0 {
			l = lineAt(data, pe.Highlight)
		}
		at(l, "syntax error: %v", err)
	}
	for _, s := range specs {
		if s.Name == "" || s.Path == "" {
			at(specLine[s], "[[model]] needs name and path")
			continue
		}
		o.addSpec(*s)
	}
	return errs
}

// lineAt finds the line of sub, a slice of data.
func lineAt(data, sub []byte) int {
	for off := 0; off+len(sub) <= len(data); off++ {
		if &data[off] == &sub[0] {
			return bytes.Count(data[:off], []byte("\n")) + 1
		}
	}
	return 0
}

func keyOf(it unstable.Iterator) []string {
	var k []string
	for it.Next() {
		k = append(k, string(it.Node().Data))
	}
	return k
}

// setTOML sets one key of a [[model]] table.
func (m *ModelSpec) setTOML(key string, v *unstable.Node) error {
	str := func(p *string) error {
		var err error
		*p, err = tomlString(v)
		return err
	}
	integer := func(p *int) error {
		n, err := tomlInt(v)
		*p = n
		return err
	}
	number := func(p **float64) error {
		f, err := tomlNumber(v)
		*p = &f
		return err
	}
	optInt := func(p **int) error {
		var n int
		err := integer(&n)
		*p = &n
		return err
	}
	d := &m.Defaults
	switch key {
	case "name":
		return str(&m.Name)
	case "path":
		return str(&m.Path)
	case "digest":
		return str(&m.Digest)
	case "context":
		return integer(&m.Context)
	case "max_tokens":
		return integer(&m.MaxTokens)
	case "temperature":
		return number(&d.Temperature)
	case "top_p":
		return number(&d.TopP)
	case "min_p":
		return number(&d.MinP)
	case "repeat_penalty":
		return number(&d.RepeatPenalty)
	case "presence_penalty":
		return number(&d.PresencePenalty)
	case "frequency_penalty":
		return number(&d.FrequencyPenalty)
	case "top_k":
		return optInt(&d.TopK)
	case "repeat_last_n":
		return optInt(&d.RepeatLastN)
	case "sparsity":
		return m.setSparsityTable(v)
	}
	if k, ok := strings.CutPrefix(key, "sparsity."); ok {
		return m.setSparsity(k, v)
	}
	return fmt.Errorf("unknown key")
}

// setSparsityTable sets the sparsity default from an inline table:
// sparsity = {method = "zerotprune", keep = 0.5}.
func (m *ModelSpec) setSparsityTable(v *unstable.Node) error {
	if v.Kind != unstable.InlineTable {
		return fmt.Errorf("want a table such as {method = \"zerotprune\", keep = 0.5}, got %s", kindName(v.Kind))
	}
	for it := v.Children(); it.Next(); {
		kv := it.Node()
		if kv.Kind != unstable.KeyValue {
			return fmt.Errorf("want key = value pairs in the table")
		}
		k := strings.Join(keyOf(kv.Key()), ".")
		if err := m.setSparsity(k, kv.Value()); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

// setSparsity sets one key of the sparsity default.
func (m *ModelSpec) setSparsity(key string, v *unstable.Node) error {
	if m.Sparsity == nil {
		m.Sparsity = &protocol.Sparsity{}
	}
	s := m.Sparsity
	switch key {
	case "method":
		var err error
		s.Method, err = tomlString(v)
		return err
	case "keep":
		f, err := tomlNumber(v)
		if err == nil {
			s.Keep = &f
		}
		return err
	case "window":
		n, err := tomlInt(v)
		if err == nil {
			s.Window = &n
		}
		return err
	case "similarity":
		f, err := tomlNumber(v)
		if err == nil {
			s.Similarity = &f
		}
		return err
	case "block":
		n, err := tomlInt(v)
		if err == nil {
			s.Block = &n
		}
		return err
	case "layers":
		if v.Kind != unstable.Array {
			return fmt.Errorf("want an array of layers such as [1, 3], got %s", kindName(v.Kind))
		}
		s.Layers = []int{}
		for it := v.Children(); it.Next(); {
			n, err := tomlInt(it.Node())
			if err != nil {
				return fmt.Errorf("layers: %w", err)
			}
			s.Layers = append(s.Layers, n)
		}
		return nil
	}
	return fmt.Errorf("unknown key sparsity.%s (want method, keep, layers, window, similarity or block)", key)
}

// tomlString reads a string value.
func tomlString(v *unstable.Node) (string, error) {
	if v.Kind != unstable.String {
		return "", fmt.Errorf("want a string, got %s", kindName(v.Kind))
	}
	return string(v.Data), nil
}

// tomlInt reads an integer value that fits 32 bits.
func tomlInt(v *unstable.Node) (int, error) {
	if v.Kind != unstable.Integer {
		return 0, fmt.Errorf("want an integer, got %s", kindName(v.Kind))
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(string(v.Data), "_", ""), 0, 32)
	return int(n), err
}

// tomlNumber reads a float or an integer value.
func tomlNumber(v *unstable.Node) (float64, error) {
	if v.Kind != unstable.Float && v.Kind != unstable.Integer {
		return 0, fmt.Errorf("want a number, got %s", kindName(v.Kind))
	}
	return strconv.ParseFloat(strings.ReplaceAll(string(v.Data), "_", ""), 64)
}
