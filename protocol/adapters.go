package protocol

import (
	"encoding/json"
	"time"
)

// Adapter versions. Each model has its own sequence of adapter versions,
// numbered 1, 2, 3… in the order they were committed (a number is never
// given twice, even after its version was deleted). One of them, or none
// (0: the base model), is the model's current version: completions and
// chats use it unless they name another in "adapter_version", and their
// responses say which version served them. Every field named
// "adapter_version" holds such a number; "version" is, as everywhere, the
// schema version.

// Adapter kinds (AdapterRecord.Kind).
const (
	AdapterLoRA   = "lora"
	AdapterPrefix = "prefix"
)

// AdapterBase is the adapter_version of a request that asks for the base
// model, without the current adapter version.
const AdapterBase = -1

// AdapterSource says where an adapter version came from.
type AdapterSource struct {
	// Job is the training job that made the version.
	Job string `json:"job,omitempty"`
	// Edits are the ids of the knowledge edits trained into it.
	Edits []string `json:"edits,omitempty"`
	// File is the name of a file added with POST /v1/adapters/add
	// (edgectl adapters add).
	File string `json:"file,omitempty"`
	// Pulled says where a version pulled from the fleet was published;
	// Job, Edits and File are then the publisher's.
	Pulled *AdapterOrigin `json:"pulled,omitempty"`
}

// AdapterRecord is one adapter version as a daemon stores and lists it.
type AdapterRecord struct {
	Model          string        `json:"model"`
	AdapterVersion uint64        `json:"adapter_version"`
	Created        time.Time     `json:"created"`
	Source         AdapterSource `json:"source"`
	Kind           string        `json:"kind"` // AdapterLoRA or AdapterPrefix
	// File is the version's file in the daemon's adapter store (zstd
	// compressed GGUF), named after Digest; SizeBytes is the GGUF's size,
	// CompressedBytes the file's.
	File            string `json:"file"`
	SizeBytes       int64  `json:"size_bytes"`
	CompressedBytes int64  `json:"compressed_bytes"`
	// Digest is "sha256:" and the hex SHA-256 of the uncompressed GGUF,
	// checked each time the version is loaded.
	Digest string `json:"digest"`
	// Metrics is a JSON object the trainer fills in (edit reliability,
	// generalization, locality…); absent until it does.
	Metrics json.RawMessage `json:"metrics,omitempty"`
}

// AdapterList answers GET /v1/adapters and the NATS adapters endpoint.
type AdapterList struct {
	Version int             `json:"version"`
	Object  string          `json:"object"` // "list"
	Data    []AdapterRecord `json:"data"`   // by model, then version
	// Current holds, for every model listed, the version requests use
	// (0: the base model).
	Current map[string]uint64 `json:"current"`
}

// AdapterListRequest asks for the stored adapter versions, those of one
// model when Model is set.
type AdapterListRequest struct {
	Version int    `json:"version,omitempty"`
	Model   string `json:"model,omitempty"`
}

// AdapterRollbackRequest makes a stored version of a model current: new
// requests use it at once, running ones finish on theirs. AdapterVersion 0
// makes the base model current (no adapter); any other must be stored.
type AdapterRollbackRequest struct {
	Version        int    `json:"version,omitempty"`
	Model          string `json:"model"`
	AdapterVersion uint64 `json:"adapter_version"`
}

// AdapterRollbackResponse answers an AdapterRollbackRequest.
type AdapterRollbackResponse struct {
	Version        int    `json:"version"`
	Model          string `json:"model"`
	AdapterVersion uint64 `json:"adapter_version"` // current now
	Previous       uint64 `json:"previous"`        // current before
}

// AdapterAddRequest commits an adapter file made offline (edgectl adapt)
// as a model's newest version, which becomes current. On the socket it is
// the query of POST /v1/adapters/add, whose body is the GGUF file itself
// (at most MaxAdapterBytes).
type AdapterAddRequest struct {
	Version int    `json:"version,omitempty"`
	Model   string `json:"model"`
	// File is the file's name, kept in the version's source.
	File string `json:"file,omitempty"`
}

// DecodeAdapterRollback decodes and validates an AdapterRollbackRequest.
func DecodeAdapterRollback(data []byte) (*AdapterRollbackRequest, error) {
	var r AdapterRollbackRequest
	if err := Decode(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Validate checks a decoded AdapterListRequest.
func (r *AdapterListRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	if r.Model != "" {
		checkModel(&p, r.Model)
	}
	return p.err()
}

// Validate checks a decoded AdapterRollbackRequest.
func (r *AdapterRollbackRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	return p.err()
}

// Validate checks an AdapterAddRequest: File, when given, is a base name
// (no directory) of at most MaxNameBytes.
func (r *AdapterAddRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	checkFileName(&p, "file", r.File)
	return p.err()
}

// checkAdapterVersion checks a request's adapter_version: absent, 0 (the
// current version), AdapterBase or a version number.
func checkAdapterVersion(p *problems, v *int64) {
	if v != nil && *v < AdapterBase {
		p.add(CodeInvalidValue, "adapter_version", "adapter_version %d: want a version number, 0 (the current version) or %d (the base model)", *v, AdapterBase)
	}
}
