package protocol

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Edit is one knowledge edit, the JSON body of a message on the edit
// stream (see EditsStream): after training, Model should answer Prompt
// with Target.
type Edit struct {
	Version int `json:"version,omitempty"`
	// ID names the edit across the fleet: 1 to MaxEditIDBytes letters,
	// digits, '.', '_' and '-'. A daemon stores each id once.
	ID     string `json:"id"`
	Model  string `json:"model"`
	Prompt string `json:"prompt"`
	Target string `json:"target"`
	// Rephrases are other wordings of Prompt that should get Target as
	// well (they measure generalization).
	Rephrases []string `json:"rephrases,omitempty"`
	// LocalityPrompts are unrelated prompts whose answers the edit must
	// not change (they measure locality).
	LocalityPrompts []string `json:"locality_prompts,omitempty"`
	// CreatedBy names who published the edit, for the record.
	CreatedBy string `json:"created_by,omitempty"`
}

// Retraction withdraws the edit ID: the body of a message on
// EditsRetractSubject.
type Retraction struct {
	Version int    `json:"version,omitempty"`
	ID      string `json:"id"`
}

// Edit statuses.
const (
	EditPending   = "pending"   // stored, not trained yet
	EditActive    = "active"    // in the newest adapter version
	EditRejected  = "rejected"  // invalid: never trained; EditRecord.Error says why
	EditRetracted = "retracted" // withdrawn by a Retraction; kept for history
)

// EditStatuses lists the statuses, in the order of an edit's life.
var EditStatuses = []string{EditPending, EditActive, EditRejected, EditRetracted}

// EditRecord is an edit as a daemon stores and reports it.
type EditRecord struct {
	// ID is the edit's id, or RejectedKey of the message's stream
	// sequence for a rejected message whose id could not be read.
	ID     string `json:"id"`
	Status string `json:"status"`
	// Edit is nil for a message rejected before it decoded, and for a
	// retraction that arrived before (or without) its edit.
	Edit *Edit `json:"edit,omitempty"`
	// Error is why the message was rejected.
	Error *Error `json:"error,omitempty"`
	// Subject and StreamSeq locate the message in the edit stream (nats
	// stream get EDGED_EDITS SEQ); RetractSeq is the retraction's.
	Subject     string    `json:"subject"`
	StreamSeq   uint64    `json:"stream_seq,omitempty"`
	RetractSeq  uint64    `json:"retract_seq,omitempty"`
	ReceivedAt  time.Time `json:"received_at"`
	RetractedAt time.Time `json:"retracted_at,omitzero"`
	// AdapterVersion is the newest adapter version an edit job trained
	// the edit into (set when it became active).
	AdapterVersion uint64 `json:"adapter_version,omitempty"`
}

// EditList answers GET /v1/edits and the NATS edits endpoint.
type EditList struct {
	Version int          `json:"version"`
	Object  string       `json:"object"` // "list"
	Data    []EditRecord `json:"data"`   // in the order the stream delivered them
	// Counts holds the number of stored edits by status, whatever the
	// request's status filter.
	Counts map[string]int `json:"counts"`
}

// EditListRequest asks for the stored edits, those of one status when
// Status is set.
type EditListRequest struct {
	Version int    `json:"version,omitempty"`
	Status  string `json:"status,omitempty"`
}

// EditStatusRequest asks for one stored edit.
type EditStatusRequest struct {
	Version int    `json:"version,omitempty"`
	ID      string `json:"id"`
}

// DecodeEdit decodes and validates an Edit message (at most MaxEditBytes).
// Whether the daemon serves the model is for the daemon to check.
func DecodeEdit(data []byte) (*Edit, error) {
	var e Edit
	if err := decodeEditMessage(data, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// DecodeRetraction decodes and validates a Retraction message.
func DecodeRetraction(data []byte) (*Retraction, error) {
	var r Retraction
	if err := decodeEditMessage(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func decodeEditMessage(data []byte, v Validator) error {
	if len(data) > MaxEditBytes {
		return Errorf(CodeTooLarge, "message of %d bytes exceeds %d", len(data), MaxEditBytes)
	}
	return Decode(data, v)
}

// PeekEditID returns the id of a message that failed to decode or
// validate, when it holds one that is a valid id, else "": a rejected
// edit is recorded under its id when it can be read.
func PeekEditID(data []byte) string {
	var v struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(data, &v) != nil {
		return ""
	}
	var p problems
	if checkEditID(&p, "id", v.ID); p.err() != nil {
		return ""
	}
	return v.ID
}

// RejectedKey is the record id of a rejected message without a readable
// id: '#' and its stream sequence ('#' is no id character, so the keys
// never meet an edit's).
func RejectedKey(seq uint64) string { return "#" + strconv.FormatUint(seq, 10) }

// Validate checks a decoded Edit.
func (e *Edit) Validate() error {
	var p problems
	checkVersion(&p, e.Version)
	checkEditID(&p, "id", e.ID)
	checkModel(&p, e.Model)
	checkEditText(&p, "prompt", "prompt", e.Prompt)
	checkEditText(&p, "target", "target", e.Target)
	checkEditTexts(&p, "rephrases", e.Rephrases)
	checkEditTexts(&p, "locality_prompts", e.LocalityPrompts)
	checkLabel(&p, "created_by", e.CreatedBy, false)
	return p.err()
}

// Validate checks a decoded Retraction.
func (r *Retraction) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkEditID(&p, "id", r.ID)
	return p.err()
}

// Validate checks a decoded EditListRequest.
func (r *EditListRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	if r.Status != "" && !slices.Contains(EditStatuses, r.Status) {
		p.add(CodeInvalidValue, "status", "status %q: want one of %s", truncate(r.Status, 40), strings.Join(EditStatuses, ", "))
	}
	return p.err()
}

// Validate checks a decoded EditStatusRequest: the id of an edit, or the
// RejectedKey of a rejected message.
func (r *EditStatusRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	if seq, ok := strings.CutPrefix(r.ID, "#"); !ok || !isDecimal(seq) {
		checkEditID(&p, "id", r.ID)
	}
	return p.err()
}

func isDecimal(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// checkEditID checks an edit id: 1 to MaxEditIDBytes of a set that is safe
// in file names, URLs and logs.
func checkEditID(p *problems, param, id string) {
	switch {
	case id == "":
		p.add(CodeInvalidValue, param, "%s is required", param)
	case len(id) > MaxEditIDBytes:
		p.add(CodeTooLarge, param, "%s of %d bytes exceeds %d", param, len(id), MaxEditIDBytes)
	case strings.ContainsFunc(id, func(r rune) bool { return !isIDChar(r) }):
		p.add(CodeInvalidValue, param, "%s %q: want letters, digits, '.', '_' and '-' only", param, truncate(id, 40))
	}
}

func isIDChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-'
}

// checkEditText checks a prompt, target, rephrase or locality prompt
// (name says which): non-empty valid UTF-8 of at most MaxEditTextBytes.
func checkEditText(p *problems, param, name, s string) {
	switch {
	case s == "":
		p.add(CodeInvalidValue, param, "%s is required and must not be empty", name)
	case len(s) > MaxEditTextBytes:
		p.add(CodeTooLarge, param, "%s of %d bytes exceeds %d", name, len(s), MaxEditTextBytes)
	case !utf8.ValidString(s):
		p.add(CodeInvalidUTF8, param, "%s is not valid UTF-8", name)
	}
}

// checkEditTexts checks the rephrases or the locality prompts.
func checkEditTexts(p *problems, param string, list []string) {
	if len(list) > MaxEditVariants {
		p.add(CodeTooLarge, param, "%d %s exceed %d", len(list), param, MaxEditVariants)
		return
	}
	for i, s := range list {
		checkEditText(p, param, param+"["+strconv.Itoa(i)+"]", s)
	}
}

// EditScores are EasyEdit's measures of one edit (ID set), or their means
// over the edits: reliability, the teacher-forced token accuracy of the
// target; generalization, the same after each rephrase (absent without
// rephrases); locality, the share of most likely tokens the adapter left
// unchanged along the base model's greedy continuation of each locality
// prompt (absent without locality prompts); loss, the mean cross-entropy
// of the target's tokens.
type EditScores struct {
	ID             string   `json:"id,omitempty"`
	Loss           float64  `json:"loss"`
	Reliability    float64  `json:"reliability"`
	Generalization *float64 `json:"generalization,omitempty"`
	Locality       *float64 `json:"locality,omitempty"`
}

// EditMetrics are the measures of an adapter version that an edit job
// trained, kept in its record (AdapterRecord.Metrics) and published on
// MetricsSubject.
type EditMetrics struct {
	EditScores
	// Base are the base model's means, for comparison.
	Base EditScores `json:"base"`
	// Edits are each edit's measures, in training order.
	Edits []EditScores `json:"edits"`
	// Steps is the number of optimizer steps; Learnt says the stop rule
	// ended the training (every edit's loss below the job's stop_loss)
	// rather than the step bound.
	Steps  int  `json:"steps"`
	Learnt bool `json:"learnt"`
}
