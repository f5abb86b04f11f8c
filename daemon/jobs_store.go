package daemon

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/edged/edged/protocol"
)

// The jobs bucket: one protocol.Job per job id, each write one
// transaction. A job's files are written before the record that names
// them, so that a crash leaves a record whose files exist, or files
// without a record (removed at the next start).

// nextJobSeq takes the next submission number. A number taken by a
// submission that then fails is not used again.
func (s *store) nextJobSeq() (seq uint64, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		seq, err = tx.Bucket(bucketJobs).NextSequence()
		return err
	})
	return seq, err
}

// putJob writes j, replacing the record of its id.
func (s *store) putJob(j protocol.Job) error {
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte(j.ID), data)
	})
}

// updateJob changes the record of id with fn in one transaction; an error
// from fn leaves the record as it was. It returns the record written.
func (s *store) updateJob(id string, fn func(j *protocol.Job) error) (protocol.Job, error) {
	var j protocol.Job
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		old, err := getJob(b, id)
		switch {
		case err != nil:
			return err
		case old == nil:
			return protocol.ParamErrorf(protocol.CodeJobNotFound, "id", "no job %q", id)
		}
		j = *old
		if err := fn(&j); err != nil {
			return err
		}
		data, err := json.Marshal(j)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), data)
	})
	return j, err
}

// job returns the record of id, nil when there is none.
func (s *store) job(id string) (j *protocol.Job, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		j, err = getJob(tx.Bucket(bucketJobs), id)
		return err
	})
	return j, err
}

// jobs returns every record in submission order.
func (s *store) jobs() ([]protocol.Job, error) {
	var out []protocol.Job
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var j protocol.Job
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("job %q: %w", k, err)
			}
			out = append(out, j)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b protocol.Job) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, err
}

// getJob decodes the record of id; Unmarshal copies it out of the
// transaction's memory.
func getJob(b *bolt.Bucket, id string) (*protocol.Job, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var j protocol.Job
	if err := json.Unmarshal(v, &j); err != nil {
		return nil, fmt.Errorf("job %q: %w", id, err)
	}
	return &j, nil
}
