package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/edged/edged/accel"
	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/accel/cuda"
	"github.com/edged/edged/accel/metal"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// runBench times prompt processing and generation with llama-bench's
// definitions, so that the figures compare with llama-bench's on the same
// file: pp is one batch of p random tokens in an empty sequence, logits for
// the last row only; tg is n tokens decoded one Step at a time from an
// empty sequence, each fed a random token (as llama-bench does: speed does
// not depend on which token). Each test runs once to warm up (tg with one
// token), then r times; t/s is the mean over the repetitions of tokens /
// seconds, ± their sample standard deviation.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "--model M [-p 512] [-n 128] [-d DEPTH] [-t THREADS] [-r REPS] [--backend B] [--json]", stderr)
	path := fs.String("model", "", "GGUF model `file` (required)")
	fs.StringVar(path, "m", "", "shorthand for --model")
	p := fs.Int("p", 512, "prompt tokens processed in one batch (0: skip the pp test)")
	n := fs.Int("n", 128, "tokens generated one at a time (0: skip the tg test)")
	depth := fs.Int("d", 0, "tokens already in the context before each test, not timed (llama-bench's -d)")
	threads := fs.Int("t", 0, "CPU threads (0: one per core)")
	reps := fs.Int("r", 5, "repetitions of each test")
	kvType := fs.String("kv-type", "f16", "KV cache storage: f16 or f32")
	var bf backendFlags
	bf.register(fs)
	asJSON := fs.Bool("json", false, `print one JSON object {"pp", "pp_std", "tg", "tg_std", "model", "threads", "load_ms", ...}`)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *path == "":
		return usageError(fs, "--model is required")
	case *p < 0 || *n < 0 || *p == 0 && *n == 0:
		return usageError(fs, "-p and -n must not be negative, and one must be positive")
	case *depth < 0:
		return usageError(fs, "-d must not be negative")
	case *reps < 1:
		return usageError(fs, "-r must be at least 1")
	}
	cache, err := engine.ParseCacheType(*kvType)
	if err != nil {
		return usageError(fs, "%v", err)
	}

	start := time.Now()
	file, err := model.Open(*path)
	if err != nil {
		return err
	}
	defer file.Close()
	m, err := model.Load(file)
	if err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	e, err := bf.newEngine(m, *threads, engine.Options{Context: max(*depth+max(*p, *n), 1), BatchSize: max(*p, 1), Cache: cache})
	if err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	defer e.Close()
	backends := e.Backends()
	be := backends[len(backends)-1] // the GPU when there is one
	loadTime := time.Since(start)

	b := &bencher{ctx: ctx, e: e, rng: rand.New(rand.NewPCG(1, 2)), nVocab: m.Config.NVocab, first: firstToken(file, m.Config.NVocab)}
	b.logits = make([]float32, b.nVocab)
	res := benchResult{
		Model: *path, Desc: modelDesc(file, m), Backend: label(be), Device: be.Name(), Kernels: quant.KernelTier(), Threads: threadsOf(be),
		P: *p, N: *n, Depth: *depth, Reps: *reps, LoadMS: float64(loadTime.Microseconds()) / 1000,
	}
	for i := range file.Tensors {
		res.Size += file.Tensors[i].Size
		res.Params += file.Tensors[i].Elements()
	}
	var rows []benchRow
	if *p > 0 {
		tps, err := b.repeat(*reps, *p, func() (time.Duration, error) { return b.prompt(*depth, *p) }, func() (time.Duration, error) { return b.prompt(*depth, *p) })
		if err != nil {
			return err
		}
		mean, sd := meanStd(tps)
		res.PP, res.PPStd = &mean, &sd
		rows = append(rows, benchRow{testName("pp", *p, *depth), mean, sd})
	}
	if *n > 0 {
		tps, err := b.repeat(*reps, *n, func() (time.Duration, error) { return b.generate(*depth, 1) }, func() (time.Duration, error) { return b.generate(*depth, *n) })
		if err != nil {
			return err
		}
		mean, sd := meanStd(tps)
		res.TG, res.TGStd = &mean, &sd
		rows = append(rows, benchRow{testName("tg", *n, *depth), mean, sd})
	}
	if len(backends) == 1 { // a bound for the whole model on one device
		if err := res.bound(be); err != nil {
			return err
		}
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	return printBench(stdout, &res, rows)
}

// bound measures a GPU's copy bandwidth and how close generation came to
// the limit it sets: each generated token reads every weight once, so
// tg × model bytes cannot exceed it.
func (r *benchResult) bound(be accel.Backend) error {
	m, ok := be.(interface{ CopyBandwidth(n int) (float64, error) })
	if !ok {
		return nil
	}
	bw, err := m.CopyBandwidth(1 << 30)
	if err != nil {
		return fmt.Errorf("bandwidth: %w", err)
	}
	r.BandwidthGBs = bw / 1e9
	if r.TG != nil {
		r.BoundFraction = *r.TG * float64(r.Size) / bw
	}
	return nil
}

// benchResult is the --json output.
type benchResult struct {
	Model   string   `json:"model"`
	Desc    string   `json:"desc"`
	Size    int64    `json:"size"`
	Params  int64    `json:"params"`
	Backend string   `json:"backend"`
	Device  string   `json:"device"`
	Kernels string   `json:"kernels"` // the CPU kernels' tier (quant.KernelTier)
	Threads int      `json:"threads"`
	P       int      `json:"p"`
	Depth   int      `json:"depth,omitempty"`
	N       int      `json:"n"`
	Reps    int      `json:"reps"`
	LoadMS  float64  `json:"load_ms"`
	PP      *float64 `json:"pp,omitempty"`
	PPStd   *float64 `json:"pp_std,omitempty"`
	TG      *float64 `json:"tg,omitempty"`
	TGStd   *float64 `json:"tg_std,omitempty"`
	// A GPU's device-to-device copy bandwidth (bytes read + written) and
	// tg × size as a fraction of it.
	BandwidthGBs  float64 `json:"bandwidth_gbs,omitempty"`
	BoundFraction float64 `json:"bound_fraction,omitempty"`
}

type benchRow struct {
	test      string
	mean, std float64
}

// bencher runs the timed tests on one engine.
type bencher struct {
	ctx    context.Context
	e      *engine.Engine
	rng    *rand.Rand
	nVocab int
	first  int32 // BOS when the model adds it, else -1
	batch  []engine.Entry
	logits []float32
}

// token returns the i-th token of a test: BOS first when the model adds
// it, as llama-bench does, random otherwise.
func (b *bencher) token(i int) int32 {
	if i == 0 && b.first >= 0 {
		return b.first
	}
	return b.rng.Int32N(int32(b.nVocab))
}

// repeat runs warm once, then run reps times, and returns tokens per
// second of each run (run returns the time of its timed part).
func (b *bencher) repeat(reps, tokens int, warm, run func() (time.Duration, error)) ([]float64, error) {
	if _, err := warm(); err != nil {
		return nil, err
	}
	tps := make([]float64, 0, reps)
	for range reps {
		if err := b.ctx.Err(); err != nil {
			return nil, err
		}
		d, err := run()
		if err != nil {
			return nil, err
		}
		tps = append(tps, float64(tokens)/d.Seconds())
	}
	return tps, nil
}

// testName is llama-bench's name of a test: pp512, or tg128 @ d4096.
func testName(kind string, tokens, depth int) string {
	if depth > 0 {
		return fmt.Sprintf("%s%d @ d%d", kind, tokens, depth)
	}
	return fmt.Sprintf("%s%d", kind, tokens)
}

// fresh returns a new sequence holding depth random tokens (one Step, not
// timed).
func (b *bencher) fresh(depth int) (*engine.Sequence, error) {
	seq, err := b.e.NewSequence(nil)
	if err != nil {
		return nil, err
	}
	if depth == 0 {
		return seq, nil
	}
	b.batch = b.batch[:0]
	for i := range depth {
		b.batch = append(b.batch, engine.Entry{Seq: seq, Token: b.token(i), Pos: int32(i), Logits: i == depth-1})
	}
	if err := b.e.Step(b.batch, b.logits); err != nil {
		seq.Free()
		return nil, err
	}
	return seq, nil
}

// prompt processes p tokens in one Step of a fresh sequence after depth
// tokens. Only the Step is timed, as llama-bench clears its cache outside
// the timed region.
func (b *bencher) prompt(depth, p int) (time.Duration, error) {
	seq, err := b.fresh(depth)
	if err != nil {
		return 0, err
	}
	defer seq.Free()
	b.batch = b.batch[:0]
	for i := depth; i < depth+p; i++ {
		b.batch = append(b.batch, engine.Entry{Seq: seq, Token: b.token(i), Pos: int32(i), Logits: i == depth+p-1})
	}
	start := time.Now()
	err = b.e.Step(b.batch, b.logits)
	return time.Since(start), err
}

// generate decodes n tokens one Step at a time in a fresh sequence after
// depth tokens.
func (b *bencher) generate(depth, n int) (time.Duration, error) {
	seq, err := b.fresh(depth)
	if err != nil {
		return 0, err
	}
	defer seq.Free()
	start := time.Now()
	for i := depth; i < depth+n; i++ {
		entry := [1]engine.Entry{{Seq: seq, Token: b.token(i), Pos: int32(i), Logits: true}}
		if err := b.e.Step(entry[:], b.logits); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// firstToken is the BOS id when the file says it is added (SPM adds it
// unless told otherwise), else -1.
func firstToken(f *model.File, nVocab int) int32 {
	family, _ := f.StringOr("tokenizer.ggml.model", "")
	add, err := f.BoolOr("tokenizer.ggml.add_bos_token", family == "llama")
	if err != nil || !add {
		return -1
	}
	bos, err := f.Int("tokenizer.ggml.bos_token_id")
	if err != nil || bos < 0 || bos >= int64(nVocab) {
		return -1
	}
	return int32(bos)
}

// modelDesc names the model as llama-bench's model column does: the
// architecture, a size label and the file type.
func modelDesc(f *model.File, m *model.Model) string {
	ftype := "?"
	if v, err := f.Int("general.file_type"); err == nil {
		ftype = model.FType(v).String()
	}
	var params int64
	for i := range f.Tensors {
		params += f.Tensors[i].Elements()
	}
	label := fmt.Sprintf("%.0fM", float64(params)/1e6)
	if params >= 1e9 {
		label = fmt.Sprintf("%.1fB", float64(params)/1e9)
	}
	return fmt.Sprintf("%s %s %s", m.Config.Arch, label, ftype)
}

// meanStd returns the mean and the sample standard deviation.
func meanStd(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	if len(v) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(v)-1))
}

// printBench prints llama-bench's markdown table, then the load time.
func printBench(w io.Writer, r *benchResult, rows []benchRow) error {
	ew := &errWriter{w: w}
	ew.printf("| %-30s | %10s | %10s | %-10s | %7s | %15s | %20s |\n", "model", "size", "params", "backend", "threads", "test", "t/s")
	ew.printf("| %s | %s | %s | %s | %s | %s | %s |\n", dashes(30, false), dashes(10, true), dashes(10, true),
		dashes(10, false), dashes(7, true), dashes(15, true), dashes(20, true))
	for _, row := range rows {
		ts := fmt.Sprintf("%.2f ± %.2f", row.mean, row.std)
		ew.printf("| %-30s | %10s | %10s | %-10s | %7d | %15s | %20s |\n", r.Desc, formatSize(r.Size), formatParams(r.Params),
			r.Backend, r.Threads, row.test, ts)
	}
	ew.printf("\nload: %.0f ms; CPU kernels: %s\n", r.LoadMS, r.Kernels)
	if r.BandwidthGBs > 0 {
		ew.printf("device copy bandwidth: %.0f GB/s; tg reads the weights at %.2f of it\n", r.BandwidthGBs, r.BoundFraction)
	}
	return ew.err
}

// dashes is a markdown table rule of the given width, right-aligned when
// right is set.
func dashes(n int, right bool) string {
	if right {
		return strings.Repeat("-", n-1) + ":"
	}
	return strings.Repeat("-", n)
}

// label is the backend's column in the table, as llama-bench names them.
func label(be accel.Backend) string {
	switch be.(type) {
	case *cuda.Backend:
		return "CUDA"
	case *metal.Backend:
		return "Metal"
	}
	return "CPU"
}

// threadsOf is the CPU backend's thread count, 0 for a GPU.
func threadsOf(be accel.Backend) int {
	if c, ok := be.(*cpu.Backend); ok {
		return c.Threads()
	}
	return 0
}
