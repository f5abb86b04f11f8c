package protocol

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adapter_version of completions and chats: absent, 0, -1 or a version.
func TestDecodeAdapterVersion(t *testing.T) {
	for _, c := range []struct {
		field string
		want  *int64
		code  Code
	}{
		{``, nil, ""},
		{`,"adapter_version":0`, new(int64(0)), ""},
		{`,"adapter_version":-1`, new(int64(AdapterBase)), ""},
		{`,"adapter_version":7`, new(int64(7)), ""},
		{`,"adapter_version":-2`, nil, CodeInvalidValue},
		{`,"adapter_version":"3"`, nil, CodeInvalidValue},
		{`,"adapter_version":1.5`, nil, CodeInvalidValue},
	} {
		cmpl, err := DecodeCompletion([]byte(`{"model":"m","prompt":"x"` + c.field + `}`))
		chat, chatErr := DecodeChat([]byte(`{"model":"m","messages":[{"role":"user","content":"x"}]` + c.field + `}`))
		if c.code != "" {
			for _, err := range []error{err, chatErr} {
				require.Error(t, err, c.field)
				assert.Equal(t, c.code, AsError(err).Code, c.field)
				assert.Equal(t, "adapter_version", AsError(err).Param, c.field)
			}
			continue
		}
		require.NoError(t, err, c.field)
		require.NoError(t, chatErr, c.field)
		assert.Equal(t, c.want, cmpl.AdapterVersion, c.field)
		assert.Equal(t, c.want, chat.AdapterVersion, c.field)
	}
}

func TestDecodeAdapterRollback(t *testing.T) {
	r, err := DecodeAdapterRollback([]byte(`{"model":"qwen2.5","adapter_version":3}`))
	require.NoError(t, err)
	assert.Equal(t, &AdapterRollbackRequest{Model: "qwen2.5", AdapterVersion: 3}, r)
	r, err = DecodeAdapterRollback([]byte(`{"model":"m","adapter_version":0,"version":1}`))
	require.NoError(t, err)
	assert.Zero(t, r.AdapterVersion, "0: the base model")

	for _, c := range []struct {
		name, body string
		code       Code
		param      string
	}{
		{"no model", `{"adapter_version":1}`, CodeInvalidValue, "model"},
		{"negative", `{"model":"m","adapter_version":-1}`, CodeInvalidValue, "adapter_version"},
		{"a string", `{"model":"m","adapter_version":"2"}`, CodeInvalidValue, "adapter_version"},
		{"unknown field", `{"model":"m","adapter_version":1,"force":true}`, CodeUnknownField, "force"},
		{"schema version", `{"model":"m","adapter_version":1,"version":2}`, CodeUnsupportedVersion, "version"},
		{"malformed", `{"model":`, CodeInvalidJSON, ""},
	} {
		_, err := DecodeAdapterRollback([]byte(c.body))
		require.Error(t, err, c.name)
		assert.Equal(t, c.code, AsError(err).Code, c.name)
		assert.Equal(t, c.param, AsError(err).Param, c.name)
	}
}

func TestValidateAdapterRequests(t *testing.T) {
	for _, c := range []struct {
		name  string
		req   Validator
		param string // "" when valid
	}{
		{"list all", &AdapterListRequest{}, ""},
		{"list one model", &AdapterListRequest{Model: "m"}, ""},
		{"list, control character", &AdapterListRequest{Model: "a\x01"}, "model"},
		{"add", &AdapterAddRequest{Model: "m", File: "lora-v2.gguf"}, ""},
		{"add without a name", &AdapterAddRequest{Model: "m"}, ""},
		{"add without a model", &AdapterAddRequest{File: "a.gguf"}, "model"},
		{"add, a path", &AdapterAddRequest{Model: "m", File: "../a.gguf"}, "file"},
		{"add, a Windows path", &AdapterAddRequest{Model: "m", File: `c:\a.gguf`}, "file"},
		{"add, a long name", &AdapterAddRequest{Model: "m", File: strings.Repeat("a", MaxNameBytes+1)}, "file"},
		{"add, bad UTF-8", &AdapterAddRequest{Model: "m", File: "\xff.gguf"}, "file"},
	} {
		err := c.req.Validate()
		if c.param == "" {
			assert.NoError(t, err, c.name)
			continue
		}
		require.Error(t, err, c.name)
		assert.Equal(t, c.param, AsError(err).Param, c.name)
	}
}
