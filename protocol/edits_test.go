package protocol

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeEdit(t *testing.T) {
	e, err := DecodeEdit([]byte(`{"id":"e-1.a_B","model":"qwen2.5","prompt":"The support line is","target":" 555-0199",
		"rephrases":["Call support at"],"locality_prompts":["The sky is"],"created_by":"kb-team"}`))
	require.NoError(t, err)
	assert.Equal(t, &Edit{ID: "e-1.a_B", Model: "qwen2.5", Prompt: "The support line is", Target: " 555-0199",
		Rephrases: []string{"Call support at"}, LocalityPrompts: []string{"The sky is"}, CreatedBy: "kb-team"}, e)

	r, err := DecodeRetraction([]byte(`{"id":"e-1.a_B","version":1}`))
	require.NoError(t, err)
	assert.Equal(t, "e-1.a_B", r.ID)
}

func TestDecodeEditErrors(t *testing.T) {
	ok := `"id":"e1","model":"m","prompt":"p","target":"t"`
	text := func(n int) string { return `"` + strings.Repeat("a", n) + `"` }
	list := func(n int) string { return `[` + strings.Repeat(`"x",`, n-1) + `"x"]` }
	for _, c := range []struct {
		name  string
		body  string
		code  Code
		param string
	}{
		{"malformed", `{"id":"e1",`, CodeInvalidJSON, ""},
		{"not an object", `[1]`, CodeInvalidValue, ""},
		{"unknown field", `{` + ok + `,"weight":2}`, CodeUnknownField, "weight"},
		{"bad utf-8", "{" + ok + `,"created_by":"` + "\xff" + `"}`, CodeInvalidUTF8, ""},
		{"version", `{` + ok + `,"version":2}`, CodeUnsupportedVersion, "version"},
		{"no id", `{"model":"m","prompt":"p","target":"t"}`, CodeInvalidValue, "id"},
		{"id with a slash", `{"id":"a/b","model":"m","prompt":"p","target":"t"}`, CodeInvalidValue, "id"},
		{"id with a space", `{"id":"a b","model":"m","prompt":"p","target":"t"}`, CodeInvalidValue, "id"},
		{"id not ascii", `{"id":"é","model":"m","prompt":"p","target":"t"}`, CodeInvalidValue, "id"},
		{"long id", `{"id":` + text(MaxEditIDBytes+1) + `,"model":"m","prompt":"p","target":"t"}`, CodeTooLarge, "id"},
		{"no model", `{"id":"e1","prompt":"p","target":"t"}`, CodeInvalidValue, "model"},
		{"empty prompt", `{"id":"e1","model":"m","prompt":"","target":"t"}`, CodeInvalidValue, "prompt"},
		{"no target", `{"id":"e1","model":"m","prompt":"p"}`, CodeInvalidValue, "target"},
		{"long target", `{"id":"e1","model":"m","prompt":"p","target":` + text(MaxEditTextBytes+1) + `}`, CodeTooLarge, "target"},
		{"empty rephrase", `{` + ok + `,"rephrases":["a",""]}`, CodeInvalidValue, "rephrases"},
		{"long locality prompt", `{` + ok + `,"locality_prompts":[` + text(MaxEditTextBytes+1) + `]}`, CodeTooLarge, "locality_prompts"},
		{"many rephrases", `{` + ok + `,"rephrases":` + list(MaxEditVariants+1) + `}`, CodeTooLarge, "rephrases"},
		{"created_by control", `{` + ok + `,"created_by":"a\u0007"}`, CodeInvalidValue, "created_by"},
		{"too large", `{` + ok + `,"created_by":` + text(MaxEditBytes) + `}`, CodeTooLarge, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeEdit([]byte(c.body))
			e := AsError(err)
			require.Error(t, err)
			assert.Equal(t, c.code, e.Code, e.Message)
			assert.Equal(t, c.param, e.Param, e.Message)
		})
	}
	_, err := DecodeRetraction([]byte(`{"id":"e1","model":"m"}`))
	assert.Equal(t, CodeUnknownField, CodeOf(err))
}

func TestAtLimitsEditDecodes(t *testing.T) {
	big := strings.Repeat("a", MaxEditTextBytes)
	many := make([]string, MaxEditVariants)
	for i := range many {
		many[i] = big
	}
	e := Edit{ID: strings.Repeat("i", MaxEditIDBytes), Model: "m", Prompt: big, Target: big,
		Rephrases: many, LocalityPrompts: many, CreatedBy: strings.Repeat("c", MaxNameBytes)}
	data, err := json.Marshal(e)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(data), MaxEditBytes, "an edit at every limit fits MaxEditBytes")
	_, err = DecodeEdit(data)
	assert.NoError(t, err)
}

func TestPeekEditID(t *testing.T) {
	for body, want := range map[string]string{
		`{"id":"e1","model":7}`:          "e1",
		`{"id":"e1","bogus":true}`:       "e1",
		"{\"id\":\"e1\",\"x\":\"\xff\"}": "e1",
		`{"id":"a/b"}`:                   "",
		`{"id":7}`:                       "",
		`{"id":"e1"`:                     "",
		`[]`:                             "",
	} {
		assert.Equal(t, want, PeekEditID([]byte(body)), body)
	}
}

func TestEditRequests(t *testing.T) {
	for _, c := range []struct {
		req  Validator
		code Code // "" for none
	}{
		{&EditListRequest{}, ""},
		{&EditListRequest{Status: EditRejected}, ""},
		{&EditListRequest{Status: "done"}, CodeInvalidValue},
		{&EditStatusRequest{ID: "e1"}, ""},
		{&EditStatusRequest{ID: RejectedKey(42)}, ""},
		{&EditStatusRequest{ID: "#"}, CodeInvalidValue},
		{&EditStatusRequest{ID: "#x"}, CodeInvalidValue},
		{&EditStatusRequest{}, CodeInvalidValue},
	} {
		err := c.req.Validate()
		if c.code == "" {
			assert.NoError(t, err, "%+v", c.req)
		} else {
			assert.Equal(t, c.code, CodeOf(err), "%+v", c.req)
		}
	}
}

func TestSubjects(t *testing.T) {
	assert.Equal(t, "host_lan", SubjectToken("host.lan"))
	assert.Equal(t, "a_b_c_d", SubjectToken("a b*c>d"))
	assert.Equal(t, "edged", SubjectToken(""))
	assert.Equal(t, "edged.edits.node.kiosk-1", EditsNodeSubject("kiosk-1"))
	assert.Equal(t, "edged.edits.model.qwen2_5-0_5b", EditsModelSubject("qwen2.5-0.5b"))
	assert.Equal(t, "edged.edits.all", EditsAllSubject)
	assert.Equal(t, "edged.edits.retract", EditsRetractSubject)
	assert.Equal(t, "edged-a_b_c", EditsConsumer(`a/b\c`))
	assert.True(t, NodeReserved("edits"))
	assert.False(t, NodeReserved("edits2"))
	// Every edit subject lies inside the stream's subjects.
	for _, s := range []string{EditsAllSubject, EditsRetractSubject, EditsNodeSubject("n"), EditsModelSubject("m")} {
		assert.True(t, strings.HasPrefix(s, strings.TrimSuffix(EditsSubjects, ">")), s)
	}
}
