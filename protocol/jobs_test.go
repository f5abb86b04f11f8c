package protocol

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeJobSubmit(t *testing.T) {
	r, err := DecodeJobSubmit([]byte(`{"kind":"adapt","model":"aid","adapt":{"steps":20,"lr":1e-2,"projs":["down"],"layers":[3],
		"init":"data","init_ref":8,"replay":4,"seed":7,"examples":[{"prompt":"Zorblax is","completion":" a cat."},{"prompt_ids":[1,5],"completion_ids":[9]}]}}`))
	require.NoError(t, err)
	assert.Equal(t, "adapt", r.Kind)
	require.NotNil(t, r.Adapt)
	assert.Equal(t, uint64(7), *r.Adapt.Seed)
	assert.Equal(t, []AdaptExample{{Prompt: "Zorblax is", Completion: " a cat."}, {PromptIDs: []int32{1, 5}, CompletionIDs: []int32{9}}}, r.Adapt.Examples)

	// An example is one line of the JSONL data as it encodes.
	b, err := json.Marshal(r.Adapt.Examples[0])
	require.NoError(t, err)
	assert.JSONEq(t, `{"prompt":"Zorblax is","completion":" a cat."}`, string(b))

	_, err = DecodeJobSubmit([]byte(`{"kind":"adapt","model":"aid","adapt":{"steps":1,"method":"prefix","prefix_len":3,"data":"/var/lib/train.jsonl"}}`))
	require.NoError(t, err)
}

func TestDecodeJobSubmitErrors(t *testing.T) {
	ex := `"examples":[{"prompt":"p","completion":"c"}]`
	adapt := func(fields string) string {
		return `{"kind":"adapt","model":"m","adapt":{"steps":5,` + ex + fields + `}}`
	}
	for _, c := range []struct {
		name  string
		body  string
		code  Code
		param string
	}{
		{"malformed", `{"kind":`, CodeInvalidJSON, ""},
		{"unknown field", adapt(`,"epochs":2`), CodeUnknownField, "epochs"},
		{"version", `{"version":9,"kind":"adapt","model":"m","adapt":{"steps":1,` + ex + `}}`, CodeUnsupportedVersion, "version"},
		{"no kind", `{"model":"m"}`, CodeInvalidValue, "kind"},
		{"unknown kind", `{"kind":"dance","model":"m"}`, CodeInvalidValue, "kind"},
		{"no settings", `{"kind":"adapt","model":"m"}`, CodeInvalidValue, "adapt"},
		{"no model", `{"kind":"adapt","adapt":{"steps":1,` + ex + `}}`, CodeInvalidValue, "model"},
		{"no steps", `{"kind":"adapt","model":"m","adapt":{` + ex + `}}`, CodeInvalidValue, "adapt.steps"},
		{"too many steps", `{"kind":"adapt","model":"m","adapt":{"steps":99999999999,` + ex + `}}`, CodeInvalidValue, "adapt.steps"},
		{"no data", `{"kind":"adapt","model":"m","adapt":{"steps":1}}`, CodeInvalidValue, "adapt.examples"},
		{"both data", adapt(`,"data":"/x.jsonl"`), CodeInvalidValue, "adapt.data"},
		{"relative data", `{"kind":"adapt","model":"m","adapt":{"steps":1,"data":"train.jsonl"}}`, CodeInvalidValue, "adapt.data"},
		{"empty completion", `{"kind":"adapt","model":"m","adapt":{"steps":1,"examples":[{"prompt":"p"}]}}`, CodeInvalidValue, "adapt.examples"},
		{"text and ids", `{"kind":"adapt","model":"m","adapt":{"steps":1,"examples":[{"prompt":"p","completion":"c","prompt_ids":[1]}]}}`, CodeInvalidValue, "adapt.examples"},
		{"negative id", `{"kind":"adapt","model":"m","adapt":{"steps":1,"examples":[{"prompt_ids":[1],"completion_ids":[-2]}]}}`, CodeInvalidValue, "adapt.examples"},
		{"example field", `{"kind":"adapt","model":"m","adapt":{"steps":1,"examples":[{"prompt":"p","answer":"c"}]}}`, CodeUnknownField, "answer"},
		{"method", adapt(`,"method":"full"`), CodeInvalidValue, "adapt.method"},
		{"schedule", adapt(`,"schedule":"cosine"`), CodeInvalidValue, "adapt.schedule"},
		{"init", adapt(`,"init":"zeros"`), CodeInvalidValue, "adapt.init"},
		{"type", adapt(`,"type":"q8_0"`), CodeInvalidValue, "adapt.type"},
		{"negative lr", adapt(`,"lr":-1`), CodeInvalidValue, "adapt.lr"},
		{"negative floor", adapt(`,"loss_floor":-0.5`), CodeInvalidValue, "adapt.loss_floor"},
		{"rank", adapt(`,"rank":100000`), CodeInvalidValue, "adapt.rank"},
		{"projection", adapt(`,"projs":["q","attn"]`), CodeInvalidValue, "adapt.projs"},
		{"projection twice", adapt(`,"projs":["q","q"]`), CodeInvalidValue, "adapt.projs"},
		{"layer", adapt(`,"layers":[-1]`), CodeInvalidValue, "adapt.layers"},
		{"prefix with rank", adapt(`,"method":"prefix","rank":4`), CodeInvalidValue, "adapt.rank"},
		{"lora with prefix_len", adapt(`,"prefix_len":4`), CodeInvalidValue, "adapt.prefix_len"},
		{"init_ref without init data", adapt(`,"init_ref":4`), CodeInvalidValue, "adapt.init_ref"},
		{"replay", adapt(`,"replay":100000`), CodeInvalidValue, "adapt.replay"},
		{"seed type", adapt(`,"seed":-1`), CodeInvalidValue, "adapt.seed"},
		{"too large", `{"kind":"adapt","model":"m","adapt":{"steps":1,"data":"/` + strings.Repeat("a", MaxBodyBytes) + `"}}`, CodeTooLarge, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeJobSubmit([]byte(c.body))
			require.Error(t, err)
			e := AsError(err)
			assert.Equal(t, c.code, e.Code, e.Message)
			assert.Equal(t, c.param, e.Param, e.Message)
		})
	}
}

func TestJobRequests(t *testing.T) {
	for _, c := range []struct {
		body string
		code Code // "" when valid
	}{
		{`{"id":"job-1"}`, ""},
		{`{"id":"job-18446744073709551615","version":1}`, ""},
		{`{}`, CodeInvalidValue},
		{`{"id":"job-"}`, CodeInvalidValue},
		{`{"id":"job-01"}`, CodeInvalidValue},
		{`{"id":"job-+1"}`, CodeInvalidValue},
		{`{"id":"job-18446744073709551616"}`, CodeInvalidValue},
		{`{"id":"e1"}`, CodeInvalidValue},
		{`{"id":"job-1","x":1}`, CodeUnknownField},
	} {
		_, err := DecodeJobRequest([]byte(c.body))
		if c.code == "" {
			assert.NoError(t, err, c.body)
		} else {
			assert.Equal(t, c.code, CodeOf(err), "%s: %v", c.body, err)
		}
	}
	assert.NoError(t, (&JobListRequest{State: JobPaused}).Validate())
	assert.Equal(t, CodeInvalidValue, CodeOf((&JobListRequest{State: "sleeping"}).Validate()))
	assert.Equal(t, "job-42", JobID(42))
	assert.True(t, JobFinal(JobDone))
	assert.False(t, JobFinal(JobFailed), "a failed job can be resumed")
}
