package daemon

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edged/edged/protocol"
)

// The edits bucket: one protocol.EditRecord per edit id. Each write is one
// transaction, so that an edit is either stored whole or not at all when
// the intake acknowledges it; every write is idempotent, so that a
// message delivered again after a crash changes nothing.

// insertEdit stores rec unless its id holds a record that is not a
// rejection: an edit stored once is never replaced (a redelivery, or the
// same id published again under another message id), while a rejected id
// may be published again, corrected. It reports whether rec was stored.
func (s *store) insertEdit(rec protocol.EditRecord) (stored bool, err error) {
	err = s.updateEdits(func(b *bolt.Bucket) error {
		free, err := freeID(b, rec.ID)
		if err != nil || !free {
			return err
		}
		stored = true
		return putEdit(b, rec)
	})
	return stored && err == nil, err
}

// insertRejected stores the rejection rec under its id, or under the
// message's RejectedKey when the id holds an edit (which an invalid
// message must not replace). It returns the key used.
func (s *store) insertRejected(rec protocol.EditRecord) (key string, err error) {
	err = s.updateEdits(func(b *bolt.Bucket) error {
		free, err := freeID(b, rec.ID)
		if err != nil {
			return err
		}
		if !free {
			rec.ID = protocol.RejectedKey(rec.StreamSeq)
		}
		key = rec.ID
		return putEdit(b, rec)
	})
	return key, err
}

// freeID reports whether id may take a new record: it holds none, or a
// rejection.
func freeID(b *bolt.Bucket, id string) (bool, error) {
	old, err := getEdit(b, id)
	return err == nil && (old == nil || old.Status == protocol.EditRejected), err
}

// retractEdit marks the edit id retracted by the message seq, keeping the
// rest of its record. An id not stored yet gets a record of its own: an
// edit delivered after its retraction (a redelivery can overtake it)
// then stays retracted. It returns the record and whether it changed.
func (s *store) retractEdit(id string, seq uint64, at time.Time) (rec protocol.EditRecord, changed bool, err error) {
	err = s.updateEdits(func(b *bolt.Bucket) error {
		old, err := getEdit(b, id)
		switch {
		case err != nil:
			return err
		case old == nil:
			rec = protocol.EditRecord{ID: id, Subject: protocol.EditsRetractSubject, ReceivedAt: at}
		case old.Status == protocol.EditRetracted:
			rec = *old
			return nil
		default:
			rec = *old
		}
		rec.Status, rec.RetractSeq, rec.RetractedAt = protocol.EditRetracted, seq, at
		changed = true
		return putEdit(b, rec)
	})
	return rec, changed && err == nil, err
}

// edit returns the record of id, nil when there is none.
func (s *store) edit(id string) (rec *protocol.EditRecord, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		rec, err = getEdit(tx.Bucket(bucketEdits), id)
		return err
	})
	return rec, err
}

// edits returns the records of status (all when ""), in id order, and the
// number of records of each status.
func (s *store) edits(status string) (recs []protocol.EditRecord, counts map[string]int, err error) {
	counts = map[string]int{}
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEdits).ForEach(func(k, v []byte) error {
			var rec protocol.EditRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("edit %q: %w", k, err)
			}
			counts[rec.Status]++
			if status == "" || rec.Status == status {
				recs = append(recs, rec)
			}
			return nil
		})
	})
	return recs, counts, err
}

// updateEdits runs fn in a write transaction on the edits bucket.
func (s *store) updateEdits(fn func(b *bolt.Bucket) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := fn(tx.Bucket(bucketEdits)); err != nil {
			return err
		}
		if s.editFault != nil {
			return s.editFault()
		}
		return nil
	})
}

// getEdit decodes the record of id; the value bbolt returns is valid only
// inside the transaction, and Unmarshal copies it out.
func getEdit(b *bolt.Bucket, id string) (*protocol.EditRecord, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var rec protocol.EditRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("edit %q: %w", id, err)
	}
	return &rec, nil
}

func putEdit(b *bolt.Bucket, rec protocol.EditRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return b.Put([]byte(rec.ID), data)
}
