package daemon

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/edged/edged/protocol"
)

// The adapters bucket holds, per model, a bucket named after the model:
//
//	"current"   the version requests use, 8 bytes big-endian; absent or 0:
//	            the base model
//	"versions"  a bucket: version (8 bytes big-endian, so that keys sort
//	            by number) → protocol.AdapterRecord as JSON
//
// Version numbers come from the versions bucket's sequence, so that a
// number is never given twice, even once its version was deleted. The
// adapter files themselves are in the file store (adapter_files.go); a
// record names its file by digest.

var (
	keyCurrent  = []byte("current")
	keyVersions = []byte("versions")
)

// addAdapter records rec as model's next version and makes it current,
// then deletes the versions beyond the newest keep, in one transaction.
// The current version is never deleted: it is the newest. It returns the
// version and the digests of the deleted versions that no record
// references any more: their files can go.
func (s *store) addAdapter(rec protocol.AdapterRecord, keep int) (version uint64, unused []string, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		mb, err := tx.Bucket(bucketAdapters).CreateBucketIfNotExists([]byte(rec.Model))
		if err != nil {
			return err
		}
		vb, err := mb.CreateBucketIfNotExists(keyVersions)
		if err != nil {
			return err
		}
		if version, err = vb.NextSequence(); err != nil {
			return err
		}
		rec.AdapterVersion = version
		if err := putAdapter(vb, rec); err != nil {
			return err
		}
		if err := mb.Put(keyCurrent, versionKey(version)); err != nil {
			return err
		}
		deleted, err := pruneAdapters(vb, keep)
		if err != nil {
			return err
		}
		if unused, err = unreferenced(tx, deleted); err != nil {
			return err
		}
		if s.adapterFault != nil {
			return s.adapterFault()
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return version, unused, nil
}

// pruneAdapters deletes from vb the versions older than the newest keep
// and returns their digests.
func pruneAdapters(vb *bolt.Bucket, keep int) (digests []string, err error) {
	var old [][]byte
	c := vb.Cursor()
	n := 0
	for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
		if n++; n > keep {
			// Deleting while the cursor moves skips keys: collect first.
			old = append(old, slices.Clone(k))
		}
	}
	for _, k := range old {
		rec, err := decodeAdapter(k, vb.Get(k))
		if err != nil {
			return nil, err
		}
		if err := vb.Delete(k); err != nil {
			return nil, err
		}
		digests = append(digests, rec.Digest)
	}
	return digests, nil
}

// unreferenced returns those of digests that no record in tx references
// (two versions, of one model or two, may hold the same file).
func unreferenced(tx *bolt.Tx, digests []string) ([]string, error) {
	if len(digests) == 0 {
		return nil, nil
	}
	used, err := adapterDigests(tx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range digests {
		if !used[d] && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out, nil
}

// adapterDigests returns the digests every record references.
func adapterDigests(tx *bolt.Tx) (map[string]bool, error) {
	used := map[string]bool{}
	err := eachAdapter(tx, "", func(rec protocol.AdapterRecord) error {
		used[rec.Digest] = true
		return nil
	})
	return used, err
}

// setCurrentAdapter makes version current for model (0: the base model)
// and returns the version current before. A version that is not stored
// fails with CodeAdapterNotFound.
func (s *store) setCurrentAdapter(model string, version uint64) (prev uint64, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketAdapters).Bucket([]byte(model))
		if vb := versionsOf(tx, model); version != 0 && (vb == nil || vb.Get(versionKey(version)) == nil) {
			return adapterNotFound(model, version)
		}
		if mb == nil { // no versions: the base model is current already
			return nil
		}
		prev = current(mb)
		return mb.Put(keyCurrent, versionKey(version))
	})
	return prev, err
}

// setAdapterMetrics replaces the metrics of a stored version.
func (s *store) setAdapterMetrics(model string, version uint64, metrics json.RawMessage) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		vb := versionsOf(tx, model)
		if vb == nil || vb.Get(versionKey(version)) == nil {
			return adapterNotFound(model, version)
		}
		rec, err := decodeAdapter(versionKey(version), vb.Get(versionKey(version)))
		if err != nil {
			return err
		}
		rec.Metrics = metrics
		return putAdapter(vb, *rec)
	})
}

// adapters returns the records of model (every model when ""), by model
// then version, and each listed model's current version.
func (s *store) adapters(model string) (recs []protocol.AdapterRecord, currents map[string]uint64, err error) {
	currents = map[string]uint64{}
	err = s.db.View(func(tx *bolt.Tx) error {
		err := eachAdapter(tx, model, func(rec protocol.AdapterRecord) error {
			recs = append(recs, rec)
			return nil
		})
		if err != nil {
			return err
		}
		return currentsIn(tx, model, currents)
	})
	return recs, currents, err
}

// currentAdapters returns the current version of every model that has
// adapter versions.
func (s *store) currentAdapters() (currents map[string]uint64, err error) {
	currents = map[string]uint64{}
	err = s.db.View(func(tx *bolt.Tx) error { return currentsIn(tx, "", currents) })
	return currents, err
}

// currentsIn adds the current version of model (every model when "") to
// currents.
func currentsIn(tx *bolt.Tx, model string, currents map[string]uint64) error {
	return tx.Bucket(bucketAdapters).ForEach(func(k, v []byte) error {
		if v == nil && (model == "" || model == string(k)) {
			currents[string(k)] = current(tx.Bucket(bucketAdapters).Bucket(k))
		}
		return nil
	})
}

// servingAdapters returns what a request of model that names no version
// may use, in order of preference: the current version, then the kept
// versions older than it, newest first. An empty list means the base
// model.
func (s *store) servingAdapters(model string) (recs []protocol.AdapterRecord, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		vb := versionsOf(tx, model)
		if vb == nil {
			return nil
		}
		cur := current(tx.Bucket(bucketAdapters).Bucket([]byte(model)))
		if cur == 0 {
			return nil
		}
		c := vb.Cursor()
		k, v := c.Seek(versionKey(cur))
		switch {
		case k == nil: // past the newest: cur itself is not stored
			k, v = c.Last()
		case binary.BigEndian.Uint64(k) > cur:
			k, v = c.Prev()
		}
		for ; k != nil; k, v = c.Prev() {
			rec, err := decodeAdapter(k, v)
			if err != nil {
				return err
			}
			recs = append(recs, *rec)
		}
		return nil
	})
	return recs, err
}

// adapter returns one stored version, failing with CodeAdapterNotFound.
func (s *store) adapter(model string, version uint64) (rec *protocol.AdapterRecord, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		vb := versionsOf(tx, model)
		var v []byte
		if vb != nil {
			v = vb.Get(versionKey(version))
		}
		if v == nil {
			return adapterNotFound(model, version)
		}
		rec, err = decodeAdapter(versionKey(version), v)
		return err
	})
	return rec, err
}

// adapterWithDigest returns the newest stored version of model whose
// adapter has digest; nil when none has.
func (s *store) adapterWithDigest(model, digest string) (rec *protocol.AdapterRecord, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		vb := versionsOf(tx, model)
		if vb == nil {
			return nil
		}
		c := vb.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			r, err := decodeAdapter(k, v)
			if err != nil {
				return err
			}
			if r.Digest == digest {
				rec = r
				return nil
			}
		}
		return nil
	})
	return rec, err
}

// usedAdapterDigests returns the digests the records reference.
func (s *store) usedAdapterDigests() (used map[string]bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		used, err = adapterDigests(tx)
		return err
	})
	return used, err
}

// eachAdapter calls fn with every record of model (every model when ""),
// by model then version.
func eachAdapter(tx *bolt.Tx, model string, fn func(protocol.AdapterRecord) error) error {
	return tx.Bucket(bucketAdapters).ForEach(func(name, v []byte) error {
		if v != nil || model != "" && model != string(name) {
			return nil
		}
		vb := versionsOf(tx, string(name))
		if vb == nil {
			return nil
		}
		return vb.ForEach(func(k, v []byte) error {
			rec, err := decodeAdapter(k, v)
			if err != nil {
				return err
			}
			return fn(*rec)
		})
	})
}

// versionsOf is model's versions bucket; nil when it has none.
func versionsOf(tx *bolt.Tx, model string) *bolt.Bucket {
	mb := tx.Bucket(bucketAdapters).Bucket([]byte(model))
	if mb == nil {
		return nil
	}
	return mb.Bucket(keyVersions)
}

// current reads a model bucket's current version.
func current(mb *bolt.Bucket) uint64 {
	if v := mb.Get(keyCurrent); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func versionKey(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// decodeAdapter decodes the record under key k; the value bbolt returns is
// valid only inside the transaction, and Unmarshal copies it out.
func decodeAdapter(k, v []byte) (*protocol.AdapterRecord, error) {
	var rec protocol.AdapterRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("adapter version %x: %w", k, err)
	}
	return &rec, nil
}

func putAdapter(vb *bolt.Bucket, rec protocol.AdapterRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return vb.Put(versionKey(rec.AdapterVersion), data)
}

func adapterNotFound(model string, version uint64) error {
	return protocol.ParamErrorf(protocol.CodeAdapterNotFound, "adapter_version", "model %s has no adapter version %d (see edgectl adapters list)", model, version)
}
