package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/edged/edged/model"
	"github.com/edged/edged/quant"
)

// testGGUF returns a small valid GGUF file of about 600 KiB, enough for
// several reads so that a transfer can be cut in the middle.
func testGGUF(t *testing.T) []byte {
	t.Helper()
	w := model.NewWriter()
	if err := w.Set("general.architecture", "llama"); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4*150_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := w.AddTensor("t", quant.F32, []int64{150_000}, data); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sum256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fileServer serves content with http.ServeContent (Range, If-Range, 416),
// records the requests, and lets a test take over single requests: hook
// returns true when it has answered.
type fileServer struct {
	*httptest.Server
	content []byte

	mu   sync.Mutex
	reqs []*http.Request
	hook func(n int, w http.ResponseWriter, r *http.Request) bool
}

func newFileServer(t *testing.T, content []byte) *fileServer {
	t.Helper()
	fs := &fileServer{content: content}
	fs.Server = httptest.NewTLSServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fileServer) serve(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	fs.reqs = append(fs.reqs, r.Clone(context.Background()))
	n, hook := len(fs.reqs), fs.hook
	fs.mu.Unlock()
	if hook != nil && hook(n, w, r) {
		return
	}
	w.Header().Set("ETag", `"v1"`)
	http.ServeContent(w, r, "model.gguf", time.Time{}, bytes.NewReader(fs.content))
}

func (fs *fileServer) requests() []*http.Request {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]*http.Request(nil), fs.reqs...)
}

// cutAfter answers with the full length announced, sends only n bytes and
// drops the connection.
func cutAfter(w http.ResponseWriter, content []byte, n int) {
	w.Header().Set("Content-Length", fmt.Sprint(len(content)))
	w.Header().Set("ETag", `"v1"`)
	w.WriteHeader(http.StatusOK)
	w.Write(content[:n])
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

func (fs *fileServer) opts() PullOptions {
	return PullOptions{HTTPClient: fs.Client(), RetryDelay: time.Millisecond}
}

func checkPulled(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d served", path, len(got), len(want))
	}
	if sum, ok := readSumFile(path); !ok || sum != sum256(want) {
		t.Errorf("sidecar digest %q, want %s", sum, sum256(want))
	}
	for _, leftover := range []string{".partial", ".partial.json"} {
		if _, err := os.Stat(path + leftover); err == nil {
			t.Errorf("%s%s left behind", path, leftover)
		}
	}
}

func noDownload(t *testing.T, cache string) {
	t.Helper()
	filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".lock") {
			t.Errorf("left in the cache: %s", p)
		}
		return nil
	})
}

func TestPullPlain(t *testing.T) {
	content := testGGUF(t)
	fs := newFileServer(t, content)
	cache := t.TempDir()
	var progress bytes.Buffer
	opts := fs.opts()
	opts.Progress = &progress
	path, err := Pull(context.Background(), fs.URL+"/models/tiny.gguf", cache, opts)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "tiny.gguf" || !strings.HasPrefix(path, filepath.Join(cache, "url")) {
		t.Errorf("path %s", path)
	}
	checkPulled(t, path, content)
	if !strings.Contains(progress.String(), "100%") || !strings.HasSuffix(progress.String(), "\n") {
		t.Errorf("progress output %q", progress.String())
	}
	if r := fs.requests()[0]; r.Header.Get("Accept-Encoding") != "identity" || r.Header.Get("Range") != "" {
		t.Errorf("request headers %v", r.Header)
	}

	// Pulled again: the cached file, without a request.
	again, err := Pull(context.Background(), fs.URL+"/models/tiny.gguf", cache, fs.opts())
	if err != nil || again != path {
		t.Fatalf("second pull: %q, %v", again, err)
	}
	// With the right digest the sidecar spares the hashing; still no request.
	opts = fs.opts()
	opts.SHA256 = strings.ToUpper(sum256(content))
	if _, err := Pull(context.Background(), fs.URL+"/models/tiny.gguf", cache, opts); err != nil {
		t.Fatal(err)
	}
	if n := len(fs.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestPullResumesAfterCut(t *testing.T) {
	content := testGGUF(t)
	fs := newFileServer(t, content)
	fs.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n == 1 {
			cutAfter(w, content, 200_000)
		}
		return false
	}
	path, err := Pull(context.Background(), fs.URL+"/a.gguf", t.TempDir(), fs.opts())
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, path, content)
	reqs := fs.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if got := reqs[1].Header.Get("Range"); got != "bytes=200000-" {
		t.Errorf("second request Range %q", got)
	}
	if got := reqs[1].Header.Get("If-Range"); got != `"v1"` {
		t.Errorf("second request If-Range %q", got)
	}
}

func TestPullResumesInLaterCall(t *testing.T) {
	content := testGGUF(t)
	fs := newFileServer(t, content)
	down := true
	fs.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		switch {
		case n == 1:
			cutAfter(w, content, 300_000)
		case down:
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	cache := t.TempDir()
	opts := fs.opts()
	opts.Retries = 2
	_, err := Pull(context.Background(), fs.URL+"/a.gguf", cache, opts)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("first pull: %v, want a 503 error", err)
	}
	fs.mu.Lock()
	down = false
	fs.mu.Unlock()
	path, err := Pull(context.Background(), fs.URL+"/a.gguf", cache, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, path, content)
	reqs := fs.requests()
	if got := reqs[len(reqs)-1].Header.Get("Range"); got != "bytes=300000-" {
		t.Errorf("resuming request Range %q", got)
	}
}

func TestPullServerIgnoresRange(t *testing.T) {
	content := testGGUF(t)
	fs := newFileServer(t, content)
	fs.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n == 1 {
			cutAfter(w, content, 100_000)
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(content)))
		w.Write(content) // 200 with the whole file, whatever the Range
		return true
	}
	path, err := Pull(context.Background(), fs.URL+"/a.gguf", t.TempDir(), fs.opts())
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, path, content)
	if reqs := fs.requests(); len(reqs) != 2 || reqs[1].Header.Get("Range") == "" {
		t.Errorf("want a second, ranged request; got %d", len(reqs))
	}
}

func TestPullPartialAlreadyComplete(t *testing.T) {
	// Interrupted after the last byte but before the rename: the server
	// answers 416 to the range and the partial file is used.
	content := testGGUF(t)
	fs := newFileServer(t, content)
	cache := t.TempDir()
	src, _ := ParseRef(fs.URL+"/a.gguf", "")
	dest := filepath.Join(cache, filepath.FromSlash(src.CachePath))
	os.MkdirAll(filepath.Dir(dest), 0o755)
	os.WriteFile(dest+".partial", content, 0o644)
	os.WriteFile(dest+".partial.json", []byte(`{"url":"`+src.URL+`","validator":"\"v1\""}`), 0o644)
	path, err := Pull(context.Background(), src.URL, cache, fs.opts())
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, path, content)
	if reqs := fs.requests(); len(reqs) != 1 {
		t.Errorf("%d requests, want 1", len(reqs))
	}
}

func TestPullStalledTransfer(t *testing.T) {
	content := testGGUF(t)
	fs := newFileServer(t, content)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fs.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n == 1 {
			w.Header().Set("Content-Length", fmt.Sprint(len(content)))
			w.Write(content[:50_000])
			w.(http.Flusher).Flush()
			select { // then nothing
			case <-release:
			case <-r.Context().Done():
			}
			return true
		}
		return false
	}
	opts := fs.opts()
	opts.StallTimeout = 300 * time.Millisecond
	path, err := Pull(context.Background(), fs.URL+"/a.gguf", t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, path, content)
}

func TestPullWrongSHA256(t *testing.T) {
	content := testGGUF(t)
	fs := newFileServer(t, content)
	cache := t.TempDir()
	opts := fs.opts()
	opts.SHA256 = strings.Repeat("ab", 32)
	_, err := Pull(context.Background(), fs.URL+"/a.gguf", cache, opts)
	if !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("err = %v, want ErrChecksumMismatch", err)
	}
	noDownload(t, cache)

	opts.SHA256 = "1234"
	if _, err := Pull(context.Background(), fs.URL+"/a.gguf", cache, opts); err == nil || !strings.Contains(err.Error(), "64 hex") {
		t.Errorf("short digest: %v", err)
	}
}

func TestPullNotGGUF(t *testing.T) {
	page := bytes.Repeat([]byte("<html>please log in</html>\n"), 40_000)
	fs := newFileServer(t, page)
	cache := t.TempDir()
	_, err := Pull(context.Background(), fs.URL+"/a.gguf", cache, fs.opts())
	if !errors.Is(err, ErrNotGGUF) {
		t.Fatalf("err = %v, want ErrNotGGUF", err)
	}
	if !strings.Contains(err.Error(), `"<htm"`) {
		t.Errorf("error does not show the first bytes: %v", err)
	}
	noDownload(t, cache)
	if n := len(fs.requests()); n != 1 {
		t.Errorf("%d requests, want 1 (no retry)", n)
	}

	// The magic is right but the rest is not a GGUF file.
	fake := append([]byte("GGUF"), bytes.Repeat([]byte{0xff}, 1000)...)
	fs2 := newFileServer(t, fake)
	_, err = Pull(context.Background(), fs2.URL+"/b.gguf", cache, fs2.opts())
	if !errors.Is(err, ErrNotGGUF) || !errors.Is(err, model.ErrMalformed) {
		t.Fatalf("err = %v, want ErrNotGGUF wrapping model.ErrMalformed", err)
	}
	noDownload(t, cache)
}

func TestPullNotFound(t *testing.T) {
	fs := newFileServer(t, nil)
	fs.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		http.NotFound(w, r)
		return true
	}
	cache := t.TempDir()
	_, err := Pull(context.Background(), fs.URL+"/missing.gguf", cache, fs.opts())
	if !errors.Is(err, ErrRemoteNotFound) {
		t.Fatalf("err = %v, want ErrRemoteNotFound", err)
	}
	if n := len(fs.requests()); n != 1 {
		t.Errorf("%d requests, want 1 (no retry)", n)
	}
	noDownload(t, cache)
}

func TestPullCancelled(t *testing.T) {
	content := testGGUF(t)
	fs := newFileServer(t, content)
	fs.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	opts := fs.opts()
	opts.RetryDelay = time.Minute
	start := time.Now()
	_, err := Pull(ctx, fs.URL+"/a.gguf", t.TempDir(), opts)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("cancellation took %v", time.Since(start))
	}
}

// hfServer imitates huggingface.co: the resolve URL of an LFS file answers
// 302 to a CDN URL with X-Linked-Etag (the sha256) and X-Linked-Size.
func hfServer(t *testing.T, content []byte, linkedETag string) (*fileServer, *[]string) {
	t.Helper()
	fs := newFileServer(t, content)
	var auth []string
	fs.hook = func(n int, w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/resolve/") {
			auth = append(auth, r.Header.Get("Authorization"))
			if r.URL.EscapedPath() != "/owner/repo-GGUF/resolve/main/sub/tiny-Q4_0.gguf" &&
				r.URL.EscapedPath() != "/owner/repo-GGUF/resolve/refs%2Fpr%2F1/sub/tiny-Q4_0.gguf" {
				http.NotFound(w, r)
				return true
			}
			w.Header().Set("X-Linked-Etag", `"`+linkedETag+`"`)
			w.Header().Set("X-Linked-Size", fmt.Sprint(len(content)))
			w.Header().Set("ETag", `"`+linkedETag+`"`)
			http.Redirect(w, r, "/cdn/blob?sig=1", http.StatusFound)
			return true
		}
		return false
	}
	return fs, &auth
}

func TestPullHF(t *testing.T) {
	content := testGGUF(t)
	fs, auth := hfServer(t, content, sum256(content))
	cache := t.TempDir()
	opts := fs.opts()
	opts.HFEndpoint = fs.URL
	opts.Token = "hf_secret"
	path, err := Pull(context.Background(), "hf://owner/repo-GGUF/sub/tiny-Q4_0.gguf", cache, opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "hf", "owner", "repo-GGUF", "main", "sub", "tiny-Q4_0.gguf"); path != want {
		t.Errorf("path %s, want %s", path, want)
	}
	checkPulled(t, path, content)
	if len(*auth) != 1 || (*auth)[0] != "Bearer hf_secret" {
		t.Errorf("Authorization on the resolve request: %q", *auth)
	}

	// A pinned revision gets its own cache entry.
	path, err = Pull(context.Background(), "hf://owner/repo-GGUF/sub/tiny-Q4_0.gguf@refs/pr/1", cache, opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "hf", "owner", "repo-GGUF", "refs%2Fpr%2F1", "sub", "tiny-Q4_0.gguf"); path != want {
		t.Errorf("path %s, want %s", path, want)
	}

	_, err = Pull(context.Background(), "hf://owner/repo-GGUF/other.gguf", cache, opts)
	if !errors.Is(err, ErrRemoteNotFound) {
		t.Errorf("missing file: %v", err)
	}
}

func TestPullHFReportedDigest(t *testing.T) {
	content := testGGUF(t)
	// The server reports a digest that the body does not match.
	fs, _ := hfServer(t, content, strings.Repeat("0", 64))
	cache := t.TempDir()
	opts := fs.opts()
	opts.HFEndpoint = fs.URL
	_, err := Pull(context.Background(), "hf://owner/repo-GGUF/sub/tiny-Q4_0.gguf", cache, opts)
	if !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("err = %v, want ErrChecksumMismatch", err)
	}
	noDownload(t, cache)

	// --sha256 disagreeing with the server's digest fails before the body.
	fs2, _ := hfServer(t, content, sum256(content))
	opts = fs2.opts()
	opts.HFEndpoint = fs2.URL
	opts.SHA256 = strings.Repeat("1", 64)
	_, err = Pull(context.Background(), "hf://owner/repo-GGUF/sub/tiny-Q4_0.gguf", cache, opts)
	if !errors.Is(err, ErrChecksumMismatch) || !strings.Contains(err.Error(), "server reports") {
		t.Fatalf("err = %v, want a mismatch with the reported digest", err)
	}
	noDownload(t, cache)
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		ref, url, cache, err string
	}{
		{ref: "hf://bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_0.gguf",
			url:   "https://huggingface.co/bartowski/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct-Q4_0.gguf",
			cache: "hf/bartowski/SmolLM2-135M-Instruct-GGUF/main/SmolLM2-135M-Instruct-Q4_0.gguf"},
		{ref: "hf://o/r/dir/f.gguf@v1.0",
			url:   "https://huggingface.co/o/r/resolve/v1.0/dir/f.gguf",
			cache: "hf/o/r/v1.0/dir/f.gguf"},
		{ref: "hf://o/r/my file.gguf@0123abc",
			url:   "https://huggingface.co/o/r/resolve/0123abc/my%20file.gguf",
			cache: "hf/o/r/0123abc/my file.gguf"},
		{ref: "hf://o/r/f.bin", err: "must end in .gguf"},
		{ref: "hf://o/r", err: "missing"},
		{ref: "hf://o/../x.gguf", err: "OWNER and REPO"},
		{ref: "hf://o/r/../../x.gguf", err: "bad path segment"},
		{ref: "hf://o/r/f.gguf@", err: "empty revision"},
		{ref: "hf://o/r/f.gguf@../x", err: "bad revision"},
		{ref: "ftp://host/x.gguf", err: "unsupported scheme"},
		{ref: "https://host/x/y.gguf", url: "https://host/x/y.gguf", cache: "url/host/"},
		{ref: "https://host:8443/dl?id=3", url: "https://host:8443/dl?id=3", cache: "url/host_8443/"},
		{ref: "./model.gguf"},
	} {
		src, err := ParseRef(tc.ref, "")
		if tc.err != "" {
			if err == nil || !errors.Is(err, ErrBadRef) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.ref, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.ref, err)
			continue
		}
		if src.URL != tc.url || !strings.HasPrefix(src.CachePath, tc.cache) {
			t.Errorf("%s: url %q cache %q, want %q %q…", tc.ref, src.URL, src.CachePath, tc.url, tc.cache)
		}
		if tc.url == "" && src.Path != tc.ref {
			t.Errorf("%s: path %q", tc.ref, src.Path)
		}
	}
	src, err := ParseRef("hf://o/r/f.gguf", "http://127.0.0.1:9/mirror/")
	if err != nil || src.URL != "http://127.0.0.1:9/mirror/o/r/resolve/main/f.gguf" {
		t.Errorf("custom endpoint: %q, %v", src.URL, err)
	}
}

func TestPullLocal(t *testing.T) {
	content := testGGUF(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "m.gguf")
	os.WriteFile(good, content, 0o644)
	bad := filepath.Join(dir, "notes.txt")
	os.WriteFile(bad, []byte("hello world"), 0o644)

	t.Chdir(dir)
	path, err := Pull(context.Background(), "m.gguf", "", PullOptions{})
	if err != nil || path != good {
		t.Fatalf("local: %q, %v", path, err)
	}
	if _, err := Pull(context.Background(), good, "", PullOptions{SHA256: sum256(content)}); err != nil {
		t.Errorf("right digest: %v", err)
	}
	if _, err := Pull(context.Background(), good, "", PullOptions{SHA256: strings.Repeat("0", 64)}); !errors.Is(err, ErrChecksumMismatch) {
		t.Errorf("wrong digest: %v", err)
	}
	if _, err := Pull(context.Background(), bad, "", PullOptions{}); !errors.Is(err, ErrNotGGUF) {
		t.Errorf("text file: %v", err)
	}
	if _, err := Pull(context.Background(), filepath.Join(dir, "absent.gguf"), "", PullOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-99/1000", 0, 99, 1000, true},
		{"bytes 10-19/*", 10, 19, -1, true},
		{"bytes */1000", -1, -1, 1000, true},
		{"bytes 5-4/10", 0, 0, -1, false},
		{"items 0-1/2", 0, 0, -1, false},
		{"bytes x-1/2", 0, 0, -1, false},
	} {
		s, e, n, ok := parseContentRange(tc.in)
		if ok != tc.ok || (ok && (s != tc.start || e != tc.end || n != tc.total)) {
			t.Errorf("%q: %d %d %d %v", tc.in, s, e, n, ok)
		}
	}
}

func TestPullFunc(t *testing.T) {
	content := testGGUF(t)
	fs := newFileServer(t, content)
	cache := t.TempDir()
	opts := fs.opts()
	opts.SHA256 = strings.Repeat("0", 64) // ignored: one digest cannot fit every reference
	fetch := PullFunc(cache, opts)
	path, digest, err := fetch(context.Background(), fs.URL+"/a.gguf")
	require.NoError(t, err)
	assert.Equal(t, "sha256:"+sum256(content), digest)
	checkPulled(t, path, content)

	local := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, os.WriteFile(local, content, 0o644))
	path, digest, err = fetch(context.Background(), local)
	require.NoError(t, err)
	assert.Equal(t, local, path)
	assert.Empty(t, digest, "a local file is not hashed")
}
