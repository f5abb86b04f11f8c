package protocol

import (
	"encoding/json"
	"errors"
	"testing"
)

var seeds = []string{
	`{"model":"m","prompt":"hi","max_tokens":5,"temperature":0.5,"stop":["x"],"stream":true}`,
	`{"model":"m","prompt":[1,2,3]}`,
	`{"model":"m","messages":[{"role":"user","content":"hi"}],"top_k":4}`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}`,
	`{"model":"m","content":"x","with_pieces":true}`,
	`{"model":"m","prompt":"\ud800"}`,
	"{\"model\":\"\xff\"}",
	`{"model":"m","prompt":{"a":1}}`,
	`{"model":"m","prompt":"hi","sparsity":{"method":"zerotprune","keep":0.5,"layers":[1,2],"window":8}}`,
	`{"model":"m","messages":[{"role":"user","content":"hi"}],"sparsity":{"method":"none"}}`,
	`{"model":"m","prompt":"hi","sparsity":{"keep":2,"layers":[]}}`,
	`{"model":"m","prompt":"hi","adapter_version":3}`,
	`{"model":"m","messages":[{"role":"user","content":"hi"}],"adapter_version":-1}`,
	`[`, `null`, `{}`, `{"stop":null,"prompt":null}`,
}

// checkDecoded asserts the decoder contract: an error is a complete *Error;
// a success validates again and survives an encode/decode round trip.
func checkDecoded[T any, P interface {
	*T
	Validator
}](t *testing.T, data []byte, decode func([]byte) (P, error)) {
	v, err := decode(data)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) || e.Code == "" || e.Message == "" || e.Code.HTTPStatus() >= 500 {
			t.Fatalf("%q: bad error %#v", data, err)
		}
		return
	}
	if err := v.Validate(); err != nil {
		t.Fatalf("%q: decoded value does not validate: %v", data, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%q: re-encode: %v", data, err)
	}
	if _, err := decode(b); err != nil {
		t.Fatalf("%q: re-encoded %s does not decode: %v", data, b, err)
	}
}

func FuzzDecodeCompletion(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecoded(t, data, DecodeCompletion) })
}

func FuzzDecodeChat(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecoded(t, data, DecodeChat) })
}

func FuzzDecodeTokenize(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecoded(t, data, DecodeTokenize) })
}

var editSeeds = []string{
	`{"id":"e1","model":"m","prompt":"The support line is","target":" 555-0199"}`,
	`{"id":"e1","model":"m","prompt":"p","target":"t","rephrases":["a","b"],"locality_prompts":["c"],"created_by":"team"}`,
	`{"id":"e1","model":"m","prompt":"p","target":"t","bogus":1}`,
	`{"id":"a/b","model":"m","prompt":"p","target":"t"}`,
	`{"id":"e1","model":"m","prompt":"\ud800","target":"t"}`,
	"{\"id\":\"e1\",\"model\":\"m\",\"prompt\":\"\xff\",\"target\":\"t\"}",
	`{"id":"e1"}`, `{"id":7}`, `{"id":"e1","version":2}`, `[`, `null`, `{}`,
}

// FuzzDecodeEdit decodes edits and retractions as the daemon's intake
// does: a decoded edit validates and survives a round trip; a failure is a
// complete *Error; PeekEditID returns "" or an id that validates.
func FuzzDecodeEdit(f *testing.F) {
	for _, s := range editSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoded(t, data, DecodeEdit)
		checkDecoded(t, data, DecodeRetraction)
		if id := PeekEditID(data); id != "" {
			if err := (&Retraction{ID: id}).Validate(); err != nil {
				t.Fatalf("%q: peeked id %q does not validate: %v", data, id, err)
			}
		}
	})
}

var adapterSeeds = []string{
	`{"model":"m","adapter_version":3}`,
	`{"model":"m","adapter_version":0,"version":1}`,
	`{"model":"m","adapter_version":-1}`,
	`{"model":"m","adapter_version":18446744073709551616}`,
	`{"adapter_version":1}`, `{"model":"m","adapter_version":"1"}`, `[`, `null`, `{}`,
}

// FuzzDecodeAdapterRollback: a decoded rollback validates and survives a
// round trip; a failure is a complete *Error.
func FuzzDecodeAdapterRollback(f *testing.F) {
	for _, s := range adapterSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecoded(t, data, DecodeAdapterRollback) })
}

var jobSeeds = []string{
	`{"kind":"adapt","model":"m","adapt":{"steps":5,"examples":[{"prompt":"p","completion":"c"}]}}`,
	`{"kind":"adapt","model":"m","adapt":{"steps":5,"method":"prefix","prefix_len":3,"data":"/d.jsonl","seed":3}}`,
	`{"kind":"adapt","model":"m","adapt":{"steps":5,"examples":[{"prompt_ids":[1,2],"completion_ids":[3]}],"projs":["q","down"],"layers":[0,3],"init":"data","init_ref":4}}`,
	`{"kind":"adapt","model":"m","adapt":{"steps":0,"examples":[{"prompt":"p"}]}}`,
	`{"kind":"x"}`, `{"id":"job-7"}`, `{"id":"job-07"}`, `{"state":"paused"}`, `[`, `null`, `{}`,
}

// FuzzDecodeJob decodes job submissions, job requests and list requests
// as the socket and NATS front ends do: a decoded value validates and
// survives a round trip; a failure is a complete *Error.
func FuzzDecodeJob(f *testing.F) {
	for _, s := range jobSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoded(t, data, DecodeJobSubmit)
		checkDecoded(t, data, DecodeJobRequest)
		checkDecoded(t, data, func(b []byte) (*JobListRequest, error) {
			var r JobListRequest
			if err := Decode(b, &r); err != nil {
				return nil, err
			}
			return &r, nil
		})
	})
}

var fleetSeeds = []string{
	`{"model":"m"}`, `{"model":"m","adapter_version":2}`, `{"model":"m","any_base":true}`,
	string(published(nil)),
	string(published(func(p *PublishedAdapter) { p.Source.Pulled = &AdapterOrigin{Node: "n0", Revision: 7} })),
	`{"model":"m","kind":"lora","digest":"sha256:","size_bytes":1}`, `[`, `null`, `{}`,
}

// FuzzDecodeAdapterFleet: the publish and pull requests and a published
// entry (written by another node) each validate and survive a round trip
// when they decode; a failure is a complete *Error.
func FuzzDecodeAdapterFleet(f *testing.F) {
	for _, s := range fleetSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoded(t, data, DecodeAdapterPublish)
		checkDecoded(t, data, DecodeAdapterPull)
		checkDecoded(t, data, DecodePublishedAdapter)
	})
}

// FuzzAdapterKey: every model name has a key nats.go accepts, and two
// names never share one.
func FuzzAdapterKey(f *testing.F) {
	for _, s := range [][2]string{{"a.b", "a_b"}, {"qwen2.5", "qwen2=2E5"}, {"é", "=C3=A9"}, {"", "x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ka, kb := AdapterKey(a), AdapterKey(b)
		if a != "" && !kvKey.MatchString(ka) {
			t.Fatalf("%q: key %q", a, ka)
		}
		if a != b && ka == kb {
			t.Fatalf("%q and %q share the key %q", a, b, ka)
		}
	})
}
