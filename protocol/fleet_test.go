package protocol

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kvKey is what nats.go accepts as a key-value key.
var kvKey = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func TestAdapterKey(t *testing.T) {
	for _, c := range []struct{ model, key string }{
		{"aid", "aid"},
		{"qwen2.5-0.5b", "qwen2=2E5-0=2E5b"},
		{"a_b", "a_b"},
		{"a.b", "a=2Eb"},
		{"a=2Eb", "a=3D2Eb"},
		{"org/model:q4", "org=2Fmodel=3Aq4"},
		{"café", "caf=C3=A9"},
	} {
		assert.Equal(t, c.key, AdapterKey(c.model), c.model)
		assert.Regexp(t, kvKey, AdapterKey(c.model), c.model)
	}
}

var digestA = "sha256:" + strings.Repeat("ab", 32)

// published is a valid entry; edit changes it for one case.
func published(edit func(*PublishedAdapter)) []byte {
	p := PublishedAdapter{
		Version: Version, Model: "qwen2.5", AdapterVersion: 3, Kind: AdapterLoRA,
		Digest: digestA, SizeBytes: 4096, CompressedBytes: 1200,
		Source:      AdapterSource{Job: "job-1", Edits: []string{"e1", "e2"}},
		Metrics:     json.RawMessage(`{"reliability":1}`),
		Created:     time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Base:        BaseModel{Name: "qwen2.5", Digest: "sha256:" + strings.Repeat("0", 64), SizeBytes: 1 << 20},
		PublishedBy: "n1", PublishedAt: time.Date(2025, 1, 2, 3, 5, 0, 0, time.UTC),
	}
	if edit != nil {
		edit(&p)
	}
	data, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return data
}

func TestDecodePublishedAdapter(t *testing.T) {
	p, err := DecodePublishedAdapter(published(nil))
	require.NoError(t, err)
	assert.Equal(t, "qwen2.5", p.Model)
	assert.Equal(t, []string{"e1", "e2"}, p.Source.Edits)

	for _, c := range []struct {
		name  string
		edit  func(*PublishedAdapter)
		code  Code
		param string
	}{
		{"no base digest", func(p *PublishedAdapter) { p.Base.Digest, p.Base.SizeBytes = "", 0 }, "", ""},
		{"pulled before", func(p *PublishedAdapter) { p.Source.Pulled = &AdapterOrigin{Node: "n0", AdapterVersion: 1} }, "", ""},
		{"no metrics", func(p *PublishedAdapter) { p.Metrics = nil }, "", ""},
		{"schema version", func(p *PublishedAdapter) { p.Version = 2 }, CodeUnsupportedVersion, "version"},
		{"no model", func(p *PublishedAdapter) { p.Model = "" }, CodeInvalidValue, "model"},
		{"kind", func(p *PublishedAdapter) { p.Kind = "ia3" }, CodeInvalidValue, "kind"},
		{"upper-case digest", func(p *PublishedAdapter) { p.Digest = strings.ToUpper(digestA) }, CodeInvalidValue, "digest"},
		{"short digest", func(p *PublishedAdapter) { p.Digest = "sha256:abc" }, CodeInvalidValue, "digest"},
		{"other hash", func(p *PublishedAdapter) { p.Digest = "md5:" + strings.Repeat("a", 64) }, CodeInvalidValue, "digest"},
		{"empty adapter", func(p *PublishedAdapter) { p.SizeBytes = 0 }, CodeInvalidValue, "size_bytes"},
		{"huge adapter", func(p *PublishedAdapter) { p.SizeBytes = MaxAdapterBytes + 1 }, CodeInvalidValue, "size_bytes"},
		{"negative object", func(p *PublishedAdapter) { p.CompressedBytes = -1 }, CodeInvalidValue, "compressed_bytes"},
		{"metrics array", func(p *PublishedAdapter) { p.Metrics = json.RawMessage(`[1]`) }, CodeInvalidValue, "metrics"},
		{"metrics null", func(p *PublishedAdapter) { p.Metrics = json.RawMessage(`null`) }, CodeInvalidValue, "metrics"},
		{"bad edit id", func(p *PublishedAdapter) { p.Source.Edits = []string{"ok", "a/b", "c d"} }, CodeInvalidValue, "source.edits"},
		{"too many edits", func(p *PublishedAdapter) { p.Source.Edits = make([]string, MaxSourceEdits+1) }, CodeTooLarge, "source"},
		{"file path", func(p *PublishedAdapter) { p.Source.File = "../x.gguf" }, CodeInvalidValue, "source.file"},
		{"job control", func(p *PublishedAdapter) { p.Source.Job = "j\x01" }, CodeInvalidValue, "source.job"},
		{"pulled from nobody", func(p *PublishedAdapter) { p.Source.Pulled = &AdapterOrigin{} }, CodeInvalidValue, "source.pulled.node"},
		{"base digest", func(p *PublishedAdapter) { p.Base.Digest = "sha256:x" }, CodeInvalidValue, "base.digest"},
		{"base size", func(p *PublishedAdapter) { p.Base.SizeBytes = -1 }, CodeInvalidValue, "base.size_bytes"},
		{"base name", func(p *PublishedAdapter) { p.Base.Name = "" }, CodeInvalidValue, "base.name"},
		{"no publisher", func(p *PublishedAdapter) { p.PublishedBy = "" }, CodeInvalidValue, "published_by"},
	} {
		_, err := DecodePublishedAdapter(published(c.edit))
		if c.code == "" {
			assert.NoError(t, err, c.name)
			continue
		}
		require.Error(t, err, c.name)
		assert.Equal(t, c.code, AsError(err).Code, c.name)
		assert.Equal(t, c.param, AsError(err).Param, c.name)
	}
	_, err = DecodePublishedAdapter([]byte(`{"model":"m","surprise":1}`))
	assert.Equal(t, CodeUnknownField, CodeOf(err))
}

func TestDecodeAdapterPublishPull(t *testing.T) {
	pub, err := DecodeAdapterPublish([]byte(`{"model":"aid"}`))
	require.NoError(t, err)
	assert.Equal(t, &AdapterPublishRequest{Model: "aid"}, pub, "0: the current version")
	pub, err = DecodeAdapterPublish([]byte(`{"model":"aid","adapter_version":4,"version":1}`))
	require.NoError(t, err)
	assert.Equal(t, uint64(4), pub.AdapterVersion)
	pull, err := DecodeAdapterPull([]byte(`{"model":"aid","any_base":true}`))
	require.NoError(t, err)
	assert.Equal(t, &AdapterPullRequest{Model: "aid", AnyBase: true}, pull)

	for _, c := range []struct {
		name, body string
		code       Code
		param      string
	}{
		{"no model", `{}`, CodeInvalidValue, "model"},
		{"negative version", `{"model":"m","adapter_version":-1}`, CodeInvalidValue, "adapter_version"},
		{"unknown field", `{"model":"m","force":true}`, CodeUnknownField, "force"},
		{"schema version", `{"model":"m","version":9}`, CodeUnsupportedVersion, "version"},
		{"malformed", `{"model"`, CodeInvalidJSON, ""},
	} {
		_, err := DecodeAdapterPublish([]byte(c.body))
		require.Error(t, err, c.name)
		assert.Equal(t, c.code, AsError(err).Code, c.name)
		assert.Equal(t, c.param, AsError(err).Param, c.name)
	}
	for _, c := range []struct {
		name, body string
		code       Code
		param      string
	}{
		{"no model", `{"any_base":true}`, CodeInvalidValue, "model"},
		{"any_base a string", `{"model":"m","any_base":"yes"}`, CodeInvalidValue, "any_base"},
		{"a version", `{"model":"m","adapter_version":2}`, CodeUnknownField, "adapter_version"},
	} {
		_, err := DecodeAdapterPull([]byte(c.body))
		require.Error(t, err, c.name)
		assert.Equal(t, c.code, AsError(err).Code, c.name)
		assert.Equal(t, c.param, AsError(err).Param, c.name)
	}
}
