package protocol

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// Fleet distribution of adapter versions. A node publishes one of its
// versions on the NATS server the fleet shares: the adapter's
// zstd-compressed GGUF becomes an object of the JetStream object store
// AdaptersBucket, named by the GGUF's digest (so that one adapter is
// stored once, whichever nodes and models publish it), and a
// PublishedAdapter under the model's key (AdapterKey) in the key-value
// bucket AdapterVersionsBucket says which object is the model's published
// version. Another node pulls it: it reads the entry, fetches the object
// (checked against the object store's own digest), checks the GGUF's
// SHA-256 against the entry's digest and commits it as its own newest
// version, instead of training it again.
const (
	AdaptersBucket        = "EDGED_ADAPTERS"
	AdapterVersionsBucket = "EDGED_ADAPTER_VERSIONS"
)

// AdapterKey is model's key in AdapterVersionsBucket. Keys may hold only
// letters, digits and "-/_=.", so every other byte of the name, '=' and
// '.' included, is written "=" and two hex digits: "qwen2.5" is
// "qwen2=2E5". Unlike SubjectToken the mapping is one to one, so two
// models never share a key.
func AdapterKey(model string) string {
	var b strings.Builder
	for i := 0; i < len(model); i++ {
		c := model[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteString(strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return b.String()
}

// BaseModel identifies the model file an adapter was made for.
type BaseModel struct {
	// Name is the model's name on the publishing node.
	Name string `json:"name"`
	// Digest is "sha256:" and the hex SHA-256 of the model's GGUF file
	// ("" when the publisher could not read it); SizeBytes its size.
	Digest    string `json:"digest,omitempty"`
	SizeBytes int64  `json:"size_bytes,omitempty"`
}

// PublishedAdapter is a model's entry in AdapterVersionsBucket: the
// adapter version a node published for the fleet.
type PublishedAdapter struct {
	Version int    `json:"version"`
	Model   string `json:"model"`
	// AdapterVersion is the version's number on the publishing node.
	AdapterVersion uint64 `json:"adapter_version"`
	Kind           string `json:"kind"` // AdapterLoRA or AdapterPrefix
	// Digest is "sha256:" and the hex SHA-256 of the uncompressed GGUF,
	// of SizeBytes; it is also the name of the object that holds the GGUF
	// zstd-compressed, of CompressedBytes.
	Digest          string          `json:"digest"`
	SizeBytes       int64           `json:"size_bytes"`
	CompressedBytes int64           `json:"compressed_bytes"`
	Source          AdapterSource   `json:"source"`
	Metrics         json.RawMessage `json:"metrics,omitempty"`
	// Created is when the version was committed on the publishing node.
	Created time.Time `json:"created"`
	// Base is the model the adapter was made for, as the publisher has it.
	Base        BaseModel `json:"base"`
	PublishedBy string    `json:"published_by"` // the node
	PublishedAt time.Time `json:"published_at"`
}

// AdapterOrigin is where a pulled version was published
// (AdapterSource.Pulled).
type AdapterOrigin struct {
	Node string `json:"node"`
	// AdapterVersion is the version's number on Node.
	AdapterVersion uint64    `json:"adapter_version"`
	PublishedAt    time.Time `json:"published_at"`
	// Revision is the revision of the model's entry in
	// AdapterVersionsBucket that was pulled.
	Revision uint64 `json:"revision"`
}

// AdapterPublishRequest publishes a stored version of a model for the
// fleet (POST /v1/adapters/publish, edged.<node>.adapters.publish).
type AdapterPublishRequest struct {
	Version int    `json:"version,omitempty"`
	Model   string `json:"model"`
	// AdapterVersion is the version to publish; 0 or absent: the current
	// one.
	AdapterVersion uint64 `json:"adapter_version,omitempty"`
}

// AdapterPublishResponse answers an AdapterPublishRequest.
type AdapterPublishResponse struct {
	Version   int              `json:"version"`
	Published PublishedAdapter `json:"published"`
	// Revision is the revision of the model's entry in
	// AdapterVersionsBucket that the publication wrote.
	Revision uint64 `json:"revision"`
}

// AdapterPullRequest pulls a model's published version (POST
// /v1/adapters/pull, edged.<node>.adapters.pull).
type AdapterPullRequest struct {
	Version int    `json:"version,omitempty"`
	Model   string `json:"model"`
	// AnyBase takes the published version even when its base model's
	// digest differs from this node's model file (another quantization
	// of the same model, say); by default such a version is refused with
	// CodeAdapterInvalid. An adapter whose tensors do not fit the model
	// is refused either way.
	AnyBase bool `json:"any_base,omitempty"`
}

// AdapterPullResponse answers an AdapterPullRequest.
type AdapterPullResponse struct {
	Version int    `json:"version"`
	Model   string `json:"model"`
	// AdapterVersion is the local version that holds the published
	// adapter.
	AdapterVersion uint64 `json:"adapter_version"`
	// Pulled is false when a stored version held the published adapter
	// already: then nothing changed (not even which version is current).
	Pulled    bool             `json:"pulled"`
	Published PublishedAdapter `json:"published"`
	Revision  uint64           `json:"revision"` // of the entry read
}

// DecodeAdapterPublish decodes and validates an AdapterPublishRequest.
func DecodeAdapterPublish(data []byte) (*AdapterPublishRequest, error) {
	var r AdapterPublishRequest
	if err := Decode(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeAdapterPull decodes and validates an AdapterPullRequest.
func DecodeAdapterPull(data []byte) (*AdapterPullRequest, error) {
	var r AdapterPullRequest
	if err := Decode(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodePublishedAdapter decodes and validates an entry of
// AdapterVersionsBucket. Another node wrote it, so it is checked as
// strictly as a request.
func DecodePublishedAdapter(data []byte) (*PublishedAdapter, error) {
	var r PublishedAdapter
	if err := Decode(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Validate checks a decoded AdapterPublishRequest.
func (r *AdapterPublishRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	return p.err()
}

// Validate checks a decoded AdapterPullRequest.
func (r *AdapterPullRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	return p.err()
}

// Validate checks a decoded PublishedAdapter: a digest to check the
// adapter against, sizes that bound what a pull reads, and a source and
// metrics that a version record can hold.
func (r *PublishedAdapter) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	if r.Kind != AdapterLoRA && r.Kind != AdapterPrefix {
		p.add(CodeInvalidValue, "kind", "kind %q: want %s or %s", truncate(r.Kind, 40), AdapterLoRA, AdapterPrefix)
	}
	if !ValidDigest(r.Digest) {
		p.add(CodeInvalidValue, "digest", "digest %q: want sha256: and 64 lower-case hex digits", truncate(r.Digest, 80))
	}
	// zstd adds at most a few bytes per 128 KiB block to data it cannot
	// compress; twice the limit is far beyond that.
	checkSize(&p, "size_bytes", r.SizeBytes, MaxAdapterBytes)
	checkSize(&p, "compressed_bytes", r.CompressedBytes, 2*MaxAdapterBytes)
	r.Source.validate(&p)
	if len(r.Metrics) > 0 && !IsObject(r.Metrics) {
		p.add(CodeInvalidValue, "metrics", "metrics: want a JSON object")
	}
	checkLabel(&p, "base.name", r.Base.Name, true)
	if r.Base.Digest != "" && !ValidDigest(r.Base.Digest) {
		p.add(CodeInvalidValue, "base.digest", "base.digest %q: want sha256: and 64 lower-case hex digits", truncate(r.Base.Digest, 80))
	}
	if r.Base.SizeBytes < 0 {
		p.add(CodeInvalidValue, "base.size_bytes", "base.size_bytes %d is negative", r.Base.SizeBytes)
	}
	checkLabel(&p, "published_by", r.PublishedBy, true)
	return p.err()
}

// validate checks a source that came from another node.
func (s *AdapterSource) validate(p *problems) {
	checkLabel(p, "source.job", s.Job, false)
	if len(s.Edits) > MaxSourceEdits {
		p.add(CodeTooLarge, "source", "source of %d edits exceeds %d", len(s.Edits), MaxSourceEdits)
	}
	for _, id := range s.Edits {
		n := len(*p)
		if checkEditID(p, "source.edits", id); len(*p) > n {
			break // the first bad id says enough
		}
	}
	checkFileName(p, "source.file", s.File)
	if o := s.Pulled; o != nil {
		checkLabel(p, "source.pulled.node", o.Node, true)
	}
}

// ValidDigest reports whether d is "sha256:" and 64 lower-case hex
// digits, as adapter and model digests are written.
func ValidDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range []byte(h) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// checkSize checks a byte count in [1, max].
func checkSize(p *problems, param string, n, max int64) {
	if n < 1 || n > max {
		p.add(CodeInvalidValue, param, "%s %d: want 1 to %d", param, n, max)
	}
}

// IsObject reports whether data is one JSON object (not null): what
// adapter metrics must be.
func IsObject(data []byte) bool {
	var v map[string]json.RawMessage
	return json.Unmarshal(data, &v) == nil && v != nil
}
