package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edged/edged/accel/cpu"
	"github.com/edged/edged/adapt"
	"github.com/edged/edged/engine"
	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/model"
	"github.com/edged/edged/protocol"
)

func aidreams(t testing.TB) string {
	t.Helper()
	return fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
}

// testOptions are options for a daemon in t's temporary directory serving
// the aidreams fixture as "aid" on the CPU.
func testOptions(t testing.TB) Options {
	t.Helper()
	dir := t.TempDir()
	o := defaultOptions(func(string) string { return "" })
	o.Node = "test"
	o.Socket = filepath.Join(dir, "s.sock")
	o.StateDir = filepath.Join(dir, "state")
	o.NATS.Enabled = false
	o.EditJobs.Auto = false // edit tests that train turn it on
	o.Engine.Threads = 1
	// The CPU on every machine: tests compare with CPU references (auto
	// has its own test, TestBackendAutoFallsBack).
	o.Engine.Backend = "cpu"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Specs = []ModelSpec{{Name: "aid", Path: aidreams(t)}}
	return o
}

// startDaemon starts a daemon and shuts it down when the test ends.
func startDaemon(t testing.TB, o Options) *Daemon {
	t.Helper()
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		d.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return d
}

func ptr[T any](v T) *T { return &v }

func greedy(model, prompt string, n int) *protocol.CompletionRequest {
	return &protocol.CompletionRequest{Model: model, Prompt: protocol.Prompt{Text: prompt}, MaxTokens: ptr(n), Sampling: protocol.Sampling{Temperature: ptr(0.0)}}
}

// reference runs engine.Generate as `edgectl run --temp 0` does.
func reference(t *testing.T, path, prompt string, n int) string {
	t.Helper()
	return referenceWith(t, path, "", prompt, n)
}

// referenceWith is reference with the adapter file adapterPath ("": none)
// attached as `edgectl run --adapter` attaches it.
func referenceWith(t *testing.T, path, adapterPath, prompt string, n int) string {
	t.Helper()
	f, err := model.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := model.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := model.NewTokenizer(f)
	if err != nil {
		t.Fatal(err)
	}
	var hooks engine.Hooks
	var prefix engine.PrefixProvider
	set := adapt.NewSet()
	var lora *adapt.LoRA
	if adapterPath != "" {
		a, err := adapt.Load(adapterPath, m)
		if err != nil {
			t.Fatal(err)
		}
		switch a := a.(type) {
		case *adapt.LoRA:
			hooks.Delta, lora = set, a
		case *adapt.Prefix:
			prefix = a
		}
	}
	e, err := engine.New(m, cpu.New(1), engine.Options{Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := e.NewSequence(prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer seq.Free()
	if lora != nil {
		set.Use(seq, adapt.Applied{LoRA: lora, Scale: 1})
	}
	var b strings.Builder
	_, err = e.Generate(context.Background(), seq, tok.Encode(prompt, true, true), tok, engine.GenerateOptions{MaxTokens: n, Sampler: engine.SamplerConfig{TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1}}, func(s string) error {
		b.WriteString(s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestGreedyMatchesGenerate(t *testing.T) {
	o := testOptions(t)
	d := startDaemon(t, o)
	prompts := []string{"Once upon a time", "The robot", "In the garden there was"}
	for _, p := range prompts {
		want := reference(t, o.Specs[0].Path, p, 40)
		var streamed strings.Builder
		res, err := d.Service().Complete(context.Background(), greedy("aid", p, 40), func(c *protocol.CompletionChunk) error {
			streamed.WriteString(c.Choices[0].Text)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Choices[0].Text; got != want || streamed.String() != want {
			t.Errorf("%q: daemon %q (streamed %q), Generate %q", p, got, streamed.String(), want)
		}
		if res.Usage.CompletionTokens == 0 || res.Usage.TotalTokens != res.Usage.PromptTokens+res.Usage.CompletionTokens {
			t.Errorf("usage %+v", res.Usage)
		}
	}
}

// Concurrent requests share the batch and each still gets exactly the
// text it would get alone.
func TestConcurrentBatching(t *testing.T) {
	o := testOptions(t)
	o.Scheduler.MaxActive = 8
	o.Scheduler.PrefillChunk = 7 // prompts are read over several steps
	d := startDaemon(t, o)
	prompts := []string{"Once upon a time", "The robot", "In the garden there was", "A cat", "Light", "Machines dream of"}
	want := map[string]string{}
	for _, p := range prompts {
		want[p] = reference(t, o.Specs[0].Path, p, 30)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		p := prompts[i%len(prompts)]
		wg.Go(func() {
			res, err := d.Service().Complete(context.Background(), greedy("aid", p, 30), nil)
			if err != nil {
				t.Error(err)
				return
			}
			if res.Choices[0].Text != want[p] {
				t.Errorf("%q: batched %q, alone %q", p, res.Choices[0].Text, want[p])
			}
		})
	}
	wg.Wait()
}

// A cancelled request ends at the next step and frees its place.
func TestCancelMidStream(t *testing.T) {
	o := testOptions(t)
	d := startDaemon(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err := d.Service().Complete(ctx, greedy("aid", "Once upon a time", 100), func(c *protocol.CompletionChunk) error {
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	if protocol.CodeOf(err) != protocol.CodeCancelled {
		t.Fatalf("cancelled request: %v", err)
	}
	pollUntil(t, 5*time.Second, func() error {
		st, _ := d.Service().Status(context.Background())
		if st.Models[0].Active != 0 {
			return fmt.Errorf("%d active", st.Models[0].Active)
		}
		return nil
	})
	if _, err := d.Service().Complete(context.Background(), greedy("aid", "hi", 5), nil); err != nil {
		t.Fatal(err)
	}
}

// A client that stops reading (emit fails) stops its sequence.
func TestEmitErrorStops(t *testing.T) {
	d := startDaemon(t, testOptions(t))
	_, err := d.Service().Complete(context.Background(), greedy("aid", "Once", 50), func(*protocol.CompletionChunk) error {
		return errors.New("broken pipe")
	})
	if protocol.CodeOf(err) != protocol.CodeCancelled {
		t.Fatalf("got %v", err)
	}
}

func TestQueueFull(t *testing.T) {
	o := testOptions(t)
	o.Scheduler.MaxQueue = 1
	o.Scheduler.MaxActive = 1
	d := startDaemon(t, o)
	inst, release, err := d.reg.acquire(context.Background(), "aid")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	// One job runs, one waits: the rest of a quick burst finds the queue
	// full.
	var sawBusy bool
	for range 200 {
		j := &job{ctx: context.Background(), out: newOutput(), enqueued: time.Now(), prompt: []int32{1}, maxTokens: 100}
		err := inst.submit(j)
		if protocol.CodeOf(err) == protocol.CodeBusy {
			if protocol.AsError(err).RetryAfter < 1 {
				t.Errorf("busy without a retry hint: %+v", err)
			}
			sawBusy = true
			break
		}
	}
	if !sawBusy {
		t.Fatal("a queue of 1 never reported busy")
	}
}

func TestUnknownModelAndContextLength(t *testing.T) {
	d := startDaemon(t, testOptions(t))
	_, err := d.Service().Complete(context.Background(), greedy("nope", "x", 5), nil)
	if protocol.CodeOf(err) != protocol.CodeModelNotFound {
		t.Errorf("unknown model: %v", err)
	}
	_, err = d.Service().Complete(context.Background(), greedy("aid", strings.Repeat("word ", 500), 5), nil)
	if protocol.CodeOf(err) != protocol.CodeContextLength {
		t.Errorf("long prompt: %v", err)
	}
	_, err = d.Service().Complete(context.Background(), greedy("aid", "x", 100000), nil)
	if protocol.CodeOf(err) != protocol.CodeContextLength {
		t.Errorf("huge max_tokens: %v", err)
	}
	req := &protocol.CompletionRequest{Model: "aid", Prompt: protocol.Prompt{Tokens: []int32{1, 99999999}, IsTokens: true}}
	if _, err = d.Service().Complete(context.Background(), req, nil); protocol.CodeOf(err) != protocol.CodeInvalidValue {
		t.Errorf("token outside the vocabulary: %v", err)
	}
}

func TestUnloadReloadAndIdle(t *testing.T) {
	o := testOptions(t)
	o.Models.IdleUnload = 50 * time.Millisecond
	d := startDaemon(t, o)
	s := d.Service()
	state := func() string {
		l, _ := s.Models(context.Background())
		return l.Data[0].State
	}
	if state() != protocol.StateUnloaded {
		t.Fatalf("before use: %s", state())
	}
	if _, err := s.Complete(context.Background(), greedy("aid", "hi", 3), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Unload(context.Background(), &protocol.UnloadRequest{Model: "aid"}); err != nil {
		t.Fatal(err)
	}
	if state() != protocol.StateUnloaded {
		t.Fatalf("after unload: %s", state())
	}
	if _, err := s.Load(context.Background(), &protocol.LoadRequest{Model: "aid"}); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 5*time.Second, func() error {
		if st := state(); st != protocol.StateUnloaded {
			return fmt.Errorf("state %s, want idle unload", st)
		}
		return nil
	})
	if _, err := s.Complete(context.Background(), greedy("aid", "hi", 3), nil); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryBudget(t *testing.T) {
	o := testOptions(t)
	o.Specs = append(o.Specs, ModelSpec{Name: "aid2", Path: o.Specs[0].Path})
	o.Models.MemoryBudget = 5 << 20 // one model (about 3 MiB) fits, not two
	d := startDaemon(t, o)
	s := d.Service()
	if _, err := s.Complete(context.Background(), greedy("aid", "hi", 3), nil); err != nil {
		t.Fatal(err)
	}
	// aid is idle: loading aid2 evicts it.
	if _, err := s.Complete(context.Background(), greedy("aid2", "hi", 3), nil); err != nil {
		t.Fatal(err)
	}
	l, _ := s.Models(context.Background())
	if l.Data[0].State != protocol.StateUnloaded || l.Data[1].State != protocol.StateLoaded {
		t.Fatalf("states %s %s", l.Data[0].State, l.Data[1].State)
	}
	o2 := testOptions(t)
	o2.Models.MemoryBudget = 1 << 20
	d2 := startDaemon(t, o2)
	if _, err := d2.Service().Complete(context.Background(), greedy("aid", "hi", 3), nil); protocol.CodeOf(err) != protocol.CodeInsufficientMemory {
		t.Fatalf("over budget: %v", err)
	}
}

func TestRegistryPersists(t *testing.T) {
	o := testOptions(t)
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Service().Register(ModelSpec{Name: "other", Path: o.Specs[0].Path}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	o.Specs = nil
	d = startDaemon(t, o)
	if got := d.reg.names(); strings.Join(got, ",") != "aid,other" {
		t.Fatalf("restored %v", got)
	}
}

func TestSecondInstanceFailsFast(t *testing.T) {
	o := testOptions(t)
	startDaemon(t, o)
	o.LockTimeout = 100 * time.Millisecond
	_, err := New(o)
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second daemon: %v", err)
	}
}

func TestShutdownDrains(t *testing.T) {
	o := testOptions(t)
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var res *protocol.CompletionResponse
	var reqErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		var once sync.Once
		res, reqErr = d.Service().Complete(context.Background(), greedy("aid", "Once upon a time", 60), func(*protocol.CompletionChunk) error {
			once.Do(func() { close(started) })
			return nil
		})
	}()
	<-started
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-done
	if reqErr != nil || res.Usage.CompletionTokens == 0 {
		t.Fatalf("in-flight request: %v", reqErr)
	}
	if _, err := d.Service().Complete(context.Background(), greedy("aid", "hi", 3), nil); protocol.CodeOf(err) != protocol.CodeShuttingDown {
		t.Fatalf("after shutdown: %v", err)
	}
}

// pollUntil polls fn until it returns nil or timeout passes.
func pollUntil(t testing.TB, timeout time.Duration, fn func() error) {
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
		time.Sleep(5 * time.Millisecond)
	}
}
