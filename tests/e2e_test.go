// Package tests holds the end-to-end tests: they build the real edged and
// edgectl binaries and drive them over the Unix socket.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/internal/fixture"
	"github.com/edged/edged/protocol"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

// buildAndRun builds the binaries into a temporary directory.
func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "edged-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "../cmd/edged", "../cmd/edgectl")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binaries:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

func aidreams(t *testing.T) string {
	t.Helper()
	return fixture.Path(t, "llama2c", "aidreams260K.llamacpp.gguf")
}

// edged is a running daemon.
type edged struct {
	t      *testing.T
	cmd    *exec.Cmd
	socket string
	state  string
	log    *syncBuffer
	exited chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startEdged starts edged with a socket and state directory in a
// temporary directory, serving the aidreams fixture as "aid", and waits
// until /health answers.
func startEdged(t *testing.T, args ...string) *edged {
	t.Helper()
	return startEdgedOn(t, "", args...)
}

// startEdgedOn is startEdged on the state directory state ("": a new
// one), to start edged again where an earlier one stopped.
func startEdgedOn(t *testing.T, state string, args ...string) *edged {
	t.Helper()
	dir := t.TempDir()
	if state == "" {
		state = filepath.Join(dir, "state")
	}
	e := &edged{t: t, socket: filepath.Join(dir, "edged.sock"), state: state, log: &syncBuffer{}, exited: make(chan struct{})}
	base := []string{"--socket", e.socket, "--state-dir", e.state, "--nats.enabled=false", "--engine.threads=1", "--model", "aid=" + aidreams(t)}
	e.cmd = exec.Command(filepath.Join(binDir, "edged"), append(base, args...)...)
	// An empty config file, so that no /etc/edged/edged.toml of the
	// machine interferes.
	empty := filepath.Join(dir, "empty.toml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.cmd.Env = append(os.Environ(), "EDGED_CONFIG="+empty)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { e.err = e.cmd.Wait(); close(e.exited) }()
	t.Cleanup(func() {
		e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(20 * time.Second):
			e.cmd.Process.Kill()
			t.Errorf("edged did not stop on SIGTERM; log:\n%s", e.log)
		}
		if t.Failed() {
			t.Logf("edged log:\n%s", e.log)
		}
	})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		select {
		case <-e.exited:
			t.Fatalf("edged exited: %v\n%s", e.err, e.log)
		default:
		}
		resp, err := e.client().Get("http://edged/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return e
}

func (e *edged) client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", e.socket)
	}}}
}

// post sends a JSON body and returns the status and the body.
func (e *edged) post(path, body string) (int, []byte) {
	e.t.Helper()
	resp, err := e.client().Post("http://edged"+path, "application/json", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (e *edged) get(path string, out any) {
	e.t.Helper()
	resp, err := e.client().Get("http://edged" + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		e.t.Fatal(err)
	}
}

// edgectl runs the CLI and returns its stdout, stderr and error.
func edgectl(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "edgectl"), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// checkFor polls fn every interval until it returns nil or timeout passes.
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

func completion(t *testing.T, data []byte) protocol.CompletionResponse {
	t.Helper()
	var r protocol.CompletionResponse
	if err := json.Unmarshal(data, &r); err != nil || len(r.Choices) != 1 {
		t.Fatalf("response %s: %v", data, err)
	}
	return r
}

// sseEvents reads an SSE stream until [DONE], calling fn with each event;
// fn returning false stops reading early.
func sseEvents(t *testing.T, r io.Reader, fn func(data string) bool) (sawDone bool) {
	t.Helper()
	s := bufio.NewScanner(r)
	for s.Scan() {
		data, ok := strings.CutPrefix(s.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return true
		}
		if !fn(data) {
			return false
		}
	}
	return false
}

// The aidreams fixture answers the same greedy text through the socket
// (plain and streamed), through edgectl generate and through edgectl run.
func TestGreedySameEverywhere(t *testing.T) {
	e := startEdged(t)
	prompt := "Once upon a time"
	out, stderr, err := edgectl(t, nil, "run", "-m", aidreams(t), "-p", prompt, "-n", "40", "--temp", "0", "--json", "-t", "1")
	if err != nil {
		t.Fatalf("edgectl run: %v\n%s", err, stderr)
	}
	var ref struct {
		PromptIDs    []int32 `json:"prompt_ids"`
		GeneratedIDs []int32 `json:"generated_ids"`
		Text         string  `json:"text"`
	}
	if err := json.Unmarshal([]byte(out), &ref); err != nil {
		t.Fatal(err)
	}
	status, data := e.post("/v1/completions", `{"model":"aid","prompt":"Once upon a time","max_tokens":40,"temperature":0}`)
	if status != 200 {
		t.Fatalf("%d %s", status, data)
	}
	res := completion(t, data)
	if res.Choices[0].Text != ref.Text {
		t.Errorf("socket %q, edgectl run %q", res.Choices[0].Text, ref.Text)
	}
	if res.Usage.PromptTokens != len(ref.PromptIDs) || res.Usage.CompletionTokens != len(ref.GeneratedIDs) {
		t.Errorf("usage %+v; edgectl run read %d and generated %d tokens", res.Usage, len(ref.PromptIDs), len(ref.GeneratedIDs))
	}
	// The token ids: tokenize the prompt and the prompt plus the answer.
	status, data = e.post("/v1/tokenize", `{"model":"aid","content":"Once upon a time"}`)
	var tr protocol.TokenizeResponse
	if status != 200 || json.Unmarshal(data, &tr) != nil || fmt.Sprint(tr.Tokens) != fmt.Sprint(ref.PromptIDs) {
		t.Errorf("tokenize: %d %s, edgectl run read %v", status, data, ref.PromptIDs)
	}
	// Streamed over SSE.
	resp, err := e.client().Post("http://edged/v1/completions", "application/json", strings.NewReader(`{"model":"aid","prompt":"Once upon a time","max_tokens":40,"temperature":0,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	var streamed strings.Builder
	var last protocol.CompletionChunk
	done := sseEvents(t, resp.Body, func(d string) bool {
		if err := json.Unmarshal([]byte(d), &last); err != nil {
			t.Fatalf("event %s: %v", d, err)
		}
		streamed.WriteString(last.Choices[0].Text)
		return true
	})
	resp.Body.Close()
	if !done || streamed.String() != ref.Text || last.Usage == nil || last.Choices[0].FinishReason == nil {
		t.Errorf("stream: done %v, text %q, last %+v", done, streamed.String(), last)
	}
	// edgectl generate.
	out, stderr, err = edgectl(t, []string{"EDGED_SOCKET=" + e.socket}, "generate", "-m", "aid", "-n", "40", "--temp", "0", prompt)
	if err != nil || out != ref.Text+"\n" {
		t.Errorf("edgectl generate: %v %s: %q, want %q", err, stderr, out, ref.Text)
	}
}

func TestConcurrent16(t *testing.T) {
	e := startEdged(t)
	_, data := e.post("/v1/completions", `{"model":"aid","prompt":"The robot","max_tokens":30,"temperature":0}`)
	want := completion(t, data).Choices[0].Text
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			body := `{"model":"aid","prompt":"The robot","max_tokens":30,"temperature":0}`
			if i%2 == 1 {
				body = `{"model":"aid","prompt":"The robot","max_tokens":30,"temperature":0.9,"seed":7}`
			}
			resp, err := e.client().Post("http://edged/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var r protocol.CompletionResponse
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 {
				t.Errorf("request %d: %d %v", i, resp.StatusCode, err)
				return
			}
			if i%2 == 0 && r.Choices[0].Text != want {
				t.Errorf("request %d: %q, alone %q", i, r.Choices[0].Text, want)
			}
		})
	}
	wg.Wait()
}

// Closing the stream mid-way stops the sequence; the daemon serves on.
func TestCancelMidStream(t *testing.T) {
	e := startEdged(t)
	resp, err := e.client().Post("http://edged/v1/completions", "application/json", strings.NewReader(`{"model":"aid","prompt":"Once","max_tokens":120,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sseEvents(t, resp.Body, func(string) bool { n++; return n < 3 })
	resp.Body.Close()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var st protocol.Status
		e.get("/status", &st)
		if st.Models[0].Active != 0 {
			return fmt.Errorf("%d sequences still active", st.Models[0].Active)
		}
		return nil
	})
	if status, data := e.post("/v1/completions", `{"model":"aid","prompt":"hi","max_tokens":5}`); status != 200 {
		t.Fatalf("after cancel: %d %s", status, data)
	}
}

func TestQueueFull(t *testing.T) {
	e := startEdged(t, "--scheduler.max_queue=1", "--scheduler.max_active=1")
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			resp, err := e.client().Post("http://edged/v1/completions", "application/json", strings.NewReader(`{"model":"aid","prompt":"Once upon a time","max_tokens":100,"temperature":0}`))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var er protocol.ErrorResponse
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				if json.Unmarshal(data, &er) != nil || er.Error.Code != protocol.CodeBusy || resp.Header.Get("Retry-After") == "" {
					t.Errorf("%d %s (Retry-After %q)", resp.StatusCode, data, resp.Header.Get("Retry-After"))
				}
			}
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[http.StatusTooManyRequests] == 0 || codes[200] == 0 {
		t.Fatalf("statuses %v: want some busy (429) and some served", codes)
	}
}

func TestUnloadReloadWithEdgectl(t *testing.T) {
	e := startEdged(t)
	env := []string{"EDGED_SOCKET=" + e.socket}
	run := func(args ...string) string {
		t.Helper()
		out, stderr, err := edgectl(t, env, args...)
		if err != nil {
			t.Fatalf("edgectl %v: %v\n%s", args, err, stderr)
		}
		return out
	}
	if out := run("models"); !strings.Contains(out, "aid") || !strings.Contains(out, "unloaded") {
		t.Fatalf("models: %s", out)
	}
	if out := run("load", "aid"); !strings.Contains(out, "aid: loaded") {
		t.Fatalf("load: %s", out)
	}
	if out := run("status"); !strings.Contains(out, "loaded") {
		t.Fatalf("status: %s", out)
	}
	run("unload", "aid")
	var list protocol.ModelList
	e.get("/v1/models", &list)
	if list.Data[0].State != protocol.StateUnloaded {
		t.Fatalf("after unload: %+v", list.Data[0])
	}
	// A file registered under a new name, then used.
	if out := run("load", "--name", "second", aidreams(t)); !strings.Contains(out, "second: loaded") {
		t.Fatalf("load path: %s", out)
	}
	if out := run("generate", "-m", "second", "-n", "5", "hello"); strings.TrimSpace(out) == "" {
		t.Fatal("generate after load printed nothing")
	}
	if out := run("metrics"); !strings.Contains(out, "edged_requests_total") {
		t.Fatalf("metrics: %.200s", out)
	}
	var js protocol.Status
	if err := json.Unmarshal([]byte(run("status", "--json")), &js); err != nil || len(js.Models) != 2 {
		t.Fatalf("status --json: %v %+v", err, js)
	}
	// Chat reads turns from stdin.
	cmd := exec.Command(filepath.Join(binDir, "edgectl"), "chat", "-m", "aid", "-n", "5", "--temp", "0")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader("hello\nand again\n")
	out, err := cmd.Output()
	if err != nil || strings.Count(out2s(out), "\n") < 2 {
		t.Fatalf("chat: %v %q", err, out)
	}
}

func out2s(b []byte) string { return string(b) }

func TestMissingDaemonMessage(t *testing.T) {
	_, stderr, err := edgectl(t, nil, "status", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v", err)
	}
	if strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "start it with") {
		t.Fatalf("message: %q", stderr)
	}
}

func TestSecondInstanceFailsFast(t *testing.T) {
	e := startEdged(t)
	cmd := exec.Command(filepath.Join(binDir, "edged"), "--socket", e.socket+"2", "--state-dir", e.state, "--nats.enabled=false", "--state.lock_timeout=200ms")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another edged is running") || time.Since(start) > 10*time.Second {
		t.Fatalf("second edged: %v after %v: %s", err, time.Since(start), out)
	}
}

func TestSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edged.toml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("[scheduler]\nmax_queue = 8\n")
	e := startEdged(t, "--config", cfg)
	write(fmt.Sprintf("[scheduler]\nmax_queue = 8\n\n[[model]]\nname = \"fresh\"\npath = %q\n", aidreams(t)))
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var list protocol.ModelList
		e.get("/v1/models", &list)
		if len(list.Data) != 2 {
			return fmt.Errorf("models after SIGHUP: %+v", list.Data)
		}
		return nil
	})
	if status, data := e.post("/v1/completions", `{"model":"fresh","prompt":"hi","max_tokens":3}`); status != 200 {
		t.Fatalf("%d %s", status, data)
	}
	// A broken file is reported and the daemon keeps its configuration.
	write("[scheduler]\nmax_queue = \"x\"\n")
	e.cmd.Process.Signal(syscall.SIGHUP)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(e.log.String(), "reload failed") {
			return errors.New("no reload failure logged")
		}
		return nil
	})
	if status, _ := e.post("/v1/completions", `{"model":"fresh","prompt":"hi","max_tokens":3}`); status != 200 {
		t.Fatal("not serving after a bad reload")
	}
}

// SIGTERM lets the running stream finish, refuses new work, and exits.
func TestSIGTERMDrain(t *testing.T) {
	e := startEdged(t)
	resp, err := e.client().Post("http://edged/v1/completions", "application/json", strings.NewReader(`{"model":"aid","prompt":"Once upon a time","max_tokens":100,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var last protocol.CompletionChunk
	first := true
	done := sseEvents(t, resp.Body, func(d string) bool {
		if first {
			first = false
			e.cmd.Process.Signal(syscall.SIGTERM)
		}
		json.Unmarshal([]byte(d), &last)
		return true
	})
	if !done || last.Choices[0].FinishReason == nil {
		t.Fatalf("stream cut by the drain: done %v, last %+v", done, last)
	}
	select {
	case <-e.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("edged did not exit after SIGTERM")
	}
	if e.err != nil {
		t.Fatalf("exit: %v\n%s", e.err, e.log)
	}
}

// Bad input of every kind gets a clear error; the daemon serves on.
func TestBadInput(t *testing.T) {
	e := startEdged(t)
	// A client that never reads its stream.
	conn, err := net.Dial("unix", e.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"aid","prompt":"Once upon a time","max_tokens":120,"stream":true}`
	fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	for _, tc := range []struct {
		name, path, body string
		code             protocol.Code
	}{
		{"malformed JSON", "/v1/completions", `{"model": "aid", "prompt": "x"`, protocol.CodeInvalidJSON},
		{"huge prompt", "/v1/completions", `{"model":"aid","prompt":"` + strings.Repeat("a", 5<<20) + `"}`, protocol.CodeTooLarge},
		{"long prompt", "/v1/completions", `{"model":"aid","prompt":"` + strings.Repeat("dream ", 400) + `"}`, protocol.CodeContextLength},
		{"negative temperature", "/v1/completions", `{"model":"aid","prompt":"x","temperature":-3}`, protocol.CodeInvalidValue},
		{"absurd top_p", "/v1/completions", `{"model":"aid","prompt":"x","top_p":1e308}`, protocol.CodeInvalidValue},
		{"absurd max_tokens", "/v1/completions", `{"model":"aid","prompt":"x","max_tokens":-1}`, protocol.CodeInvalidValue},
		{"unknown model", "/v1/chat/completions", `{"model":"nobody","messages":[{"role":"user","content":"x"}]}`, protocol.CodeModelNotFound},
		{"invalid UTF-8", "/v1/completions", "{\"model\":\"aid\",\"prompt\":\"\xff\xfe\"}", protocol.CodeInvalidUTF8},
		{"unknown field", "/v1/chat/completions", `{"model":"aid","messages":[],"tools":[]}`, protocol.CodeUnknownField},
	} {
		status, data := e.post(tc.path, tc.body)
		var er protocol.ErrorResponse
		if json.Unmarshal(data, &er) != nil || er.Error == nil || er.Error.Code != tc.code || status != tc.code.HTTPStatus() {
			t.Errorf("%s: %d %.200s, want %s", tc.name, status, data, tc.code)
		}
	}
	if status, data := e.post("/v1/completions", `{"model":"aid","prompt":"still there?","max_tokens":5}`); status != 200 {
		t.Fatalf("after bad input: %d %s", status, data)
	}
}
