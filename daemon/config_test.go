package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func load(t *testing.T, file string, env map[string]string, args ...string) (Options, error) {
	t.Helper()
	if file != "" {
		p := filepath.Join(t.TempDir(), "edged.toml")
		if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", p}, args...)
	}
	src := &ConfigSource{Args: args, Getenv: func(k string) string { return env[k] }}
	return src.Load()
}

func TestConfigDefaultsNeedNoFile(t *testing.T) {
	o, err := load(t, "", map[string]string{"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Socket != "/run/user/1/edged/edged.sock" || o.StateDir != "/home/u/.local/state/edged" || o.Scheduler.MaxQueue != 64 {
		t.Fatalf("defaults: %+v", o)
	}
	o, err = load(t, "", map[string]string{"RUNTIME_DIRECTORY": "/run/edged", "STATE_DIRECTORY": "/var/lib/edged"})
	if err != nil || o.Socket != "/run/edged/edged.sock" || o.StateDir != "/var/lib/edged" {
		t.Fatalf("systemd defaults: %v %s %s", err, o.Socket, o.StateDir)
	}
}

func TestConfigPrecedence(t *testing.T) {
	file := `
node = "from-file"
[scheduler]
max_queue = 5
max_active = 3
request_timeout = "1m"
[models]
memory_budget = "2GiB"

[[model]]
name = "a"
path = "/m/a.gguf"
temperature = 0.5
top_k = 7
`
	env := map[string]string{"EDGED_SCHEDULER_MAX_QUEUE": "6", "EDGED_NODE": "from-env", "EDGED_MODEL": "b=/m/b.gguf"}
	o, err := load(t, file, env, "--scheduler.max_active=4", "--node", "from-flag", "--model", "a=/m/a2.gguf", "--socket", "/tmp/x.sock")
	if err != nil {
		t.Fatal(err)
	}
	if o.Node != "from-flag" || o.Scheduler.MaxQueue != 6 || o.Scheduler.MaxActive != 4 || o.Scheduler.RequestTimeout != time.Minute || o.Models.MemoryBudget != 2<<30 || o.Socket != "/tmp/x.sock" {
		t.Fatalf("options %+v", o)
	}
	if len(o.Specs) != 2 || o.Specs[0].Path != "/m/a2.gguf" || o.Specs[1].Name != "b" {
		t.Fatalf("specs %+v", o.Specs)
	}
}

func TestConfigErrorsListedWithLines(t *testing.T) {
	file := `node = "n"
[scheduler]
max_queue = "many"
bogus = 1
request_timeout = "soon"
[engine]
kv_cache = "q9"
[[model]]
name = "x"
`
	_, err := load(t, file, map[string]string{"EDGED_ENGINE_THREADS": "lots"}, "--scheduler.max_active=-1")
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"edged.toml:3: scheduler.max_queue", "edged.toml:4: unknown key \"scheduler.bogus\"", "edged.toml:5: scheduler.request_timeout",
		"edged.toml:8: [[model]] needs name and path", "EDGED_ENGINE_THREADS", "scheduler.max_active -1", "engine.kv_cache \"q9\"",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	_, err = load(t, "node = \n", nil)
	if err == nil || !strings.Contains(err.Error(), "edged.toml:1: syntax error") {
		t.Errorf("syntax error: %v", err)
	}
}

func TestConfigBackend(t *testing.T) {
	for _, c := range []struct {
		name string
		file string
		env  map[string]string
		args []string
		want string // engine.backend, or
		err  string // a part of the error
	}{
		{name: "default", want: "auto"},
		{name: "file", file: "[engine]\nbackend = \"cpu\"\n", want: "cpu"},
		{name: "env over file", file: "[engine]\nbackend = \"cpu\"\n", env: map[string]string{"EDGED_ENGINE_BACKEND": "cuda"}, want: "cuda"},
		{name: "flag over env", env: map[string]string{"EDGED_ENGINE_BACKEND": "cuda"}, args: []string{"--engine.backend=metal"}, want: "metal"},
		{name: "alias", args: []string{"--backend", "cpu"}, want: "cpu"},
		{name: "bad name", file: "[engine]\nbackend = \"tpu\"\n", err: `engine.backend "tpu": want one of auto, cpu, cuda, metal`},
		{name: "names are lower case", env: map[string]string{"EDGED_ENGINE_BACKEND": "CUDA"}, err: `engine.backend "CUDA"`},
		{name: "not a string", file: "[engine]\nbackend = 1\n", err: "edged.toml:2: engine.backend: want a string"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := load(t, c.file, c.env, c.args...)
			if c.err != "" {
				if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want an error with %q", err, c.err)
				}
				return
			}
			if err != nil || o.Engine.Backend != c.want {
				t.Fatalf("got %q, %v; want %q", o.Engine.Backend, err, c.want)
			}
		})
	}
}

// The kernel cache defaults to the state directory, which the systemd
// service can write; a configured one is kept.
func TestConfigKernelCache(t *testing.T) {
	file := "[state]\ndir = \"/srv/edged\"\n[engine]\ngpu_lib_dir = \"/opt/cuda/lib64\"\n"
	o, err := load(t, file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if eo := o.engineOptions(); eo.KernelCache != "/srv/edged/kernels" || eo.GPULibDir != "/opt/cuda/lib64" {
		t.Fatalf("engine options %+v", eo)
	}
	o, err = load(t, file, map[string]string{"EDGED_ENGINE_KERNEL_CACHE": "/var/cache/edged/kernels"})
	if err != nil || o.engineOptions().KernelCache != "/var/cache/edged/kernels" {
		t.Fatalf("kernel cache %q, %v", o.engineOptions().KernelCache, err)
	}
}

// gpu_layers defaults to every layer; below -1 is an error.
func TestConfigGPULayers(t *testing.T) {
	o, err := load(t, "", nil)
	if err != nil || o.Engine.GPULayers != -1 {
		t.Fatalf("default %d, %v", o.Engine.GPULayers, err)
	}
	o, err = load(t, "[engine]\ngpu_layers = 12\n", nil)
	if err != nil || o.Engine.GPULayers != 12 {
		t.Fatalf("got %d, %v", o.Engine.GPULayers, err)
	}
	if _, err := load(t, "", map[string]string{"EDGED_ENGINE_GPU_LAYERS": "-2"}); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "engine.gpu_layers -2") {
		t.Fatalf("got %v", err)
	}
}

func TestConfigExplicitFileMustExist(t *testing.T) {
	if _, err := load(t, "", nil, "--config", "/nonexistent/edged.toml"); !errors.Is(err, ErrConfig) {
		t.Fatalf("got %v", err)
	}
}

// The example file parses, changes no default, and documents every key.
func TestExampleConfig(t *testing.T) {
	o, err := load(t, ExampleConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	def := defaultOptions(func(string) string { return "" })
	for i, s := range o.settings() {
		if got, want := s.ptr, def.settings()[i].ptr; !sameValue(got, want) {
			t.Errorf("example sets %s to a value other than the default", s.key)
		}
		section, key, ok := strings.Cut(s.key, ".")
		if !ok {
			key, section = section, ""
		}
		if section != "" && !strings.Contains(ExampleConfig, "["+section+"]") || !strings.Contains(ExampleConfig, key+" =") {
			t.Errorf("example config does not document %s", s.key)
		}
	}
}

func sameValue(a, b any) bool {
	switch a := a.(type) {
	case *string:
		return *a == *b.(*string)
	case *int:
		return *a == *b.(*int)
	case *int64:
		return *a == *b.(*int64)
	case *float64:
		return *a == *b.(*float64)
	case *time.Duration:
		return *a == *b.(*time.Duration)
	case *bool:
		return *a == *b.(*bool)
	}
	return false
}

func TestParseBytes(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "1024": 1024, "4GiB": 4 << 30, "512MiB": 512 << 20, "1.5G": 3 << 29} {
		if got, err := parseBytes(s); err != nil || got != want {
			t.Errorf("%s: %d %v", s, got, err)
		}
	}
	if _, err := parseBytes("lots"); err == nil {
		t.Error("lots parsed")
	}
}

// The edit settings: defaults, the file, a node name that would collide
// with the edit stream's subjects, and values that must be positive.
func TestConfigEdits(t *testing.T) {
	for _, c := range []struct {
		name string
		file string
		env  map[string]string
		want func(o Options) bool
		err  string // a part of the error, or "" for none
	}{
		{name: "defaults", want: func(o Options) bool {
			n := o.NATS
			return n.Edits.Enabled && n.Edits.DuplicateWindow == 24*time.Hour && n.Edits.AckWait == 30*time.Second &&
				n.JetStreamDir == "" && n.JetStreamMaxMemory == 64<<20 && n.JetStreamMaxStore == 1<<30
		}},
		{name: "file", file: "[nats]\njetstream_dir = \"/srv/js\"\njetstream_max_store = \"2GiB\"\n[edits]\nack_wait = \"1m\"\nduplicate_window = \"1h\"\n",
			want: func(o Options) bool {
				return o.NATS.JetStreamDir == "/srv/js" && o.NATS.JetStreamMaxStore == 2<<30 && o.NATS.Edits.AckWait == time.Minute && o.NATS.Edits.DuplicateWindow == time.Hour
			}},
		{name: "off", env: map[string]string{"EDGED_EDITS_ENABLED": "false", "EDGED_EDITS_ACK_WAIT": "0s"}, want: func(o Options) bool { return !o.NATS.Edits.Enabled }},
		{name: "reserved node", env: map[string]string{"EDGED_NODE": "edits"}, err: `node "edits": reserved`},
		{name: "zero ack wait", file: "[edits]\nack_wait = \"0s\"\n", err: "edits.ack_wait must be positive"},
		{name: "zero store", env: map[string]string{"EDGED_NATS_JETSTREAM_MAX_STORE": "0"}, err: "nats.jetstream_max_store must be positive"},
		{name: "unknown key", file: "[edits]\nretries = 3\n", err: `edged.toml:2: unknown key "edits.retries"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := load(t, c.file, c.env)
			if c.err != "" {
				require.ErrorIs(t, err, ErrConfig)
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			assert.True(t, c.want(o), "%+v", o.NATS)
		})
	}
}

// The JetStream store defaults to the state directory when the front end
// starts, as the kernel cache does.
func TestJetStreamDirDefault(t *testing.T) {
	o := editsOptions(t, t.TempDir())
	ed := startEdits(t, o, nil)
	assert.Equal(t, filepath.Join(o.StateDir, "jetstream"), ed.nats.opts.JetStreamDir)
	assert.DirExists(t, filepath.Join(o.StateDir, "jetstream"))
}

// The adapter settings: defaults, the file, and values below one.
func TestConfigAdapters(t *testing.T) {
	for _, c := range []struct {
		name string
		file string
		env  map[string]string
		want AdapterOptions
		err  string // a part of the error, or "" for none
	}{
		{name: "defaults", want: AdapterOptions{Keep: 5, Cache: 4}},
		{name: "file", file: "[adapters]\nkeep = 2\ncache = 1\n", want: AdapterOptions{Keep: 2, Cache: 1}},
		{name: "variable", env: map[string]string{"EDGED_ADAPTERS_KEEP": "9"}, want: AdapterOptions{Keep: 9, Cache: 4}},
		{name: "keep none", file: "[adapters]\nkeep = 0\n", err: "adapters.keep 0: want at least 1"},
		{name: "no cache", env: map[string]string{"EDGED_ADAPTERS_CACHE": "0"}, err: "adapters.cache 0: want at least 1"},
		{name: "a string", file: "[adapters]\nkeep = \"5\"\n", err: "edged.toml:2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := load(t, c.file, c.env)
			if c.err != "" {
				require.ErrorIs(t, err, ErrConfig)
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, o.Adapters)
		})
	}
}

func TestConfigJobs(t *testing.T) {
	for _, c := range []struct {
		name  string
		file  string
		env   map[string]string
		share float64
		bad   string // "" when it loads
	}{
		{"default", "", nil, 0.5, ""},
		{"float", "[jobs]\nshare = 0.25\n", nil, 0.25, ""},
		{"integer", "[jobs]\nshare = 1\n", nil, 1, ""},
		{"environment", "", map[string]string{"EDGED_JOBS_SHARE": "0.75"}, 0.75, ""},
		{"string", "[jobs]\nshare = \"half\"\n", nil, 0, "edged.toml:2: jobs.share: want a number, got a string"},
		{"zero", "[jobs]\nshare = 0.0\n", nil, 0, "jobs.share 0: want a share in (0, 1]"},
		{"above one", "", map[string]string{"EDGED_JOBS_SHARE": "1.5"}, 0, "jobs.share 1.5"},
		{"not a number", "", map[string]string{"EDGED_JOBS_SHARE": "x"}, 0, `EDGED_JOBS_SHARE: "x" is not a number`},
		{"checkpoints", "[jobs]\ncheckpoint_every = 0\ncheckpoint_interval = \"0s\"\n", nil, 0, "jobs.checkpoint_every 0: want at least 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := load(t, c.file, c.env)
			if c.bad != "" {
				require.Error(t, err)
				assert.ErrorContains(t, err, c.bad)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.share, o.Jobs.Share)
		})
	}
	_, err := load(t, "[jobs]\ncheckpoint_interval = \"0s\"\n", nil)
	assert.ErrorContains(t, err, "jobs.checkpoint_interval must be positive")
}
