package protocol

import (
	"bytes"
	"encoding/json"
)

// Sampling holds the sampling fields shared by completions and chat
// completions. A nil field takes the model's default (from the registry),
// else the daemon's.
type Sampling struct {
	Temperature      *float64 `json:"temperature,omitempty"`       // 0 (greedy) … MaxTemperature
	TopP             *float64 `json:"top_p,omitempty"`             // 0 … 1; 1 is off
	TopK             *int     `json:"top_k,omitempty"`             // 0 (off) … MaxTopK
	MinP             *float64 `json:"min_p,omitempty"`             // 0 (off) … 1
	Seed             *int64   `json:"seed,omitempty"`              // any; absent: random
	PresencePenalty  *float64 `json:"presence_penalty,omitempty"`  // -2 … 2
	FrequencyPenalty *float64 `json:"frequency_penalty,omitempty"` // -2 … 2
	RepeatPenalty    *float64 `json:"repeat_penalty,omitempty"`    // 0 … 10; 0 and 1 are off (llama.cpp)
	RepeatLastN      *int     `json:"repeat_last_n,omitempty"`     // -1 (all) … MaxRepeatLastN; 0: 64
}

// StreamOptions are OpenAI's stream options. Usage is always sent in the
// last chunk; include_usage is accepted for compatibility.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage,omitempty"`
}

// CompletionRequest is the body of POST /v1/completions and of the NATS
// generate endpoint.
type CompletionRequest struct {
	Version int    `json:"version,omitempty"`
	Model   string `json:"model"`
	Prompt  Prompt `json:"prompt"`
	Sampling
	// MaxTokens is the most tokens to generate; nil: until an end token
	// or the context is full.
	MaxTokens     *int           `json:"max_tokens,omitempty"`
	Stop          Stop           `json:"stop,omitempty"`
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions *StreamOptions `json:"stream_options,omitempty"`
	// N must be 1 when given: one choice per request.
	N *int `json:"n,omitempty"`
	// User is accepted for OpenAI compatibility and otherwise ignored.
	User string `json:"user,omitempty"`
	// Sparsity asks for token sparsity on the prompt; nil: the model's
	// default (none unless configured).
	Sparsity *Sparsity `json:"sparsity,omitempty"`
	// AdapterVersion chooses the model's adapter version: nil or 0, the
	// current one; AdapterBase, none (the base model); N, version N.
	AdapterVersion *int64 `json:"adapter_version,omitempty"`
}

// ChatRequest is the body of POST /v1/chat/completions and of the NATS
// chat endpoint.
type ChatRequest struct {
	Version  int       `json:"version,omitempty"`
	Model    string    `json:"model"`
	Messages []Message `json:"messages"`
	Sampling
	MaxTokens *int `json:"max_tokens,omitempty"`
	// MaxCompletionTokens is OpenAI's newer name for MaxTokens; giving
	// both is an error.
	MaxCompletionTokens *int           `json:"max_completion_tokens,omitempty"`
	Stop                Stop           `json:"stop,omitempty"`
	Stream              bool           `json:"stream,omitempty"`
	StreamOptions       *StreamOptions `json:"stream_options,omitempty"`
	N                   *int           `json:"n,omitempty"`
	User                string         `json:"user,omitempty"`
	Sparsity            *Sparsity      `json:"sparsity,omitempty"`

	// AdapterVersion is CompletionRequest.AdapterVersion.
	AdapterVersion *int64 `json:"adapter_version,omitempty"`
}

// Sparsity asks for token sparsity while the prompt is read (prefill):
// after the given layers, the less important prompt tokens are dropped, so
// that later layers compute on, and cache, fewer of them. Generated tokens
// are never dropped. The daemon checks Method and the ranges against the
// model (package prune); nil fields take prune's defaults.
type Sparsity struct {
	// Method names the policy ("zerotprune", "recent", "random", …), or
	// "none" for a dense prefill whatever the model's default.
	Method string `json:"method"`
	// Keep is the share of the prompt tokens of one engine step kept
	// after the last layer of Layers, in (0, 1].
	Keep *float64 `json:"keep,omitempty"`
	// Layers are the layers after which tokens are dropped, increasing.
	Layers []int `json:"layers,omitempty"`
	// Window is how many of the last prompt tokens are always kept.
	Window *int `json:"window,omitempty"`
	// Similarity is, for zerotprune only, the share in [0, 1] of the
	// dropped tokens that its similarity stage picks (tokens whose keys
	// are most like a kept token's); 0 leaves the stage out, nil takes
	// prune's default (the stage on).
	Similarity *float64 `json:"similarity,omitempty"`
	// Block is, for lemo only, its block size: tokens are scored, and
	// dropped, in blocks of Block consecutive positions.
	Block *int `json:"block,omitempty"`
}

// Message is one chat message.
type Message struct {
	Role    string  `json:"role"` // system, user, assistant or tool
	Content Content `json:"content"`
	Name    string  `json:"name,omitempty"`
}

// Roles accepted in Message.Role.
var Roles = []string{"system", "user", "assistant", "tool"}

// Usage counts the tokens of one request.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Finish reasons, as OpenAI names them.
const (
	FinishStop   = "stop"   // an end token or a stop string
	FinishLength = "length" // max_tokens or a full context
)

// CompletionChoice is one choice of a completion or of a completion chunk.
type CompletionChoice struct {
	Index        int     `json:"index"`
	Text         string  `json:"text"`
	Logprobs     any     `json:"logprobs"`      // always null
	FinishReason *string `json:"finish_reason"` // null until the end
}

// CompletionResponse answers a CompletionRequest without stream, and is
// also each chunk of a streamed one (Object is "text_completion" in both,
// as OpenAI does; Usage is set on the last chunk only).
type CompletionResponse struct {
	Version int                `json:"version"`
	ID      string             `json:"id"`
	Object  string             `json:"object"` // "text_completion"
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []CompletionChoice `json:"choices"`
	Usage   *Usage             `json:"usage,omitempty"`

	// AdapterVersion is the model's adapter version that served the
	// request; 0: the base model.
	AdapterVersion uint64 `json:"adapter_version"`
}

// CompletionChunk is one streamed piece of a completion.
type CompletionChunk = CompletionResponse

// ChatMessage is a message of a chat response.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatDelta is the increment of a streamed chat message.
type ChatDelta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

// ChatChoice is one choice of a chat completion.
type ChatChoice struct {
	Index        int         `json:"index"`
	Message      ChatMessage `json:"message"`
	Logprobs     any         `json:"logprobs"`
	FinishReason *string     `json:"finish_reason"`
}

// ChatResponse answers a ChatRequest without stream.
type ChatResponse struct {
	Version int          `json:"version"`
	ID      string       `json:"id"`
	Object  string       `json:"object"` // "chat.completion"
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []ChatChoice `json:"choices"`
	Usage   *Usage       `json:"usage,omitempty"`

	// AdapterVersion is CompletionResponse.AdapterVersion.
	AdapterVersion uint64 `json:"adapter_version"`
}

// ChatChunkChoice is one choice of a chat chunk.
type ChatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        ChatDelta `json:"delta"`
	Logprobs     any       `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// ChatChunk is one streamed piece of a chat completion. The first carries
// the role, the last carries finish_reason and usage.
type ChatChunk struct {
	Version int               `json:"version"`
	ID      string            `json:"id"`
	Object  string            `json:"object"` // "chat.completion.chunk"
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []ChatChunkChoice `json:"choices"`
	Usage   *Usage            `json:"usage,omitempty"`

	// AdapterVersion is CompletionResponse.AdapterVersion.
	AdapterVersion uint64 `json:"adapter_version"`
}

// Object names of the responses.
const (
	ObjectCompletion = "text_completion"
	ObjectChat       = "chat.completion"
	ObjectChatChunk  = "chat.completion.chunk"
	ObjectList       = "list"
	ObjectModel      = "model"
)

// TokenizeRequest is the body of POST /v1/tokenize (field names as
// llama.cpp's server).
type TokenizeRequest struct {
	Version int    `json:"version,omitempty"`
	Model   string `json:"model"`
	Content string `json:"content"`
	// AddSpecial adds the model's BOS (and EOS where it wants one); nil:
	// true. ParseSpecial turns texts such as "<s>" into their special
	// tokens; nil: true.
	AddSpecial   *bool `json:"add_special,omitempty"`
	ParseSpecial *bool `json:"parse_special,omitempty"`
	// WithPieces also returns each token's text.
	WithPieces bool `json:"with_pieces,omitempty"`
}

// TokenizeResponse answers a TokenizeRequest.
type TokenizeResponse struct {
	Version int      `json:"version"`
	Model   string   `json:"model"`
	Tokens  []int32  `json:"tokens"`
	Pieces  []string `json:"pieces,omitempty"`
}

// Model states.
const (
	StateUnloaded = "unloaded"
	StateLoading  = "loading"
	StateLoaded   = "loaded"
	StateFailed   = "failed"
)

// Model describes a registered model: an OpenAI model object with edged's
// fields added.
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`

	Path      string `json:"path"`
	Digest    string `json:"digest,omitempty"` // "sha256:…" when known
	SizeBytes int64  `json:"size_bytes"`
	State     string `json:"state"`
	// Context is the context length in tokens once loaded.
	Context int `json:"context,omitempty"`
	// MemoryBytes is what the loaded model counts against the budget.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// Error is why the last load failed, in StateFailed.
	Error string `json:"error,omitempty"`
}

// ModelList answers GET /v1/models.
type ModelList struct {
	Version int     `json:"version"`
	Object  string  `json:"object"` // "list"
	Data    []Model `json:"data"`
}

// LoadRequest is the body of POST /v1/models/load: Model names a
// registered model, or Path a GGUF file to register (under Model if given,
// else under the file's base name) and load.
type LoadRequest struct {
	Version int    `json:"version,omitempty"`
	Model   string `json:"model,omitempty"`
	Path    string `json:"path,omitempty"`
}

// UnloadRequest is the body of POST /v1/models/unload.
type UnloadRequest struct {
	Version int    `json:"version,omitempty"`
	Model   string `json:"model"`
}

// ModelStatus is the run-time state of one model in a Status.
type ModelStatus struct {
	Name         string `json:"name"`
	State        string `json:"state"`
	QueueDepth   int    `json:"queue_depth"`    // requests waiting
	Active       int    `json:"active"`         // sequences running
	KVCacheBytes int64  `json:"kv_cache_bytes"` // cache memory of running sequences
	KVTokens     int    `json:"kv_tokens"`      // cache rows in use
	MemoryBytes  int64  `json:"memory_bytes"`
	IdleSeconds  int64  `json:"idle_seconds,omitempty"`
	Backend      string `json:"backend,omitempty"` // of a loaded model, e.g. "cuda (NVIDIA H200, sm_90)"
}

// Status answers GET /status and the NATS status endpoint.
type Status struct {
	Version       int           `json:"version"`
	Node          string        `json:"node"`
	DaemonVersion string        `json:"daemon_version"`
	StartedAt     int64         `json:"started_at"` // Unix seconds
	UptimeSeconds int64         `json:"uptime_seconds"`
	Draining      bool          `json:"draining"`
	MemoryBudget  int64         `json:"memory_budget_bytes"` // 0: unlimited
	MemoryUsed    int64         `json:"memory_used_bytes"`
	Models        []ModelStatus `json:"models"`
}

// Health answers GET /health.
type Health struct {
	Status string `json:"status"` // "ok" or "draining"
}

// Prompt is a completion prompt: a string, an array holding one string, or
// an array of token ids. Exactly one of Text and Tokens is used: Tokens
// when IsTokens.
type Prompt struct {
	Text     string
	Tokens   []int32
	IsTokens bool
	set      bool
}

// MarshalJSON writes the text, or the ids.
func (p Prompt) MarshalJSON() ([]byte, error) {
	if p.IsTokens {
		return json.Marshal(p.Tokens)
	}
	return json.Marshal(p.Text)
}

// UnmarshalJSON accepts "text", ["text"] or [1, 2, 3].
func (p *Prompt) UnmarshalJSON(data []byte) error {
	*p = Prompt{set: true}
	data = bytes.TrimSpace(data)
	switch {
	case len(data) > 0 && data[0] == '"':
		return json.Unmarshal(data, &p.Text)
	case len(data) > 0 && data[0] == '[':
		var raw []json.RawMessage
		if err := json.Unmarshal(data, &raw); err != nil {
			return ParamErrorf(CodeInvalidValue, "prompt", "prompt: %v", err)
		}
		if len(raw) == 0 {
			return ParamErrorf(CodeInvalidValue, "prompt", "prompt is an empty array")
		}
		if t := bytes.TrimSpace(raw[0]); len(t) > 0 && t[0] == '"' {
			if len(raw) != 1 {
				return ParamErrorf(CodeInvalidValue, "prompt", "prompt holds %d strings: one prompt per request", len(raw))
			}
			return json.Unmarshal(t, &p.Text)
		}
		if len(raw) > MaxPromptTokens {
			return ParamErrorf(CodeTooLarge, "prompt", "prompt of %d token ids exceeds %d", len(raw), MaxPromptTokens)
		}
		p.IsTokens = true
		p.Tokens = make([]int32, len(raw))
		for i, r := range raw {
			if err := json.Unmarshal(r, &p.Tokens[i]); err != nil {
				return ParamErrorf(CodeInvalidValue, "prompt", "prompt[%d]: want a string or token ids (32-bit integers), got %s", i, truncate(string(r), 40))
			}
		}
		return nil
	case bytes.Equal(data, []byte("null")):
		p.set = false
		return nil
	}
	return ParamErrorf(CodeInvalidValue, "prompt", "prompt must be a string, an array of one string or an array of token ids")
}

// Stop is OpenAI's stop field: a string or an array of strings.
type Stop []string

// UnmarshalJSON accepts "s" or ["s", …].
func (s *Stop) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		*s = nil
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var one string
		if err := json.Unmarshal(data, &one); err != nil {
			return err
		}
		*s = Stop{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return ParamErrorf(CodeInvalidValue, "stop", "stop must be a string or an array of strings")
	}
	*s = many
	return nil
}

// Content is a message's content: a string, or an array of parts of which
// only {"type": "text", "text": …} is supported; the parts' texts are
// joined.
type Content string

// UnmarshalJSON accepts "text" or [{"type": "text", "text": "…"}, …].
func (c *Content) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch {
	case bytes.Equal(data, []byte("null")):
		*c = ""
		return nil
	case len(data) > 0 && data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*c = Content(s)
		return nil
	}
	type part struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	var parts []part
	if err := strictUnmarshal(data, &parts); err != nil {
		if e, ok := err.(*Error); ok && e.Code == CodeUnknownField {
			return ParamErrorf(CodeInvalidValue, "content", "content part: %s: only text parts are supported", e.Message)
		}
		return ParamErrorf(CodeInvalidValue, "content", "content must be a string or an array of text parts")
	}
	var b bytes.Buffer
	for i, p := range parts {
		if p.Type != "text" {
			return ParamErrorf(CodeInvalidValue, "content", "content part %d has type %q: only \"text\" is supported", i, p.Type)
		}
		b.WriteString(p.Text)
	}
	*c = Content(b.String())
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
