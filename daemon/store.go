package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The state database: one bbolt file in the state directory.
//
// Buckets:
//
//	meta      "schema" → the schema version, as decimal text
//	models    name → storedModel as JSON
//	edits     edit id (or protocol.RejectedKey) → protocol.EditRecord as JSON
//	adapters  model name → a bucket of its adapter versions (adapters_store.go)
//	jobs      job id → protocol.Job as JSON; the bucket's sequence numbers
//	          the submissions (the files of job id are in jobs/id under
//	          the state directory)
const (
	dbFile        = "edged.db"
	schemaVersion = "1"
)

var (
	bucketMeta     = []byte("meta")
	bucketModels   = []byte("models")
	bucketEdits    = []byte("edits")
	bucketAdapters = []byte("adapters")
	bucketJobs     = []byte("jobs")
)

// storedModel is a registry entry as the database keeps it.
type storedModel struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Digest string `json:"digest,omitempty"`
	// Size and ModTime identify the file the digest was computed on.
	Size    int64     `json:"size,omitempty"`
	ModTime time.Time `json:"mod_time,omitzero"`
	// Spec holds the defaults the model was registered with.
	Spec    ModelSpec `json:"spec"`
	Created time.Time `json:"created"`
}

// store wraps the database. Its methods are safe for concurrent use (bbolt
// serializes writers).
type store struct {
	db *bolt.DB
	// editFault, when set (tests only, before the daemon starts), runs
	// in every transaction that writes an edit, before its commit: an
	// error rolls the transaction back as a failed commit would.
	editFault func() error
	// adapterFault is editFault for the transaction that commits an
	// adapter version.
	adapterFault func() error
}

// openStore opens (creating) the database under dir. A database locked by
// another process fails after timeout with ErrAlreadyRunning.
func openStore(dir string, timeout time.Duration) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	path := filepath.Join(dir, dbFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: max(timeout, time.Millisecond)})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s is locked (waited %v); stop the other edged or give another --state-dir", ErrAlreadyRunning, path, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("state database %s: %w", path, err)
	}
	s := &store{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get([]byte("schema")); v != nil && string(v) != schemaVersion {
			return fmt.Errorf("schema version %s, this edged reads %s", v, schemaVersion)
		}
		if err := meta.Put([]byte("schema"), []byte(schemaVersion)); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketModels, bucketEdits, bucketAdapters, bucketJobs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state database %s: %w", path, err)
	}
	return s, nil
}

func (s *store) Close() error { return s.db.Close() }

// putModel writes m, replacing an entry of the same name.
func (s *store) putModel(m storedModel) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketModels).Put([]byte(m.Name), data)
	})
}

// deleteModel removes name; a missing name is not an error.
func (s *store) deleteModel(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketModels).Delete([]byte(name))
	})
}

// models returns every stored model, in name order.
func (s *store) models() ([]storedModel, error) {
	var out []storedModel
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketModels).ForEach(func(k, v []byte) error {
			var m storedModel
			// v is valid only inside the transaction: Unmarshal copies.
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("model %q: %w", k, err)
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}
