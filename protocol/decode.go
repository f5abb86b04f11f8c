package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// Validator is implemented by every request type.
type Validator interface {
	Validate() error
}

// Decode reads one request from data into v, strictly: at most
// MaxBodyBytes of valid UTF-8, one JSON value, no unknown fields; then it
// runs v.Validate. Every error is an *Error.
func Decode(data []byte, v Validator) error {
	if len(data) > MaxBodyBytes {
		return Errorf(CodeTooLarge, "request body of %d bytes exceeds %d", len(data), MaxBodyBytes)
	}
	if !utf8.Valid(data) {
		off := invalidUTF8Offset(data)
		return Errorf(CodeInvalidUTF8, "request body is not valid UTF-8 (byte %d)", off)
	}
	if err := strictUnmarshal(data, v); err != nil {
		return err
	}
	return v.Validate()
}

// ReadBody reads at most MaxBodyBytes from r, failing with CodeTooLarge
// beyond that.
func ReadBody(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return nil, Errorf(CodeInvalidJSON, "reading the request body: %v", err)
	}
	if len(data) > MaxBodyBytes {
		return nil, Errorf(CodeTooLarge, "request body exceeds %d bytes", MaxBodyBytes)
	}
	return data, nil
}

// DecodeCompletion decodes and validates a CompletionRequest.
func DecodeCompletion(data []byte) (*CompletionRequest, error) {
	var r CompletionRequest
	if err := Decode(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeChat decodes and validates a ChatRequest.
func DecodeChat(data []byte) (*ChatRequest, error) {
	var r ChatRequest
	if err := Decode(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeTokenize decodes and validates a TokenizeRequest.
func DecodeTokenize(data []byte) (*TokenizeRequest, error) {
	var r TokenizeRequest
	if err := Decode(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func invalidUTF8Offset(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(data)
}

// strictUnmarshal decodes exactly one JSON value with unknown fields
// rejected, mapping encoding/json's errors to *Error.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(CodeInvalidJSON, "unexpected data after the JSON value")
	}
	return nil
}

// jsonError maps an encoding/json error to an *Error.
func jsonError(err error) error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return Errorf(CodeInvalidJSON, "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.Is(err, io.EOF):
		return Errorf(CodeInvalidJSON, "empty request body: want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(CodeInvalidJSON, "malformed JSON: unexpected end of the body")
	case errors.As(err, &typ):
		field := strings.ReplaceAll(typ.Field, "Sampling.", "") // the embedded struct's name is no field
		if field == "" {
			return Errorf(CodeInvalidValue, "want a JSON object, got %s", typ.Value)
		}
		return ParamErrorf(CodeInvalidValue, field, "field %q: got %s, want %s", field, typ.Value, typeName(typ.Type.String()))
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return ParamErrorf(CodeUnknownField, name, "unknown field %q", name)
	}
	return Errorf(CodeInvalidJSON, "%s", strings.TrimPrefix(msg, "json: "))
}

func typeName(t string) string {
	t = strings.TrimPrefix(t, "*")
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	}
	return "an object"
}

// problems collects validation failures; the first one is reported, the
// others are appended to its message so that a client sees them all.
type problems []*Error

func (p *problems) add(c Code, param, format string, args ...any) {
	*p = append(*p, ParamErrorf(c, param, format, args...))
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	e := *p[0]
	for _, q := range p[1:] {
		e.Message += "; " + q.Message
	}
	return &e
}

func checkVersion(p *problems, v int) {
	if v != 0 && v != Version {
		p.add(CodeUnsupportedVersion, "version", "version %d is not supported: this daemon speaks version %d", v, Version)
	}
}

func checkModel(p *problems, name string) {
	switch {
	case name == "":
		p.add(CodeInvalidValue, "model", "model is required")
	case len(name) > MaxNameBytes:
		p.add(CodeTooLarge, "model", "model name of %d bytes exceeds %d", len(name), MaxNameBytes)
	case strings.ContainsFunc(name, isControl):
		p.add(CodeInvalidValue, "model", "model name contains control characters")
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// checkLabel checks a free-form name kept for the record (who created an
// edit, a job, a node): valid UTF-8 of at most MaxNameBytes without
// control characters; empty only when not required.
func checkLabel(p *problems, param, s string, required bool) {
	switch {
	case s == "" && required:
		p.add(CodeInvalidValue, param, "%s is required", param)
	case len(s) > MaxNameBytes:
		p.add(CodeTooLarge, param, "%s of %d bytes exceeds %d", param, len(s), MaxNameBytes)
	case !utf8.ValidString(s):
		p.add(CodeInvalidUTF8, param, "%s is not valid UTF-8", param)
	case strings.ContainsFunc(s, isControl):
		p.add(CodeInvalidValue, param, "%s contains control characters", param)
	}
}

// checkFileName checks the name of a file kept for the record: a label
// without directories.
func checkFileName(p *problems, param, f string) {
	n := len(*p)
	checkLabel(p, param, f, false)
	if len(*p) == n && strings.ContainsAny(f, `/\`) {
		p.add(CodeInvalidValue, param, "%s %q: want a base name, without directories", param, truncate(f, 40))
	}
}

func checkFloat(p *problems, name string, v *float64, lo, hi float64) {
	if v == nil {
		return
	}
	if math.IsNaN(*v) || *v < lo || *v > hi {
		p.add(CodeInvalidValue, name, "%s %v is outside [%v, %v]", name, *v, lo, hi)
	}
}

func checkInt(p *problems, name string, v *int, lo, hi int) {
	if v != nil && (*v < lo || *v > hi) {
		p.add(CodeInvalidValue, name, "%s %d is outside [%d, %d]", name, *v, lo, hi)
	}
}

// Validate checks the sampling ranges.
func (s *Sampling) validate(p *problems) {
	checkFloat(p, "temperature", s.Temperature, 0, MaxTemperature)
	checkFloat(p, "top_p", s.TopP, 0, 1)
	checkInt(p, "top_k", s.TopK, 0, MaxTopK)
	checkFloat(p, "min_p", s.MinP, 0, 1)
	checkFloat(p, "presence_penalty", s.PresencePenalty, -MaxPenalty, MaxPenalty)
	checkFloat(p, "frequency_penalty", s.FrequencyPenalty, -MaxPenalty, MaxPenalty)
	checkFloat(p, "repeat_penalty", s.RepeatPenalty, 0, MaxRepeatPenalty)
	checkInt(p, "repeat_last_n", s.RepeatLastN, -1, MaxRepeatLastN)
}

func checkStop(p *problems, stop Stop) {
	if len(stop) > MaxStops {
		p.add(CodeInvalidValue, "stop", "%d stop strings exceed %d", len(stop), MaxStops)
		return
	}
	for i, s := range stop {
		if s == "" {
			p.add(CodeInvalidValue, "stop", "stop[%d] is empty", i)
		} else if len(s) > MaxStopBytes {
			p.add(CodeInvalidValue, "stop", "stop[%d] of %d bytes exceeds %d", i, len(s), MaxStopBytes)
		}
	}
}

// checkSparsity bounds a sparsity request's size; the method and the
// ranges depend on the daemon's policies and the model, and the daemon
// checks them.
func checkSparsity(p *problems, s *Sparsity) {
	if s == nil {
		return
	}
	switch {
	case s.Method == "":
		p.add(CodeInvalidValue, "sparsity", "sparsity.method is required (\"none\" for no sparsity)")
	case len(s.Method) > MaxMethodBytes:
		p.add(CodeTooLarge, "sparsity", "sparsity.method of %d bytes exceeds %d", len(s.Method), MaxMethodBytes)
	case strings.ContainsFunc(s.Method, isControl):
		p.add(CodeInvalidValue, "sparsity", "sparsity.method contains control characters")
	}
	if len(s.Layers) > MaxSparsityLayers {
		p.add(CodeTooLarge, "sparsity", "sparsity.layers holds %d layers, more than %d", len(s.Layers), MaxSparsityLayers)
	}
	if s.Block != nil && *s.Block > MaxSparsityBlock {
		p.add(CodeTooLarge, "sparsity", "sparsity.block %d exceeds %d", *s.Block, MaxSparsityBlock)
	}
}

func checkN(p *problems, n *int) {
	if n != nil && *n != 1 {
		p.add(CodeInvalidValue, "n", "n must be 1: one choice per request")
	}
}

// Validate checks a decoded CompletionRequest.
func (r *CompletionRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	switch {
	case !r.Prompt.set:
		p.add(CodeInvalidValue, "prompt", "prompt is required")
	case r.Prompt.IsTokens && len(r.Prompt.Tokens) == 0, !r.Prompt.IsTokens && r.Prompt.Text == "":
		p.add(CodeInvalidValue, "prompt", "prompt is empty")
	case len(r.Prompt.Text) > MaxTextBytes:
		p.add(CodeTooLarge, "prompt", "prompt of %d bytes exceeds %d", len(r.Prompt.Text), MaxTextBytes)
	}
	for i, id := range r.Prompt.Tokens {
		if id < 0 {
			p.add(CodeInvalidValue, "prompt", "prompt[%d]: negative token id %d", i, id)
			break
		}
	}
	r.Sampling.validate(&p)
	checkInt(&p, "max_tokens", r.MaxTokens, 1, MaxMaxTokens)
	checkStop(&p, r.Stop)
	checkN(&p, r.N)
	checkSparsity(&p, r.Sparsity)
	checkAdapterVersion(&p, r.AdapterVersion)
	return p.err()
}

// Validate checks a decoded ChatRequest.
func (r *ChatRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	switch {
	case len(r.Messages) == 0:
		p.add(CodeInvalidValue, "messages", "messages is required and must not be empty")
	case len(r.Messages) > MaxMessages:
		p.add(CodeTooLarge, "messages", "%d messages exceed %d", len(r.Messages), MaxMessages)
	}
	total := 0
	for i, m := range r.Messages {
		if !slices.Contains(Roles, m.Role) {
			p.add(CodeInvalidValue, "messages", "messages[%d].role %q: want one of %s", i, m.Role, strings.Join(Roles, ", "))
		}
		if len(m.Name) > MaxNameBytes {
			p.add(CodeTooLarge, "messages", "messages[%d].name exceeds %d bytes", i, MaxNameBytes)
		}
		total += len(m.Content)
	}
	if total > MaxTextBytes {
		p.add(CodeTooLarge, "messages", "message contents of %d bytes exceed %d", total, MaxTextBytes)
	}
	r.Sampling.validate(&p)
	checkInt(&p, "max_tokens", r.MaxTokens, 1, MaxMaxTokens)
	checkInt(&p, "max_completion_tokens", r.MaxCompletionTokens, 1, MaxMaxTokens)
	if r.MaxTokens != nil && r.MaxCompletionTokens != nil {
		p.add(CodeInvalidValue, "max_completion_tokens", "give max_tokens or max_completion_tokens, not both")
	}
	checkStop(&p, r.Stop)
	checkN(&p, r.N)
	checkSparsity(&p, r.Sparsity)
	checkAdapterVersion(&p, r.AdapterVersion)
	return p.err()
}

// Limit returns the token limit of the request: MaxTokens or
// MaxCompletionTokens, nil when neither is set.
func (r *ChatRequest) Limit() *int {
	if r.MaxTokens != nil {
		return r.MaxTokens
	}
	return r.MaxCompletionTokens
}

// Validate checks a decoded TokenizeRequest.
func (r *TokenizeRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	if len(r.Content) > MaxTextBytes {
		p.add(CodeTooLarge, "content", "content of %d bytes exceeds %d", len(r.Content), MaxTextBytes)
	}
	return p.err()
}

// Validate checks a decoded LoadRequest.
func (r *LoadRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	if r.Model == "" && r.Path == "" {
		p.add(CodeInvalidValue, "model", "give model (a registered name) or path (a GGUF file)")
	}
	if r.Model != "" {
		checkModel(&p, r.Model)
	}
	if len(r.Path) > MaxPathBytes {
		p.add(CodeTooLarge, "path", "path exceeds %d bytes", MaxPathBytes)
	}
	if strings.ContainsRune(r.Path, 0) {
		p.add(CodeInvalidValue, "path", "path contains a NUL byte")
	}
	return p.err()
}

// Validate checks a decoded UnloadRequest.
func (r *UnloadRequest) Validate() error {
	var p problems
	checkVersion(&p, r.Version)
	checkModel(&p, r.Model)
	return p.err()
}

// ValidateName checks a model name as registered by an operator: the same
// rules as the model field of requests.
func ValidateName(name string) error {
	var p problems
	checkModel(&p, name)
	if err := p.err(); err != nil {
		return fmt.Errorf("model name %q: %w", name, err)
	}
	return nil
}

// Validate checks a sparsity request's size on its own (for the default
// an operator configures per model).
func (s *Sparsity) Validate() error {
	var p problems
	checkSparsity(&p, s)
	return p.err()
}

// Validate checks the sampling ranges on their own (for the defaults an
// operator configures per model).
func (s *Sampling) Validate() error {
	var p problems
	s.validate(&p)
	return p.err()
}
