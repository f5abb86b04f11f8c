package daemon

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/edged/edged/protocol"
)

// adapterFiles is the file store of the adapter versions: each adapter
// GGUF zstd-compressed in dir (adapters/ under the state directory) as
// <sha256 hex of the GGUF>.gguf.zst, next to the database that holds the
// records.
//
// Files are named by their content's digest rather than by model and
// version: a model name may hold any character but control characters
// ('/' and ".." included), so it cannot make a path; the same adapter
// committed twice (added again, or fetched later from the fleet) is
// stored once; and a file is garbage exactly when no record names its
// digest, which is what collect removes at start.
type adapterFiles struct {
	dir string
	// mu is held for reading while a request chooses a version and reads
	// its file, and for writing while files are removed: a commit that
	// deletes that version meanwhile removes the file only once it is read.
	mu sync.RWMutex
}

const (
	adapterExt    = ".gguf.zst"
	adapterTemp   = ".tmp-" // prefix of files being written
	digestPrefix  = "sha256:"
	adapterSubdir = "adapters"
)

// openAdapterFiles opens the file store under stateDir and removes what
// a crash left there: files that no record of st names.
func openAdapterFiles(stateDir string, st *store, log *slog.Logger) (*adapterFiles, error) {
	f := &adapterFiles{dir: filepath.Join(stateDir, adapterSubdir)}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return nil, fmt.Errorf("adapter store: %w", err)
	}
	used, err := st.usedAdapterDigests()
	if err != nil {
		return nil, fmt.Errorf("state database: %w", err)
	}
	removed, err := f.collect(used)
	if len(removed) > 0 {
		log.Info("removed adapter files of no version (left by an interrupted commit)", "dir", f.dir, "files", removed)
	}
	if err != nil {
		log.Warn("removing adapter files of no version", "err", err)
	}
	return f, nil
}

// digestOf is the digest of an adapter GGUF as records hold it.
func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return digestPrefix + hex.EncodeToString(sum[:])
}

// fileName is the name of the file of digest.
func fileName(digest string) string { return strings.TrimPrefix(digest, digestPrefix) + adapterExt }

// put stores data, whose digest is digest, compressed, durably and
// atomically: it writes a temporary file, syncs it, renames it to its
// name and syncs the directory, so that after a crash the file is whole
// or absent. It returns the file's name and size.
func (f *adapterFiles) put(digest string, data []byte) (name string, size int64, err error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return "", 0, err
	}
	packed := enc.EncodeAll(data, nil)
	enc.Close()
	tmp, err := os.CreateTemp(f.dir, adapterTemp+"*")
	if err != nil {
		return "", 0, fmt.Errorf("adapter store: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(packed); err != nil {
		return "", 0, fmt.Errorf("adapter store: writing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("adapter store: syncing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("adapter store: %w", err)
	}
	name = fileName(digest)
	// The same content may be stored already (a version of the same
	// adapter): replacing it changes no byte, and repairs a damaged copy.
	if err = os.Rename(tmp.Name(), filepath.Join(f.dir, name)); err != nil {
		return "", 0, fmt.Errorf("adapter store: %w", err)
	}
	if err = syncDir(f.dir); err != nil {
		return "", 0, fmt.Errorf("adapter store: syncing %s: %w", f.dir, err)
	}
	return name, int64(len(packed)), nil
}

// read returns the GGUF of rec, decompressed and checked against the
// record's size and digest: a missing, undecodable or altered file fails
// with CodeAdapterCorrupt. The caller holds mu for reading.
func (f *adapterFiles) read(rec *protocol.AdapterRecord) ([]byte, error) {
	file, err := f.open(rec)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	data, err := unpack(file, rec.SizeBytes, rec.Digest)
	if err != nil {
		return nil, f.corrupt(rec, err)
	}
	return data, nil
}

// readPacked returns the file of rec as it is stored, zstd-compressed,
// once it is checked as read checks it: what a publication sends. The
// caller holds mu for reading.
func (f *adapterFiles) readPacked(rec *protocol.AdapterRecord) ([]byte, error) {
	file, err := f.open(rec)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	packed, err := io.ReadAll(file)
	if err != nil {
		return nil, fmt.Errorf("adapter store: %w", err)
	}
	if _, err := unpack(bytes.NewReader(packed), rec.SizeBytes, rec.Digest); err != nil {
		return nil, f.corrupt(rec, err)
	}
	return packed, nil
}

// open opens the file of rec; a missing file fails with
// CodeAdapterCorrupt.
func (f *adapterFiles) open(rec *protocol.AdapterRecord) (*os.File, error) {
	file, err := os.Open(filepath.Join(f.dir, rec.File))
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, f.corrupt(rec, errors.New("the file is missing"))
	}
	if err != nil {
		return nil, fmt.Errorf("adapter store: %w", err)
	}
	return file, nil
}

func (f *adapterFiles) corrupt(rec *protocol.AdapterRecord, err error) error {
	return protocol.Errorf(protocol.CodeAdapterCorrupt, "model %s adapter version %d (%s): %v",
		rec.Model, rec.AdapterVersion, filepath.Join(f.dir, rec.File), err)
}

// unpack decompresses an adapter GGUF from r and checks it against its
// size and digest. A damaged or hostile frame never makes it allocate
// more than size bytes.
func unpack(r io.Reader, size int64, digest string) ([]byte, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	data, err := io.ReadAll(io.LimitReader(dec, size+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("does not decompress: %w", err)
	case int64(len(data)) != size:
		return nil, fmt.Errorf("decompresses to %d bytes, want %d", len(data), size)
	}
	if d := digestOf(data); d != digest {
		return nil, fmt.Errorf("digest %s, want %s", d, digest)
	}
	return data, nil
}

// remove deletes the files of digests, waiting for the requests reading
// files.
func (f *adapterFiles) remove(digests []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, d := range digests {
		if err := os.Remove(filepath.Join(f.dir, fileName(d))); err != nil && !errors.Is(err, iofs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// collect removes what a crash may have left: temporary files, and
// adapter files whose digest no record names (written before a commit's
// transaction that did not happen). Other files are left alone. It
// returns the names removed.
func (f *adapterFiles) collect(used map[string]bool) (removed []string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return nil, fmt.Errorf("adapter store: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		hexDigest, isAdapter := strings.CutSuffix(name, adapterExt)
		garbage := strings.HasPrefix(name, adapterTemp) || isAdapter && !used[digestPrefix+hexDigest]
		if !garbage || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(f.dir, name)); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}
