package protocol

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable, machine-readable error code. Codes are part of the wire
// schema: they are never renamed or reused.
type Code string

// The error codes. The table below gives each its HTTP status and OpenAI
// error type.
const (
	CodeInvalidJSON        Code = "invalid_json"            // the body is not one well-formed JSON value
	CodeInvalidUTF8        Code = "invalid_utf8"            // the body is not valid UTF-8
	CodeUnknownField       Code = "unknown_field"           // a field this schema does not know
	CodeInvalidValue       Code = "invalid_value"           // a field out of range, of the wrong type, or missing
	CodeUnsupportedVersion Code = "unsupported_version"     // "version" is not one this daemon speaks
	CodeTooLarge           Code = "request_too_large"       // the body or a field exceeds its size limit
	CodeContextLength      Code = "context_length_exceeded" // prompt plus max_tokens exceed the model's context
	CodeModelNotFound      Code = "model_not_found"         // no model of that name is registered
	CodeEditNotFound       Code = "edit_not_found"          // no edit of that id is stored
	CodeAdapterNotFound    Code = "adapter_not_found"       // the model has no adapter version of that number
	CodeAdapterInvalid     Code = "adapter_invalid"         // a file is not an adapter, or does not fit the model
	CodeAdapterCorrupt     Code = "adapter_corrupt"         // a stored or published adapter version fails its digest check
	CodeNotPublished       Code = "adapter_not_published"   // no adapter version of the model is published for the fleet
	CodeFleetUnavailable   Code = "fleet_unavailable"       // no NATS server with JetStream to publish to or pull from
	CodeJobNotFound        Code = "job_not_found"           // no background job of that id
	CodeJobConflict        Code = "job_state_conflict"      // the job's state does not allow the request (pausing a finished job)
	CodeModelLoad          Code = "model_load_failed"       // the model file could not be loaded
	CodeInsufficientMemory Code = "insufficient_memory"     // the memory budget cannot hold the model
	CodeChatTemplate       Code = "chat_template_error"     // the model's chat template failed to render
	CodeBusy               Code = "busy"                    // the model's queue is full: retry later
	CodeTimeout            Code = "timeout"                 // the request's deadline passed
	CodeCancelled          Code = "cancelled"               // the client went away or cancelled
	CodeShuttingDown       Code = "shutting_down"           // the daemon is draining
	CodeForbidden          Code = "forbidden"               // the peer may not use this daemon
	CodeNotFound           Code = "not_found"               // no such route
	CodeMethodNotAllowed   Code = "method_not_allowed"      // the route exists for another method
	CodeInternal           Code = "internal_error"          // a bug or an unexpected failure
)

// codeInfo is one row of the code table.
type codeInfo struct {
	status int    // HTTP status
	typ    string // OpenAI "type"
}

// codes is the one table of wire-visible errors.
var codes = map[Code]codeInfo{
	CodeInvalidJSON:        {http.StatusBadRequest, "invalid_request_error"},
	CodeInvalidUTF8:        {http.StatusBadRequest, "invalid_request_error"},
	CodeUnknownField:       {http.StatusBadRequest, "invalid_request_error"},
	CodeInvalidValue:       {http.StatusBadRequest, "invalid_request_error"},
	CodeUnsupportedVersion: {http.StatusBadRequest, "invalid_request_error"},
	CodeTooLarge:           {http.StatusRequestEntityTooLarge, "invalid_request_error"},
	CodeContextLength:      {http.StatusBadRequest, "invalid_request_error"},
	CodeModelNotFound:      {http.StatusNotFound, "invalid_request_error"},
	CodeEditNotFound:       {http.StatusNotFound, "invalid_request_error"},
	CodeAdapterNotFound:    {http.StatusNotFound, "invalid_request_error"},
	CodeAdapterInvalid:     {http.StatusBadRequest, "invalid_request_error"},
	CodeAdapterCorrupt:     {http.StatusInternalServerError, "server_error"},
	CodeJobNotFound:        {http.StatusNotFound, "invalid_request_error"},
	CodeJobConflict:        {http.StatusConflict, "invalid_request_error"},
	CodeNotPublished:       {http.StatusNotFound, "invalid_request_error"},
	CodeFleetUnavailable:   {http.StatusServiceUnavailable, "server_error"},
	CodeModelLoad:          {http.StatusInternalServerError, "server_error"},
	CodeInsufficientMemory: {http.StatusServiceUnavailable, "server_error"},
	CodeChatTemplate:       {http.StatusUnprocessableEntity, "invalid_request_error"},
	CodeBusy:               {http.StatusTooManyRequests, "rate_limit_error"},
	CodeTimeout:            {http.StatusGatewayTimeout, "server_error"},
	CodeCancelled:          {499, "server_error"},
	CodeShuttingDown:       {http.StatusServiceUnavailable, "server_error"},
	CodeForbidden:          {http.StatusForbidden, "permission_error"},
	CodeNotFound:           {http.StatusNotFound, "invalid_request_error"},
	CodeMethodNotAllowed:   {http.StatusMethodNotAllowed, "invalid_request_error"},
	CodeInternal:           {http.StatusInternalServerError, "server_error"},
}

// Codes lists every code, for documentation and tests.
func Codes() []Code {
	out := make([]Code, 0, len(codes))
	for c := range codes {
		out = append(out, c)
	}
	return out
}

// HTTPStatus is the HTTP status that carries c; 500 for an unknown code.
func (c Code) HTTPStatus() int {
	if i, ok := codes[c]; ok {
		return i.status
	}
	return http.StatusInternalServerError
}

// Type is the OpenAI error type of c.
func (c Code) Type() string {
	if i, ok := codes[c]; ok {
		return i.typ
	}
	return "server_error"
}

// Error is the error object of every transport. It implements error.
type Error struct {
	Code    Code   `json:"code"`
	Type    string `json:"type"`
	Message string `json:"message"`
	// Param names the offending field, when one is to blame.
	Param string `json:"param,omitempty"`
	// RetryAfter is a hint, in seconds, for CodeBusy and CodeShuttingDown.
	RetryAfter int `json:"retry_after,omitempty"`
}

// ErrorResponse is the body of an error reply: {"error": {...}}, as OpenAI.
type ErrorResponse struct {
	Version int    `json:"version"`
	Error   *Error `json:"error"`
}

// Errorf returns an *Error with code c, c's type and a formatted message.
func Errorf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Type: c.Type(), Message: fmt.Sprintf(format, args...)}
}

// ParamErrorf is Errorf naming the field param.
func ParamErrorf(c Code, param, format string, args ...any) *Error {
	e := Errorf(c, format, args...)
	e.Param = param
	return e
}

func (e *Error) Error() string {
	if e.Param != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Param)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Is makes errors.Is(err, &Error{Code: c}) match any *Error with code c.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// CodeOf returns the code of the *Error in err's chain, or CodeInternal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// AsError returns the *Error in err's chain, or wraps err as an internal
// error.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Errorf(CodeInternal, "%v", err)
}
