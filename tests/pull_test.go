package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// modelServer serves the aidreams fixture at /models/aid.gguf and, as
// Hugging Face does, at /owner/repo/resolve/main/aid.gguf with a redirect
// carrying the file's sha256 in X-Linked-Etag. The first download of the
// file is cut halfway through, so the pull has to resume.
func modelServer(t *testing.T) (srv *httptest.Server, content []byte, requests *atomic.Int32) {
	t.Helper()
	content, err := os.ReadFile(aidreams(t))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	requests = &atomic.Int32{}
	var cut atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/models/aid.gguf", func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if cut.CompareAndSwap(false, true) {
			w.Header().Set("Content-Length", fmt.Sprint(len(content)))
			w.Header().Set("ETag", `"aid"`)
			w.Write(content[:len(content)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("ETag", `"aid"`)
		http.ServeContent(w, r, "aid.gguf", time.Time{}, bytes.NewReader(content))
	})
	mux.HandleFunc("/owner/repo/resolve/main/aid.gguf", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Linked-Etag", `"`+hex.EncodeToString(sum[:])+`"`)
		http.Redirect(w, r, "/models/aid.gguf", http.StatusFound)
	})
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, content, requests
}

func TestPullWithEdgectl(t *testing.T) {
	srv, content, requests := modelServer(t)
	cache := t.TempDir()
	url := srv.URL + "/models/aid.gguf"

	out, stderr, err := edgectl(t, nil, "pull", url, "--cache", cache)
	if err != nil {
		t.Fatalf("edgectl pull: %v\n%s", err, stderr)
	}
	path := strings.TrimSpace(out)
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("pulled file %s: %v (%d bytes, want %d)", path, err, len(got), len(content))
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (cut, then resumed)", n)
	}
	// Cached: the same path, no request.
	out, _, err = edgectl(t, nil, "pull", url, "--cache", cache)
	if err != nil || strings.TrimSpace(out) != path || requests.Load() != 2 {
		t.Errorf("second pull: %q %v, %d requests", out, err, requests.Load())
	}

	// hf:// with the endpoint of the test server; the digest it reports
	// is checked.
	out, stderr, err = edgectl(t, []string{"HF_ENDPOINT=" + srv.URL}, "pull", "hf://owner/repo/aid.gguf", "--cache", cache)
	if err != nil {
		t.Fatalf("edgectl pull hf://: %v\n%s", err, stderr)
	}
	if want := filepath.Join(cache, "hf", "owner", "repo", "main", "aid.gguf"); strings.TrimSpace(out) != want {
		t.Errorf("hf:// path %q, want %q", out, want)
	}

	// A wrong digest: an error, nothing left in place.
	other := t.TempDir()
	_, stderr, err = edgectl(t, nil, "pull", url, "--cache", other, "--sha256", strings.Repeat("0", 64))
	if err == nil || !strings.Contains(stderr, "sha256 mismatch") {
		t.Errorf("wrong digest: %v %q", err, stderr)
	}
	_, stderr, err = edgectl(t, nil, "pull", srv.URL+"/missing.gguf", "--cache", other)
	if err == nil || !strings.Contains(stderr, "not found") {
		t.Errorf("missing file: %v %q", err, stderr)
	}
}

// edged --model NAME=URL downloads the model into its cache and serves it.
func TestServeDownloadedModel(t *testing.T) {
	srv, _, _ := modelServer(t)
	cache := t.TempDir()
	e := startEdged(t, "--cache.dir", cache, "--model", "remote="+srv.URL+"/models/aid.gguf")
	status, data := e.post("/v1/completions", `{"model":"remote","prompt":"Once upon a time","max_tokens":8,"temperature":0}`)
	if status != 200 {
		t.Fatalf("%d %s", status, data)
	}
	if res := completion(t, data); res.Usage.CompletionTokens == 0 {
		t.Errorf("no tokens generated: %s", data)
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "url", "*", "*", "aid.gguf"))
	if len(matches) != 1 {
		t.Errorf("cache holds %v", matches)
	}
}
