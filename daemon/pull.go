package daemon

// Model downloads: Pull turns a model reference (a local path, an http(s)
// URL or hf://OWNER/REPO/FILE.gguf[@REVISION]) into the path of a verified
// GGUF file, downloading into a cache directory when it has to. edgectl pull
// and the daemon's --model NAME=REF both use it.
//
// Cache layout, under the cache directory:
//
//	hf/OWNER/REPO/REVISION/FILE.gguf        hf:// references (REVISION path-escaped)
//	url/HOST/HASH/NAME.gguf                  other URLs (HASH: first 16 hex of sha256(URL))
//	….gguf.sha256                            sha256sum line of the verified file
//	….gguf.partial, ….gguf.partial.json      an unfinished download and its validators
//	….gguf.lock                              held (flock) while a process downloads
//
// The digest check: the expected sha256 is PullOptions.SHA256 when given,
// otherwise the digest the server reports. Hugging Face answers a resolve URL
// of a file stored in LFS (all GGUF files) with a redirect to its CDN that
// carries X-Linked-Etag: "<sha256 of the file>" and X-Linked-Size; a file
// kept in git itself has only ETag: "<git blob sha1>" (40 hex, not a
// sha256). So an X-Linked-Etag of 64 hex digits anywhere in the redirect
// chain is taken as the file's sha256, and so is a 64-hex ETag on the first
// response of an hf:// reference; other ETags (the CDN's, S3's MD5) are only
// used as If-Range validators.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edged/edged/model"
)

// Errors returned by Pull (wrapped with the reference or URL).
var (
	// ErrNotGGUF reports a file or download that is not a GGUF model.
	ErrNotGGUF = errors.New("not a GGUF file")
	// ErrChecksumMismatch reports a file whose sha256 differs from the
	// expected one.
	ErrChecksumMismatch = errors.New("sha256 mismatch")
	// ErrRemoteNotFound reports a URL the server answered with 404 or 410.
	ErrRemoteNotFound = errors.New("not found on the server")
	// ErrBadRef reports a reference Pull cannot parse.
	ErrBadRef = errors.New("bad model reference")
)

// DefaultHFEndpoint is where hf:// references resolve unless
// PullOptions.HFEndpoint (edgectl: HF_ENDPOINT) says otherwise.
const DefaultHFEndpoint = "https://huggingface.co"

// PullOptions configures Pull. The zero value is usable.
type PullOptions struct {
	// SHA256 is the expected digest in hex. Empty: the digest the server
	// reports, if any, is checked instead.
	SHA256 string
	// Progress receives a progress bar redrawn with carriage returns; give
	// it a terminal, or nil for none.
	Progress io.Writer
	// HTTPClient makes the requests; nil uses a client without an overall
	// time limit (a stalled transfer is caught by StallTimeout).
	HTTPClient *http.Client
	// HFEndpoint replaces DefaultHFEndpoint for hf:// references (a mirror,
	// or a test server).
	HFEndpoint string
	// Token, when set, is sent as a bearer token with hf:// requests (gated
	// repositories; edgectl reads HF_TOKEN). Go's client drops it when a
	// redirect leaves the endpoint's domain.
	Token string
	// Retries is how many consecutive attempts that transfer nothing are
	// made before giving up; an attempt that made progress resets the count.
	// 0 means 5.
	Retries int
	// RetryDelay is the first pause after an attempt that transferred
	// nothing; it doubles each time up to 30 s. 0 means 1 s.
	RetryDelay time.Duration
	// StallTimeout aborts an attempt that receives nothing for this long.
	// 0 means 60 s.
	StallTimeout time.Duration
}

func (o *PullOptions) setDefaults() {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.HFEndpoint == "" {
		o.HFEndpoint = DefaultHFEndpoint
	}
	if o.Retries <= 0 {
		o.Retries = 5
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
}

// PullFunc returns a function for Options.Fetch that pulls references into
// cacheDir with opts and reports the sha256 of downloaded files (from the
// sidecar a verified download writes) as "sha256:HEX". A local path is used
// in place with an empty digest. opts.SHA256 is ignored: one digest cannot
// fit every reference.
func PullFunc(cacheDir string, opts PullOptions) func(ctx context.Context, ref string) (path, digest string, err error) {
	opts.SHA256 = ""
	return func(ctx context.Context, ref string) (string, string, error) {
		p, err := Pull(ctx, ref, cacheDir, opts)
		if err != nil {
			return "", "", err
		}
		if rel, err := filepath.Rel(cacheDir, p); err == nil && filepath.IsLocal(rel) {
			if sum, ok := readSumFile(p); ok {
				return p, "sha256:" + sum, nil
			}
		}
		return p, "", nil
	}
}

// Source is a parsed model reference.
type Source struct {
	Path string // a local file, when URL is empty
	URL  string // the download URL
	HF   bool   // URL came from an hf:// reference
	// CachePath is where the download is kept, relative to the cache
	// directory (slash-separated).
	CachePath string
}

// ParseRef parses a model reference: an http:// or https:// URL,
// hf://OWNER/REPO/FILE.gguf[@REVISION] (FILE may contain folders; REVISION is
// a branch, tag or commit, default main), or else a local path. hfEndpoint
// is the base URL for hf:// ("" means DefaultHFEndpoint).
func ParseRef(ref, hfEndpoint string) (Source, error) {
	if hfEndpoint == "" {
		hfEndpoint = DefaultHFEndpoint
	}
	switch {
	case strings.HasPrefix(ref, "hf://"):
		return parseHF(ref, hfEndpoint)
	case strings.HasPrefix(ref, "https://"), strings.HasPrefix(ref, "http://"):
		return parseURL(ref)
	case strings.Contains(ref, "://"):
		return Source{}, fmt.Errorf("%w: %q: unsupported scheme (want a path, https://, or hf://)", ErrBadRef, ref)
	case ref == "":
		return Source{}, fmt.Errorf("%w: empty", ErrBadRef)
	}
	return Source{Path: ref}, nil
}

func parseHF(ref, endpoint string) (Source, error) {
	bad := func(why string) (Source, error) {
		return Source{}, fmt.Errorf("%w: %q: %s (want hf://OWNER/REPO/FILE.gguf[@REVISION])", ErrBadRef, ref, why)
	}
	rest := strings.TrimPrefix(ref, "hf://")
	rev := "main"
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rev, rest = rest[i+1:], rest[:i]
		if rev == "" {
			return bad("empty revision")
		}
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 3 {
		return bad("missing OWNER, REPO or FILE")
	}
	owner, repo, file := parts[0], parts[1], parts[2]
	if !validRepoName(owner) || !validRepoName(repo) {
		return bad("OWNER and REPO may hold only letters, digits, '-', '_' and '.'")
	}
	if !strings.HasSuffix(strings.ToLower(file), ".gguf") {
		return bad("FILE must end in .gguf")
	}
	if err := checkSegments(file); err != nil {
		return bad(err.Error())
	}
	if strings.ContainsAny(rev, "\x00\\") || strings.Contains(rev, "..") {
		return bad("bad revision")
	}
	base, err := url.Parse(strings.TrimRight(endpoint, "/"))
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return Source{}, fmt.Errorf("%w: Hugging Face endpoint %q is not an http(s) URL", ErrBadRef, endpoint)
	}
	escFile := make([]string, 0, 4)
	for _, s := range strings.Split(file, "/") {
		escFile = append(escFile, url.PathEscape(s))
	}
	u := base.String() + "/" + owner + "/" + repo + "/resolve/" + url.PathEscape(rev) + "/" + strings.Join(escFile, "/")
	return Source{
		URL:       u,
		HF:        true,
		CachePath: path.Join("hf", owner, repo, url.PathEscape(rev), file),
	}, nil
}

func parseURL(ref string) (Source, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return Source{}, fmt.Errorf("%w: %v", ErrBadRef, err)
	}
	if u.Host == "" {
		return Source{}, fmt.Errorf("%w: %q: no host", ErrBadRef, ref)
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || !strings.HasSuffix(strings.ToLower(name), ".gguf") || checkSegments(name) != nil {
		name = "model.gguf"
	}
	sum := sha256.Sum256([]byte(ref))
	host := strings.NewReplacer(":", "_", "/", "_").Replace(u.Host)
	return Source{
		URL:       ref,
		CachePath: path.Join("url", host, hex.EncodeToString(sum[:8]), name),
	}, nil
}

func validRepoName(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		ok := c == '-' || c == '_' || c == '.' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

// checkSegments rejects a slash-separated relative path that could leave
// the cache directory or is awkward as a file name.
func checkSegments(p string) error {
	for _, s := range strings.Split(p, "/") {
		switch s {
		case "", ".", "..":
			return fmt.Errorf("bad path segment %q", s)
		}
		for _, c := range s {
			if c < 0x20 || c == 0x7f || c == '\\' {
				return fmt.Errorf("bad character %q in %q", c, s)
			}
		}
	}
	return nil
}

// Pull returns the path of a verified GGUF file for ref. A local path is
// checked (GGUF structure; sha256 when opts.SHA256 is set) and used in
// place. A URL is downloaded into cacheDir, unless a verified copy is
// already there: to a .partial file, resumed with Range requests after an
// interruption (within this call, with retries, and by a later call), its
// first bytes checked for the GGUF magic as soon as they arrive, its sha256
// checked when known, its structure checked, then renamed into place.
// Concurrent pulls of the same file wait for each other. A cached file is
// used without asking the server, so a moving revision (hf://…@main, the
// default) is not refreshed: pin a commit, or delete the cached file.
func Pull(ctx context.Context, ref, cacheDir string, opts PullOptions) (string, error) {
	opts.setDefaults()
	want, err := normalizeSHA256(opts.SHA256)
	if err != nil {
		return "", err
	}
	opts.SHA256 = want
	src, err := ParseRef(ref, opts.HFEndpoint)
	if err != nil {
		return "", err
	}
	if src.URL == "" {
		return checkLocal(src.Path, want)
	}
	if cacheDir == "" {
		return "", errors.New("pull: no cache directory")
	}
	dest := filepath.Join(cacheDir, filepath.FromSlash(src.CachePath))
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return "", fmt.Errorf("pull: %w", err)
	}
	unlock, err := lockFile(ctx, dest+".lock")
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	defer unlock()
	if ok, err := cached(dest, want); err != nil || ok {
		return dest, err
	}
	d := &download{src: src, dest: dest, opts: opts}
	if err := d.run(ctx); err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	return dest, nil
}

func normalizeSHA256(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return "", nil
	}
	if !isSHA256Hex(s) {
		return "", fmt.Errorf("pull: --sha256 %q is not 64 hex digits", s)
	}
	return s, nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// checkLocal verifies a local model file and returns its absolute path.
func checkLocal(p, want string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if err := checkGGUF(abs); err != nil {
		return "", err
	}
	if want != "" {
		got, err := fileSHA256(abs)
		if err != nil {
			return "", err
		}
		if got != want {
			return "", fmt.Errorf("%s: %w: got %s, want %s", p, ErrChecksumMismatch, got, want)
		}
	}
	return abs, nil
}

// checkGGUF opens and parses the file's header and tensor directory.
func checkGGUF(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	f.Close()
	if err != nil || string(magic[:]) != "GGUF" {
		return fmt.Errorf("%s: %w (starts with %q)", p, ErrNotGGUF, magic[:])
	}
	mf, err := model.Open(p)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotGGUF, err)
	}
	return mf.Close()
}

// cached reports whether dest is complete and matches want. A digest in the
// sidecar file written by a verified download spares hashing the file again.
func cached(dest, want string) (bool, error) {
	if _, err := os.Stat(dest); err != nil {
		return false, nil
	}
	if want == "" {
		return true, nil
	}
	if got, ok := readSumFile(dest); ok && got == want {
		return true, nil
	}
	got, err := fileSHA256(dest)
	if err != nil {
		return false, err
	}
	if got == want {
		return true, writeSumFile(dest, got)
	}
	return false, nil // another version: download the wanted one over it
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// The sidecar is one sha256sum line, so `sha256sum -c FILE.sha256` works in
// the file's folder.
func writeSumFile(dest, sum string) error {
	return os.WriteFile(dest+".sha256", []byte(sum+"  "+filepath.Base(dest)+"\n"), 0o644)
}

func readSumFile(dest string) (string, bool) {
	b, err := os.ReadFile(dest + ".sha256")
	if err != nil {
		return "", false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || !isSHA256Hex(f[0]) {
		return "", false
	}
	return f[0], true
}

// partialMeta is kept next to a .partial file so that a later attempt
// resumes only the same content.
type partialMeta struct {
	URL       string `json:"url"`
	Validator string `json:"validator,omitempty"` // strong ETag or Last-Modified, for If-Range
	SHA256    string `json:"sha256,omitempty"`    // digest the server reported
	Size      int64  `json:"size,omitempty"`      // total size, when known
}

// download is one Pull of a URL into dest.
type download struct {
	src  Source
	dest string
	opts PullOptions

	f    *os.File  // the .partial file
	h    hash.Hash // sha256 of f's first off bytes
	off  int64
	meta partialMeta
	bar  *progressBar
}

func (d *download) partial() string  { return d.dest + ".partial" }
func (d *download) metaPath() string { return d.dest + ".partial.json" }

func (d *download) run(ctx context.Context) (err error) {
	d.f, err = os.OpenFile(d.partial(), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if d.f != nil {
			d.f.Close()
			d.f = nil
			if d.off == 0 { // nothing worth resuming
				d.removePartial()
			}
		}
	}()
	if err := d.resumeState(); err != nil {
		return err
	}
	if d.opts.Progress != nil {
		d.bar = newProgressBar(d.opts.Progress, path.Base(d.src.CachePath))
	}
	idle := 0 // consecutive attempts that transferred nothing
	delay := d.opts.RetryDelay
	for {
		before := d.off
		done, err := d.attempt(ctx)
		if done {
			break
		}
		var perm permanentError
		switch {
		case errors.As(err, &perm):
			d.bar.abort()
			return perm.err
		case ctx.Err() != nil:
			d.bar.abort()
			return context.Cause(ctx)
		}
		if d.off > before {
			idle, delay = 0, d.opts.RetryDelay
			continue
		}
		idle++
		if idle >= d.opts.Retries {
			d.bar.abort()
			return fmt.Errorf("giving up after %d attempts: %w", idle, err)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			d.bar.abort()
			return context.Cause(ctx)
		}
		delay = min(2*delay, 30*time.Second)
	}
	d.bar.finish()
	return d.complete()
}

// resumeState hashes what an earlier attempt left, or starts afresh when it
// was for another URL.
func (d *download) resumeState() error {
	d.h = sha256.New()
	if b, err := os.ReadFile(d.metaPath()); err == nil {
		_ = json.Unmarshal(b, &d.meta)
	}
	if d.meta.URL != d.src.URL {
		d.meta = partialMeta{URL: d.src.URL}
		return d.restart()
	}
	n, err := io.Copy(d.h, d.f)
	if err != nil {
		return fmt.Errorf("read %s: %w", d.partial(), err)
	}
	d.off = n
	return nil
}

// restart empties the partial file.
func (d *download) restart() error {
	if err := d.f.Truncate(0); err != nil {
		return err
	}
	if _, err := d.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	d.h.Reset()
	d.off = 0
	return nil
}

// permanentError ends the retries.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }

// attempt makes one request and appends what arrives. It reports done when
// the partial file holds the whole content.
func (d *download) attempt(ctx context.Context) (done bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errStalled := fmt.Errorf("nothing received for %v", d.opts.StallTimeout)
	stall := time.AfterFunc(d.opts.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.src.URL, nil)
	if err != nil {
		return false, permanentError{err}
	}
	// identity: byte ranges must count the file's bytes, not gzip's.
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", "edged")
	if d.src.HF && d.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+d.opts.Token)
	}
	resumed := d.off > 0
	if resumed {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", d.off))
		if d.meta.Validator != "" {
			req.Header.Set("If-Range", d.meta.Validator)
		}
	}
	resp, err := d.opts.HTTPClient.Do(req)
	if err != nil {
		if c := context.Cause(ctx); c == errStalled {
			err = c
		}
		return false, err
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusOK:
		if resumed { // Range ignored, or If-Range found the content changed
			if err := d.restart(); err != nil {
				return false, permanentError{err}
			}
		}
	case http.StatusPartialContent:
		start, _, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != d.off || !resumed {
			// Not the range asked for: start over on the next attempt.
			if err := d.restart(); err != nil {
				return false, permanentError{err}
			}
			return false, fmt.Errorf("unexpected Content-Range %q for offset %d", resp.Header.Get("Content-Range"), d.off)
		}
		if total >= 0 && d.meta.Size > 0 && total != d.meta.Size {
			if err := d.restart(); err != nil {
				return false, permanentError{err}
			}
			return false, fmt.Errorf("size changed from %d to %d", d.meta.Size, total)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// The partial file may already be whole (cut before the rename).
		_, _, total, _ := parseContentRange(resp.Header.Get("Content-Range"))
		if resumed && total == d.off {
			return true, nil
		}
		if err := d.restart(); err != nil {
			return false, permanentError{err}
		}
		return false, fmt.Errorf("%s: range not satisfiable", d.src.URL)
	case http.StatusNotFound, http.StatusGone:
		return false, permanentError{fmt.Errorf("%s: %w (%s)", d.src.URL, ErrRemoteNotFound, resp.Status)}
	case http.StatusUnauthorized, http.StatusForbidden:
		hint := ""
		if d.src.HF {
			hint = " (a gated or private repository needs a token: set HF_TOKEN)"
		}
		return false, permanentError{fmt.Errorf("%s: %s%s", d.src.URL, resp.Status, hint)}
	default:
		err := fmt.Errorf("%s: %s", d.src.URL, resp.Status)
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout {
			return false, err
		}
		return false, permanentError{err}
	}

	if err := d.noteHeaders(resp); err != nil {
		return false, permanentError{err}
	}
	d.bar.start(d.off, d.meta.Size)

	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			stall.Reset(d.opts.StallTimeout)
			if err := d.write(buf[:n]); err != nil {
				return false, permanentError{err}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if c := context.Cause(ctx); c == errStalled {
				rerr = c
			}
			return false, rerr
		}
	}
	if d.meta.Size > 0 && d.off != d.meta.Size {
		return false, fmt.Errorf("connection closed at %d of %d bytes", d.off, d.meta.Size)
	}
	return true, nil
}

// noteHeaders records the validator, size and reported digest of a
// response, checks the digest against the one asked for, and saves them.
func (d *download) noteHeaders(resp *http.Response) error {
	m := partialMeta{URL: d.src.URL, Size: -1}
	if etag := resp.Header.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		m.Validator = etag
	} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
		m.Validator = lm
	}
	switch resp.StatusCode {
	case http.StatusOK:
		m.Size = resp.ContentLength
	case http.StatusPartialContent:
		_, _, m.Size, _ = parseContentRange(resp.Header.Get("Content-Range"))
	}
	if m.Size < 0 {
		m.Size = 0
	}
	m.SHA256 = reportedSHA256(resp, d.src.HF)
	if m.SHA256 == "" && d.off > 0 {
		m.SHA256 = d.meta.SHA256
	}
	if m.SHA256 != "" && d.meta.SHA256 != "" && m.SHA256 != d.meta.SHA256 && d.off > 0 {
		// The content changed under a validator that did not notice.
		if err := d.restart(); err != nil {
			return err
		}
		return fmt.Errorf("server's sha256 changed from %s to %s; run the pull again", d.meta.SHA256, m.SHA256)
	}
	if want := d.opts.SHA256; want != "" && m.SHA256 != "" && want != m.SHA256 {
		d.removePartial()
		return fmt.Errorf("%w: the server reports %s, want %s", ErrChecksumMismatch, m.SHA256, want)
	}
	d.meta = m
	b, _ := json.Marshal(m)
	return os.WriteFile(d.metaPath(), b, 0o644)
}

// reportedSHA256 finds the sha256 the server reports for the file, looking
// at every response of the redirect chain (see the comment at the top).
func reportedSHA256(resp *http.Response, hf bool) string {
	var first *http.Response
	for r := resp; r != nil; {
		if v := unquoteETag(r.Header.Get("X-Linked-Etag")); isSHA256Hex(v) {
			return strings.ToLower(v)
		}
		first = r
		if r.Request == nil {
			break
		}
		r = r.Request.Response
	}
	if hf && first != nil {
		if v := unquoteETag(first.Header.Get("ETag")); isSHA256Hex(v) {
			return strings.ToLower(v)
		}
	}
	return ""
}

func unquoteETag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	return strings.Trim(s, `"`)
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*", -1)
// and "bytes */TOTAL" (START and END -1).
func parseContentRange(s string) (start, end, total int64, ok bool) {
	s, found := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !found {
		return 0, 0, -1, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, -1, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t < 0 {
			return 0, 0, -1, false
		}
		total = t
	}
	if rng == "*" {
		return -1, -1, total, true
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, -1, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, -1, false
	}
	return start, end, total, true
}

// write appends p to the partial file, checking the GGUF magic once the
// first four bytes of the file are known.
func (d *download) write(p []byte) error {
	if d.off < 4 {
		var head [4]byte
		n, _ := d.f.ReadAt(head[:d.off], 0)
		got := append(head[:n:n], p[:min(len(p), 4-n)]...)
		if string(got) != "GGUF"[:len(got)] {
			d.removePartial()
			return fmt.Errorf("%s: %w (starts with %q)", d.src.URL, ErrNotGGUF, got)
		}
	}
	if _, err := d.f.Write(p); err != nil {
		return fmt.Errorf("write %s: %w", d.partial(), err)
	}
	d.h.Write(p)
	d.off += int64(len(p))
	d.bar.add(len(p))
	return nil
}

// complete verifies the partial file and moves it into place.
func (d *download) complete() error {
	if err := d.f.Sync(); err != nil {
		return err
	}
	if err := d.f.Close(); err != nil {
		return err
	}
	d.f = nil
	got := hex.EncodeToString(d.h.Sum(nil))
	want := d.opts.SHA256
	if want == "" {
		want = d.meta.SHA256
	}
	if want != "" && got != want {
		d.removePartial()
		return fmt.Errorf("%w: got %s, want %s", ErrChecksumMismatch, got, want)
	}
	if err := checkGGUF(d.partial()); err != nil {
		d.removePartial()
		return err
	}
	if err := os.Rename(d.partial(), d.dest); err != nil {
		return err
	}
	os.Remove(d.metaPath())
	syncDir(filepath.Dir(d.dest))
	return writeSumFile(d.dest, got)
}

func (d *download) removePartial() {
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
	os.Remove(d.partial())
	os.Remove(d.metaPath())
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
