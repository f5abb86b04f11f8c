package daemon

// Knowledge edits: the Service side of the edit stream. The NATS front
// end's intake (nats_edits.go) hands over each message of the stream;
// IngestEdit checks it and commits it to the edits bucket (edits_store.go),
// and only then may the intake acknowledge it. Edits, EditStatus and the
// socket and NATS endpoints built on them are the read side.

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/edged/edged/protocol"
)

// EditMessage is one message of the edit stream.
type EditMessage struct {
	Subject string
	Data    []byte
	Seq     uint64 // its stream sequence
}

// EditOutcome says what IngestEdit did with a message, and so how the
// intake answers the stream.
type EditOutcome string

// The outcomes. Every one but EditRejectedOutcome is acknowledged;
// a rejected message is terminated (never delivered again).
const (
	EditAccepted  EditOutcome = "accepted"  // stored as pending
	EditDuplicate EditOutcome = "duplicate" // its id was stored already: nothing changed
	EditRetracted EditOutcome = "retracted" // a retraction, committed
	EditRejected  EditOutcome = "rejected"  // invalid: recorded with the reason
)

// EditResult is what IngestEdit did.
type EditResult struct {
	Outcome EditOutcome
	ID      string          // the record's key
	Reason  *protocol.Error // why, for EditRejected
}

// IngestEdit checks one message of the edit stream and commits what it
// says to the state database. An error means nothing was committed (the
// message must be delivered again); otherwise the result is committed.
func (s *Service) IngestEdit(m EditMessage) (EditResult, error) {
	if m.Subject == protocol.EditsRetractSubject {
		return s.ingestRetraction(m)
	}
	e, err := protocol.DecodeEdit(m.Data)
	if err == nil {
		err = s.checkEdit(e, m.Subject)
	}
	if err != nil {
		return s.reject(m, protocol.PeekEditID(m.Data), e, err)
	}
	rec := protocol.EditRecord{ID: e.ID, Status: protocol.EditPending, Edit: e, Subject: m.Subject, StreamSeq: m.Seq, ReceivedAt: time.Now().UTC()}
	stored, err := s.d.store.insertEdit(rec)
	if err != nil {
		return EditResult{}, err
	}
	if !stored {
		return EditResult{Outcome: EditDuplicate, ID: e.ID}, nil
	}
	s.d.emit(Event{Kind: "edit_accepted", Model: e.Model, Edit: e.ID})
	s.d.scheduleEdits(e.Model)
	return EditResult{Outcome: EditAccepted, ID: e.ID}, nil
}

// checkEdit checks what protocol cannot: that the subject addresses this
// node or the edit's model, and that the model is registered here.
func (s *Service) checkEdit(e *protocol.Edit, subject string) error {
	switch subject {
	case protocol.EditsAllSubject, protocol.EditsNodeSubject(s.Node()), protocol.EditsModelSubject(e.Model):
	default:
		return protocol.ParamErrorf(protocol.CodeInvalidValue, "model", "an edit for model %q on subject %s, which addresses neither node %s nor that model", e.Model, subject, s.Node())
	}
	if !s.d.reg.has(e.Model) {
		return protocol.ParamErrorf(protocol.CodeModelNotFound, "model", "model %q is not registered on node %s", e.Model, s.Node())
	}
	return nil
}

// reject records an invalid message under id, or under its stream
// sequence when it has no readable id or that id holds a valid edit; e is
// the decoded edit, nil when it did not decode.
func (s *Service) reject(m EditMessage, id string, e *protocol.Edit, why error) (EditResult, error) {
	reason := protocol.AsError(why)
	if id == "" {
		id = protocol.RejectedKey(m.Seq)
	}
	rec := protocol.EditRecord{ID: id, Status: protocol.EditRejected, Edit: e, Error: reason, Subject: m.Subject, StreamSeq: m.Seq, ReceivedAt: time.Now().UTC()}
	id, err := s.d.store.insertRejected(rec)
	if err != nil {
		return EditResult{}, err
	}
	ev := Event{Kind: "edit_rejected", Edit: id, Msg: reason.Error()}
	if e != nil {
		ev.Model = e.Model
	}
	s.d.emit(ev)
	return EditResult{Outcome: EditRejected, ID: id, Reason: reason}, nil
}

// ingestRetraction marks an edit retracted. A malformed retraction is
// recorded under its stream sequence, never under the id it names, so
// that it cannot stand in the way of that edit.
func (s *Service) ingestRetraction(m EditMessage) (EditResult, error) {
	r, err := protocol.DecodeRetraction(m.Data)
	if err != nil {
		return s.reject(m, "", nil, err)
	}
	rec, changed, err := s.d.store.retractEdit(r.ID, m.Seq, time.Now().UTC())
	if err != nil {
		return EditResult{}, err
	}
	if !changed {
		return EditResult{Outcome: EditDuplicate, ID: r.ID}, nil
	}
	ev := Event{Kind: "edit_retracted", Edit: r.ID}
	if rec.Edit != nil {
		ev.Model = rec.Edit.Model
	}
	s.d.emit(ev)
	if rec.Edit != nil {
		s.d.scheduleEdits(rec.Edit.Model)
	}
	return EditResult{Outcome: EditRetracted, ID: r.ID}, nil
}

// EditModels returns the registered model names in order: the models
// whose edit subjects the intake consumes.
func (s *Service) EditModels() []string { return s.d.reg.names() }

// Edits lists the stored edits (those of req.Status when set) in the
// order the stream delivered them, with the count of every status.
func (s *Service) Edits(ctx context.Context, req *protocol.EditListRequest) (*protocol.EditList, error) {
	recs, counts, err := s.d.store.edits(req.Status)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInternal, "reading the edits: %v", err)
	}
	slices.SortFunc(recs, func(a, b protocol.EditRecord) int {
		return cmp.Or(cmp.Compare(firstSeq(a), firstSeq(b)), cmp.Compare(a.ID, b.ID))
	})
	if recs == nil {
		recs = []protocol.EditRecord{}
	}
	return &protocol.EditList{Version: protocol.Version, Object: protocol.ObjectList, Data: recs, Counts: counts}, nil
}

// firstSeq is the stream sequence that created the record.
func firstSeq(r protocol.EditRecord) uint64 {
	if r.StreamSeq != 0 {
		return r.StreamSeq
	}
	return r.RetractSeq
}

// EditStatus returns one stored edit.
func (s *Service) EditStatus(ctx context.Context, req *protocol.EditStatusRequest) (*protocol.EditRecord, error) {
	rec, err := s.d.store.edit(req.ID)
	switch {
	case err != nil:
		return nil, protocol.Errorf(protocol.CodeInternal, "reading edit %s: %v", req.ID, err)
	case rec == nil:
		return nil, protocol.ParamErrorf(protocol.CodeEditNotFound, "id", "no edit %q is stored on node %s", req.ID, s.Node())
	}
	return rec, nil
}
