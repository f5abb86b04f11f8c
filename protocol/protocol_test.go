package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestDecodeCompletion(t *testing.T) {
	r, err := DecodeCompletion([]byte(`{"model":"m","prompt":"hi","max_tokens":5,"temperature":0,"stop":"x","seed":-3,"stream":true,"stream_options":{"include_usage":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Prompt.Text != "hi" || r.Prompt.IsTokens || *r.MaxTokens != 5 || *r.Temperature != 0 || len(r.Stop) != 1 || *r.Seed != -3 || !r.Stream {
		t.Fatalf("decoded %+v", r)
	}
	r, err = DecodeCompletion([]byte(`{"model":"m","prompt":[1,2,3],"stop":["a","b"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Prompt.IsTokens || len(r.Prompt.Tokens) != 3 || len(r.Stop) != 2 {
		t.Fatalf("decoded %+v", r)
	}
	r, err = DecodeCompletion([]byte(`{"model":"m","prompt":["one"]}`))
	if err != nil || r.Prompt.Text != "one" {
		t.Fatalf("%+v %v", r, err)
	}
}

// Each sparsity field arrives as given; a field left out stays nil (the
// daemon fills prune's defaults).
func TestDecodeSparsity(t *testing.T) {
	f, n := func(v float64) *float64 { return &v }, func(v int) *int { return &v }
	for _, c := range []struct {
		sparsity string
		want     Sparsity
	}{
		{`{"method":"none"}`, Sparsity{Method: "none"}},
		{`{"method":"recent","keep":0.25,"layers":[0,2],"window":4}`, Sparsity{Method: "recent", Keep: f(0.25), Layers: []int{0, 2}, Window: n(4)}},
		{`{"method":"zerotprune","similarity":0.5}`, Sparsity{Method: "zerotprune", Similarity: f(0.5)}},
		{`{"method":"zerotprune","similarity":0}`, Sparsity{Method: "zerotprune", Similarity: f(0)}},
		{`{"method":"lemo","keep":0.7,"block":4}`, Sparsity{Method: "lemo", Keep: f(0.7), Block: n(4)}},
		{`{"method":"lemo","block":` + strconv.Itoa(MaxSparsityBlock) + `}`, Sparsity{Method: "lemo", Block: n(MaxSparsityBlock)}},
	} {
		r, err := DecodeCompletion([]byte(`{"model":"m","prompt":"x","sparsity":` + c.sparsity + `}`))
		if err != nil {
			t.Errorf("%s: %v", c.sparsity, err)
			continue
		}
		if !reflect.DeepEqual(r.Sparsity, &c.want) {
			t.Errorf("%s: decoded %+v, want %+v", c.sparsity, *r.Sparsity, c.want)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	big := strings.Repeat("a", MaxTextBytes+1)
	for _, c := range []struct {
		body  string
		code  Code
		param string
	}{
		{``, CodeInvalidJSON, ""},
		{`{`, CodeInvalidJSON, ""},
		{`{"model":"m","prompt":"x"} {}`, CodeInvalidJSON, ""},
		{`[]`, CodeInvalidValue, ""},
		{`{"model":"m","prompt":"x","bogus":1}`, CodeUnknownField, "bogus"},
		{`{"model":"m","prompt":"x","temperature":-1}`, CodeInvalidValue, "temperature"},
		{`{"model":"m","prompt":"x","temperature":1e300}`, CodeInvalidValue, "temperature"},
		{`{"model":"m","prompt":"x","temperature":"hot"}`, CodeInvalidValue, "temperature"},
		{`{"model":"m","prompt":"x","top_p":1.5}`, CodeInvalidValue, "top_p"},
		{`{"model":"m","prompt":"x","top_k":-2}`, CodeInvalidValue, "top_k"},
		{`{"model":"m","prompt":"x","max_tokens":0}`, CodeInvalidValue, "max_tokens"},
		{`{"model":"m","prompt":"x","max_tokens":99999999999}`, CodeInvalidValue, "max_tokens"},
		{`{"model":"m","prompt":"x","n":2}`, CodeInvalidValue, "n"},
		{`{"model":"m","prompt":"x","stop":[""]}`, CodeInvalidValue, "stop"},
		{`{"model":"m","prompt":"x","stop":5}`, CodeInvalidValue, "stop"},
		{`{"model":"m","prompt":"x","version":7}`, CodeUnsupportedVersion, "version"},
		{`{"prompt":"x"}`, CodeInvalidValue, "model"},
		{`{"model":"m"}`, CodeInvalidValue, "prompt"},
		{`{"model":"m","prompt":""}`, CodeInvalidValue, "prompt"},
		{`{"model":"m","prompt":[]}`, CodeInvalidValue, "prompt"},
		{`{"model":"m","prompt":["a","b"]}`, CodeInvalidValue, "prompt"},
		{`{"model":"m","prompt":[1,-2]}`, CodeInvalidValue, "prompt"},
		{`{"model":"m","prompt":[1,1e20]}`, CodeInvalidValue, "prompt"},
		{`{"model":"m","prompt":{}}`, CodeInvalidValue, "prompt"},
		{`{"model":"m","prompt":"x","sparsity":{}}`, CodeInvalidValue, "sparsity"},
		{`{"model":"m","prompt":"x","sparsity":5}`, CodeInvalidValue, "sparsity"},
		{`{"model":"m","prompt":"x","sparsity":{"method":"recent","keep":"most"}}`, CodeInvalidValue, "sparsity.keep"},
		{`{"model":"m","prompt":"x","sparsity":{"method":"recent","depth":3}}`, CodeUnknownField, "depth"},
		{`{"model":"m","prompt":"x","sparsity":{"method":"` + strings.Repeat("m", MaxMethodBytes+1) + `"}}`, CodeTooLarge, "sparsity"},
		{`{"model":"m","prompt":"x","sparsity":{"method":"recent","layers":[` + strings.Repeat("1,", MaxSparsityLayers) + `1]}}`, CodeTooLarge, "sparsity"},
		{`{"model":"m","prompt":"x","sparsity":{"method":"lemo","block":` + strconv.Itoa(MaxSparsityBlock+1) + `}}`, CodeTooLarge, "sparsity"},
		{`{"model":"m","prompt":"x","sparsity":{"method":"lemo","block":2.5}}`, CodeInvalidValue, "sparsity.block"},
		{`{"model":"m","prompt":"x","sparsity":{"method":"zerotprune","similarity":"half"}}`, CodeInvalidValue, "sparsity.similarity"},
		{"{\"model\":\"m\",\"prompt\":\"\xff\"}", CodeInvalidUTF8, ""},
		{`{"model":"m","prompt":"` + big + `"}`, CodeTooLarge, "prompt"},
		{`{"model":"m","prompt":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, CodeTooLarge, ""},
	} {
		_, err := DecodeCompletion([]byte(c.body))
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%.60q: error %v is not an *Error", c.body, err)
			continue
		}
		if e.Code != c.code || e.Param != c.param {
			t.Errorf("%.60q: got %s param %q (%s), want %s param %q", c.body, e.Code, e.Param, e.Message, c.code, c.param)
		}
		if e.Type == "" || e.Message == "" {
			t.Errorf("%.60q: incomplete error %+v", c.body, e)
		}
	}
}

func TestAllProblemsListed(t *testing.T) {
	_, err := DecodeCompletion([]byte(`{"model":"m","prompt":"x","temperature":-1,"top_p":3,"min_p":9}`))
	msg := err.Error()
	for _, want := range []string{"temperature", "top_p", "min_p"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %s", msg, want)
		}
	}
}

func TestDecodeChat(t *testing.T) {
	r, err := DecodeChat([]byte(`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"max_completion_tokens":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Messages[1].Content != "ab" || *r.Limit() != 3 {
		t.Fatalf("%+v", r)
	}
	for _, c := range []struct {
		body string
		code Code
	}{
		{`{"model":"m","messages":[]}`, CodeInvalidValue},
		{`{"model":"m","messages":[{"role":"wizard","content":"x"}]}`, CodeInvalidValue},
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}`, CodeInvalidValue},
		{`{"model":"m","messages":[{"role":"user","content":"x","extra":1}]}`, CodeUnknownField},
		{`{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1,"max_completion_tokens":1}`, CodeInvalidValue},
		{`{"model":"m","messages":[{"role":"user","content":"x"}],"sparsity":{"keep":0.5}}`, CodeInvalidValue},
	} {
		_, err := DecodeChat([]byte(c.body))
		if CodeOf(err) != c.code {
			t.Errorf("%s: got %v, want %s", c.body, err, c.code)
		}
	}
}

func TestCodeTable(t *testing.T) {
	for _, c := range Codes() {
		if c.HTTPStatus() < 400 || c.Type() == "" {
			t.Errorf("code %s: status %d type %q", c, c.HTTPStatus(), c.Type())
		}
	}
	err := Errorf(CodeBusy, "full")
	if !errors.Is(err, &Error{Code: CodeBusy}) || errors.Is(err, &Error{Code: CodeTimeout}) {
		t.Error("Is does not compare codes")
	}
	b, _ := json.Marshal(ErrorResponse{Version: Version, Error: err})
	if !strings.Contains(string(b), `"code":"busy"`) || !strings.Contains(string(b), `"type":"rate_limit_error"`) {
		t.Errorf("encoded %s", b)
	}
}

func TestPromptRoundTrip(t *testing.T) {
	for _, p := range []Prompt{{Text: "héllo"}, {Tokens: []int32{1, 5}, IsTokens: true}} {
		b, err := json.Marshal(CompletionRequest{Model: "m", Prompt: p})
		if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeCompletion(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if r.Prompt.Text != p.Text || len(r.Prompt.Tokens) != len(p.Tokens) {
			t.Fatalf("%s: got %+v", b, r.Prompt)
		}
	}
}
